"""Load the search spaces of a device and describe an op instance to their constraints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from autotune.errors import SpaceError, UserError
from autotune.models.bert import OP_KINDS, BertArch, Bucket
from autotune.space import Space, load_space


def load_spaces(root: Path, device: str, kinds: tuple[str, ...] = OP_KINDS) -> dict[str, Space]:
    """``root/<device>/<kind>.yaml`` for each kind; every file is checked before any search."""
    import autotune.ops.kinds  # noqa: F401  (registers the constraints the files name)
    from autotune.ops import variants

    folder = root / device
    if not folder.is_dir():
        raise UserError(f"{folder}: no search spaces for device {device!r}")
    spaces: dict[str, Space] = {}
    for kind in kinds:
        path = folder / f"{kind}.yaml"
        if not path.is_file():
            raise UserError(f"{path}: missing search space for operator kind {kind!r}")
        space = load_space(path, device)
        names = {p.name for p in space.params}
        if "variant" not in names:
            raise SpaceError(str(path), "params.variant", "every space needs a 'variant' choice")
        known = {v.name for v in variants(kind, device)}
        for choice in space.param("variant").choices:
            if choice not in known:
                raise SpaceError(str(path), "params.variant",
                                 f"{choice!r} is not a registered {kind} variant on {device} "
                                 f"(known: {', '.join(sorted(known))})")
        spaces[kind] = space
    return spaces


def space_context(kind: str, arch: BertArch, bucket: Bucket) -> dict[str, Any]:
    """What constraints may look at: the instance's shapes and the machine."""
    rows = bucket.batch if kind == "pooler" else bucket.batch * bucket.seq
    return {
        "kind": kind,
        "rows": rows,
        "batch": bucket.batch,
        "seq": bucket.seq,
        "hidden": arch.hidden_size,
        "cores": os.cpu_count() or 1,
        "qengines": tuple(torch.backends.quantized.supported_engines),
    }
