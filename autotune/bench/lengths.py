"""What the inputs of a workload look like: ``fixed`` (every sequence fills the bucket),
``uniform:LO..HI`` (or ``LO..HI``), a file with one length per line, or a text file with one
input per line, tokenized with the model's tokenizer (real token ids and real lengths)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from autotune.errors import UserError

LengthSampler = Callable[[int, int, torch.Generator], torch.Tensor]
MAX_TEXTS = 100_000  # lines read from a text file (enough for any length mix)
#: English texts of several kinds (support requests, queries, reviews, news, documentation;
#: 4-110 tokens) that accuracy is judged on when the user gives none and a tokenizer exists
BUILTIN_TEXTS = Path(__file__).resolve().parent.parent / "data" / "calibration.txt"


@dataclass(frozen=True)
class LengthMix:
    desc: str
    sample: LengthSampler  # (batch, seq, gen) -> real lengths in 1..seq
    texts: tuple[torch.Tensor, ...] = ()  # token ids of real inputs (a text file)
    pad_id: int = 0


def parse_lengths(spec: str, tokenizer: str | Path | None = None,
                  max_length: int = 512) -> LengthMix:
    """The mix ``spec`` names; ``tokenizer`` (a model directory or name) and ``max_length``
    are used only for a text file."""
    spec = spec.strip()
    if spec in ("", "fixed", "full"):
        return LengthMix("fixed", lambda b, s, g: torch.full((b,), s, dtype=torch.long))
    m = re.fullmatch(r"(?:uniform:)?(\d+)\s*\.\.\s*(\d+)", spec)
    if m:
        lo, hi = int(m[1]), int(m[2])
        if not 1 <= lo <= hi:
            raise UserError(f"--lengths {spec!r}: need 1 <= LO <= HI")
        return LengthMix(f"uniform {lo}..{hi}", lambda b, s, g: torch.randint(
            min(lo, s), min(hi, s) + 1, (b,), generator=g))
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--lengths {spec!r}: expected fixed, LO..HI, a file of lengths or a "
                        "text file with one input per line")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if not lines:
        raise UserError(f"{path}: empty (one length or one input text per line)")
    if all(re.fullmatch(r"\s*-?\d+\s*", line) for line in lines):
        values = [int(line) for line in lines]
        if min(values) < 1:
            raise UserError(f"{path}: lengths must be >= 1")
        return LengthMix(f"from {path.name} ({len(values)} lengths)", _pool(values))
    texts, pad_id = _tokenize(path, lines[:MAX_TEXTS], tokenizer, max_length)
    return LengthMix(f"text of {path.name} ({len(texts)} inputs)",
                     _pool([len(t) for t in texts]), tuple(texts), pad_id)


def calibration_texts(spec: str | None, tokenizer: str | Path | None, max_length: int,
                      lengths: LengthMix) -> LengthMix | None:
    """The real inputs accuracy is judged on: ``spec`` (``--calibration FILE``, one text per
    line), else the length mix's own texts (``--lengths`` a text file), else the built-in
    texts when the model has a tokenizer; None when there is none (random token ids)."""
    if spec is not None:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"--calibration {spec!r}: not a file (one input text per line)")
        mix = parse_lengths(spec, tokenizer, max_length)
        if not mix.texts:
            raise UserError(f"--calibration {spec}: holds numbers only; it takes text, one "
                            "input per line (lengths go to --lengths)")
        return mix
    if lengths.texts:
        return lengths
    try:
        builtin = parse_lengths(str(BUILTIN_TEXTS), tokenizer, max_length)
        return replace(builtin, desc=f"autotune's built-in texts ({len(builtin.texts)} inputs)")
    except UserError:  # no tokenizer for this model: random token ids, as the caller says
        return None


def _pool(values: list[int]) -> LengthSampler:
    pool = torch.tensor(values)

    def sample(b: int, s: int, g: torch.Generator) -> torch.Tensor:
        return pool[torch.randint(0, len(pool), (b,), generator=g)].clamp(1, s)

    return sample


def _tokenize(path: Path, lines: list[str], tokenizer: str | Path | None,
              max_length: int) -> tuple[list[torch.Tensor], int]:
    """(token ids per line, the padding id) with the model's own tokenizer."""
    hint = (f"{path}: a text file needs the model's tokenizer; give --model a directory that "
            "holds one (tokenizer.json or vocab.txt) or a name in the local Hugging Face cache")
    if tokenizer is None:
        raise UserError(hint)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    except Exception as e:  # missing files, no network: one line, not a traceback
        raise UserError(f"{hint} ({type(e).__name__})") from None
    if len(tok) < 100:  # transformers builds an empty-vocabulary tokenizer from a config alone
        raise UserError(f"{hint} (it found no vocabulary)")
    enc = tok(lines, truncation=True, max_length=max_length)["input_ids"]
    return [torch.tensor(ids) for ids in enc], int(tok.pad_token_id or 0)


