from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter. Set before triton is first
# imported (it reads the variable when a kernel is defined); worker processes inherit it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from autotune.models.bert import BertArch, Bucket

TINY = BertArch(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)


@pytest.fixture
def tiny_arch() -> BertArch:
    return TINY


def write_tiny_model(d: Path) -> Path:
    """A local model directory holding only a tiny BERT config.json."""
    d.mkdir(parents=True)
    cfg = {"model_type": "bert", "architectures": ["BertModel"], **TINY.to_dict()}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "tiny-bert")


#: where Triton kernels and CUDA variants run in tests: the GPU, or the CPU interpreter
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def op_case(kind: str, arch: BertArch, bucket: Bucket, seed: int = 0, device: str = "cpu",
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Any]:
    """Random weights and inputs of one op instance on ``device``, and the float32 reference
    output computed there. Kinds with a static int8 variant also get their input's range,
    from another draw of 4x64 inputs (the calibration data)."""
    from autotune.measure.run import CALIBRATION_DRAW
    from autotune.ops import op_spec
    from autotune.ops.common import calibrated_inputs, input_range

    spec = op_spec(kind)
    gen = torch.Generator().manual_seed(seed)
    weights = {k: v.to(device) for k, v in spec.make_weights(arch, gen).items()}
    inputs = {k: v.to(device) for k, v in spec.make_inputs(arch, bucket, gen).items()}
    calibrated = calibrated_inputs().get(kind)
    if calibrated is not None:
        calibration = spec.make_inputs(arch, CALIBRATION_DRAW, gen)[calibrated]
        weights |= {k: v.to(device) for k, v in input_range(calibration).items()}
    return weights, inputs, spec.reference(weights, inputs, arch)
