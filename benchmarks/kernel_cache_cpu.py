"""Resident memory and speed of a tuned model on traffic of many distinct shapes, with
oneDNN's kernel caches at torch's defaults and bounded.

oneDNN compiles and caches a kernel per GEMM shape (its primitive cache, and ideep's LRU cache
above it: 1,024 entries each by default). A server that sees batches of many sizes and lengths
keeps adding entries; ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and ``LRU_CACHE_CAPACITY`` bound
them, read when torch runs its first oneDNN kernel (``autotune.runtime`` sets both to
``KERNEL_CACHE_ENTRIES`` unless the environment does; 1,024 is torch's own default). Each
setting runs in its own process, the settings alternate, and each process runs the same
batches twice (the second pass timed).

    python benchmarks/kernel_cache_cpu.py --config tuned/bert-base-uncased-cpu.json \\
        [--model bert-base-uncased] [--batches 150] [--caps 1024,256,128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def child(args: argparse.Namespace) -> None:
    import torch

    from autotune.bench.lengths import make_batch, parse_lengths
    from autotune.bench.memory import rss_mb
    from autotune.runtime import load

    base = rss_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights notice
        model = load(args.model, args.config)
    loaded = rss_mb()
    gen = torch.Generator().manual_seed(args.seed)
    top = min(args.max_seq, model.arch.max_seq)
    shapes = [(int(torch.randint(1, args.max_batch + 1, (1,), generator=gen)),
               int(torch.randint(8, top + 1, (1,), generator=gen))) for _ in range(args.batches)]
    mix = parse_lengths("fixed")
    batches = [make_batch(b, s, model.arch.vocab_size, mix) for b, s in shapes]
    times = []
    with torch.inference_mode():
        for batch in batches:
            model(**batch)
        first = rss_mb()
        for batch in batches:
            t = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - t)
    assert base is not None and loaded is not None and first is not None
    print(json.dumps({"loaded": loaded - base, "after": first - base,
                      "distinct": len(set(shapes)), "total_s": sum(times),
                      "median_ms": statistics.median(times) * 1e3}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="tuned/bert-base-uncased-cpu.json")
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--batches", type=int, default=150)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-seq", type=int, default=256)
    ap.add_argument("--caps", default="1024,256,128",
                    help="cache entries per setting (1024: torch's default)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    caps = [c.strip() for c in args.caps.split(",") if c.strip()]
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in caps}
    for _ in range(args.repeats):
        for cap in caps:
            env = os.environ | dict.fromkeys(CACHE_VARS, cap)
            out = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env,
                                 check=True, capture_output=True, text=True).stdout
            runs[cap].append(json.loads(out.strip().splitlines()[-1]))
    distinct = runs[caps[0]][0]["distinct"]
    print(f"{args.batches} batches, {distinct:.0f} distinct shapes (batch 1-{args.max_batch}, "
          f"length 8-{args.max_seq}), second pass timed; medians of {args.repeats} processes")
    print(f"{'cache entries':>14} {'MB loaded':>10} {'MB after':>9} {'growth MB':>10} "
          f"{'pass s':>7} {'÷ first':>8}")
    ref = statistics.median(r["total_s"] for r in runs[caps[0]])
    for cap in caps:
        rs = runs[cap]
        loaded = statistics.median(r["loaded"] for r in rs)
        after = statistics.median(r["after"] for r in rs)
        total = statistics.median(r["total_s"] for r in rs)
        print(f"{cap:>14} {loaded:10.0f} {after:9.0f} {after - loaded:10.0f} {total:7.2f} "
              f"{total / ref:8.3f}")


if __name__ == "__main__":
    main()
