"""Are OpenVINO's GEMMs faster than torch's, or is its lead elsewhere?

    python benchmarks/gemm_chain_cpu.py [--rows 16,128] [--layers 12] [--threads 2]

The FFN GEMMs of a BERT-base encoder alone (per layer 768 -> 3072 -> 768, no bias, no
activation; every weight different, so they stream from memory as in the model), in
bfloat16: torch's oneDNN-packed linear (what the tuned model runs) against the same chain
compiled by OpenVINO (bf16 inference precision, latency hint, same threads). Interleaved,
medians; "GB/s" is the weights' bytes over the time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from autotune.measure.timing import time_many


def chains(rows: int, layers: int, threads: int) -> dict[str, Callable[[], object]]:
    import openvino as ov
    import openvino.opset13 as ops

    gen = np.random.default_rng(0)
    weights = [(gen.standard_normal((3072, 768), dtype=np.float32) * 0.02,
                gen.standard_normal((768, 3072), dtype=np.float32) * 0.02)
               for _ in range(layers)]
    x = ops.parameter([rows, 768], np.float32)
    h = x
    for up, down in weights:
        h = ops.matmul(ops.matmul(h, ops.constant(up), False, True), ops.constant(down),
                       False, True)
    compiled = ov.Core().compile_model(ov.Model([h], [x]), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "bf16"})
    request = compiled.create_infer_request()
    x_np = gen.standard_normal((rows, 768), dtype=np.float32)
    packed = [tuple(torch.ops.mkldnn._reorder_linear_weight(torch.from_numpy(w).bfloat16(), rows)
                    for w in pair) for pair in weights]
    x_t = torch.from_numpy(x_np).bfloat16()

    def torch_chain() -> torch.Tensor:
        h = x_t
        for pair in packed:
            for w in pair:
                h = torch.ops.mkldnn._linear_pointwise(h, w, None, "none", [], "")
        return h

    return {"torch oneDNN-packed": torch_chain, "openvino": lambda: request.infer([x_np])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="16,128")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mb = args.layers * 2 * 3072 * 768 * 2 / 1e6
    print(f"{args.layers} layers of FFN GEMMs in bfloat16 ({mb:.0f} MB of weights), "
          f"{args.threads} threads")
    print(f"{'rows':>5} {'contender':>20} {'median ms':>10} {'GB/s':>6}")
    for rows in (int(r) for r in args.rows.split(",")):
        stats = time_many({name: ([fn], 0) for name, fn in
                           chains(rows, args.layers, args.threads).items()},
                          budget_s=args.seconds, min_rounds=20, max_rounds=1000, settle=1)
        for name, s in stats.items():
            print(f"{rows:5} {name:>20} {s.median_ms:10.2f} {mb / s.median_ms:6.1f}")


if __name__ == "__main__":
    main()
