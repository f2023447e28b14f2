"""The only bridge from a ``Space`` to Optuna's ``trial.suggest_*``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.space import Params, Space

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, space: Space) -> Params:
    """Ask ``trial`` for every parameter that is active given the ones chosen before it."""
    params: Params = {}
    for p in space.params:
        if not p.active(params):
            continue
        if p.type == "int" and len(p.choices) > 1:
            ints = [int(c) for c in p.choices]
            step = ints[1] - ints[0]
            params[p.name] = trial.suggest_int(p.name, ints[0], ints[-1], step=step)
        else:  # categorical, bool and pow2 (a handful of values, some of them "none" = 0)
            value = trial.suggest_categorical(p.name, list(p.choices))
            assert isinstance(value, str | int | bool)
            params[p.name] = value
    return params
