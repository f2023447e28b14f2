"""The runtime against HF BertModel: equivalence, heads, layouts, dispatch, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

import autotune
from autotune.models.bert import BertArch, Bucket
from autotune.models.kinds import KINDS, OP_KINDS
from autotune.runtime import ConfigError, TunedBert, parse_config
from autotune.runtime.model import pick_choice
from tests.conftest import TINY
from tests.runtime.helpers import BF16_GEMM, F32_GEMM, INT8_GEMM, choices, make_config

HF_CONFIG = BertConfig(**{k: v for k, v in TINY.to_dict().items()})


def _inputs(batch: int = 3, seq: int = 11, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0  # a padded sequence
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 3:] = 1  # sentence pairs
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _rel(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool()
    return float((a - b)[keep].norm() / b[keep].norm())


def _hf(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(HF_CONFIG, add_pooling_layer=True).eval()


@pytest.mark.parametrize(
    ("gemm", "precision", "bound"),
    [(F32_GEMM, "float32", 1e-5), (BF16_GEMM, "bfloat16", 0.02), (INT8_GEMM, "float32", 0.1)],
    ids=["float32", "bfloat16", "int8"],
)
def test_apply_matches_hf(gemm: dict, precision: str, bound: float) -> None:
    hf = _hf()
    inputs = _inputs()
    with torch.no_grad():
        ref = hf(**inputs)
    cfg = make_config(TINY, choices(gemm, precision), [(1, 16), (4, 16)])
    autotune.apply(hf, cfg)
    with torch.no_grad():
        out = hf(**inputs)
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) <= bound
    cos = torch.nn.functional.cosine_similarity(out.pooler_output, ref.pooler_output)
    assert cos.min() >= (0.9999 if precision == "float32" and gemm is F32_GEMM else 0.99)
    assert out[0] is out.last_hidden_state and out["pooler_output"] is out.pooler_output


def _logits_before_and_after_apply(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A head model's logits in float32 HF, then with a float32 tuned config applied."""
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs).logits
    autotune.apply(model, make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)]))
    with torch.no_grad():
        return ref, model(**inputs).logits


def test_head_model_keeps_working() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY.to_dict(), num_labels=3)).eval()
    ref, out = _logits_before_and_after_apply(model)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("layout", [{"varlen": True}, {"pad_to_multiple": 8},
                                    {"varlen": True, "pad_to_multiple": 4}])
def test_layouts_match_on_real_tokens(layout: dict) -> None:
    hf = _hf()
    inputs = _inputs(batch=4, seq=13)
    inputs["attention_mask"][2, 3:] = 0
    inputs["attention_mask"][:, 11:] = 0  # trailing padding in every sequence
    with torch.no_grad():
        ref = hf(**inputs)
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(1, 16), (4, 16)], **layout)
    autotune.apply(hf, cfg)
    with torch.no_grad():
        out = hf(**inputs)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 1e-5
    assert torch.allclose(out.pooler_output, ref.pooler_output, atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_run_padding_free_whatever_the_layout(side: str) -> None:
    """A config that ships the padded layout still skips the padding of a batch that has a
    lot (production pads each batch to its longest input; here 29%): its GEMMs run on the
    real tokens only, and every real token matches HF, padded on either side. A batch
    without padding runs padded."""
    hf = _hf()
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(1, 16), (4, 16)])
    model = TunedBert(TINY, hf.state_dict(), parse_config(cfg))
    inputs = _inputs(batch=4, seq=13)
    lengths = [13, 9, 4, 11]
    for row, n in enumerate(lengths):
        inputs["attention_mask"][row] = 0
        inputs["attention_mask"][row, :n] = 1
    if side == "left":
        inputs["attention_mask"] = inputs["attention_mask"].flip(1)
    with torch.no_grad():
        ref = hf(**inputs)
    out = model(**inputs)
    first = torch.zeros(4, 1, dtype=torch.long)  # each row's first position, padding or not
    assert ("qkv_proj", 0, 1, sum(lengths) + (3 if side == "left" else 0)) in model._dispatch
    assert ("qkv_proj", 0, 4, 13) not in model._dispatch
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 1e-5
    # The pooler and CLS pooling read the first position: a left-padded row's is padding,
    # and HF computes it all the same.
    assert _rel(out.last_hidden_state[:, :1], ref.last_hidden_state[:, :1], first + 1) < 1e-5
    assert torch.allclose(out.pooler_output, ref.pooler_output, atol=1e-5)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape
    model(**_inputs(batch=4, seq=13) | {"attention_mask": torch.ones(4, 13, dtype=torch.long)})
    assert ("qkv_proj", 0, 4, 13) in model._dispatch


