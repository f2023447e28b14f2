"""Static int8 through the config: calibrated ranges measured on the float32 model, shipped in
the tuned config (schema-checked), loaded into the runtime's ops."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import torch

import autotune
from autotune.bench.lengths import make_batch, parse_lengths
from autotune.export import schema
from autotune.runtime import ConfigError, parse_config
from autotune.runtime.config import config_dict
from autotune.runtime.weights import random_weights
from autotune.search.compose import input_ranges
from tests.conftest import TINY
from tests.runtime.helpers import F32_GEMM, STATIC_GEMM, choices, make_config

STATIC_KINDS = ("qkv_proj", "attn_out", "ffn_up", "ffn_down")


def _static_config(ranges: dict | None, kinds: tuple[str, ...] = STATIC_KINDS) -> dict:
    per_kind = choices(F32_GEMM, "float32") | {k: choices(STATIC_GEMM, "float32")[k]
                                                for k in kinds}
    ops = make_config(TINY, per_kind, [(2, 16)])["ops"]
    return config_dict("tiny", TINY, "cpu", 0.05, ops, calibration=ranges)


def _batches(n: int = 4) -> list[dict[str, torch.Tensor]]:
    mix = parse_lengths("fixed")
    return [make_batch(2, 16, TINY.vocab_size, mix, seed=i, token_types=TINY.n_token_types)
            for i in range(n)]


def test_ranges_round_trip_through_schema_file_and_load(tiny_model_dir: Path) -> None:
    state = random_weights(TINY)
    ranges = input_ranges(TINY, state, _batches())
    assert set(ranges) == set(STATIC_KINDS)
    assert all(len(r) == TINY.num_hidden_layers for r in ranges.values())
    assert ranges["ffn_down"][0]["x_min"].shape == (TINY.intermediate_size,)
    cfg = _static_config(ranges, kinds=("ffn_up", "ffn_down"))
    jsonschema.validate(cfg, schema())
    assert set(cfg["calibration"]) == {"ffn_up", "ffn_down"}  # only the kinds that use them
    path = tiny_model_dir / "tuned.json"
    path.write_text(json.dumps(cfg))
    from autotune.runtime.model import TunedBert

    tuned = TunedBert(TINY, state, parse_config(path))
    reference = TunedBert(TINY, state, None)
    for batch in _batches(2):  # the calibration data's kind, new draws of it
        got, want = tuned(**batch).last_hidden_state, reference(**batch).last_hidden_state
        err = float((got - want).norm() / want.norm())
        assert 1e-4 < err < 0.05, err  # int8 ran (not float32), within int8's error
    with pytest.warns(UserWarning, match="random weights"):
        loaded = autotune.load(str(tiny_model_dir), path)
    assert torch.isfinite(loaded(**_batches(1)[0]).last_hidden_state).all()


def test_a_static_choice_without_its_ranges_is_a_config_error() -> None:
    ranges = input_ranges(TINY, random_weights(TINY), _batches(1))
    cfg = _static_config(None)
    with pytest.raises(ConfigError, match=r"calibration\.\w+.*none"):
        parse_config(cfg)
    good = _static_config(ranges)
    parse_config(good)
    short = copy.deepcopy(good)
    short["calibration"]["ffn_up"].pop()
    with pytest.raises(ConfigError, match=r"calibration\.ffn_up: 1 ranges"):
        parse_config(short)
    flipped = copy.deepcopy(good)
    r = flipped["calibration"]["attn_out"][0]
    r["min"], r["max"] = r["max"], r["min"]
    with pytest.raises(ConfigError, match=r"calibration\.attn_out\[0\]"):
        parse_config(flipped)
    narrow = copy.deepcopy(good)
    for r in narrow["calibration"]["ffn_down"]:
        r["min"], r["max"] = r["min"][:5], r["max"][:5]
    from autotune.runtime.model import TunedBert

    with pytest.raises(ConfigError, match="ranges of 5 channels"):
        TunedBert(TINY, random_weights(TINY), parse_config(narrow))
