"""Search spaces: parsing, conditions, constraints and one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

import autotune.ops.kinds  # noqa: F401  (registers the named constraints)
from autotune.errors import SpaceError, UserError
from autotune.search.spaces import load_spaces
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.space import load_space, parse_space

GOOD = {
    "kind": "ffn_up",
    "params": {
        "variant": {"type": "categorical", "choices": ["dense", "int8_dynamic"]},
        "precision": {"type": "categorical", "choices": ["float32", "bfloat16"],
                      "when": {"variant": "dense"}},
        "reduce_range": {"type": "bool", "when": {"variant": "int8_dynamic"}},
        "row_block": {"type": "pow2", "low": 64, "high": 256, "none": True},
        "threads": {"type": "int", "low": 1, "high": "cores"},
    },
    "constraints": ["row_block_below_rows"],
}


def test_parse_types_conditions_and_size() -> None:
    space = parse_space(GOOD, "x.yaml", "cpu", cores=2)
    assert space.param("row_block").choices == (0, 64, 128, 256)
    assert space.param("threads").choices == (1, 2)
    assert space.param("reduce_range").choices == (False, True)
    # dense: 2 precisions; int8: 2 reduce_range values; × 4 row blocks × 2 threads
    assert space.size() == (2 + 2) * 4 * 2
    for c in space.configs():
        assert ("precision" in c) == (c["variant"] == "dense")
        assert ("reduce_range" in c) == (c["variant"] == "int8_dynamic")


def test_constraints_prune_configs() -> None:
    space = parse_space(GOOD, "x.yaml", "cpu", cores=2)
    ctx = {"rows": 128}
    assert space.violated({"variant": "dense", "row_block": 128}, ctx) == "row_block_below_rows"
    assert space.violated({"variant": "dense", "row_block": 64}, ctx) is None
    kept = list(space.configs(ctx))
    assert kept and all(c["row_block"] < 128 for c in kept)
    assert len(kept) == (2 + 2) * 2 * 2  # row blocks 0 and 64 remain


def test_check_reports_each_problem() -> None:
    space = parse_space(GOOD, "x.yaml", "cpu", cores=2)
    ok = {"variant": "dense", "precision": "float32", "row_block": 0, "threads": 1}
    assert space.check(ok) == []
    bad = {"variant": "dense", "precision": "float16", "reduce_range": True, "row_block": 0,
           "threads": True, "extra": 1}
    problems = space.check(bad)
    assert any(p.startswith("precision:") for p in problems)
    assert any(p.startswith("reduce_range: not used") for p in problems)
    assert any(p.startswith("threads:") for p in problems)  # True is not the integer 1
    assert any(p.startswith("extra: unknown") for p in problems)
    assert space.check({"variant": "dense"})  # missing parameters


@pytest.mark.parametrize(
    ("mutate", "key", "reason"),
    [
        (lambda d: d["params"]["threads"].update(type="float"), "params.threads.type",
         "unknown parameter type"),
        (lambda d: d.update(params={}), "params", "empty space"),
        (lambda d: d["params"]["precision"].update(choices=[]), "params.precision.choices",
         "non-empty"),
        (lambda d: d["params"]["precision"].update(when={"threads": 1}),
         "params.precision.when.threads", "not declared before"),
        (lambda d: d["params"]["precision"].update(when={"variant": "sparse"}),
         "params.precision.when.variant", "not choices"),
        (lambda d: d.update(constraints=["no_such_rule"]), "constraints.no_such_rule",
         "unknown constraint"),
        (lambda d: d["params"]["row_block"].update(low=48), "params.row_block", "powers of two"),
        (lambda d: d["params"]["threads"].update(low=3, high=1), "params.threads", "above high"),
        (lambda d: d.update(surprise=1), "<top>", "unknown key"),
    ],
)
def test_bad_space_names_key_and_reason(mutate, key: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(SpaceError) as e:
        parse_space(data, "spaces/cpu/ffn_up.yaml", "cpu")
    assert e.value.path == "spaces/cpu/ffn_up.yaml"
    assert e.value.key == key
    assert reason in e.value.reason


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ffn_up.yaml"
    path.write_text("kind: ffn_up\nparams:\n  variant: {type: categorical, choices: [a, b\n")
    with pytest.raises(SpaceError) as e:
        load_space(path, "cpu")
    assert str(path) in str(e.value) and "line" in e.value.key and "malformed YAML" in str(e.value)


def test_kind_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "pooler.yaml"
    path.write_text("kind: ffn_up\nparams:\n  threads: {type: int, low: 1, high: 2}\n")
    with pytest.raises(SpaceError, match="does not match the file name"):
        load_space(path, "cpu")


def test_shipped_spaces_load_and_unknown_variant_is_refused(tmp_path: Path) -> None:
    spaces = load_spaces(DEFAULT_SPACES_DIR, "cpu")
    assert set(spaces) == {"embeddings", "qkv_proj", "attention", "attn_out", "ffn_up",
                           "ffn_down", "pooler"}
    for space in spaces.values():
        assert space.baseline is not None and space.check(space.baseline) == []
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "pooler.yaml").write_text(
        "kind: pooler\nparams:\n  variant: {type: categorical, choices: [dense, magic]}\n")
    with pytest.raises(SpaceError, match="'magic' is not a registered pooler variant"):
        load_spaces(tmp_path, "cpu", ("pooler",))
    with pytest.raises(UserError, match="missing search space"):
        load_spaces(tmp_path, "cpu", ("ffn_up",))


def test_the_runtime_s_json_spaces_equal_the_yaml_ones() -> None:
    """The runtime checks configs against JSON copies of the shipped spaces (no YAML parser):
    they must say what the YAML says (refresh: ``python -m autotune.search.spaces``)."""
    import json

    import yaml

    from autotune.settings import DEFAULT_SPACES_DIR

    pairs = [(p, p.with_suffix(".json")) for p in sorted(DEFAULT_SPACES_DIR.glob("*/*.yaml"))]
    assert len(pairs) == 14
    for src, copy in pairs:
        assert copy.is_file(), f"{copy} is missing: run python -m autotune.search.spaces"
        assert json.loads(copy.read_text()) == yaml.safe_load(src.read_text()), \
            f"{copy} differs from {src.name}: run python -m autotune.search.spaces"