@pytest.mark.parametrize("layout", [{}, {"varlen": True}])
def test_a_row_without_real_tokens_attends_uniformly_and_leaves_the_others_alone(
        layout: dict) -> None:
    """An all-zero mask row. HF's eager attention adds the dtype's minimum to every key
    there: the scores become equal and the row attends uniformly (HF's SDPA path unmasks
    such rows instead, so HF's two paths disagree on it). A bfloat16 mask turned that
    minimum into -inf, and the row into NaN. The row now attends uniformly, as in HF's
    eager attention, in float32 to HF's precision, in bfloat16 finite; the other rows
    match HF."""
    hf = _hf()
    hf.config._attn_implementation = "eager"
    inputs = _inputs(batch=5, seq=12)
    inputs["attention_mask"][:] = 1
    inputs["attention_mask"][0] = 0
    with torch.no_grad():
        ref = hf(**inputs)
    every = torch.ones_like(inputs["attention_mask"])
    for precision, gemm, bound in (("float32", F32_GEMM, 1e-5), ("bfloat16", BF16_GEMM, 0.02)):
        for attention in ({"variant": "eager", "precision": precision, "scale_on": "q",
                           "softmax_fp32": False, "threads": 1},
                          {"variant": "blocked", "precision": precision,
                           "softmax_fp32": False, "heads_per_block": 1,
                           "skip_padded_keys": True, "threads": 1}):
            per_kind = choices(gemm, precision) | {"attention": attention}
            cfg = make_config(TINY, per_kind, [(4, 16)], **layout)
            out = TunedBert(TINY, hf.state_dict(), parse_config(cfg))(**inputs)
            what = (precision, attention["variant"])
            assert torch.isfinite(out.last_hidden_state).all(), what
            assert _rel(out.last_hidden_state, ref.last_hidden_state, every) < bound, what
            assert _rel(out.pooler_output, ref.pooler_output,
                        torch.ones_like(ref.pooler_output)) < bound, what


def test_padding_free_layout_keeps_left_padded_tokens() -> None:
    """A padding-free config trims only the columns no row uses: left padding (the real
    tokens at the end) once lost its last columns."""
    hf = _hf()
    inputs = _inputs(batch=3, seq=12)
    inputs["attention_mask"] = torch.ones(3, 12, dtype=torch.long)
    inputs["attention_mask"][:, :4] = 0
    inputs["attention_mask"][1, :8] = 0
    with torch.no_grad():
        ref = hf(**inputs)
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)], varlen=True)
    out = TunedBert(TINY, hf.state_dict(), parse_config(cfg))(**inputs)
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 1e-5


def test_masked_lm_without_pooler() -> None:
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    ref, out = _logits_before_and_after_apply(BertForMaskedLM(HF_CONFIG).eval())
    assert torch.allclose(out, ref, atol=1e-4)


def test_layout_threads_override_every_op(monkeypatch: pytest.MonkeyPatch) -> None:
    per_kind = choices(F32_GEMM, "float32")  # every op asks for 1 thread
    cfg = parse_config(make_config(TINY, per_kind, [(4, 16)], threads=3))
    model = TunedBert(TINY, _hf().state_dict(), cfg)
    seen: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n))[1])
    model(**_inputs())
    assert 3 in seen and 1 not in seen


def test_position_ids_are_honoured() -> None:
    hf = _hf()
    inputs = _inputs()
    inputs["position_ids"] = torch.arange(11).flip(0).expand(3, -1)
    with torch.no_grad():
        ref = hf(**inputs)
    autotune.apply(hf, make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)]))
    with torch.no_grad():
        out = hf(**inputs)
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 1e-5


