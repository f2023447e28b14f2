"""Resident memory of a model loaded with ``autotune.load``, against the size of its weights
at the precisions its tuned choices use, after calls at every shape of a grid.

    python benchmarks/memory_cpu.py --config tuned/bert-base-uncased-cpu.json \\
        [--model bert-base-uncased] [--shapes 1x16,...,32x512]

Run it in a fresh process: the baseline is this process before loading (torch imported).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

import autotune
from autotune.bench.lengths import make_batch, parse_lengths
from autotune.bench.memory import rss_mb, weights_at_precisions_mb
from autotune.bench.run import default_shapes
from autotune.models.bert import Bucket, resolve_model
from autotune.runtime import parse_config
from autotune.runtime.weights import random_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("tuned/bert-base-uncased-cpu.json"))
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--shapes", default="", help="BxS,... (default: the bench's grid)")
    args = ap.parse_args()
    resolved = resolve_model(args.model)
    cfg = parse_config(args.config)
    top = resolved.arch.max_position_embeddings
    shapes = [Bucket(*(int(v) for v in s.split("x"))) for s in args.shapes.split(",") if s] \
        or list(default_shapes(cfg, top))
    mix = parse_lengths("fixed", None, top)
    at_precisions = weights_at_precisions_mb(random_weights(resolved.arch), resolved.arch, cfg)
    fp32 = sum(t.numel() * 4 for t in random_weights(resolved.arch).values()) / 2**20

    base = rss_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights notice
        model = autotune.load(args.model, cfg)
    loaded = rss_mb()
    rows = [("after load (every op built)", loaded)]
    with torch.inference_mode():
        for s in shapes:
            model(**make_batch(s.batch, s.seq, resolved.arch.vocab_size, mix))
            rows.append((f"after {s.batch}x{s.seq}", rss_mb()))
    assert base is not None
    print(f"{resolved.name}: float32 weights {fp32:.0f} MB; at the precisions the config uses "
          f"{at_precisions:.0f} MB")
    print(f"{'':32} {'RSS - baseline MB':>18} {'÷ weights at precisions':>24}")
    for what, mb in rows:
        assert mb is not None
        print(f"{what:32} {mb - base:18.0f} {(mb - base) / at_precisions:24.2f}")


if __name__ == "__main__":
    main()
