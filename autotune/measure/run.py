"""One measurement, run inside the worker: build, check against the reference, time.

Weights and inputs are kept between tasks of the same operator instance (the search sends
many configs of one instance in a row), so a trial pays only for building its variant.
On CUDA everything lives on the GPU and is timed with CUDA events; with no GPU but
``TRITON_INTERPRET=1``, cuda tasks run on CPU tensors (Triton interpreted) so that the whole
path can be exercised without one: such timings say nothing about a GPU.
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import dataclass
from functools import partial

import torch

from autotune.measure.result import MeasureResult, MeasureTask, Status
from autotune.measure.timing import time_interleaved, time_many_cuda
from autotune.models.bert import BertArch, Bucket
from autotune.ops import cast_inputs, get_variant, op_spec, rel_error
from autotune.ops.registry import Output, Tensors


@dataclass
class Fixture:
    weights: list[Tensors]
    timing_inputs: Tensors
    check_inputs: Tensors
    check_ref: Output


_cache: dict[tuple[object, ...], Fixture] = {}


#: CUDA errors after which the process's CUDA context is unusable: the worker is replaced
STICKY_CUDA_ERRORS = ("illegal memory access", "misaligned address", "unspecified launch failure",
                      "device-side assert", "an illegal instruction")


def execution_device(device: str) -> str:
    """Where a task for ``device`` runs: the GPU, or CPU tensors under Triton's interpreter."""
    if device != "cuda" or torch.cuda.is_available():
        return device
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")


def _to(tensors: Tensors, device: str) -> Tensors:
    return {k: v.to(device) for k, v in tensors.items()}


def _fixture(task: MeasureTask, arch: BertArch, bucket: Bucket) -> Fixture:
    key = (arch, task.kind, bucket, task.copies, task.seed, task.device)
    if key not in _cache:
        _cache.clear()  # one instance at a time: weight copies can be large
        spec = op_spec(task.kind)
        dev = execution_device(task.device)
        weights = [_to(spec.make_weights(arch, torch.Generator().manual_seed(task.seed + i)), dev)
                   for i in range(task.copies)]
        gen = torch.Generator().manual_seed(task.seed + 10_000)
        timing_inputs = _to(spec.make_inputs(arch, bucket, gen), dev)
        check_inputs = _to(spec.make_inputs(arch, bucket, gen), dev)  # fresh values for the gate
        with torch.no_grad():
            ref = spec.reference(weights[0], check_inputs, arch)
        _cache[key] = Fixture(weights, timing_inputs, check_inputs, ref)
    return _cache[key]


def _describe(e: BaseException) -> str:
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300] + where


def measure(task: MeasureTask) -> MeasureResult:
    """Build the variant on every weight copy, gate it on fresh inputs, then time it
    interleaved with the float32 reference. Never raises."""
    arch, bucket = BertArch(**task.arch), Bucket(task.batch, task.seq)
    try:
        variant = get_variant(task.kind, task.device, task.variant)
        fx = _fixture(task, arch, bucket)
        dtype = variant.input_dtype(task.params)
        with torch.no_grad():
            fns = [variant.build(w, task.params, arch, bucket) for w in fx.weights]
    except Exception as e:
        return _failed(f"build failed: {_describe(e)}")
    try:
        with torch.no_grad():
            out = fns[0](cast_inputs(fx.check_inputs, dtype))
            err = rel_error(out, fx.check_ref)
    except Exception as e:
        return _failed(f"run failed: {_describe(e)}")
    if not math.isfinite(err):
        return MeasureResult(Status.WRONG, "non-finite output", rel_error=None)
    spec = op_spec(task.kind)
    cand_inputs = cast_inputs(fx.timing_inputs, dtype)
    cand = [partial(fn, cand_inputs) for fn in fns]
    ref = [partial(spec.reference, w, fx.timing_inputs, arch) for w in fx.weights]
    try:
        with torch.no_grad():
            if execution_device(task.device) == "cuda":
                t = time_many_cuda({"cand": cand, "ref": ref}, task.budget_s, task.min_rounds,
                                   task.max_rounds)
                c, r = t["cand"], t["ref"]
            else:
                c, r = time_interleaved(cand, ref, task.budget_s, task.min_rounds,
                                        task.max_rounds,
                                        cand_threads=int(task.params.get("threads", 0)))
    except Exception as e:
        return _failed(f"timing failed: {_describe(e)}", err)
    return MeasureResult(Status.OK, "", err, c.median_ms, c.iqr_ms, r.median_ms, r.iqr_ms, c.n)


def _failed(reason: str, err: float | None = None) -> MeasureResult:
    """An error result; one that left the CUDA context broken asks for a new worker."""
    sticky = any(s in reason for s in STICKY_CUDA_ERRORS)
    return MeasureResult(Status.ERROR, reason, rel_error=err,
                         extra={"restart_worker": True} if sticky else {})