def packed_batches(batch: int, seq: int, texts: Sequence[torch.Tensor], order: Sequence[int],
                   min_texts: int, token_types: int = 2) -> list[dict[str, torch.Tensor]]:
    """Batches of exactly ``batch`` x ``seq`` real tokens: ``texts`` (token ids) in ``order``
    (cycled), one after another in each row (the last one of a row cut at its end), until at
    least ``min_texts`` texts went in (at least one batch). No padding: every op of a model
    called on them runs at this very shape, whatever the layout and however short the texts."""
    if not any(len(texts[i]) for i in order):
        raise ValueError("packed_batches needs texts with tokens")
    batches: list[dict[str, torch.Tensor]] = []
    used = 0
    while used < min_texts or not batches:
        ids = torch.empty(batch, seq, dtype=torch.long)
        for row in range(batch):
            filled = 0
            while filled < seq:
                t = texts[order[used % len(order)]][:seq - filled]
                ids[row, filled:filled + len(t)] = t
                filled += len(t)
                used += 1
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if token_types:
            out["token_type_ids"] = torch.zeros_like(ids)
        batches.append(out)
    return batches


def make_batch(batch: int, seq: int, vocab: int, mix: LengthMix, seed: int = 0,
               pad_to_longest: bool = False, token_types: int = 2) -> dict[str, torch.Tensor]:
    """A batch of ``batch`` inputs padded to ``seq`` (to its longest input with
    ``pad_to_longest``, as HF tokenizers' ``padding=True`` does): the mix's real inputs when
    it has them (one longer than ``seq`` keeps its first tokens and its last), else token ids
    drawn at random (CLS first) with the mix's lengths and sentence-pair token types
    (``token_types``: how many the model takes; 0 leaves token_type_ids out)."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(seq)[None, :]
    if mix.texts:
        picks = torch.randint(0, len(mix.texts), (batch,), generator=g).tolist()
        ids = torch.full((batch, seq), mix.pad_id, dtype=torch.long)
        lengths = torch.empty(batch, dtype=torch.long)
        for row, i in enumerate(picks):
            t = mix.texts[i]
            if len(t) > seq:
                t = torch.cat([t[:seq - 1], t[-1:]])
            ids[row, :len(t)] = t
            lengths[row] = len(t)
        mask = (pos < lengths[:, None]).long()
        types = torch.zeros_like(ids)
    else:
        lengths = mix.sample(batch, seq, g)
        ids = torch.randint(1000, vocab, (batch, seq), generator=g) if vocab > 1000 else \
            torch.randint(1, vocab, (batch, seq), generator=g)
        mask = (pos < lengths[:, None]).long()
        ids = ids * mask
        ids[:, 0] = min(101, vocab - 1)
        types = ((pos >= (lengths[:, None] // 2)) & mask.bool()).long()
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if token_types == 0:  # the model takes no token_type_ids (DistilBERT)
        del out["token_type_ids"]
    elif token_types == 1:  # one type only (RoBERTa)
        out["token_type_ids"] = torch.zeros_like(ids)
    if pad_to_longest:
        longest = int(lengths.max())
        out = {k: v[:, :longest].contiguous() for k, v in out.items()}
    return out
