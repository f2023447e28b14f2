"""What the model-level study and warm starts take from a per-op study."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution

from autotune.storage.results import ranked_configs


def _study(rows: list[tuple[float, dict, float]]) -> optuna.Study:
    study = optuna.create_study()
    study.set_user_attr("kind", "ffn_up")
    for ratio, params, err in rows:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: CategoricalDistribution([v])
                                          for k, v in params.items()},
            value=ratio, user_attrs={"status": "ok", "rel_error": err, "cand_ms": ratio,
                                     "ref_ms": 1.0}))
    return study


def _dense(precision: str, impl: str, threads: int) -> dict:
    return {"variant": "dense", "precision": precision, "impl": impl, "threads": threads}


def test_the_fastest_config_of_each_layout_comes_before_near_duplicates() -> None:
    """Three transposed-weight configs that differ in threads lead the ranking; the top 3
    are the fastest of each layout (transposed, oneDNN-packed, int8), then the fastest
    float32 (a higher precision than all three). Near-duplicates fill in only where a
    study has fewer layouts than asked for."""
    t1, t2, t3 = (_dense("bfloat16", "aten_t", n) for n in (1, 2, 3))
    packed = _dense("bfloat16", "onednn_packed", 2)
    int8 = {"variant": "int8_dynamic", "qengine": "x86", "threads": 2}
    fp32 = _dense("float32", "aten", 2)
    study = _study([(0.50, t1, 0.004), (0.51, t2, 0.004), (0.52, t3, 0.004),
                    (0.53, packed, 0.004), (0.54, int8, 0.015), (0.60, int8 | {"threads": 1},
                                                                0.05), (0.9, fp32, 0.0)])
    got = [r["params"] for r in ranked_configs(study, 0.02, 3)]
    assert got == [t1, packed, int8, fp32]
    only_one = _study([(0.50, t1, 0.004), (0.51, t2, 0.004), (0.52, t3, 0.004)])
    assert [r["params"] for r in ranked_configs(only_one, 0.02, 2)] == [t1, t2]
