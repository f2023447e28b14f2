"""Recorded landscapes: every config of one op's space with the result it got live.

A grid search (``autotune search --sampler grid --trials N``, N ≥ the space size) measures
every config once; ``export_landscape`` writes them with the constraint context they were
judged in, so ``replay`` can run any sampler against them later, exactly and in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.measure import MeasureResult
from autotune.models.bert import BertArch, Bucket
from autotune.search.spaces import space_context
from autotune.space import Params, Space
from autotune.storage.results import feasible, params_key

FORMAT = "autotune-landscape"
VERSION = 1
_RESULT_FIELDS = ("status", "reason", "rel_error", "cand_ms", "ref_ms")


@dataclass(frozen=True)
class Landscape:
    model: str
    kind: str
    device: str
    bucket: Bucket
    arch: BertArch
    context: dict[str, Any]  # what the space's constraints saw when it was recorded
    max_rel_error: float
    entries: dict[str, tuple[Params, MeasureResult]]  # params_key → (params, result)

    @property
    def size(self) -> int:
        return len(self.entries)

    def lookup(self, params: Params) -> MeasureResult:
        hit = self.entries.get(params_key(params))
        return hit[1] if hit else MeasureResult("error", "not in the recording")

    def ranked(self, tol: float | None = None) -> list[dict[str, Any]]:
        """Feasible configs, fastest first, as ``ranked_configs`` gives them for a study."""
        tol = self.max_rel_error if tol is None else tol
        rows = [(r.ratio, p) for p, r in self.entries.values()
                if r.ratio is not None and feasible(r.to_dict(), tol)]
        return [{"params": p, "ratio": ratio} for ratio, p in sorted(rows, key=lambda x: x[0])]

    def best(self, tol: float | None = None) -> float:
        """The best feasible time ratio of the recording."""
        tol = self.max_rel_error if tol is None else tol
        ratios = [r.ratio for _, r in self.entries.values()
                  if r.ratio is not None and feasible(r.to_dict(), tol)]
        if not ratios:
            raise UserError(f"the {self.kind} recording has no feasible config at "
                            f"tolerance {tol:g}")
        return min(ratios)


def export_landscape(study: optuna.Study, space: Space, tol: float, output: Path,
                     ) -> tuple[int, int]:
    """Write the first result of every distinct config of ``study``; returns (recorded, size
    of the space) so the caller can say when the recording is incomplete."""
    a = study.user_attrs
    arch = BertArch(**a["arch"])
    bucket = Bucket(a["batch"], a["seq"])
    ctx = space_context(a["kind"], arch, bucket, a["device"])
    first: dict[str, dict[str, Any]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        ua = t.user_attrs
        if ua.get("status") in (None, "interrupted"):
            continue  # stopped by the user, or killed with the run: no property of the config
        first.setdefault(params_key(t.params),
                         {"params": t.params, **{f: ua.get(f) for f in _RESULT_FIELDS}})
    doc = {
        "format": FORMAT, "version": VERSION, "model": a["model"], "kind": a["kind"],
        "device": a["device"], "bucket": {"batch": bucket.batch, "seq": bucket.seq},
        "arch": a["arch"], "context": ctx, "max_rel_error": tol,
        "machine": a.get("machine_info"), "software": a.get("software"),
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "configs": sorted(first.values(), key=lambda c: json.dumps(c["params"], sort_keys=True)),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return len(first), sum(1 for _ in space.configs(ctx))


def load_landscape(path: Path) -> Landscape:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read landscape ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not an autotune landscape (format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise UserError(f"{path}: landscape version {doc.get('version')!r}, this autotune "
                        f"reads version {VERSION}")
    try:
        ctx = dict(doc["context"])
        ctx["qengines"] = tuple(ctx.get("qengines", ()))
        entries = {}
        for c in doc["configs"]:
            res = MeasureResult(status=str(c["status"]), reason=str(c.get("reason") or ""),
                                rel_error=c.get("rel_error"), cand_ms=c.get("cand_ms"),
                                ref_ms=c.get("ref_ms"))
            entries[params_key(c["params"])] = (dict(c["params"]), res)
        return Landscape(model=str(doc["model"]), kind=str(doc["kind"]),
                         device=str(doc["device"]),
                         bucket=Bucket(int(doc["bucket"]["batch"]), int(doc["bucket"]["seq"])),
                         arch=BertArch(**doc["arch"]), context=ctx,
                         max_rel_error=float(doc["max_rel_error"]), entries=entries)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: malformed landscape ({type(e).__name__}: {e})") from None
