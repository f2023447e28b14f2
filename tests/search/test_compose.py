"""The model-level study: runs after the per-op studies, is exported, steps back precision."""

from __future__ import annotations

import io
import json
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from autotune.cli import run_search
from autotune.models.bert import Bucket
from autotune.search.compose import Composer, Composition
from autotune.search.driver import SearchOptions
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.storage.results import precision_of


def test_search_composes_and_exports_the_composition(tmp_path: Path,
                                                     tiny_model_dir: Path) -> None:
    opts = SearchOptions(model=str(tiny_model_dir), batch_sizes=(2,), seq_lens=(16,), trials=3,
                         time_per_trial=0.01, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                         spaces_dir=DEFAULT_SPACES_DIR, compose_trials=3, lengths="4..16")
    buf = io.StringIO()
    assert run_search(opts, tmp_path / "tuned.json", Console(file=buf, width=200)) == 0
    storage = optuna.storages.RDBStorage(opts.storage)
    (compose,) = [s for s in storage.get_all_studies() if s.user_attrs.get("compose")]
    final = compose.user_attrs["final"]
    assert final["rel_error"] <= 0.02 and final["ms"] > 0
    config = json.loads((tmp_path / "tuned.json").read_text())
    assert config["layout"] == {"pad_to_multiple": final["pad_to_multiple"],
                                "varlen": final["varlen"], "threads": final["threads"]}
    assert "model-level study" in buf.getvalue()


B = Bucket(1, 8)
INT8 = {"variant": "int8_dynamic", "qengine": "x86"}
BF16 = {"variant": "dense", "precision": "bfloat16"}
FP32 = {"variant": "dense", "precision": "float32"}


def _entry(params: dict, err: float) -> dict:
    return {"params": params, "cand_ms": 1.0, "cand_iqr_ms": 0.1, "ref_ms": 2.0,
            "ref_iqr_ms": 0.1, "rel_error": err}


def _composer(ranked: dict[str, list[dict]], device: str = "cpu") -> Composer:
    """A composer over hand-made ranked configs (one bucket), without a model behind it."""
    composer = Composer.__new__(Composer)
    composer.device = device
    composer.buckets = [B]
    composer.candidates = {kind: {B: entries} for kind, entries in ranked.items()}
    return composer


def test_step_back_moves_the_least_precise_op_up() -> None:
    composer = _composer({
        "ffn_up": [_entry(INT8, 0.015), _entry(BF16, 0.003), _entry(FP32, 0.0)],
        "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
    })
    comp = Composition({"ffn_up": 0, "attention": 0}, 1, False)
    seen = []
    for _ in range(3):
        comp = composer.step_back(comp)
        seen.append({k: precision_of(composer.entry(k, B, i)["params"])
                     for k, i in comp.choice.items()})
    assert seen == [{"ffn_up": "bfloat16", "attention": "bfloat16"},
                    {"ffn_up": "bfloat16", "attention": "float32"},
                    {"ffn_up": "float32", "attention": "float32"}]
    with pytest.raises(RuntimeError, match="already runs in float32"):
        composer.step_back(comp)


def test_seeds_include_one_precision_everywhere() -> None:
    import os

    from autotune.search.compose import seed_compositions

    composer = _composer({
        "ffn_up": [_entry(INT8, 0.015), _entry(FP32, 0.0), _entry(BF16, 0.003)],
        "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
    })
    seeds = seed_compositions(composer)
    assert seeds[0]["choice.ffn_up"] == 0 and seeds[0]["layout.threads"] == 0
    all_bf16 = {"choice.ffn_up": 2, "choice.attention": 0, "layout.pad_to_multiple": 1,
                "layout.varlen": False, "layout.threads": os.cpu_count() or 1}
    assert all_bf16 in seeds
    assert len(seeds) == len({json.dumps(s, sort_keys=True) for s in seeds})  # no repeats


def test_cuda_compositions_choose_cuda_graphs_not_threads() -> None:
    from autotune.search.compose import _comp_of, seed_compositions

    composer = _composer({"ffn_up": [_entry(BF16, 0.003), _entry(FP32, 0.0)]}, "cuda")
    seeds = seed_compositions(composer)
    assert all("layout.threads" not in s for s in seeds)
    assert seeds[0]["layout.cuda_graphs"] == 0  # the per-op winners as they are
    assert {s["layout.cuda_graphs"] for s in seeds} == {0, B.batch}
    comp = _comp_of({"choice.ffn_up": 0, "layout.pad_to_multiple": 1, "layout.varlen": True,
                     "layout.cuda_graphs": B.batch}, composer)
    assert comp.cuda_graphs == 0  # padding-free shapes cannot be captured
    assert _comp_of({**seeds[-1]}, composer).cuda_graphs == B.batch
