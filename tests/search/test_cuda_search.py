"""The whole cuda path: search over the shipped cuda spaces, export, and the runtime running
the result. Without a GPU, Triton kernels run interpreted and torch variants on CPU tensors."""

from __future__ import annotations

import dataclasses
import io
import shutil
import warnings
from pathlib import Path

import optuna
import torch
from rich.console import Console

from autotune.cli import run_search
from autotune.runtime import load, parse_config
from autotune.search.driver import SearchOptions
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.storage import open_optuna_storage
from tests.conftest import KERNEL_DEVICE


def _cpu_runnable_spaces(root: Path) -> Path:
    """The shipped cuda spaces minus torch.compile (minutes of C++ builds on a CPU) and SDPA
    (its flash, efficient and cuDNN backends exist on CUDA only), so that the same search runs
    with and without a GPU."""
    shutil.copytree(DEFAULT_SPACES_DIR / "cuda", root / "cuda")
    for f in (root / "cuda").glob("*.yaml"):
        text = f.read_text().replace(", compiled]", "]").replace("sdpa, ", "")
        f.write_text("\n".join(line for line in text.splitlines()
                               if "compile_mode" not in line and "variant: sdpa" not in line))
    return root


def test_cuda_search_exports_a_config_the_runtime_runs(tmp_path: Path,
                                                        tiny_model_dir: Path) -> None:
    opts = SearchOptions(
        model=str(tiny_model_dir), device="cuda", batch_sizes=(2,), seq_lens=(8,), trials=6,
        time_per_trial=0.01, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
        spaces_dir=_cpu_runnable_spaces(tmp_path / "spaces"), trial_timeout=120.0,
        max_rel_error=0.05)
    out = tmp_path / "tuned.json"
    buf = io.StringIO()
    assert run_search(opts, out, Console(file=buf, width=200)) == 0, buf.getvalue()
    storage = open_optuna_storage(opts.storage)
    measured: dict[str, set[str]] = {}
    for summary in storage.get_all_studies():
        for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
            measured.setdefault(str(t.user_attrs.get("status")), set()).add(
                str(t.params.get("variant")))
    # the Triton kernels of the three families ran, and were timed, as trials of the search
    assert {"triton", "triton_flash", "triton_fused"} <= measured["ok"], measured
    assert "error" not in measured, measured
    config = parse_config(out)
    assert config.device == "cuda" and set(config.ops) == {
        "embeddings", "qkv_proj", "attention", "attn_out", "ffn_up", "ffn_down", "pooler"}

    # The exported ops (not the float32 fallback: no warning) against the reference model.
    config = dataclasses.replace(config, pad_to_multiple=1, varlen=False)
    tuned = load(str(tiny_model_dir), config, device=KERNEL_DEVICE)
    ref = load(str(tiny_model_dir), device=KERNEL_DEVICE)
    ids = torch.randint(0, 100, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids, mask = ids.to(KERNEL_DEVICE), mask.to(KERNEL_DEVICE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tuned(ids, mask)
    assert len(tuned._built) == 1 + 5 * 2 + 1  # embeddings, 5 kinds × 2 layers, pooler
    want = ref(ids, mask)
    keep = mask.bool()
    err = float((got.last_hidden_state - want.last_hidden_state)[keep].norm()
                / want.last_hidden_state[keep].norm())
    assert err <= 0.05
