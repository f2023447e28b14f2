"""Padding-free (varlen) execution against padded execution of the same tuned config.

    python benchmarks/varlen_cpu.py --config tuned/bert-base-uncased-cpu.json \\
        [--batch 8 --seq 128 --lengths 16..128 --seconds 15]

Both layouts run the same operators on the same weights, timed interleaved in one process;
the table also shows how far apart their outputs are on real tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from autotune.bench.lengths import make_batch, parse_lengths
from autotune.fingerprint import machine
from autotune.measure.timing import time_many
from autotune.runtime import TunedBert, parse_config
from autotune.runtime.weights import random_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("tuned/bert-base-uncased-cpu.json"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lengths", default="16..128")
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()

    cfg = parse_config(args.config)
    state = random_weights(cfg.arch)
    mix = parse_lengths(args.lengths)
    batch = make_batch(args.batch, args.seq, cfg.arch.vocab_size, mix)
    models = {
        "padded": TunedBert(cfg.arch, state, dataclasses.replace(cfg, varlen=False)),
        "varlen": TunedBert(cfg.arch, state, dataclasses.replace(cfg, varlen=True)),
    }
    outs = {name: m(**batch) for name, m in models.items()}  # warm-up and outputs
    keep = batch["attention_mask"].bool()
    a, b = outs["padded"].last_hidden_state[keep], outs["varlen"].last_hidden_state[keep]
    stats = time_many({name: ([lambda m=m: m(**batch)], 0) for name, m in models.items()},
                      budget_s=args.seconds, min_rounds=5, max_rounds=1000)
    m = machine("cpu")
    print(f"{m['cpu']}, {m['cores']} cores, torch {torch.__version__}")
    print(f"batch {args.batch} × seq {args.seq}, lengths {mix.desc}: "
          f"{int(keep.sum())} real tokens of {keep.numel()}")
    print(f"{'layout':<8} {'median ms':>10} {'IQR':>8} {'rounds':>7}")
    for name, s in stats.items():
        print(f"{name:<8} {s.median_ms:>10.2f} {s.iqr_ms:>8.2f} {s.n:>7}")
    speedup = stats["padded"].median_ms / stats["varlen"].median_ms
    print(f"varlen is {speedup:.2f}× faster than padded; outputs on real tokens differ by "
          f"{float((a - b).norm() / a.norm()):.1e} (relative)")


if __name__ == "__main__":
    main()