def test_shapes_beyond_buckets_run_the_nearest_tuned_choice() -> None:
    """No float32 fallback where a tuned variant can run: a call larger than every bucket runs
    the nearest bucket's (bfloat16) choice, built once, without a warning."""
    hf = _hf()
    cfg = make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(1, 8), (2, 16)])
    model = TunedBert(TINY, hf.state_dict(), parse_config(cfg))
    inputs = _inputs(batch=5, seq=20)
    with torch.no_grad():
        ref = hf(**inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model(**inputs)
        model(**inputs)
    buckets = {bucket for _, _, bucket in model._built}
    assert buckets == {Bucket(2, 16)}  # the nearer of the two, for every op
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 0.03


@pytest.mark.parametrize(("gemm", "precision", "bound"),
                         [(F32_GEMM, "float32", 1e-5), (BF16_GEMM, "bfloat16", 0.02)],
                         ids=["float32", "bfloat16"])
def test_odd_shapes_up_to_the_longest_position_match_hf(gemm: dict, precision: str,
                                                        bound: float) -> None:
    """Batch 3, length 77 and 511 (odd, no bucket, up to the model's 512 positions) run the
    tuned choices of the nearest buckets, never the float32 reference, and match HF."""
    arch = BertArch(**{**TINY.to_dict(), "max_position_embeddings": 512})
    torch.manual_seed(1)
    hf = BertModel(BertConfig(**arch.to_dict()), add_pooling_layer=True).eval()
    buckets = [(1, 16), (8, 128)]
    model = TunedBert(arch, hf.state_dict(), parse_config(
        make_config(arch, choices(gemm, precision), buckets)))
    for batch, seq in ((3, 77), (2, 511), (5, 512)):
        inputs = _inputs(batch=batch, seq=seq, seed=seq)
        with torch.no_grad():
            ref = hf(**inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the float32 fallback warns
            out = model(**inputs)
        err = _rel(out.last_hidden_state.float(), ref.last_hidden_state,
                   inputs["attention_mask"])
        assert err < bound, (batch, seq, err)
    assert {b for _, _, b in model._built} <= {Bucket(*b) for b in buckets}


def test_dispatch_is_resolved_once_per_shape_and_stays_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated shape costs a look-up, not a bucket search; the table of resolved shapes is
    bounded whatever the traffic, and emptying it changes no output."""
    import autotune.runtime.model as runtime

    hf = _hf()
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(1, 8), (2, 16)])
    model = TunedBert(TINY, hf.state_dict(), parse_config(cfg))
    searched: list[str] = []
    real_pick = runtime.pick_choice
    monkeypatch.setattr(runtime, "pick_choice",
                        lambda kind, *a: searched.append(kind) or real_pick(kind, *a))
    inputs = _inputs(batch=2, seq=9)
    first = model(**inputs).last_hidden_state
    calls = len(searched)
    assert calls == sum(KINDS[k].count(TINY) for k in OP_KINDS)
    assert torch.equal(model(**inputs).last_hidden_state, first)
    assert len(searched) == calls  # the second call searched nothing
    monkeypatch.setattr(runtime, "_DISPATCH_ENTRIES", calls + 5)
    for seq in range(3, 12):
        model(**_inputs(batch=2, seq=seq))
        assert len(model._dispatch) <= calls + 5
    assert torch.equal(model(**inputs).last_hidden_state, first)


def test_a_model_tells_which_buckets_its_calls_ran() -> None:
    """used_buckets names the buckets whose choices the calls since its last call ran: a
    2x9 batch runs the 2x16 bucket's ops, a 1x4 batch the 1x8 bucket's (every kind), and
    asking again without a call names none."""
    hf = _hf()
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(1, 8), (2, 16)])
    model = TunedBert(TINY, hf.state_dict(), parse_config(cfg))
    model(**_inputs(batch=2, seq=9))
    assert model.used_buckets() == {Bucket(2, 16)}
    ids = torch.randint(0, TINY.vocab_size, (1, 4))
    model(input_ids=ids)
    model(input_ids=ids)
    assert model.used_buckets() == {Bucket(1, 8)}
    assert model.used_buckets() == set()


def test_nearest_bucket_per_op_kind() -> None:
    cfg = parse_config(make_config(TINY, choices(F32_GEMM, "float32"),
                                   [(1, 64), (8, 16), (32, 16)]))

    def picked(kind: str, batch: int, seq: int) -> tuple[int, int]:
        choice = pick_choice(kind, cfg.ops[kind], batch, seq)
        assert choice is not None
        return choice.bucket.batch, choice.bucket.seq

    assert picked("qkv_proj", 1, 40) == (1, 64)  # smallest covering: 64 rows
    assert picked("qkv_proj", 64, 16) == (32, 16)  # beyond all: the most rows
    assert picked("attention", 2, 64) == (1, 64)  # none covers: 2x batch, not 4x + 4x
    assert picked("attention", 16, 20) == (32, 16)  # equally near 8x16 and 32x16: the larger
    assert picked("attention", 1, 200) == (1, 64)  # long single sequences: the long bucket
    assert picked("attention", 40, 16) == (32, 16)
    assert picked("pooler", 6, 512) == (8, 16)  # batch only: the smallest covering
    assert pick_choice("ffn_up", (), 1, 8) is None


def test_an_op_kind_without_choices_runs_the_reference_with_one_warning() -> None:
    hf = _hf()
    per_kind = choices(F32_GEMM, "float32")
    cfg = make_config(TINY, per_kind, [(2, 16)])
    del cfg["ops"]["ffn_up"]
    model = TunedBert(TINY, hf.state_dict(), parse_config(cfg))
    inputs = _inputs()
    with torch.no_grad():
        ref = hf(**inputs)
    with pytest.warns(UserWarning, match="ffn_up: the tuned config has no choice") as record:
        out = model(**inputs)
        model(**inputs)
    assert len(record) == 1
    assert _rel(out.last_hidden_state, ref.last_hidden_state, inputs["attention_mask"]) < 1e-5


def test_unsupported_arguments_use_the_original_forward() -> None:
    hf = _hf()
    inputs = _inputs()
    autotune.apply(hf, make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(4, 16)]))
    with torch.no_grad():
        out = hf(**inputs, output_hidden_states=True)
    assert out.hidden_states is not None and len(out.hidden_states) == TINY.num_hidden_layers + 1


def test_tensor_arguments_and_ready_masks_use_the_original_forward() -> None:
    """A tensor in an argument the tuned forward does not implement (or a ready 4-D mask,
    which HF also takes) goes to HF's own forward: same outputs, no error."""
    hf = _hf()
    inputs = _inputs()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    calls = {
        "head_mask": {**inputs, "head_mask": torch.ones(TINY.num_hidden_layers,
                                                        TINY.num_attention_heads)},
        "inputs_embeds": {"inputs_embeds": hf.embeddings.word_embeddings(ids),
                          "attention_mask": mask},
        "4-D mask": {"input_ids": ids, "attention_mask": mask[:, None, None, :].float()},
    }
    with torch.no_grad():
        refs = {name: hf(**kw).last_hidden_state for name, kw in calls.items()}
    autotune.apply(hf, make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(4, 16)]))
    with torch.no_grad():
        for name, kw in calls.items():
            assert torch.equal(hf(**kw).last_hidden_state, refs[name]), name


