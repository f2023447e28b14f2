"""benchmarks/gpu_check.py is meant for a GPU machine; its --smoke mode runs every phase on a
tiny model (without a GPU: Triton interpreted) so that the script is known to work before a
GPU runs it in full."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                        "--budget-s", "45", "--output", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    ops = {"embeddings", "qkv_proj", "attention", "attn_out", "ffn_up", "ffn_down", "pooler"}
    assert {row["op"] for row in result["correctness"]} == ops
    assert all(row["ok"] for row in result["correctness"])
    assert {row["op"] for row in result["per_op"]} == ops
    assert all(row["triton_ms"] > 0 and row["torch_ms"] > 0 for row in result["per_op"])
    e2e = result["end_to_end"]
    assert e2e and all(row["tuned_ms"] > 0 and row["eager_ms"] > 0 for row in e2e)
    assert "1. correctness" in r.stdout and "4. end to end" in r.stdout
