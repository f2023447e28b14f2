"""Legal configs drawn at random from a search space too large to list (the cuda GEMM spaces
hold millions), covering every value of every parameter."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

from autotune.space import Params, Space, Value


def random_config(space: Space, ctx: Mapping[str, Any], rng: random.Random,
                  fixed: Mapping[str, Value] | None = None,
                  allowed: Callable[[Params], bool] = lambda c: True,
                  tries: int = 3000) -> Params | None:
    """A config that meets the space's constraints in ``ctx``, with ``fixed`` values, or None."""
    fixed = fixed or {}
    for _ in range(tries):
        chosen: Params = {}
        for p in space.params:
            if p.active(chosen):
                chosen[p.name] = fixed[p.name] if p.name in fixed else rng.choice(p.choices)
        if all(chosen.get(k) == v for k, v in fixed.items()) \
                and space.violated(chosen, ctx) is None and allowed(chosen):
            return chosen
    return None


def covering_sample(space: Space, ctx: Mapping[str, Any], n: int, seed: int,
                    allowed: Callable[[Params], bool] = lambda c: True) -> list[Params]:
    """``n`` random legal configs, then one more for each parameter value none of them has
    (where a legal config with it exists)."""
    rng = random.Random(seed)
    picked = [c for c in (random_config(space, ctx, rng, None, allowed) for _ in range(n)) if c]
    for p in space.params:
        for v in p.choices:
            if not any(c.get(p.name) == v for c in picked):
                c = random_config(space, ctx, rng, {p.name: v}, allowed)
                if c is not None:
                    picked.append(c)
    unique = {json.dumps(c, sort_keys=True): c for c in picked}
    return list(unique.values())
