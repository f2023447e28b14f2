"""Sequence-length mixes of a workload: ``fixed``, ``uniform:LO..HI`` (or ``LO..HI``), or a
file with one length per line."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch

from autotune.errors import UserError

LengthSampler = Callable[[int, int, torch.Generator], torch.Tensor]


def parse_lengths(spec: str) -> tuple[str, LengthSampler]:
    """(description, sampler(batch, seq, gen) -> lengths in 1..seq)."""
    spec = spec.strip()
    if spec in ("", "fixed", "full"):
        return "fixed", lambda b, s, g: torch.full((b,), s, dtype=torch.long)
    m = re.fullmatch(r"(?:uniform:)?(\d+)\s*\.\.\s*(\d+)", spec)
    if m:
        lo, hi = int(m[1]), int(m[2])
        if not 1 <= lo <= hi:
            raise UserError(f"--lengths {spec!r}: need 1 <= LO <= HI")
        return (f"uniform {lo}..{hi}",
                lambda b, s, g: torch.randint(min(lo, s), min(hi, s) + 1, (b,), generator=g))
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--lengths {spec!r}: expected fixed, LO..HI or a file of lengths")
    try:
        values = [int(line) for line in path.read_text().split() if line.strip()]
    except ValueError:
        raise UserError(f"{path}: every line must be one integer length") from None
    if not values or min(values) < 1:
        raise UserError(f"{path}: needs at least one length, all >= 1")
    pool = torch.tensor(values)

    def sample(b: int, s: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(pool), (b,), generator=g)
        return pool[idx].clamp(1, s)

    return f"from {path.name} ({len(values)} lengths)", sample


def make_batch(batch: int, seq: int, vocab: int, sampler: LengthSampler,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids (CLS first, SEP last, padding 0 after) with attention mask and token types."""
    g = torch.Generator().manual_seed(seed)
    lengths = sampler(batch, seq, g)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g) if vocab > 1000 else \
        torch.randint(1, vocab, (batch, seq), generator=g)
    pos = torch.arange(seq)[None, :]
    mask = (pos < lengths[:, None]).long()
    ids = ids * mask
    ids[:, 0] = min(101, vocab - 1)
    types = ((pos >= (lengths[:, None] // 2)) & mask.bool()).long()
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
