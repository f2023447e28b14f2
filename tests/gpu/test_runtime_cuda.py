"""CUDA timing, the measurement worker on a GPU, and CUDA graphs in the runtime."""

from __future__ import annotations

import torch

from autotune.measure.result import MeasureTask
from autotune.measure.timing import time_many_cuda
from autotune.measure.worker import MeasureWorker
from autotune.runtime import parse_config
from autotune.runtime.model import TunedBert
from autotune.runtime.weights import random_weights
from tests.conftest import TINY
from tests.runtime.helpers import triton_config


def test_cuda_timing_orders_work_by_size() -> None:
    a, b = torch.randn(256, 256, device="cuda"), torch.randn(4096, 4096, device="cuda")
    stats = time_many_cuda({"small": [lambda: a @ a], "big": [lambda: b @ b]}, budget_s=0.5)
    assert 0 < stats["small"].median_ms < stats["big"].median_ms
    assert stats["small"].n >= 5


def test_worker_measures_a_triton_variant_on_the_gpu() -> None:
    params = {"variant": "triton", "precision": "float16", "block_m": 32, "block_n": 64,
              "block_k": 32, "group_m": 4, "num_warps": 4, "num_stages": 2, "gelu": "erf"}
    task = MeasureTask(TINY.to_dict(), "ffn_up", 2, 16, "triton", params, device="cuda",
                       budget_s=0.2)
    with MeasureWorker() as w:
        r = w.run(task, timeout=300)
    assert r.status == "ok", r.reason
    assert r.rel_error is not None and r.rel_error < 5e-3
    assert r.cand_ms is not None and r.cand_ms > 0


def test_cuda_graphs_replay_the_same_forward() -> None:
    state = random_weights(TINY)
    eager = TunedBert(TINY, state, parse_config(triton_config(0)), "cuda")
    graphed = TunedBert(TINY, state, parse_config(triton_config(2)), "cuda")
    reference = TunedBert(TINY, state, None, "cuda")
    for seed in range(3):  # new inputs each time: the graph must read them, not replay old ones
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, TINY.vocab_size, (2, 16), generator=gen).cuda()
        mask = torch.ones_like(ids)
        mask[1, 9 + seed:] = 0
        a, b = eager(ids, mask), graphed(ids, mask)
        assert torch.allclose(a.last_hidden_state, b.last_hidden_state, atol=1e-3)
        assert torch.allclose(a.pooler_output, b.pooler_output, atol=1e-3)
        r = reference(ids, mask).last_hidden_state
        assert float((b.last_hidden_state - r).norm() / r.norm()) < 2e-2
    assert len(graphed._graphs) == 1  # one shape, captured once
    graphed(ids[:1], mask[:1])
    assert len(graphed._graphs) == 2
