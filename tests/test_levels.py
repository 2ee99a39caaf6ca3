"""Compute levels: parsing, printing, ordering, equality, immutability and resolution."""

from __future__ import annotations

import copy
import pickle

import pytest

from elasticir.compute.levels import FULL, Level

CANONICAL = ["full", "L1", "L4", "L4-W75", "L12-W25", "L2-W1", "L24-W99"]


@pytest.mark.parametrize("spec", CANONICAL)
def test_str_and_repr_round_trip(spec: str) -> None:
    level = Level(spec)
    assert str(level) == spec
    assert repr(level) == f"Level({spec!r})"
    assert eval(repr(level)) == level  # noqa: S307 - the point of a repr that round-trips
    assert Level(str(level)) == level
    assert Level(level) == level


@pytest.mark.parametrize(
    ("spec", "depth", "width", "canonical"),
    [
        ("full", None, 100, "full"),
        ("FULL", None, 100, "full"),
        (" full ", None, 100, "full"),
        ("L4", 4, 100, "L4"),
        ("L4-W100", 4, 100, "L4"),  # width 100 is the default and is not printed
        ("L4-W75", 4, 75, "L4-W75"),
        ("L04-W075", 4, 75, "L4-W75"),
    ],
)
def test_parse(spec: str, depth: int | None, width: int, canonical: str) -> None:
    level = Level(spec)
    assert (level.depth, level.width) == (depth, width)
    assert str(level) == canonical
    assert eval(repr(level)) == level  # noqa: S307


@pytest.mark.parametrize(
    ("depth", "width"), [(None, 100), (1, 100), (4, 75), (6, 1), (3, 50), (12, 100)]
)
def test_keyword_construction_round_trips(depth: int | None, width: int) -> None:
    level = Level(depth=depth, width=width)
    assert eval(repr(level)) == level  # noqa: S307
    assert Level(str(level)) == level
    assert (Level(str(level)).depth, Level(str(level)).width) == (depth, width)


def test_docstring_examples() -> None:
    assert repr(Level("L4-W75")) == "Level('L4-W75')"
    assert Level("L4-W75") == Level(depth=4, width=75)
    assert sorted([Level("full"), Level("L2-W50")]) == [Level("L2-W50"), Level("full")]


def test_full_constant() -> None:
    assert FULL == Level("full") == Level() == Level(depth=None, width=100)
    assert FULL.is_full
    assert not Level("L6").is_full  # explicit depth: not "every layer", even if equal in size
    assert not Level("L4-W75").is_full


def test_ordering() -> None:
    levels = [Level(s) for s in ["full", "L2-W50", "L2", "L1", "L2-W25", "L6-W75", "L6"]]
    assert [str(x) for x in sorted(levels)] == [
        "L1",
        "L2-W25",
        "L2-W50",
        "L2",
        "L6-W75",
        "L6",
        "full",
    ]
    # depth first, then width; full is above every explicit depth
    assert Level("L2-W100") > Level("L2-W50") > Level("L1")
    assert Level("L100") < FULL
    assert Level("L3") <= Level("L3") and Level("L3") >= Level("L3")
    assert max(levels) == FULL and min(levels) == Level("L1")


def test_ordering_with_strings() -> None:
    assert Level("L2") < "L3"
    assert Level("L2") < "full"
    assert Level("L2-W50") <= "L2-W50"
    assert not Level("full") < "L2"


def test_ordering_with_non_levels_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = Level("L2") < 3  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = Level("L2") > None  # type: ignore[operator]


def test_equality_and_hash() -> None:
    assert Level("L4") == Level("L4-W100") == Level(depth=4)
    assert hash(Level("L4")) == hash(Level("L4-W100"))
    assert len({Level("full"), FULL, Level(FULL), Level("FULL")}) == 1
    assert Level("L4-W75") != Level("L4-W50")
    assert Level("L4") != Level("L5")
    assert Level("L6") != FULL  # depth 6 is not "every layer" until resolved


def test_equality_with_strings() -> None:
    assert Level("L4-W75") == "L4-W75"
    assert "L4-W75" == Level("L4-W75")
    assert Level("L4") == "L4-W100"
    assert FULL == "full" and FULL == "FULL"
    assert Level("L4-W75") != "L4-W50"
    assert Level("L4") != "full"


def test_equality_never_raises() -> None:
    # `==` answers; it does not parse-and-fail on things that are not levels
    assert Level("L4") != "garbage"
    assert Level("L4") != ""
    assert not (Level("L4") == "L4-W0")
    assert Level("L4") != 4
    assert Level("L4") != None  # noqa: E711
    assert Level("L4") != ("L4",)
    assert "garbage" not in [Level("L4"), FULL]


