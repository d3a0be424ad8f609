"""Flag-by-flag differences of two engine command lines (the PlanChanged Event text)."""

from __future__ import annotations

import pytest

from kvscale.engines.argdiff import describe_arg_changes, flag_values


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["--a", "1", "--b", "--c=x"], {"--a": "1", "--b": None, "--c": "x"}),
        (["model", "--port", "8000"], {"<arg0>": "model", "--port": "8000"}),
        (["--swap-space", "-1"], {"--swap-space": "-1"}),  # a negative number is a value
        (["--enforce-eager", "--dtype", "auto"], {"--enforce-eager": None, "--dtype": "auto"}),
    ],
)
def test_flag_values(argv: list[str], want: dict[str, str | None]) -> None:
    assert flag_values(argv) == want


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (
            ["--max-model-len", "4096"],
            ["--max-model-len", "8192"],
            ["--max-model-len 4096 -> 8192"],
        ),
        (["--a", "1"], ["--a", "1", "--enable-prefix-caching"], ["+--enable-prefix-caching"]),
        (["--a", "1", "--kv-cache-dtype", "fp8"], ["--a", "1"], ["---kv-cache-dtype fp8"]),
        (["--a", "1"], ["--a", "1"], []),
        # the same value moving between flags is two changes, not none (a set diff says none)
        (["--x", "4", "--y", "8"], ["--x", "8", "--y", "4"], ["--x 4 -> 8", "--y 8 -> 4"]),
    ],
)
def test_describe_arg_changes(old: list[str], new: list[str], want: list[str]) -> None:
    assert describe_arg_changes(old, new) == want
