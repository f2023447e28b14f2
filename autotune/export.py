"""Best trials in the database → TunedConfig JSON (schema-versioned, fingerprinted).

Everything comes from the studies' stored attributes, so ``autotune export`` needs nothing but
the database. Every written file is validated against the JSON Schema shipped in the package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UserError
from autotune.files import write_text_atomic
from autotune.fingerprint import machine
from autotune.models.bert import BertArch
from autotune.runtime.config import STATIC_VARIANTS, config_dict, schema
from autotune.storage.results import ranked_configs, trial_counts

_SAMPLER = optuna.samplers.RandomSampler()  # loading a study needs a sampler; never used


def validate(config: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(config, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top>"
        raise UserError(f"tuned config invalid at {where}: {e.message}") from None


def default_output(model: str, device: str) -> Path:
    return Path("tuned") / f"{Path(model).name or 'model'}-{device}.json"


def _best_of(study: optuna.Study, tol: float) -> dict[str, Any] | None:
    """The re-measured winner if it was judged at this tolerance, else the best feasible
    trial; not one that quantizes with a calibrated range (``int8_static``): only the
    model-level study calibrates the model (its ranges go in its config), so a config made
    from the per-op studies alone has none to ship."""
    ranked = ranked_configs(study, tol, k=8)
    return next((r for r in ranked if r["params"]["variant"] not in STATIC_VARIANTS), None)


def matching_studies(storage: optuna.storages.BaseStorage, model: str, device: str,
                     fingerprint: str) -> list[optuna.Study]:
    out = []
    for s in storage.get_all_studies():
        a = s.user_attrs
        if a.get("autotune") and not a.get("compose") and a.get("model") == model \
                and a.get("device") == device and a.get("machine") == fingerprint:
            out.append(optuna.load_study(study_name=s.study_name, storage=storage,
                                         sampler=_SAMPLER))
    return out


def newest_composition(storage: optuna.storages.BaseStorage, model: str, device: str,
                       fingerprint: str, max_rel_error: float,
                       ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(final, study attributes) of the newest model-level study judged at this tolerance."""
    found = None
    for s in storage.get_all_studies():  # storage order: oldest first
        a = s.user_attrs
        final = a.get("final") or {}
        if a.get("compose") and a.get("model") == model and a.get("device") == device \
                and a.get("machine") == fingerprint and final.get("max_rel_error") == max_rel_error:
            found = (final, a)
    return found


def composed_config(storage: optuna.storages.BaseStorage, model: str, device: str,
                    fingerprint: str, max_rel_error: float) -> dict[str, Any] | None:
    """The config of the newest model-level composition judged at this tolerance, if any."""
    found = newest_composition(storage, model, device, fingerprint, max_rel_error)
    if found is None:
        return None
    config: dict[str, Any] = found[0]["config"]
    validate(config)
    return config


def build_config(storage: optuna.storages.BaseStorage, model: str, device: str,
                 max_rel_error: float, fingerprint: str | None = None) -> dict[str, Any]:
    fingerprint = fingerprint or machine(device)["fingerprint"]
    composed = composed_config(storage, model, device, fingerprint, max_rel_error)
    if composed is not None:
        return composed
    studies = matching_studies(storage, model, device, fingerprint)
    if not studies:
        raise UserError(f"no studies for model {model!r} on {device} (machine {fingerprint}) "
                        "in this database; run `autotune search` first")
    first = studies[0].user_attrs
    ops: dict[str, list[dict[str, Any]]] = {}
    for study in sorted(studies, key=lambda s: (s.user_attrs["batch"], s.user_attrs["seq"])):
        a = study.user_attrs
        if a["arch_hash"] != first["arch_hash"]:
            raise UserError(f"database holds two architectures named {model!r}; "
                            "export them from separate databases")
        best = _best_of(study, max_rel_error)
        if best is None:
            continue
        params = dict(best["params"])
        variant = str(params.pop("variant"))
        ops.setdefault(a["kind"], []).append({
            "bucket": {"batch": a["batch"], "seq": a["seq"]},
            "variant": variant,
            "params": params,
            "latency_ms": best["cand_ms"],
            "latency_iqr_ms": best["cand_iqr_ms"],
            "baseline_ms": best["ref_ms"],
            "rel_error": best["rel_error"],
            "trials": trial_counts(study, max_rel_error),
            "study": study.study_name,
        })
    # Per-op search pads to the bucket; layout choices are searched end to end.
    config = config_dict(model, BertArch(**first["arch"]), device, max_rel_error, ops)
    config["machine"], config["software"] = first["machine_info"], first["software"]
    validate(config)
    return config


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def config_text(config: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line: the calibrated ranges (a
    number per input channel and layer) took 684 KB for MiniLM one number per line."""
    text = json.dumps(config, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",")
                            + "]", text) + "\n"


def write_config(config: dict[str, Any], path: Path) -> Path:
    validate(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, config_text(config))  # never half a config
    return path
