"""A small recorded database: real studies of a bert-base-uncased search on an AMX Xeon,
kept as JSON (``recorded.json``) so that they load into a fresh database of any Optuna
version. ``python -m tests.report.recorded DB_URL`` re-records it from a search database."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState, create_trial

from autotune.storage import open_optuna_storage, prepare_url
from autotune.storage.bench import latest_bench, store_bench
from autotune.storage.peaks import load_peaks, store_peaks

RECORDED = Path(__file__).with_name("recorded.json")
KINDS = ("attention", "ffn_up", "pooler")  # a cheap, a big and a tiny op: enough variety


def dump(url: str, model: str = "bert-base-uncased", out: Path = RECORDED) -> None:
    storage = open_optuna_storage(prepare_url(url))
    studies: list[dict[str, Any]] = []
    machine = None
    for fs in storage.get_all_studies():
        a = fs.user_attrs
        if a.get("model") != model or (not a.get("compose") and a.get("kind") not in KINDS):
            continue
        machine = a["machine"]
        study = optuna.load_study(study_name=fs.study_name, storage=storage)
        studies.append({"name": fs.study_name, "user_attrs": a, "trials": [{
            "state": t.state.name, "value": t.value, "params": t.params,
            "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
            "user_attrs": t.user_attrs, "constraints": t.system_attrs.get("constraints"),
        } for t in study.get_trials(deepcopy=False) if t.state != TrialState.RUNNING]})
    assert machine is not None, f"no studies of {model} in {url}"
    bench = latest_bench(url, model, machine)
    out.write_text(json.dumps({
        "model": model, "machine": machine, "studies": studies,
        "bench": bench[1] if bench else [],
        "peaks": load_peaks(url, machine, torch.__version__),
    }, indent=None, separators=(",", ":")) + "\n")


def load(url: str, model: str | None = None, path: Path = RECORDED) -> dict[str, Any]:
    """Load the recording into ``url`` (optionally under another model name); returns it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rec = json.loads(path.read_text())
    storage = open_optuna_storage(prepare_url(url))
    name = model or rec["model"]
    for s in rec["studies"]:
        study = optuna.create_study(study_name=s["name"].replace(rec["model"], name, 1),
                                    storage=storage, direction="minimize")
        for k, v in {**s["user_attrs"], "model": name}.items():
            study.set_user_attr(k, v)
        study.add_trials([create_trial(
            state=TrialState[t["state"]], params=t["params"], user_attrs=t["user_attrs"],
            value=t["value"] if t["state"] == "COMPLETE" else None,
            distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
            constraints=t["constraints"]) for t in s["trials"]])
    if rec["bench"]:
        store_bench(url, {"model": name, "machine": {"fingerprint": rec["machine"]},
                          "lengths": rec["bench"][0]["lengths"], "rows": rec["bench"],
                          "max_rel_error": rec["bench"][0].get("max_rel_error")})
    if rec["peaks"]:
        store_peaks(url, rec["machine"], torch.__version__, rec["peaks"])
    return rec


if __name__ == "__main__":
    dump(sys.argv[1])
