"""The tuned model across a grid of shapes, most of them no bucket of the search, against the
one-line alternatives: HF cast to bfloat16 (SDPA) and OpenVINO bfloat16; and the tuned model's
resident memory after calls at every shape.

    python benchmarks/shapes_cpu.py --config tuned/bert-base-uncased-cpu.json \\
        [--shapes 1x16,1x77,...] [--seconds 2]

Contenders are timed interleaved per shape (medians); the error is against float32 HF eager
on real tokens; the batch is padded to its longest input, as HF tokenizers pad it.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

from autotune.bench.lengths import make_batch, parse_lengths
from autotune.bench.memory import rss_mb
from autotune.bench.peers import PeerUnavailable, build_peer, hf_model
from autotune.bench.run import base_model
from autotune.fingerprint import machine
from autotune.measure.timing import time_many
from autotune.models.bert import resolve_model
from autotune.runtime import TunedBert, parse_config

GRID = "1x16,1x77,1x128,1x300,1x512,3x77,4x200,8x64,16x128,32x32,8x511,32x512"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("tuned/bert-base-uncased-cpu.json"))
    ap.add_argument("--model", default="bert-base-uncased")
    ap.add_argument("--shapes", default=GRID)
    ap.add_argument("--lengths", default="fixed")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    resolved = resolve_model(args.model)
    cfg = parse_config(args.config)
    hf, source = base_model(resolved.arch, resolved.path)
    mix = parse_lengths(args.lengths, resolved.path or resolved.name,
                        resolved.arch.max_position_embeddings)
    batches = {(b, s): make_batch(b, s, resolved.arch.vocab_size, mix, seed=b * 1000 + s,
                                  pad_to_longest=True) for b, s in shapes}

    weights_mb = sum(t.numel() * t.element_size() for t in hf.state_dict().values()) / 2**20
    before = rss_mb()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = TunedBert(resolved.arch, hf.state_dict(), cfg)
        for batch in batches.values():
            tuned(**batch)
    after = rss_mb()
    fallbacks = [str(w.message) for w in caught if "reference" in str(w.message)]

    sides = {"tuned": lambda batch: tuned(**batch).last_hidden_state}
    bf16 = hf_model(hf, "sdpa", torch.bfloat16)
    sides["hf-bf16"] = lambda batch: bf16(**batch).last_hidden_state.float()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ov = build_peer("openvino-bf16", hf, Path(tmp))
            sides["openvino-bf16"] = lambda batch: ov.run(batch)[0]
        except PeerUnavailable as e:
            print(f"(openvino-bf16 left out: {e})")

        m = machine("cpu")
        print(f"{m['cpu']}, {m['cores']} cores, torch {torch.__version__}, {source}, "
              f"config {args.config.name}, lengths {mix.desc}")
        print(f"{'shape':>7} {'padded':>6} " + " ".join(f"{n + ' ms':>17}" for n in sides)
              + " " + " ".join(f"{'tuned÷' + n:>19}" for n in sides if n != "tuned")
              + f" {'tuned err':>9}")
        for (b, s), batch in batches.items():
            with torch.inference_mode():
                ref = hf(**batch).last_hidden_state
                out = sides["tuned"](batch)
            keep = batch["attention_mask"].bool()
            err = float((out - ref)[keep].norm() / ref[keep].norm())

            def call(fn, batch=batch):  # type: ignore[no-untyped-def]
                def run() -> object:
                    with torch.inference_mode():
                        return fn(batch)
                return run

            stats = time_many({n: ([call(fn)], 0) for n, fn in sides.items()},
                              budget_s=args.seconds, min_rounds=3, max_rounds=200)
            ms = {n: stats[n].median_ms for n in sides}
            print(f"{f'{b}x{s}':>7} {batch['input_ids'].shape[1]:>6} "
                  + " ".join(f"{ms[n]:>17.1f}" for n in sides) + " "
                  + " ".join(f"{ms['tuned'] / ms[n]:>19.2f}" for n in sides if n != "tuned")
                  + f" {err:>9.1e}", flush=True)
    print(f"tuned model: {after - before:.0f} MB resident after calls at every shape "
          f"(float32 weights {weights_mb:.0f} MB)" if before and after else "")
    print("float32 fallback warnings: " + ("; ".join(fallbacks) if fallbacks else "none"))


if __name__ == "__main__":
    main()
