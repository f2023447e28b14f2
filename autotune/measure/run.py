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
from pathlib import Path

import torch

from autotune.measure.result import MeasureResult, MeasureTask, Status
from autotune.measure.timing import time_interleaved, time_many_cuda
from autotune.models.bert import BertArch, Bucket
from autotune.ops import cast_inputs, get_variant, op_spec, rel_error
from autotune.ops.common import calibrated_inputs, input_range
from autotune.ops.registry import Output, Tensors


@dataclass
class Fixture:
    weights: list[Tensors]
    timing_inputs: Tensors
    check_inputs: Tensors
    check_ref: Output
    #: (weights, inputs, float32 output) of the real checkpoint's layers on real text
    real_checks: list[tuple[Tensors, Tensors, Output]]


#: Layers of a real checkpoint the gate checks (evenly spaced, first and last included):
#: the outlier channels that break int8 differ between layers and grow with depth.
REAL_LAYERS = 4


#: The synthetic inputs static int8's ranges are calibrated on, whatever the bucket: a 1x16
#: bucket's own 16 rows would give its ranges no margin over the check's draw.
CALIBRATION_DRAW = Bucket(4, 64)

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
    key = (arch, task.kind, bucket, task.copies, task.seed, task.device, task.real_model,
           task.real_texts)
    if key not in _cache:
        _cache.clear()  # one instance at a time: weight copies can be large
        spec = op_spec(task.kind)
        dev = execution_device(task.device)
        weights = [_to(spec.make_weights(arch, torch.Generator().manual_seed(task.seed + i)), dev)
                   for i in range(task.copies)]
        gen = torch.Generator().manual_seed(task.seed + 10_000)
        timing_inputs = _to(spec.make_inputs(arch, bucket, gen), dev)
        check_inputs = _to(spec.make_inputs(arch, bucket, gen), dev)  # fresh values for the gate
        calibrated = calibrated_inputs().get(task.kind)
        if calibrated is not None:  # static int8's range, from a third draw (256 rows)
            draw = spec.make_inputs(arch, CALIBRATION_DRAW, gen)[calibrated]
            ranges = _to(input_range(draw), dev)
            weights = [w | ranges for w in weights]
        with torch.no_grad():
            ref = spec.reference(weights[0], check_inputs, arch)
        real = _real_checks(task, arch, bucket, dev) if task.real_model else []
        _cache[key] = Fixture(weights, timing_inputs, check_inputs, ref, real)
    return _cache[key]


def _real_checks(task: MeasureTask, arch: BertArch, bucket: Bucket, dev: str,
                 ) -> list[tuple[Tensors, Tensors, Output]]:
    """The op's inputs in ``REAL_LAYERS`` layers of the checkpoint's float32 forward on one
    batch of the real texts packed to the bucket's exact shape, with those layers' weights
    and the reference's output on them. Empty for op kinds outside the encoder layers."""
    from autotune.bench.lengths import packed_batches
    from autotune.models.kinds import KINDS
    from autotune.runtime.model import TunedBert
    from autotune.runtime.weights import read_checkpoint

    if not KINDS[task.kind].per_layer or task.real_model is None:
        return []
    state = read_checkpoint(Path(task.real_model))
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {task.real_model}")
    texts = [torch.tensor(t, dtype=torch.long) for t in task.real_texts]
    batch = packed_batches(bucket.batch, bucket.seq, texts, range(len(texts)), 1,
                           arch.n_token_types)[0]
    n = arch.num_hidden_layers
    layers = sorted({round(i * (n - 1) / max(1, REAL_LAYERS - 1)) for i in range(REAL_LAYERS)})
    model = TunedBert(arch, state, None)  # no config: every op its float32 reference
    seen: dict[int, Tensors] = {}

    def capture(kind: str, layer: int, inputs: Tensors) -> None:
        if kind == task.kind and layer in layers:
            seen[layer] = {k: v.clone() for k, v in inputs.items()}

    model.observe(capture)
    model(**batch)
    spec = op_spec(task.kind)
    checks = []
    for layer in layers:
        w, inputs = _to(model.weights[task.kind][layer], dev), _to(seen[layer], dev)
        calibrated = calibrated_inputs().get(task.kind)
        if calibrated is not None:  # static int8's range: this text's
            w |= input_range(inputs[calibrated])
        checks.append((w, inputs, spec.reference(w, inputs, arch)))
    return checks


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
            real = [rel_error(variant.build(w, task.params, arch, bucket)(
                cast_inputs(inputs, dtype)), ref) for w, inputs, ref in fx.real_checks]
    except Exception as e:
        return _failed(f"run failed: {_describe(e)}")
    extra = {"rel_error_synthetic": err, "rel_error_real": max(real)} if real else {}
    err = max([err, *real])
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
    return MeasureResult(Status.OK, "", err, c.median_ms, c.iqr_ms, r.median_ms, r.iqr_ms, c.n,
                         extra)


def _failed(reason: str, err: float | None = None) -> MeasureResult:
    """An error result; one that left the CUDA context broken asks for a new worker."""
    sticky = any(s in reason for s in STICKY_CUDA_ERRORS)
    return MeasureResult(Status.ERROR, reason, rel_error=err,
                         extra={"restart_worker": True} if sticky else {})
