"""Does the rows hint of a oneDNN weight pack matter? The runtime packs each weight once per
dtype and shares the pack across buckets (``kernels/cpu/gemm.py``): this checks, on the
machine at hand, that a pack made for one row count gives the same outputs and speed at
others.

    python benchmarks/pack_hint_cpu.py [--threads 2]

Per dtype and GEMM shape, a pack per hint; each timed interleaved at each row count (medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

HINTS = (32, 128, 1024, 4096)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    torch.set_num_threads(ap.parse_args().threads)
    torch.manual_seed(0)
    print(f"{'dtype':9} {'N x K':>10} {'rows':>5} {'outputs':>9}  "
          + " ".join(f"{'hint ' + str(h):>10}" for h in HINTS) + "   (median ms)")
    for dtype in (torch.bfloat16, torch.float32):
        for n, k in ((3072, 768), (768, 3072)):
            w = (torch.randn(n, k) * 0.02).to(dtype)
            b = torch.zeros(n, dtype=dtype)
            packs = {h: torch.ops.mkldnn._reorder_linear_weight(w, h) for h in HINTS}
            for m in (32, 1024, 4096):
                x = torch.randn(m, k).to(dtype)

                def run(h: int, x: torch.Tensor = x, b: torch.Tensor = b,
                        packs: dict[int, torch.Tensor] = packs) -> torch.Tensor:
                    return torch.ops.mkldnn._linear_pointwise(x, packs[h], b, "none", [], "")

                first = run(HINTS[0])
                same = all(torch.equal(run(h), first) for h in HINTS)
                times: dict[int, list[float]] = {h: [] for h in HINTS}
                for _ in range(15 if m < 4096 else 5):
                    for h in HINTS:
                        t = time.perf_counter()
                        run(h)
                        times[h].append(time.perf_counter() - t)
                print(f"{str(dtype)[6:]:9} {f'{n}x{k}':>10} {m:5} "
                      f"{'same' if same else 'DIFFER':>9}  "
                      + " ".join(f"{statistics.median(v) * 1e3:10.2f}" for v in times.values()))


if __name__ == "__main__":
    main()
