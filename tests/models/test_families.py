"""BERT-style families (RoBERTa, XLM-R, ELECTRA, DistilBERT): a random-weight model at odd
sizes is searched from its directory, and the tuned config, applied to the HF model with each
task head or loaded with ``autotune.load``, matches float32 HF."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

import autotune
from autotune.cli import run_search
from autotune.errors import UserError
from autotune.models.bert import KNOWN_ARCHITECTURES, BertArch, resolve_model
from autotune.runtime.model import _find_bert
from autotune.search.driver import SearchOptions
from autotune.settings import DEFAULT_SPACES_DIR

# odd sizes, none of bert-base's: hidden 40 (5 heads of 8), intermediate 72, 3 layers
SIZES = {"vocab_size": 97, "hidden_size": 40, "num_hidden_layers": 3,
         "num_attention_heads": 5, "intermediate_size": 72, "max_position_embeddings": 40}
FAMILIES = {
    "roberta": {**SIZES, "max_position_embeddings": 42, "type_vocab_size": 1,
                "pad_token_id": 1, "layer_norm_eps": 1e-5},
    "xlm-roberta": {**SIZES, "max_position_embeddings": 42, "type_vocab_size": 1,
                    "pad_token_id": 1, "layer_norm_eps": 1e-5},
    "electra": {**SIZES, "embedding_size": 40, "type_vocab_size": 2},
    "distilbert": {"vocab_size": 97, "dim": 40, "n_layers": 3, "n_heads": 5,
                   "hidden_dim": 72, "max_position_embeddings": 40},
}
HEADS = ("AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
         "AutoModelForMaskedLM")


def _hf(family: str, head: str = "AutoModel", seed: int = 0) -> Any:
    import transformers

    cfg = transformers.AutoConfig.for_model(family, **FAMILIES[family])
    torch.manual_seed(seed)
    model = getattr(transformers, head).from_config(cfg).eval()
    model.config._attn_implementation = "eager"
    return model


def _inputs(family: str, batch: int = 3, seq: int = 17) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0
    ids[1, seq // 2:] = FAMILIES[family].get("pad_token_id", 0)  # padded as tokenizers pad
    return {"input_ids": ids, "attention_mask": mask}


def _first(out: Any) -> torch.Tensor:
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).float()


def _rel(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool() if a.dim() == 3 else torch.ones(a.shape[0], dtype=torch.bool)
    return float((a - b)[keep].norm() / b[keep].norm())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_family_tunes_and_runs_with_every_head(family: str, tmp_path: Path) -> None:
    base = _hf(family)
    model_dir = tmp_path / family
    base.save_pretrained(model_dir)
    arch = resolve_model(str(model_dir)).arch
    assert arch.family == family and arch.hidden_size == 40
    assert arch.spec.pooler == (family in ("roberta", "xlm-roberta"))
    opts = SearchOptions(model=str(model_dir), batch_sizes=(2,), seq_lens=(16,), trials=3,
                         time_per_trial=0.01, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                         spaces_dir=DEFAULT_SPACES_DIR, compose_trials=2)
    out = tmp_path / "tuned.json"
    log = io.StringIO()
    assert run_search(opts, out, Console(file=log, width=200)) == 0
    assert f"{arch.spec.title}, 3 layers, hidden 40" in log.getvalue()  # names the family
    cfg = json.loads(out.read_text())
    assert cfg["model"]["architecture"]["family"] == family
    assert ("pooler" in cfg["ops"]) == arch.spec.pooler
    tol = cfg["tolerance"]["max_rel_error"]

    batch = _inputs(family)
    with torch.inference_mode():
        want = base(**batch)
    loaded = autotune.load(str(model_dir), out)
    got = loaded(**batch)
    assert _rel(got.last_hidden_state, want.last_hidden_state, batch["attention_mask"]) < tol
    assert (got.pooler_output is None) == (not arch.spec.pooler)

    for head in HEADS:
        hf = _hf(family, head)
        with torch.inference_mode():
            ref = _first(hf(**batch))
            tuned = autotune.apply(hf, out)
            encoder = _find_bert(tuned)
            calls: list[int] = []
            encoder.autotune.register_forward_hook(lambda *a, calls=calls: calls.append(1))
            res = _first(tuned(**batch))
        assert calls == [1], head  # the head ran the tuned encoder
        assert _rel(res, ref, batch["attention_mask"]) < 2 * tol, head

    # a task model for a pipeline, from the directory, with the tuned encoder
    task_model = autotune.load(str(model_dir), out, task="token-classification")
    assert type(task_model).__name__.endswith("ForTokenClassification")
    assert _find_bert(task_model).autotune.config is not None


def test_roberta_positions_count_from_the_padding_index() -> None:
    """Left padding moves RoBERTa's positions; the tuned model must move them the same way."""
    from autotune.runtime.model import TunedBert

    hf = _hf("roberta")
    arch = BertArch.from_hf_config(hf.config.to_dict(), "roberta")
    tuned = TunedBert(arch, dict(hf.state_dict()), None)
    ids = torch.tensor([[1, 1, 1, 5, 6, 7, 8], [5, 6, 7, 8, 9, 10, 11]])  # 1 is padding
    mask = (ids != 1).long()
    with torch.inference_mode():
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    got = tuned(ids, mask).last_hidden_state
    assert _rel(got, want, mask) < 1e-5


def test_known_family_names_and_refusals(tmp_path: Path) -> None:
    assert KNOWN_ARCHITECTURES["roberta-base"].max_seq == 512
    assert KNOWN_ARCHITECTURES["distilbert-base-uncased"].n_token_types == 0
    # BERT's architecture dict (and so the hash of configs written before families) is as it was
    assert "family" not in KNOWN_ARCHITECTURES["bert-base-uncased"].to_dict()
    with pytest.raises(UserError, match="supported: bert, roberta"):
        BertArch.from_hf_config({**SIZES, "model_type": "gpt2"}, "x")
    with pytest.raises(UserError, match="embedding_size 16"):
        BertArch.from_hf_config({**SIZES, "model_type": "electra", "embedding_size": 16}, "x")


def test_roberta_runs_its_longest_input_and_refuses_a_longer_one() -> None:
    """RoBERTa's offset positions leave ``max_position_embeddings - pad - 1`` tokens; the
    longest runs as HF runs it, one more is a one-line error rather than wrong positions."""
    from autotune.runtime.model import TunedBert

    hf = _hf("roberta")
    arch = BertArch.from_hf_config(hf.config.to_dict(), "roberta")
    tuned = TunedBert(arch, dict(hf.state_dict()), None)
    longest = 42 - 1 - 1
    ids = torch.randint(3, 97, (2, longest + 1))
    with torch.inference_mode():
        want = hf(input_ids=ids[:, :longest]).last_hidden_state
    got = tuned(ids[:, :longest]).last_hidden_state
    assert _rel(got, want, torch.ones(2, longest)) < 1e-5
    with pytest.raises(ValueError, match=f"maximum of {longest}"):
        tuned(ids)
