"""Load the search spaces of a device and describe an op instance to their constraints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from autotune.errors import SpaceError, UserError
from autotune.models.bert import BertArch, Bucket
from autotune.models.kinds import KINDS, OP_KINDS
from autotune.space import Space, load_space


def load_spaces(root: Path, device: str, kinds: tuple[str, ...] = OP_KINDS,
                suffix: str = ".yaml") -> dict[str, Space]:
    """``root/<device>/<kind>.yaml`` for each kind; every file is checked before any search.
    ``suffix=".json"`` reads the JSON copies shipped beside the YAML (``write_json_copies``),
    which the runtime checks configs against without a YAML parser."""
    import autotune.ops.kinds  # noqa: F401  (registers the constraints the files name)
    from autotune.ops import variants

    folder = root / device
    if not folder.is_dir():
        raise UserError(f"{folder}: no search spaces for device {device!r}")
    spaces: dict[str, Space] = {}
    for kind in kinds:
        path = folder / f"{kind}{suffix}"
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


def write_json_copies(root: Path) -> list[Path]:
    """Write ``<kind>.json`` beside every ``root/<device>/<kind>.yaml`` (the same data)."""
    import yaml

    written = []
    for src in sorted(root.glob("*/*.yaml")):
        dst = src.with_suffix(".json")
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
        dst.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        written.append(dst)
    return written


#: CUDA limits assumed when no CUDA device is visible (cuda spaces checked on a CPU machine):
#: the smallest opt-in shared memory per block of the Ampere and later parts (sm_86, sm_89).
NO_DEVICE_LIMITS: dict[str, Any] = {"shared_memory": 101376, "compute_capability": 8.6}


def cuda_limits() -> dict[str, Any]:
    """Shared memory per block (opt-in, bytes) and compute capability of the current GPU."""
    if not torch.cuda.is_available():
        return dict(NO_DEVICE_LIMITS)
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    smem = getattr(props, "shared_memory_per_block_optin", 0) or props.shared_memory_per_block
    return {"shared_memory": int(smem), "compute_capability": props.major + props.minor / 10}


def space_context(kind: str, arch: BertArch, bucket: Bucket, device: str = "cpu",
                  ) -> dict[str, Any]:
    """What constraints may look at: the instance's shapes and the machine."""
    op = KINDS[kind]
    n, k = op.gemm(arch) if op.gemm else (0, 0)
    ctx: dict[str, Any] = {
        "kind": kind,
        "rows": op.rows(bucket.batch, bucket.seq),
        "batch": bucket.batch,
        "seq": bucket.seq,
        "hidden": arch.hidden_size,
        "n": n,
        "k": k,
        "head_dim": arch.head_dim,
        "heads": arch.num_attention_heads,
        "cores": os.cpu_count() or 1,
        "qengines": tuple(torch.backends.quantized.supported_engines),
    }
    if device == "cuda":
        ctx.update(cuda_limits())
    return ctx


if __name__ == "__main__":  # python -m autotune.search.spaces: refresh the JSON copies
    from autotune.settings import DEFAULT_SPACES_DIR

    for p in write_json_copies(DEFAULT_SPACES_DIR):
        print(f"wrote {p}")
