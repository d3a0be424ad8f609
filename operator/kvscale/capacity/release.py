"""Engine releases: the one version type, version ranges, and the error for what we cannot do.

Engine releases are spelled many ways ("0.10.1.1", "v0.11.0", "0.6.4.post1", "1.3.0rc21",
"0.6.3+cu118", "0.21" for "0.21.0"). The capacity planner's behaviour tables, the engines'
flag and metric tables, the CLI and the API all parse with `EngineVersion` and key on it (or
on a `VersionRange` of it), never on strings or tuples, so every spelling of one release
plans and renders the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kvscale.capacity.errors import CapacityInputError

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


class UnsupportedEngineError(CapacityInputError):
    """The engine, its version or a plan value cannot be handled; names the field and the fix."""


# The spelling `str()` gives each phase rank (PEP 440 normal form).
_PHASE_TEXT: dict[int, str] = {-4: ".dev", -3: "a", -2: "b", -1: "rc", 0: "", 1: ".post"}


@dataclass(frozen=True, order=True)
class EngineVersion:
    """A parsed release number, ordered like PEP 440 (1.3.0rc2 < 1.3.0 < 1.3.0.post1).

    Trailing zeros do not matter for ordering or equality: "0.21" == "0.21.0", and `str()`
    gives one spelling for both ("0.21.0"), so plans and messages do not depend on how the
    user wrote the release.
    """

    release: tuple[int, ...]  # trailing zeros stripped
    phase_rank: int = 0  # <0 pre-release, 0 final, 1 post-release
    phase_number: int = 0

    @classmethod
    def parse(cls, text: str | EngineVersion) -> EngineVersion:
        """Parse a release string; raises `UnsupportedEngineError` naming `engine_version`."""
        if isinstance(text, EngineVersion):
            return text
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
        return cls(tuple(parts), _PHASE_RANK[phase], number)

    def __str__(self) -> str:
        padded = self.release + (0,) * max(0, 3 - len(self.release))
        suffix = _PHASE_TEXT[self.phase_rank]
        if self.phase_rank:
            suffix += str(self.phase_number)
        return ".".join(str(p) for p in padded) + suffix


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

    def require(self, version_text: str | EngineVersion) -> EngineVersion:
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


class _FromRelease(Protocol):
    @property
    def since(self) -> EngineVersion: ...


_Row = TypeVar("_Row", bound=_FromRelease)


def latest_since(rows: Iterable[_Row], version: EngineVersion) -> _Row | None:
    """The last of `rows` (ascending by `since`) that `version` has reached; None: none has
    started yet. Every "one row per release range" table is read with it."""
    found = None
    for row in rows:
        if row.since <= version:
            found = row
    return found
