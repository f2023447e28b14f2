"""How long replay takes on large spaces: a synthetic Kernel Tuner cache of a GEMM-like kernel
(block sizes, thread tiles, vector widths, shared-memory and stride switches; a divisibility
restriction and 7% compile/run failures, as real GEMM spaces have), imported as `autotune
landscape import` does and replayed for a budget of trials over several seeds.

    python benchmarks/replay_scale.py [--sizes 13k,54k] [--strategies default,random]
                                      [--seeds 20] [--budget 600]

The landscape's times are a smooth function of the parameters plus 5% noise (seeded), so the
table's trial counts say little about search quality (benchmarks/replay_search.py does, on
recorded spaces); what it measures is the seconds a replay costs as the space grows.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from autotune.search.kernel_tuner import import_kernel_tuner
from autotune.search.landscape import load_landscape, write_landscape
from autotune.search.replay import WITHIN, score
from autotune.settings import DEFAULT_SPACES_DIR

GEMM = {"MWG": [16, 32, 64, 128], "NWG": [16, 32, 64, 128], "KWG": [16, 32],
        "MDIMC": [8, 16, 32], "NDIMC": [8, 16, 32], "VWM": [1, 2, 4, 8], "VWN": [1, 2, 4, 8],
        "SA": [0, 1], "SB": [0, 1], "STRM": [0, 1], "STRN": [0, 1], "KWI": [2, 8]}
#: size label -> the parameters left out of GEMM (a smaller space)
SIZES = {"13k": ("STRN", "KWI"), "54k": ()}


def _time(c: dict[str, int], rng: random.Random) -> float:
    t = (1.0 + 0.3 * abs(math.log2(c["MWG"] / 64)) + 0.3 * abs(math.log2(c["NWG"] / 64))
         + 0.2 * (c["KWG"] == 16) + 0.15 * abs(math.log2(c["MDIMC"] * c["NDIMC"] / 256))
         + 0.1 * (c["VWM"] == 1) + 0.1 * (c["VWN"] == 1) - 0.1 * c["SA"] * c["SB"]
         + 0.05 * (c["STRM"] != c.get("STRN", c["STRM"])) + 0.05 * (c.get("KWI") == 8))
    return t * (1 + 0.05 * rng.random())


def synthetic_cache(left_out: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """A Kernel Tuner cache document over GEMM without ``left_out``'s parameters."""
    rng = random.Random(seed)
    params = {k: v for k, v in GEMM.items() if k not in left_out}
    cache: dict[str, Any] = {}
    for values in itertools.product(*params.values()):
        c = dict(zip(params, values, strict=True))
        if c["MWG"] % (c["MDIMC"] * c["VWM"]) or c["NWG"] % (c["NDIMC"] * c["VWN"]):
            continue  # Kernel Tuner's restrictions keep these out of the cache
        draw = rng.random()
        outcome: float | str = ("RuntimeFailedConfig" if draw < 0.04 else
                                "CompilationFailedConfig" if draw < 0.07 else _time(c, rng))
        cache[",".join(map(str, values))] = {**c, "time": outcome}
    return {"device_name": "synthetic", "kernel_name": "gemm", "tune_params_keys": list(params),
            "tune_params": params, "objective": "time", "cache": cache}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    ap.add_argument("--strategies", default="default,random")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=600)
    args = ap.parse_args()
    print(f"{'space':>6} {'configs':>7} {'import s':>8} {'strategy':<10} {'seeds':>5} "
          f"{'budget':>6} {'total s':>8} {'s/replay':>8} "
          + " ".join(f"{'≤' + format(w, '.0%'):>6}" for w in WITHIN))
    for label in args.sizes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "gemm.json.gz"
            with gzip.open(raw, "wt") as f:
                json.dump(synthetic_cache(SIZES[label]), f)
            t0 = time.perf_counter()
            write_landscape(import_kernel_tuner(raw), Path(tmp) / "l.json")
            land = load_landscape(Path(tmp) / "l.json")
            imported = time.perf_counter() - t0
        space = land.search_space(DEFAULT_SPACES_DIR)
        for name in args.strategies.split(","):
            t0 = time.perf_counter()
            sc = score(land, space, name, args.seeds, args.budget)
            total = time.perf_counter() - t0
            cells = " ".join(f"{v:>6.0f}" if math.isfinite(v) else f"{'>' + str(args.budget):>6}"
                             for v in (sc.median_trials[w] for w in WITHIN))
            print(f"{label:>6} {land.size:>7} {imported:>8.1f} {name:<10} {args.seeds:>5} "
                  f"{args.budget:>6} {total:>8.0f} {total / args.seeds:>8.1f} {cells}",
                  flush=True)


if __name__ == "__main__":
    main()
