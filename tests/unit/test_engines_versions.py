"""Version parsing and ranges: the ordering every version table relies on."""

from __future__ import annotations

import pytest

from kvscale.engines import EngineVersion, UnsupportedEngineError, VersionRange, supported_versions


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("0.9.2", "0.10.0"),  # numeric, not lexicographic
        ("0.10.1", "0.10.1.1"),
        ("0.6.4", "0.6.4.post1"),
        ("1.3.0rc21", "1.3.0"),
        ("1.3.0rc2", "1.3.0rc10"),
        ("0.11.0.dev0", "0.11.0rc1"),
        ("0.17.1", "0.18.0"),
    ],
)
def test_ordering(lower: str, higher: str) -> None:
    assert EngineVersion.parse(lower) < EngineVersion.parse(higher)


@pytest.mark.parametrize(
    ("a", "b"),
    [("v0.11.0", "0.11"), ("0.6.3+cu118", "0.6.3"), ("V1.3.0", "1.3"), (" 0.10.2 ", "0.10.2.0")],
)
def test_equal_spellings(a: str, b: str) -> None:
    assert EngineVersion.parse(a) == EngineVersion.parse(b)


def test_text_is_kept_for_messages() -> None:
    assert str(EngineVersion.parse("v0.10.1.1")) == "0.10.1.1"


@pytest.mark.parametrize("text", ["", "latest", "0.x", "1..2", "0.11.0-nightly"])
def test_unparsable_versions_name_the_field(text: str) -> None:
    with pytest.raises(UnsupportedEngineError) as exc:
        EngineVersion.parse(text)
    assert exc.value.field == "engine_version"


@pytest.mark.parametrize(
    ("introduced", "removed", "version", "inside"),
    [
        ("0.10.2", None, "0.10.1.1", False),
        ("0.10.2", None, "0.10.2", True),
        (None, "0.18.0", "0.17.9", True),
        (None, "0.18.0", "0.18.0", False),
        (None, "0.18.0", "0.18.0rc1", True),  # a pre-release precedes the removal release
        ("1.3.0", None, "1.3.0rc21", False),
    ],
)
def test_range_is_half_open(
    introduced: str | None, removed: str | None, version: str, inside: bool
) -> None:
    rng = VersionRange.of(introduced, removed)
    assert rng.contains(EngineVersion.parse(version)) is inside


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ((None, "0.11.0"), ("0.11.0", None), False),
        ((None, "0.11.0"), ("0.10.2", None), True),
        (("0.5.9", "0.5.14"), ("0.5.14", None), False),
        ((None, None), ("1.0", "1.1"), True),
    ],
)
def test_overlaps(
    a: tuple[str | None, str | None], b: tuple[str | None, str | None], overlap: bool
) -> None:
    assert VersionRange.of(*a).overlaps(VersionRange.of(*b)) is overlap


@pytest.mark.parametrize(
    ("engine", "inside", "outside"),
    [
        ("vllm", "0.9.0", "0.8.5"),
        ("sglang", "0.4.10.post2", "0.4.9"),
        ("tgi", "2.0.0", "1.4.5"),
        ("trtllm", "1.4.0rc1", "0.21.0"),
    ],
)
def test_supported_ranges(engine: str, inside: str, outside: str) -> None:
    support = supported_versions(engine)
    assert support.contains(EngineVersion.parse(inside))
    with pytest.raises(UnsupportedEngineError) as exc:
        support.require(outside)
    assert exc.value.field == "engine_version"
    assert str(support.minimum) in str(exc.value)
