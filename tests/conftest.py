from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.models.bert import BertArch

TINY = BertArch(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64)


@pytest.fixture
def tiny_arch() -> BertArch:
    return TINY


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A local model directory holding only a tiny BERT config.json."""
    d = tmp_path / "tiny-bert"
    d.mkdir()
    cfg = {"model_type": "bert", "architectures": ["BertModel"], **TINY.to_dict()}
    (d / "config.json").write_text(json.dumps(cfg))
    return d