def test_inputs_the_model_cannot_run_are_one_line_errors() -> None:
    hf = _hf()
    autotune.apply(hf, make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)]))
    longest = TINY.max_position_embeddings
    ids = torch.randint(0, TINY.vocab_size, (2, longest + 1))
    with pytest.raises(ValueError, match=f"longer than the model's maximum of {longest}"):
        hf(input_ids=ids)  # the position table would be read past its end
    with pytest.raises(ValueError, match="must be \\(batch, sequence\\)"):
        hf(input_ids=ids[0])
    with pytest.raises(ValueError, match="no tokens"):
        hf(input_ids=ids[:, :0])
    with pytest.raises(ValueError, match="must have input_ids' shape"):
        hf(input_ids=ids[:, :8], attention_mask=torch.ones(2, 9, dtype=torch.long))
    assert hf(input_ids=ids[:, :longest]).last_hidden_state.shape == (2, longest, TINY.hidden_size)


def test_model_mismatch_is_an_error() -> None:
    other = BertArch(**{**TINY.to_dict(), "intermediate_size": 48})
    hf = _hf()
    with pytest.raises(autotune.runtime.ConfigError, match="tuned config is for"):
        autotune.apply(hf, make_config(other, choices(F32_GEMM, "float32"), [(4, 16)]))


def test_other_machine_warns_and_strict_refuses() -> None:
    cfg = make_config(TINY, choices(F32_GEMM, "float32"), [(4, 16)])
    cfg["machine"] = {"fingerprint": "0123456789ab", "cpu": "Some Other CPU", "cores": 64}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        autotune.apply(_hf(), cfg)
    assert any("another machine" in str(w.message) for w in record)
    with pytest.raises(autotune.runtime.ConfigError, match="another machine"):
        autotune.apply(_hf(), cfg, strict=True)


