"""Accuracy as a user of sentence embeddings sees it: every text of a real text file embedded
by each contender (mean of the last hidden states over real tokens, as sentence-transformers
pools) against float32 HF, and whether nearest-neighbour retrieval over the texts changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from autotune.bench.lengths import LengthMix

Batch = dict[str, torch.Tensor]
#: texts embedded per contender: enough for a stable worst case, a few seconds on a CPU
MAX_TEXTS = 512
BATCH = 32


def text_batches(mix: LengthMix, token_types: int, limit: int = MAX_TEXTS,
                 batch: int = BATCH) -> Iterator[Batch]:
    """The mix's first ``limit`` texts in file order, ``batch`` at a time, each batch padded
    to its longest text (as HF tokenizers' ``padding=True``)."""
    texts = mix.texts[:limit]
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        longest = max(len(t) for t in chunk)
        ids = torch.full((len(chunk), longest), mix.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, t in enumerate(chunk):
            ids[row, :len(t)], mask[row, :len(t)] = t, 1
        out = {"input_ids": ids, "attention_mask": mask}
        if token_types:
            out["token_type_ids"] = torch.zeros_like(ids)
        yield out


def embed(run: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]],
          batches: list[Batch]) -> torch.Tensor:
    """Unit-length mean-pooled embeddings, one row per text."""
    rows = []
    for b in batches:
        hidden = run(b)[0].float()
        m = b["attention_mask"][..., None].float()
        rows.append(torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(rows)


def nearest(emb: torch.Tensor) -> torch.Tensor:
    """Each text's nearest other text by cosine."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    return sim.argmax(dim=1)


def compare(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Worst and mean cosine to the reference embedding, and the share of texts whose
    nearest neighbour is the reference's."""
    cos = (got * ref).sum(dim=1)
    kept = (nearest(got) == nearest(ref)).float().mean() if len(ref) > 1 else torch.tensor(1.0)
    return {"texts": len(ref), "min_cos": float(cos.min()), "mean_cos": float(cos.mean()),
            "neighbours_kept": float(kept)}
