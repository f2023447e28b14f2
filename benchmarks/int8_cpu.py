"""Which int8 scheme would pay on this CPU, in speed and in accuracy on real activations.

    python benchmarks/int8_cpu.py [--rows 16,128,1024] [--threads 2]
        [--model <checkpoint dir> --texts <one text per line>]

Speed: one BERT-base GEMM shape per row (Q/K/V fused, FFN up, FFN down), each contender
rotating among 12 weight copies as the model's layers would (no hot cache), median of
interleaved rounds:

- ``f32``: oneDNN-packed float32 (every contender's time is given over its),
- ``bf16``: oneDNN-packed bfloat16 (emulated, several times slower, where the CPU has no
  bfloat16 instructions),
- ``int8 dynamic``: ``quantized::linear_dynamic`` (fbgemm; the search's ``int8_dynamic``
  variant: activations quantized per call with one scale per tensor, float32 out),
- ``int8 per token``: the search's ``int8_token`` variant (``make_linear(...,
  precision="int8_token")``): one activation scale per token, ``torch._int_mm`` (int8 x int8
  -> int32) and the rescale in torch ops,
- ``int8 static``: the search's ``int8_static`` variant (``make_linear(...,
  precision="int8_static")``): the activation's range calibrated beforehand (here: this
  input's own), quantized to uint8 in one pass, oneDNN's ``qlinear_pointwise``, float32 out,
- ``int8 static, u8 in``: oneDNN's GEMM alone, fed an activation already in uint8 (the
  ceiling of a chain whose previous op writes uint8 from its epilogue).

Accuracy (with ``--model`` and ``--texts``): every GEMM input of the float32 model on the
texts, each GEMM's relative error under the activation schemes (weights int8 with a scale
per output channel in all): per tensor and per token simulated, static through the shipped
kernel with its range calibrated on the same inputs, without and with SmoothQuant (0.75).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from autotune.kernels.cpu import make_linear
from autotune.measure.timing import time_many

SHAPES = {"qkv_proj": (2304, 768), "ffn_up": (3072, 768), "ffn_down": (768, 3072)}
COPIES = 12


def _int8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def contenders(rows: int, n: int, k: int) -> dict[str, list[Callable[[], object]]]:
    x = torch.randn(rows, k)
    xb = x.bfloat16()
    x_scale = float(x.abs().max()) / 127  # "calibrated": this input's own range
    xq = torch.quantize_per_tensor(x, x_scale, 128, torch.quint8).int_repr()
    out: dict[str, list[Callable[[], object]]] = {
        "f32": [], "bf16": [], "int8 dynamic": [], "int8 per token": [], "int8 static": [],
        "int8 static, u8 in": []}
    torch.backends.quantized.engine = "x86"
    for _ in range(COPIES):
        w, b = torch.randn(n, k) * 0.05, torch.randn(n) * 0.01
        packed32 = torch.ops.mkldnn._reorder_linear_weight(w, rows)
        out["f32"].append(partial(torch.ops.mkldnn._linear_pointwise, x, packed32, b, "none",
                                  [], ""))
        packed = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), rows)
        out["bf16"].append(partial(torch.ops.mkldnn._linear_pointwise, xb, packed,
                                   b.bfloat16(), "none", [], ""))
        scales = (w.abs().amax(1) / 127).double()
        qw = torch.quantize_per_channel(w, scales, torch.zeros(n, dtype=torch.long), 0,
                                        torch.qint8)
        dyn = torch.ops.quantized.linear_prepack(qw, b)
        out["int8 dynamic"].append(partial(torch.ops.quantized.linear_dynamic, x, dyn, False))
        out["int8 per token"].append(partial(make_linear(w, b, precision="int8_token"), x))
        static = partial(torch.ops.onednn.qlinear_pointwise, x_scale=x_scale, x_zero_point=128,
                         qw=torch.ops.onednn.qlinear_prepack(qw.int_repr(), [rows, k]),
                         w_scale=scales.float(), w_zero_point=torch.zeros(n, dtype=torch.long),
                         bias=b, output_scale=1.0, output_zero_point=0,
                         output_dtype=torch.bfloat16, post_op_name="none", post_op_args=[],
                         post_op_algorithm="")
        out["int8 static"].append(partial(make_linear(
            w, b, precision="int8_static", x_min=x.amin(0), x_max=x.amax(0)), x))
        out["int8 static, u8 in"].append(partial(static, xq))
    return out


def speed_table(rows_list: list[int], seconds: float, threads: int) -> None:
    names = ["f32", "bf16", "int8 dynamic", "int8 per token", "int8 static",
             "int8 static, u8 in"]
    print(f"median µs per call over {COPIES} rotating weights, {threads} threads "
          "(÷ f32 in brackets: below 1 is faster)")
    print(f"{'op':9} {'rows':>5} " + " ".join(f"{n:>20}" for n in names))
    for rows in rows_list:
        for kind, (n, k) in SHAPES.items():
            stats = time_many({name: (fns, 0) for name, fns in contenders(rows, n, k).items()},
                              budget_s=seconds, min_rounds=10, max_rounds=2000)
            base = stats["f32"].median_ms
            cells = [f"{1e3 * stats[name].median_ms:.0f} ({stats[name].median_ms / base:.2f}×)"
                     for name in names]
            print(f"{kind:9} {rows:5} " + " ".join(f"{c:>20}" for c in cells))


def _fake_quant(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    return (x / scale).round().clamp(-127, 127) * scale


def accuracy_table(model_dir: Path, texts: Path, count: int = 64) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    lines = [t for t in texts.read_text(encoding="utf-8").splitlines() if t.strip()][:count]
    enc = tok(lines, padding=True, truncation=True, max_length=128, return_tensors="pt")
    keep = enc["attention_mask"].bool()
    inputs: dict[str, tuple[torch.Tensor, torch.nn.Linear]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(mod: torch.nn.Linear, args: tuple[torch.Tensor, ...], out: object) -> None:
            inputs[name] = (args[0][keep].detach(), mod)
        return record

    for i, layer in enumerate(model.encoder.layer):
        for name, mod in (("q", layer.attention.self.query),
                          ("attn_out", layer.attention.output.dense),
                          ("ffn_up", layer.intermediate.dense),
                          ("ffn_down", layer.output.dense)):
            mod.register_forward_hook(hook(f"{i}.{name}"))
    with torch.inference_mode():
        model(**enc)
    print(f"relative error of each GEMM, int8 weights (scale per output channel), on the "
          f"float32 model's inputs for {len(lines)} texts of {texts.name}")
    print(f"{'gemm':12} {'per tensor':>11} {'per token':>10} {'static':>8} {'static sq':>10}")
    for name, (x, mod) in inputs.items():
        w, b = mod.weight.detach(), mod.bias.detach()
        wq, ws = _int8_weight(w)
        w8 = wq.float() * ws[:, None]
        ref = torch.nn.functional.linear(x, w, b)

        def err(y: torch.Tensor, ref: torch.Tensor = ref) -> float:
            return float((y - ref).norm() / ref.norm())

        def fake(xq: torch.Tensor, w8: torch.Tensor = w8, b: torch.Tensor = b) -> torch.Tensor:
            return torch.nn.functional.linear(xq, w8, b)

        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale, zero = (hi - lo) / 255, round(-lo / ((hi - lo) / 255))
        per_tensor = ((x / scale).round() + zero).clamp(0, 255).sub(zero) * scale  # fbgemm's
        per_token = _fake_quant(x, x.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127)
        # the shipped kernel, its range calibrated on these very inputs; "sq": SmoothQuant 0.75
        static = [make_linear(w, b, precision="int8_static", x_min=x.amin(0), x_max=x.amax(0),
                              smooth=smooth)(x) for smooth in (0.0, 0.75)]
        print(f"{name:12} {err(fake(per_tensor)):11.4f} {err(fake(per_token)):10.4f} "
              f"{err(static[0]):8.4f} {err(static[1]):10.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="16,128,1024", help="GEMM rows (tokens per call)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per shape")
    ap.add_argument("--model", type=Path, help="checkpoint directory for the accuracy table")
    ap.add_argument("--texts", type=Path, help="text file, one input per line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # quantized tensor creation is deprecated but works
    speed_table([int(r) for r in args.rows.split(",")], args.seconds, args.threads)
    if args.model and args.texts:
        print()
        accuracy_table(args.model, args.texts)


if __name__ == "__main__":
    main()