def test_runtime_imports_no_search_dependencies(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Loading a model with a config (parsed and checked against the shipped spaces) and
    running it imports torch, not the search's dependencies."""
    cfg = tmp_path / "tuned.json"
    cfg.write_text(json.dumps(make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(2, 16)],
                                          name="tiny-bert")))
    code = ("import sys, torch, autotune\n"
            f"m = autotune.load({str(tiny_model_dir)!r}, {str(cfg)!r})\n"
            "m(torch.ones(2, 9, dtype=torch.long)).last_hidden_state.sum().item()\n"
            "print(' '.join(m for m in ('optuna', 'sqlalchemy', 'plotly', 'jsonschema', "
            "'yaml', 'transformers', 'rich', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == ""


def test_triton_config_runs_and_skipping_padded_keys_changes_nothing() -> None:
    """A cuda config on CPU tensors (Triton interpreted; on a GPU, on the GPU): every Triton
    op runs inside the runtime, and flash attention stopping at each sequence's last real key
    gives the very same outputs as attending over every key."""
    from autotune.runtime.config import parse_config
    from autotune.runtime.model import TunedBert
    from autotune.runtime.weights import random_weights
    from tests.conftest import KERNEL_DEVICE
    from tests.runtime.helpers import triton_config

    state = random_weights(TINY)
    skip = TunedBert(TINY, state, parse_config(triton_config()), KERNEL_DEVICE)
    full = TunedBert(TINY, state, parse_config(triton_config(skip_padded_keys=False)),
                     KERNEL_DEVICE)
    ref = TunedBert(TINY, state, None, KERNEL_DEVICE)
    assert skip.skips_padded_keys and not full.skips_padded_keys
    ids = torch.randint(0, TINY.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids, mask = ids.to(KERNEL_DEVICE), mask.to(KERNEL_DEVICE)
    a, b, r = skip(ids, mask), full(ids, mask), ref(ids, mask)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    keep = mask.bool()
    err = (a.last_hidden_state - r.last_hidden_state)[keep].norm() / r.last_hidden_state[
        keep].norm()
    assert float(err) < 2e-2
    assert len(skip._built) == 1 + 5 * TINY.num_hidden_layers + 1  # no float32 fallback


def test_concurrent_callers_get_what_sequential_calls_give(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server calls one loaded model from several threads: ops are built lazily per shape
    (here, first by the concurrent calls) and per-op thread counts are switched process-wide
    (every op asks for 1 thread). Outputs must equal those of calls made one at a time."""
    import threading

    state = _hf().state_dict()
    cfg = parse_config(make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(1, 8), (2, 16)]))
    shapes = [(2, 4), (2, 16), (3, 20), (2, 8), (4, 9), (2, 7), (5, 30), (3, 16)]
    calls = [_inputs(batch=b, seq=s, seed=i) for i, (b, s) in enumerate(shapes)] * 3
    sequential = TunedBert(TINY, state, cfg)
    with torch.no_grad():
        expected = [sequential(**c).last_hidden_state for c in calls]
    shared = TunedBert(TINY, state, cfg)  # nothing built yet
    builds: list[str] = []
    real_get = autotune.runtime.model.get_variant

    def counted(kind: str, device: str, name: str) -> object:
        v = real_get(kind, device, name)

        class Counted:
            input_dtype = v.input_dtype

            @staticmethod
            def build(*args: object) -> object:
                builds.append(kind)
                time.sleep(0.01)  # widen the window in which two threads could both build
                return v.build(*args)
        return Counted

    monkeypatch.setattr(autotune.runtime.model, "get_variant", counted)
    got: list[torch.Tensor | None] = [None] * len(calls)
    start = threading.Barrier(8)

    def serve(worker: int) -> None:
        start.wait()
        for i in range(worker, len(calls), 8):
            with torch.no_grad():
                got[i] = shared(**calls[i]).last_hidden_state

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (out, ref) in enumerate(zip(got, expected, strict=True)):
        assert out is not None and torch.equal(out, ref), (i, shapes[i % len(shapes)])
    assert len(builds) == len(shared._built) == len(sequential._built)  # each op built once


def test_weights_are_held_once_whatever_the_number_of_buckets() -> None:
    """Every bucket's ops share one copy of each weight per layout (here bfloat16): a model
    tuned at four buckets holds no more than one tuned at one, after calls at every bucket."""
    import gc

    from autotune.kernels.derived import held_bytes

    hf = _hf()

    def held(buckets: list[tuple[int, int]]) -> int:
        state = {k: v.clone() for k, v in hf.state_dict().items()}  # weights of its own
        gc.collect()
        before = held_bytes()
        model = TunedBert(TINY, state, parse_config(
            make_config(TINY, choices(BF16_GEMM, "bfloat16"), buckets)))
        for b, s in buckets:
            model(**_inputs(batch=b, seq=s))
        assert {bucket for _, _, bucket in model._built} == {Bucket(*b) for b in buckets}
        return held_bytes() - before

    one, four = held([(2, 16)]), held([(2, 8), (2, 16), (4, 16), (8, 32)])
    layers = sum(v.numel() for k, v in hf.state_dict().items()
                 if k.startswith("encoder.") and k.endswith(".weight") and "LayerNorm" not in k)
    assert one >= 2 * layers  # the GEMM weights in bfloat16, at least
    assert four == one


def test_a_loaded_model_drops_the_float32_originals_its_ops_do_not_use() -> None:
    """After ``build_all(release_weights=True)`` (what ``autotune.load`` does) a bfloat16
    config's GEMMs hold their bfloat16 copies only: the float32 originals are freed, and calls
    at shapes no bucket has still run (and build nothing)."""
    import gc
    import weakref

    hf = _hf()
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    cfg = parse_config(make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(1, 8), (2, 16)]))
    model = TunedBert(TINY, state, cfg)
    originals = {k: weakref.ref(v) for k, v in state.items()
                 if k.endswith(("dense.weight", "query.weight", "embeddings.weight"))}
    # q, attn_out, ffn_up, ffn_down per layer; word, position and token-type tables; pooler
    assert len(originals) == 4 * TINY.num_hidden_layers + 3 + 1
    del state
    model.build_all(release_weights=True)
    gc.collect()
    alive = [k for k, r in originals.items() if r() is not None]
    assert alive == []
    built = len(model._built)
    want = hf(**_inputs(batch=3, seq=23))
    got = model(**_inputs(batch=3, seq=23))
    assert len(model._built) == built  # nothing built after build_all
    err = (got.last_hidden_state - want.last_hidden_state).norm() / \
        want.last_hidden_state.norm()
    assert err < 0.03


def test_a_per_layer_config_runs_each_layer_its_own_choice(tmp_path: Path) -> None:
    """Layer 1's GEMMs in float32, layer 0's in bfloat16: the config passes the schema,
    loads, builds each layer's own choice, and matches float32 HF better than all-bfloat16."""
    import jsonschema

    from autotune.export import schema

    buckets = [(1, 8), (4, 16)]
    bf16 = make_config(TINY, choices(BF16_GEMM, "bfloat16"), buckets)
    fp32 = make_config(TINY, choices(F32_GEMM, "float32"), buckets)
    mixed = json.loads(json.dumps(bf16))
    for kind in ("qkv_proj", "attn_out", "ffn_up", "ffn_down"):
        mixed["ops"][kind] += [{**e, "layers": [1]} for e in fp32["ops"][kind]]
    jsonschema.validate(mixed, schema())
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(mixed))
    cfg = parse_config(path)
    assert {c.layers for cs in cfg.layer_ops.values() for c in cs} == {(1,)}
    assert all(len(cs) == 2 for cs in cfg.ops.values())  # one default per bucket

    hf = _hf()
    inputs = _inputs(batch=3, seq=11)
    with torch.no_grad():
        want = hf(**inputs).last_hidden_state
    errors = {}
    for name, c in (("bf16", bf16), ("mixed", cfg)):
        model = TunedBert(TINY, dict(hf.state_dict()), parse_config(c) if name == "bf16" else c)
        model.build_all()
        errors[name] = _rel(model(**inputs).last_hidden_state, want, inputs["attention_mask"])
        if name == "mixed":
            dtypes = {(k, n): d for (k, n, b), (_, d) in model._built.items()
                      if k == "ffn_up" and b.batch == 4}
            assert dtypes == {("ffn_up", 0): torch.bfloat16, ("ffn_up", 1): torch.float32}
    assert errors["mixed"] < errors["bf16"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda ops: ops["embeddings"].append({**ops["embeddings"][0], "layers": [0]}),
     "once per forward pass"),
    (lambda ops: ops["ffn_up"].append({**ops["ffn_up"][0], "layers": [2]}), "layer 2 of a"),
    (lambda ops: ops["ffn_up"].extend([{**ops["ffn_up"][0], "layers": [1]}] * 2),
     "two choices for layer 1"),
    (lambda ops: ops["ffn_up"].append(dict(ops["ffn_up"][0])), "two choices for bucket"),
    (lambda ops: ops["ffn_up"].append({**ops["ffn_up"][0], "layers": [0],
                                       "bucket": {"batch": 2, "seq": 2}}), "no choice for"),
])
def test_bad_layer_choices_are_refused(change: Any, message: str) -> None:
    cfg = make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(4, 16)])
    change(cfg["ops"])
    with pytest.raises(ConfigError, match=message):
        parse_config(cfg)
