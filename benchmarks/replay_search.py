"""Search quality on the recorded landscapes: how many trials each strategy needs to get
within 1%, 3% and 5% of a recording's best config (median over seeds), by replay.

    python benchmarks/replay_search.py [--seeds 20] [--strategies default,tpe,random]
                                       [--budget-share 0.25] [--json out.json]
    python benchmarks/replay_search.py --external [FILE.json.gz ...] [--budget 600]
                                       [--kt-strategies genetic_algorithm,...]

Our recordings are in tests/data/landscapes/. ``--external`` replays brute-forced Kernel Tuner
files instead (default: the one in tests/data/kernel_tuner/), imported as `autotune landscape
import` does, against our strategies and Kernel Tuner's own in its simulation mode (needs
``pip install kernel_tuner``), and compares with random search's expectation (N+1)/(k+1) for
k configs within the margin among the N the file holds, and gives each strategy the
``autotuning-methodology`` package's performance score over trials (if it is installed; see
``kernel_tuner_sim.methodology_score``). Replays are exact (no measuring), so the numbers are
the same on any machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import kernel_tuner_sim as kts

from autotune.report.html import replay_page
from autotune.search.kernel_tuner import import_kernel_tuner
from autotune.search.landscape import Landscape, load_landscape, write_landscape
from autotune.search.loop import warm_configs
from autotune.search.replay import WITHIN, SamplerScore, score, trials_to_reach
from autotune.search.spaces import load_spaces
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.space import Params

HERE = Path(__file__).resolve().parent
RECORDINGS = sorted((HERE.parent / "tests" / "data" / "landscapes").glob("*.json"))
EXTERNAL = sorted((HERE.parent / "tests" / "data" / "kernel_tuner").glob("*.json*"))


def _warm(land: Landscape, path: Path) -> list[Params]:
    """The best configs of the same op's recording in another bucket, if there is one."""
    others = [load_landscape(p) for p in RECORDINGS if p != path]
    src = [o for o in others if o.kind == land.kind and o.bucket != land.bucket]
    if not src:
        return []
    return warm_configs([src[0].ranked()])


def _trials(v: float | None, budget: int) -> str:
    return f">{budget}" if v is None or math.isinf(v) else f"{v:.0f}"


def external(args: argparse.Namespace) -> list[dict[str, object]]:
    """Our strategies and Kernel Tuner's on brute-forced Kernel Tuner files; returns the
    results as ``autotune replay --output`` writes them (``autotune report --replay``)."""
    kt = [k for k in args.kt_strategies.split(",") if k]
    if kt and not kts.available():
        print("(kernel_tuner is not installed: its strategies are left out)")
        kt = []
    print(f"{'file':<24} {'N':>5} {'budget':>6} {'strategy':<22} "
          + " ".join(f"{'≤' + format(w, '.0%'):>6}" for w in WITHIN)
          + f" {'≤1% p25–p75':>12} {'reached':>8} {'÷rand':>6} {'score':>6} {'s':>5}")
    replays: list[dict[str, object]] = []
    for path in args.external or EXTERNAL:
        with tempfile.TemporaryDirectory() as tmp:
            write_landscape(import_kernel_tuner(path), Path(tmp) / "l.json")
            land = load_landscape(Path(tmp) / "l.json")
        space = land.search_space(DEFAULT_SPACES_DIR)
        best = land.best()
        ok = [r.ratio for _, r in land.entries.values() if r.ratio is not None]
        # random search without repeats: expected draws until one of k good configs of N
        expect = {w: (land.size + 1) / (sum(v <= (1 + w) * best for v in ok) + 1)
                  for w in WITHIN}
        label = path.name.removesuffix(".gz").removesuffix(".json")[:24]
        print(f"{label:<24} {land.size:>5} {'':>6} {'random (expected)':<22} "
              + " ".join(f"{expect[w]:>6.0f}" for w in WITHIN))
        scores: list[tuple[SamplerScore, float]] = []
        for name in args.strategies.split(","):
            t0 = time.perf_counter()
            scores.append((score(land, space, name, args.seeds, args.budget),
                           time.perf_counter() - t0))
        for name in kt:
            t0 = time.perf_counter()
            runs = [[v / best for v in kts.best_so_far(path, name, seed, args.budget)]
                    for seed in range(args.seeds)]
            scores.append((SamplerScore.of(f"kt:{name}", runs), time.perf_counter() - t0))
        methodology: dict[str, float | None] = {}
        for sc, secs in scores:
            need = sorted(trials_to_reach(c, 1.01) for c in sc.curves)
            q = statistics.quantiles(need, n=4, method="inclusive") if len(need) > 1 \
                else need * 3
            cells = " ".join(f"{_trials(sc.median_trials[w], args.budget):>6}" for w in WITHIN)
            spread = f"{_trials(q[0], args.budget)}–{_trials(q[2], args.budget)}"
            am = kts.methodology_score([v / best for v in ok], sc.curves, args.budget)
            methodology[sc.sampler] = am
            print(f"{label:<24} {land.size:>5} {args.budget:>6} {sc.sampler:<22} {cells} "
                  f"{spread:>12} {sc.reached[0.01]:>8.0%} "
                  f"{sc.median_trials[0.01] / expect[0.01]:>6.2f} "
                  f"{'n/a' if am is None else format(am, '.3f'):>6} {secs:>5.0f}")
        replays.append({"landscape": str(path), "kind": land.kind, "bucket": land.device,
                        "size": land.size, "budget": args.budget, "seeds": args.seeds,
                        "random_expected": {f"{w:g}": v for w, v in expect.items()},
                        "samplers": {sc.sampler: {**sc.to_json(),
                                                  "methodology_score": methodology[sc.sampler]}
                                     for sc, _ in scores}})
    return replays


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
    ap.add_argument("--external", type=Path, nargs="*", default=None,
                    help="Kernel Tuner files to replay instead of our recordings")
    ap.add_argument("--budget", type=int, default=600,
                    help="--external: distinct configs per run")
    ap.add_argument("--kt-strategies", default=",".join(kts.STRATEGIES),
                    help="--external: Kernel Tuner strategies to run in its simulation mode")
    args = ap.parse_args()
    if args.external is not None:
        if args.strategies == "default,tpe,random":
            args.strategies = "default,tpe,random,cmaes"
        replays = external(args)
        if args.json:  # `autotune report --replay FILE` shows it; a page of its own too
            args.json.write_text(json.dumps({"replays": replays}, indent=1) + "\n")
            args.json.with_suffix(".html").write_text(replay_page(replays), encoding="utf-8")
        return
    rows = []
    print(f"{'landscape':<16} {'size':>5} {'budget':>6} {'strategy':<14} "
          + " ".join(f"{'≤' + format(w, '.0%'):>8}" for w in WITHIN) + f" {'÷random':>8} {'s':>6}")
    for path in [p for p in RECORDINGS if args.only in p.name]:
        land = load_landscape(path)
        space = load_spaces(DEFAULT_SPACES_DIR, land.device, (land.kind,))[land.kind]
        land = land.within(space)  # recordings older than a constraint hold more configs
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
            label = land.label
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
