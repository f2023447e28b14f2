"""Search quality on the recorded landscapes: how many trials each strategy needs to get
within 1%, 3% and 5% of a recording's best config (median over seeds), by replay.

    python benchmarks/replay_search.py [--seeds 20] [--strategies default,tpe,random]
                                       [--budget-share 0.25] [--json out.json]

Replays are exact (no measuring), so the numbers are the same on any machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from autotune.search.landscape import Landscape, load_landscape
from autotune.search.loop import warm_configs
from autotune.search.replay import WITHIN, score
from autotune.search.spaces import load_spaces
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.space import Params

HERE = Path(__file__).resolve().parent
RECORDINGS = sorted((HERE.parent / "tests" / "data" / "landscapes").glob("*.json"))


def _warm(land: Landscape, path: Path) -> list[Params]:
    """The best configs of the same op's recording in another bucket, if there is one."""
    others = [load_landscape(p) for p in RECORDINGS if p != path]
    src = [o for o in others if o.kind == land.kind and o.bucket != land.bucket]
    if not src:
        return []
    return warm_configs([src[0].ranked()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--strategies", default="default,tpe,random")
    ap.add_argument("--budget-share", type=float, default=0.25,
                    help="trials per replay as a share of the recording's size")
    ap.add_argument("--warm", action="store_true",
                    help="warm-start each b8 recording from the b1 recording of its kind")
    ap.add_argument("--only", default="", help="substring of the recordings to replay")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    print(f"{'landscape':<16} {'size':>5} {'budget':>6} {'strategy':<14} "
          + " ".join(f"{'≤' + format(w, '.0%'):>8}" for w in WITHIN) + f" {'÷random':>8} {'s':>6}")
    for path in [p for p in RECORDINGS if args.only in p.name]:
        land = load_landscape(path)
        space = load_spaces(DEFAULT_SPACES_DIR, land.device, (land.kind,))[land.kind]
        budget = max(1, round(land.size * args.budget_share))
        scores = {}
        for name in args.strategies.split(","):
            t0 = time.perf_counter()
            # random gets the whole recording, so its "trials needed" is never cut off
            n = land.size if name == "random" else budget
            warm = _warm(land, path) if args.warm else ()
            scores[name] = (score(land, space, name, args.seeds, n, warm=warm),
                            time.perf_counter() - t0)
        rnd = scores.get("random")
        for name, (s, secs) in scores.items():
            med3 = s.median_trials[0.03]
            vs = (med3 / rnd[0].median_trials[0.03]) if rnd and not math.isinf(
                rnd[0].median_trials[0.03]) else math.nan
            n = land.size if name == "random" else budget
            cells = " ".join(f"{'>' + str(n) if math.isinf(v) else f'{v:.0f}':>8}"
                             for v in s.median_trials.values())
            label = f"{land.kind} {land.bucket.label}"
            print(f"{label:<16} {land.size:>5} {n:>6} {name:<14} {cells} {vs:>8.2f} {secs:>6.1f}")
            rows.append({"landscape": path.stem, "size": land.size, "budget": budget,
                         "strategy": name, "seeds": args.seeds,
                         "median_trials": {f"{w:g}": (None if math.isinf(v) else v)
                                           for w, v in s.median_trials.items()},
                         "reached": {f"{w:g}": v for w, v in s.reached.items()}})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
