"""Engine version numbers, version ranges and the typed error for what we cannot render.

Engine releases are spelled many ways ("0.10.1.1", "v0.11.0", "0.6.4.post1", "1.3.0rc21",
"0.6.3+cu118"). Flags and metric names appear and disappear at specific releases, so every
table in this package keys on a `VersionRange` of parsed `EngineVersion`s instead of on
string comparisons or if-chains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kvscale.capacity.errors import InputError

_VERSION_RE = re.compile(
    r"""^\s*v?
    (?P<release>\d+(?:\.\d+)*)
    (?:[.\-_]?(?P<phase>rc|a|alpha|b|beta|dev|post)[.\-_]?(?P<num>\d*))?
    (?:\+[0-9A-Za-z.]+)?          # local build tag (+cu118): ignored
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)

# Pre-releases sort before the final release, post-releases after it (PEP 440 order).
_PHASE_RANK: dict[str, int] = {
    "dev": -4,
    "a": -3,
    "alpha": -3,
    "b": -2,
    "beta": -2,
    "rc": -1,
    "": 0,
    "post": 1,
}


class UnsupportedEngineError(InputError):
    """The engine, its version or a plan value cannot be rendered; names the field and the fix."""


@dataclass(frozen=True, order=True)
class EngineVersion:
    """A parsed release number, ordered like PEP 440 (1.3.0rc2 < 1.3.0 < 1.3.0.post1).

    Trailing zeros do not matter for ordering or equality: "0.10" == "0.10.0".
    """

    release: tuple[int, ...]  # trailing zeros stripped
    phase_rank: int = 0  # <0 pre-release, 0 final, 1 post-release
    phase_number: int = 0
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> EngineVersion:
        """Parse a release string; raises `UnsupportedEngineError` naming `engine_version`."""
        match = _VERSION_RE.match(text)
        if match is None:
            raise UnsupportedEngineError(
                "engine_version",
                f"cannot parse version {text!r}",
                'write it like "0.11.0", "v0.10.1.1", "0.6.4.post1" or "1.3.0rc2"',
            )
        parts = [int(p) for p in match.group("release").split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        phase = (match.group("phase") or "").lower()
        number = int(match.group("num") or 0)
        return cls(tuple(parts), _PHASE_RANK[phase], number, text.strip().lstrip("vV"))

    def __str__(self) -> str:
        return self.text or ".".join(str(p) for p in self.release)


def parse_version(text: str | EngineVersion) -> EngineVersion:
    """Accept a string or an already parsed version."""
    return text if isinstance(text, EngineVersion) else EngineVersion.parse(text)


@dataclass(frozen=True)
class VersionRange:
    """Half-open range [introduced, removed): None on either side means unbounded."""

    introduced: EngineVersion | None = None
    removed: EngineVersion | None = None

    @classmethod
    def of(cls, introduced: str | None = None, removed: str | None = None) -> VersionRange:
        return cls(
            EngineVersion.parse(introduced) if introduced else None,
            EngineVersion.parse(removed) if removed else None,
        )

    def contains(self, version: EngineVersion) -> bool:
        if self.introduced is not None and version < self.introduced:
            return False
        return self.removed is None or version < self.removed

    def overlaps(self, other: VersionRange) -> bool:
        """True when some version lies in both ranges (used by the table sanity tests)."""
        lo = max(
            (v for v in (self.introduced, other.introduced) if v is not None),
            default=None,
        )
        hi = min((v for v in (self.removed, other.removed) if v is not None), default=None)
        return lo is None or hi is None or lo < hi

    def describe(self) -> str:
        """Human wording used in warnings and docs, e.g. "0.10.2 ≤ v < 0.18"."""
        if self.introduced is None and self.removed is None:
            return "all versions"
        if self.removed is None:
            return f"from {self.introduced}"
        if self.introduced is None:
            return f"before {self.removed}"
        return f"from {self.introduced}, before {self.removed}"


@dataclass(frozen=True)
class SupportedVersions:
    """The versions kvscale renders for: [minimum, below). `sampled` were read in the source."""

    engine: str
    minimum: EngineVersion
    below: EngineVersion
    sampled: tuple[EngineVersion, ...] = ()

    def contains(self, version: EngineVersion) -> bool:
        return self.minimum <= version < self.below

    def require(self, version_text: str) -> EngineVersion:
        """Parse and check; the error says which range is supported."""
        version = EngineVersion.parse(version_text)
        if not self.contains(version):
            raise UnsupportedEngineError(
                "engine_version",
                f"{self.engine} {version_text} is not supported "
                f"(kvscale knows {self.minimum} ≤ version < {self.below})",
                f"pick a {self.engine} version in that range, or add the release to the "
                f"kvscale.engines.{self.engine} tables after checking its flags",
            )
        return version


# Immutable "no bound" range, shared as the dataclass default of every table row.
ALL_VERSIONS = VersionRange()
