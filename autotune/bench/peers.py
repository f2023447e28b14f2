"""The contenders of a benchmark, each built from the same HF weights.

A peer is a function of one batch returning (last_hidden_state, pooled) in float32; pooled
is the pooler's output, or the first token's hidden state for families without a pooler.
"""

from __future__ import annotations

import copy
import inspect
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

Batch = dict[str, torch.Tensor]
RunFn = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Peer:
    name: str
    run: RunFn
    note: str = ""
    keep: list[object] = field(default_factory=list)  # what holds its weights alive
    tier: str | None = None  # the precision it computes in, where not the one its name says


class PeerUnavailable(Exception):
    """The peer cannot run here (e.g. the optional ``peers`` extra is not installed)."""


def pooled(out: Any) -> torch.Tensor:
    """The pooler's output, or (DistilBERT, ELECTRA: no pooler) the first token's state."""
    p = getattr(out, "pooler_output", None)
    return out.last_hidden_state[:, 0] if p is None else p


def _hf_run(model: Callable[..., Any]) -> RunFn:
    def run(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = model(**batch)
        return out.last_hidden_state.float(), pooled(out).float()

    return run


def hf_model(base: torch.nn.Module, attn: str, dtype: torch.dtype = torch.float32,
             ) -> torch.nn.Module:
    m: Any = copy.deepcopy(base).to(dtype).eval()
    m.set_attn_implementation(attn)
    return m


def build_peer(name: str, base: torch.nn.Module, tmp: Path,
               calibration: Sequence[Batch] = ()) -> Peer:
    """``calibration``: batches for peers that calibrate static int8 scales."""
    if name == "eager":
        m = hf_model(base, "eager")
        return Peer(name, _hf_run(m), "HF BertModel, eager attention, float32", [m])
    if name in ("sdpa", "sdpa-bf16"):  # sdpa-bf16: the one-line model.to(torch.bfloat16)
        dtype = torch.bfloat16 if name == "sdpa-bf16" else torch.float32
        m = hf_model(base, "sdpa", dtype)
        return Peer(name, _hf_run(m), f"HF BertModel, SDPA attention, {dtype}", [m])
    if name in ("compile", "compile-bf16"):
        dtype = torch.bfloat16 if name == "compile-bf16" else torch.float32
        m = hf_model(base, "sdpa", dtype)
        compiled = torch.compile(m)
        return Peer(name, _hf_run(compiled), f"torch.compile (inductor) of HF SDPA, {dtype}",
                    [m, compiled])
    if name in ("onnxruntime", "onnxruntime-int8"):
        return _onnxruntime(name, base, tmp)
    if name in ("openvino", "openvino-bf16", "openvino-int8"):
        return _openvino(name, base, tmp, calibration)
    raise ValueError(f"unknown peer {name!r}")


def _onnxruntime(name: str, base: torch.nn.Module, tmp: Path) -> Peer:
    try:
        import onnxruntime as ort
        from onnxruntime.transformers import optimizer
    except ImportError:
        raise PeerUnavailable("onnxruntime is not installed (pip install 'autotune[peers]')"
                              ) from None
    cfg: Any = getattr(base, "config")  # noqa: B009  (a transformers PretrainedConfig)
    fused = tmp / "bert-opt.onnx"
    if not fused.exists():
        opt = optimizer.optimize_model(str(_onnx(base, tmp)), model_type="bert",
                                       num_heads=cfg.num_attention_heads,
                                       hidden_size=cfg.hidden_size)
        opt.save_model_to_file(str(fused))
    path, note = fused, "ONNX Runtime CPU, BERT fusions, float32"
    if name == "onnxruntime-int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = tmp / "bert-opt-int8.onnx"
        # Fused BERT nodes (com.microsoft domain) defeat shape inference: say what the
        # MatMul outputs are instead of letting the quantizer guess.
        quantize_dynamic(str(fused), str(path), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        note = "ONNX Runtime CPU, BERT fusions, dynamic int8"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's threads spin after each run by default, stealing the cores from whichever
    # contender runs next in the interleaved rounds; the tuned model's threads do not.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = torch.get_num_threads()  # the cores every contender gets
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {k: v.numpy() for k, v in batch.items()}
        hidden, pooled = sess.run(None, feeds)
        return torch.from_numpy(hidden).float(), torch.from_numpy(pooled).float()

    return Peer(name, run, note, [sess])


def _onnx(base: torch.nn.Module, tmp: Path) -> Path:
    """HF's eager base model as ONNX (opset 17), batch and sequence dynamic; written once.
    Its inputs are the model's own (DistilBERT takes no token_type_ids)."""
    raw = tmp / "bert.onnx"
    if not raw.exists():
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in inspect.signature(base.forward).parameters:
            names.append("token_type_ids")
        dummy = (torch.ones(2, 16, dtype=torch.long),) * len(names)
        axes = {0: "batch", 1: "seq"}
        torch.onnx.export(
            _Positional(hf_model(base, "eager"), names), dummy, str(raw), input_names=names,
            output_names=["last_hidden_state", "pooler_output"], opset_version=17,
            dynamic_axes={k: axes for k in (*names, "last_hidden_state")}
            | {"pooler_output": {0: "b"}}, dynamo=False)
    return raw


def _openvino(name: str, base: torch.nn.Module, tmp: Path, calibration: Sequence[Batch],
              ) -> Peer:
    """OpenVINO's CPU plugin on the exported graph, as a user deploys it: latency hint, the
    same thread count as every contender, float32 or bfloat16 inference precision (bf16
    runs as f32 on a CPU without bf16 instructions, which OpenVINO decides itself), or static
    int8 from NNCF's post-training quantization (transformer preset, scales calibrated on
    ``calibration``)."""
    try:
        import openvino as ov
    except ImportError:
        raise PeerUnavailable("openvino is not installed (pip install 'autotune[peers]')"
                              ) from None
    model = ov.convert_model(str(_onnx(base, tmp)))
    precision = {"openvino-bf16": "bf16"}.get(name, "f32")
    note = f"OpenVINO CPU, {precision} inference precision, latency hint"
    if name == "openvino-int8":
        model = _nncf_int8(model, calibration)
        note = (f"OpenVINO CPU, NNCF static int8 ({len(calibration)} calibration batches), "
                "latency hint")
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    tier = None
    if ran != precision and name != "openvino-int8":
        note = f"OpenVINO CPU, {precision} asked but {ran} run, latency hint"
        tier = {"f32": "float32", "bf16": "bfloat16"}.get(ran)
    elif ran == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        # a Xeon exposing neither AMX nor AVX-512 BF16: OpenVINO 2026.4 still runs bf16,
        # 26x slower than its f32 at 1x16
        note += " (this CPU has no bf16 instructions: OpenVINO emulates them)"

    def run(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = request.infer({k: v.numpy() for k, v in batch.items()})
        hidden, pooled = (out[compiled.output(i)] for i in range(2))
        return torch.from_numpy(hidden.copy()).float(), torch.from_numpy(pooled.copy()).float()

    return Peer(name, run, note, [compiled, request], tier)


def _nncf_int8(model: Any, calibration: Sequence[Batch]) -> Any:
    try:
        import nncf
    except ImportError:
        raise PeerUnavailable("nncf is not installed (pip install 'autotune[peers]')") from None
    if not calibration:
        raise ValueError("openvino-int8 needs calibration batches")
    data = nncf.Dataset([{k: v.numpy() for k, v in b.items()} for b in calibration])
    return nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(calibration))


class _Positional(torch.nn.Module):
    """A base model with its inputs as positional arguments, for the ONNX exporter."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**dict(zip(self.names, inputs, strict=True)))
        return out.last_hidden_state, pooled(out)


def temp_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="autotune-bench-")