def test_canonical_strings_find_levels_in_sets_and_dicts() -> None:
    costs = {Level("L4-W75"): 0.4, FULL: 1.0}
    assert "L4-W75" in {Level("L4-W75")}
    assert costs.get("full") == 1.0  # type: ignore[call-overload]
    assert costs.get("L4-W75") == 0.4  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "spec",
    [
        "",
        " ",
        "4",
        "L",
        "l4",
        "L4-w75",
        "L-W50",
        "L4-W",
        "L4W75",
        "L4 - W75",
        "L4-W75-",
        "L4.5",
        "L4-W75.5",
        "L-4",
        "L0",
        "L0-W50",
        "L4-W0",
        "L4-W101",
        "L4-W1000",
        "fullish",
        "full-W50",
        "W50",
    ],
)
def test_bad_specs_raise_value_error(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        Level(spec)
    message = str(info.value)
    assert "level" in message


def test_bad_spec_message_shows_the_syntax() -> None:
    with pytest.raises(ValueError, match=r"'L4-W75'") as info:
        Level("L4_W75")
    assert "'L4_W75'" in str(info.value)


@pytest.mark.parametrize(
    ("depth", "width"), [(0, 100), (-1, 100), (4, 0), (4, 101), (4, -5), (None, 50), (None, 1)]
)
def test_bad_keyword_values_raise_value_error(depth: int | None, width: int) -> None:
    # (None, 50): "every layer at half width" has no spelling, so it could not round-trip
    with pytest.raises(ValueError):
        Level(depth=depth, width=width)


@pytest.mark.parametrize("spec", [4, 4.0, b"L4", ["L4"]])
def test_non_string_spec_is_a_type_error(spec: object) -> None:
    with pytest.raises(TypeError, match="level"):
        Level(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(("depth", "width"), [(4.0, 100), (4, 75.5), ("4", 100), (4, "75")])
def test_non_integer_keywords_are_type_errors(depth: object, width: object) -> None:
    with pytest.raises(TypeError):
        Level(depth=depth, width=width)  # type: ignore[arg-type]


def test_integer_like_keywords_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    level = Level(depth=np.int64(4), width=np.int32(75))
    assert level == Level("L4-W75")
    assert type(level.depth) is int and type(level.width) is int
    assert repr(level) == "Level('L4-W75')"


def test_immutable() -> None:
    level = Level("L4-W75")
    with pytest.raises(AttributeError):
        level.depth = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        level.width = 50  # type: ignore[misc]
    with pytest.raises(AttributeError):
        level.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del level.depth
    assert level == Level("L4-W75")
    with pytest.raises(AttributeError):
        FULL.depth = 3  # type: ignore[misc]
    assert FULL.depth is None and FULL.width == 100


@pytest.mark.parametrize("spec", CANONICAL)
def test_pickle_and_copy(spec: str) -> None:
    # levels cross process boundaries (multiprocessing, sharded encoding) and get copied
    level = Level(spec)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        restored = pickle.loads(pickle.dumps(level, protocol=protocol))
        assert restored == level and type(restored) is Level
    assert copy.copy(level) == level
    assert copy.deepcopy(level) == level
    assert copy.deepcopy({"level": level})["level"] == level


def test_resolve() -> None:
    assert FULL.resolve(6) == Level("L6")
    assert FULL.resolve(6).depth == 6 and FULL.resolve(6).width == 100
    assert repr(FULL.resolve(6)) == "Level('L6')"
    assert Level("L4-W75").resolve(6) == Level("L4-W75")
    assert Level("L6-W50").resolve(6) == Level("L6-W50")
    assert Level("L6").resolve(6) == FULL.resolve(6)
    assert Level("L1").resolve(1) == FULL.resolve(1)
    # resolving is idempotent and leaves the original alone
    resolved = FULL.resolve(12)
    assert resolved.resolve(12) == resolved
    assert FULL.depth is None


@pytest.mark.parametrize(("spec", "layers"), [("L7", 6), ("L13-W50", 12), ("L2", 1)])
def test_resolve_too_deep(spec: str, layers: int) -> None:
    with pytest.raises(ValueError, match=rf"needs \d+ layers; the model has {layers}"):
        Level(spec).resolve(layers)


@pytest.mark.parametrize(
    ("spec", "depth", "heads", "ffn", "canonical"),
    [
        ("L6-H100-F23", 6, 100, 23, "L6-H100-F23"),
        ("L6-F23", 6, 100, 23, "L6-H100-F23"),  # heads default to all of them
        ("L6-H75", 6, 75, 100, "L6-H75-F100"),
        ("L6-H50-F50", 6, 50, 50, "L6-W50"),  # alike: the width spelling
        ("L4-H100-F100", 4, 100, 100, "L4"),
        ("L06-H075-F037", 6, 75, 37, "L6-H75-F37"),
    ],
)
def test_heads_and_ffn_cut_apart(
    spec: str, depth: int, heads: int, ffn: int, canonical: str
) -> None:
    level = Level(spec)
    assert (level.depth, level.heads, level.ffn) == (depth, heads, ffn)
    assert str(level) == canonical
    assert eval(repr(level)) == level  # noqa: S307
    assert level == Level(depth=depth, heads=heads, ffn=ffn)
    assert level.width == (heads if heads == ffn else None)
    assert pickle.loads(pickle.dumps(level)) == level
    assert Level(canonical) == level and hash(Level(canonical)) == hash(level)


def test_mixed_levels_order_by_depth_then_heads_then_ffn() -> None:
    specs = ["L6-H100-F23", "L6-W50", "L6-H50-F75", "L5-H100-F100", "full", "L6-H75-F37"]
    assert [str(lv) for lv in sorted(Level(s) for s in specs)] == [
        "L5",
        "L6-W50",
        "L6-H50-F75",
        "L6-H75-F37",
        "L6-H100-F23",
        "full",
    ]


@pytest.mark.parametrize(
    "bad", ["L6-W50-F25", "L6-F23-H100", "L6-H", "L6-H0-F50", "L6-H50-F101", "H50-F50"]
)
def test_bad_mixed_specs_name_both_spellings(bad: str) -> None:
    with pytest.raises(ValueError, match=r"L<depth>-H<heads %>-F<FFN %>|percentage"):
        Level(bad)


def test_width_and_heads_or_ffn_do_not_mix_as_keywords() -> None:
    with pytest.raises(TypeError, match="width"):
        Level(depth=6, width=50, ffn=25)
    with pytest.raises(TypeError, match="spec or as keywords"):
        Level("L6", ffn=25)
    with pytest.raises(ValueError, match=r"explicit depth \(e.g. 'L6-H100-F25'\)"):
        Level(ffn=25)
