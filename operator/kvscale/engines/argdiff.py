"""What changed between two engine command lines, flag by flag (for Events and logs).

A set difference of argv tokens loses the flag names ("4096 8192"); reading argv as flags with
optional values says "--max-model-len 4096 -> 8192", which is what an operator reading Events
needs. Rendered argv only ever uses `--flag value`, `--flag=value` or a bare switch.
"""

from __future__ import annotations

from collections.abc import Sequence

FlagValues = dict[str, str | None]  # flag -> value (None: a bare switch)


def flag_values(argv: Sequence[str]) -> FlagValues:
    """`["--a", "1", "--b", "--c=x"]` -> `{"--a": "1", "--b": None, "--c": "x"}`.

    Tokens before the first flag (a model path) are kept under their position as `<argN>`.
    """
    values: FlagValues = {}
    flag: str | None = None
    for index, token in enumerate(argv):
        if token.startswith("-") and not _is_number(token):
            name, eq, value = token.partition("=")
            values[name] = value if eq else None
            flag = None if eq else name
        elif flag is not None and values.get(flag) is None:
            values[flag] = token
            flag = None
        else:
            values[f"<arg{index}>"] = token
    return values


def describe_arg_changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """One phrase per changed flag: `--x 1 -> 2`, `+--y 3` (added), `---z` (removed)."""
    before, after = flag_values(old), flag_values(new)
    changes: list[str] = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            changes.append(f"+{_show(name, after[name])}")
        elif name not in after:
            changes.append(f"-{_show(name, before[name])}")
        elif before[name] != after[name]:
            changes.append(f"{name} {before[name]} -> {after[name]}")
    return changes


def _show(name: str, value: str | None) -> str:
    return name if value is None else f"{name} {value}"


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
