"""Per-operator timings of a tuned config against the float32 reference, on this machine.

    python benchmarks/ops_cpu.py --config tuned/bert-base-uncased-cpu.json [--seconds 3]

For every op kind and shape bucket in the config, the tuned variant and the reference run
interleaved in one process (the search's own timing function: warm-up, rotated weight copies,
medians, IQR). Prints a table and writes the figures as JSON next to the config.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from autotune.fingerprint import machine
from autotune.measure.result import MeasureTask
from autotune.measure.run import measure
from autotune.models.bert import BertArch, Bucket, workload
from autotune.search.driver import COPIES_CAP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("tuned/bert-base-uncased-cpu.json"))
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per op and bucket")
    ap.add_argument("--output", type=Path, default=None, help="JSON results (default: beside)")
    args = ap.parse_args()

    config = json.loads(args.config.read_text())
    arch = BertArch(**config["model"]["architecture"])
    m = machine("cpu")
    print(f"model {config['model']['name']}   cpu {m['cpu']}   cores {m['cores']}   "
          f"amx: {'yes' if any(f.startswith('amx') for f in m['isa']) else 'no'}   "
          f"python {platform.python_version()}")
    header = (f"{'op':<11} {'bucket':<8} {'count':>5} {'ref ms':>9} {'iqr':>7} {'tuned ms':>9} "
              f"{'iqr':>7} {'speedup':>8} {'rel err':>8}  variant")
    print(header)
    print("-" * len(header))
    rows = []
    totals: dict[str, list[float]] = {}
    for kind, choices in config["ops"].items():
        for choice in choices:
            bucket = Bucket(choice["bucket"]["batch"], choice["bucket"]["seq"])
            (inst,) = [i for i in workload(arch, [bucket]) if i.kind == kind]
            params = {"variant": choice["variant"], **choice["params"]}
            res = measure(MeasureTask(arch.to_dict(), kind, bucket.batch, bucket.seq,
                                      choice["variant"], params, copies=min(inst.count, COPIES_CAP),
                                      budget_s=args.seconds, max_rounds=2000))
            if res.status != "ok" or res.cand_ms is None or res.ref_ms is None:
                print(f"{kind:<11} {bucket.label:<8} {res.status}: {res.reason}")
                continue
            acc = totals.setdefault(bucket.label, [0.0, 0.0])
            acc[0] += inst.count * res.ref_ms
            acc[1] += inst.count * res.cand_ms
            print(f"{kind:<11} {bucket.label:<8} {inst.count:>5} {res.ref_ms:>9.3f} "
                  f"{res.ref_iqr_ms:>7.3f} {res.cand_ms:>9.3f} {res.cand_iqr_ms:>7.3f} "
                  f"{res.ref_ms / res.cand_ms:>7.2f}× {res.rel_error:>8.1e}  "
                  f"{choice['variant']} {choice['params'].get('precision', '')}")
            rows.append({"kind": kind, "bucket": bucket.label, "count": inst.count,
                         "variant": choice["variant"], "params": choice["params"],
                         **res.to_dict()})
    print()
    for label, (ref, tuned) in totals.items():
        print(f"{label}: forward-pass sum of per-op times {ref:.2f} ms (reference) → "
              f"{tuned:.2f} ms (tuned), {ref / tuned:.2f}×")
    out = args.output or args.config.with_suffix(".ops_cpu.json")
    out.write_text(json.dumps({"machine": m, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
