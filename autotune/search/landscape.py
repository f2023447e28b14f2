"""Recorded landscapes: every config of one op's space with the result it got live.

A grid search (``autotune search --sampler grid --trials N``, N ≥ the space size) measures
every config once; ``export_landscape`` writes them with the constraint context they were
judged in, so ``replay`` can run any sampler against them later, exactly and in seconds.
Landscapes from elsewhere (``kernel_tuner``) carry their space in the file (version 2), since
no space file of ours describes them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.measure import MeasureResult
from autotune.measure.result import Status
from autotune.models.bert import BertArch, Bucket
from autotune.search.spaces import load_spaces, space_context
from autotune.space import Params, Space, Value, constraint, parse_space
from autotune.storage.results import feasible, params_key

FORMAT = "autotune-landscape"
VERSION = 2  # 2: the space may travel in the file; model, bucket and arch may be absent
READS = (1, 2)


@constraint("recorded_config", "a config the imported recording holds (its tool's restrictions "
                               "kept the others from being run)")
def _recorded(params: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return params_key(dict(params)) in ctx["recorded"]
_RESULT_FIELDS = ("status", "reason", "rel_error", "cand_ms", "ref_ms")


@dataclass(frozen=True)
class Landscape:
    model: str
    kind: str
    device: str
    bucket: Bucket | None  # None: not a BERT op (an imported kernel)
    arch: BertArch | None
    context: dict[str, Any]  # what the space's constraints saw when it was recorded
    max_rel_error: float
    entries: dict[str, tuple[Params, MeasureResult]]  # params_key → (params, result)
    space: Space | None = None  # the space, when it travels with the recording
    source: dict[str, Any] | None = None  # where an imported recording came from

    @property
    def size(self) -> int:
        return len(self.entries)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.bucket.label}" if self.bucket else f"{self.kind} {self.device}"

    def search_space(self, spaces_dir: Path) -> Space:
        """The recording's own space, else ours for its op kind and device."""
        if self.space is not None:
            return self.space
        return load_spaces(spaces_dir, self.device, (self.kind,))[self.kind]

    def within(self, space: Space) -> Landscape:
        """The recording cut to the configs ``space`` allows in the recording's context. A
        recording older than a constraint holds configs the search can no longer propose; its
        best must be one the search can reach. A config of the space that the recording lacks
        is an error: replay would have nothing to answer it with."""
        keys = {params_key(p) for p in space.configs(self.context)}
        missing = keys - self.entries.keys()
        if missing:
            raise UserError(f"the {self.label} recording lacks {len(missing)} of the "
                            f"{len(keys)} configs of the current {self.kind} space: record it "
                            "again (`autotune landscape export` after a full search)")
        return replace(self, entries={k: v for k, v in self.entries.items() if k in keys})

    def lookup(self, params: Params) -> MeasureResult:
        hit = self.entries.get(params_key(params))
        return hit[1] if hit else MeasureResult(Status.ERROR, "not in the recording")

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
        if ua.get("status") in (None, Status.INTERRUPTED):
            continue  # stopped by the user, or killed with the run: no property of the config
        first.setdefault(params_key(t.params),
                         {"params": t.params, **{f: ua.get(f) for f in _RESULT_FIELDS}})
    doc = {
        "model": a["model"], "kind": a["kind"],
        "device": a["device"], "bucket": {"batch": bucket.batch, "seq": bucket.seq},
        "arch": a["arch"], "context": ctx, "max_rel_error": tol,
        "machine": a.get("machine_info"), "software": a.get("software"),
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "configs": sorted(first.values(), key=lambda c: json.dumps(c["params"], sort_keys=True)),
    }
    write_landscape(doc, output)
    return len(first), sum(1 for _ in space.configs(ctx))


def write_landscape(doc: dict[str, Any], output: Path) -> None:
    """Write a landscape document (gzipped when ``output`` ends in .gz)."""
    # keys keep their order: a space's parameters are declared in order (``when`` refers back)
    text = json.dumps({"format": FORMAT, "version": VERSION, **doc}, indent=1) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".gz":
        output.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        output.write_text(text, encoding="utf-8")


def read_json(path: Path, what: str) -> Any:
    """A JSON file, gzipped or not; a one-line error naming ``what`` it should have been."""
    try:
        raw = path.read_bytes()
        return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as e:
        raise UserError(f"{path}: cannot read {what} ({e})") from None


def load_landscape(path: Path) -> Landscape:
    doc = read_json(path, "landscape")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        hint = " (a Kernel Tuner file? `autotune landscape import` it first)" \
            if isinstance(doc, dict) and ("cache" in doc or "results" in doc) else ""
        raise UserError(f"{path}: not an autotune landscape (format {FORMAT!r}){hint}")
    if doc.get("version") not in READS:
        raise UserError(f"{path}: landscape version {doc.get('version')!r}, this autotune "
                        f"reads versions {', '.join(map(str, READS))}")
    try:
        ctx = dict(doc["context"])
        ctx["qengines"] = tuple(ctx.get("qengines", ()))
        entries = {}
        for c in doc["configs"]:
            res = MeasureResult(status=Status(c["status"]), reason=str(c.get("reason") or ""),
                                rel_error=c.get("rel_error"), cand_ms=c.get("cand_ms"),
                                ref_ms=c.get("ref_ms"))
            entries[params_key(c["params"])] = (dict(c["params"]), res)
        space = None
        if doc.get("space") is not None:
            space = parse_space(doc["space"], f"{path}:space", str(doc["device"]))
            ctx["recorded"] = frozenset(entries)
        bucket = doc.get("bucket")
        return Landscape(model=str(doc.get("model") or doc["kind"]), kind=str(doc["kind"]),
                         device=str(doc["device"]),
                         bucket=Bucket(int(bucket["batch"]), int(bucket["seq"])) if bucket
                         else None,
                         arch=BertArch(**doc["arch"]) if doc.get("arch") else None,
                         context=ctx, max_rel_error=float(doc["max_rel_error"]),
                         entries=entries, space=space, source=doc.get("source"))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: malformed landscape ({type(e).__name__}: {e})") from None
