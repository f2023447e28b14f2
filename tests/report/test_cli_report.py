"""`autotune report` and `autotune studies` from the command line, after a real search."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from autotune.cli import main, run_search
from autotune.fingerprint import machine
from autotune.measure.peaks import measure_peaks
from autotune.search.driver import SearchOptions
from autotune.settings import DEFAULT_SPACES_DIR
from autotune.storage.peaks import load_peaks
from autotune.storage.runs import search_runs


def test_report_after_a_real_search(tmp_path: Path, tiny_model_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'at.sqlite3'}"
    opts = SearchOptions(model=str(tiny_model_dir), batch_sizes=(2,), seq_lens=(8,), trials=3,
                         time_per_trial=0.01, storage=url, spaces_dir=DEFAULT_SPACES_DIR,
                         ops=("ffn_up", "pooler"), compose_trials=0)
    assert run_search(opts, tmp_path / "tuned.json", Console(file=io.StringIO())) == 0
    runs = search_runs(url, "tiny-bert", "cpu", machine("cpu")["fingerprint"])
    assert [(r["status"], r["trials"], r["buckets"]) for r in runs] == [("finished", 3, ["b2s8"])]
    assert runs[0]["wall_s"] > 0

    out = tmp_path / "out" / "tiny.html"
    result = CliRunner().invoke(main, ["report", "--storage", url, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".mmd").exists()
    assert "report written to" in result.output
    peaks = load_peaks(url, machine("cpu")["fingerprint"], torch.__version__)
    assert peaks is not None and peaks["gbps"] > 0  # measured once, on the tuned machine
    html = out.read_text()
    assert "3 trials per study (tpe sampler)" in html and "tiny-bert" in html
    assert 'id="roofline"' in html and "No measured peaks" not in html

    def no_second_measurement(*a: object, **k: object) -> dict[str, object]:
        raise AssertionError("peaks are stored; they must not be measured again")

    monkeypatch.setattr("autotune.measure.peaks.measure_peaks", no_second_measurement)
    result = CliRunner().invoke(main, ["report", "--storage", url, "--output", str(out),
                                       "--model", "tiny-bert", "--max-rel-error", "1e-4"])
    assert result.exit_code == 0, result.output
    assert "relative error ≤ 0.0001" in out.read_text()

    # a bench over a grid of shapes is drawn as latency against shape, a line per contender
    result = CliRunner().invoke(main, [
        "bench", "--model", str(tiny_model_dir), "--config", str(tmp_path / "tuned.json"),
        "--shapes", "1x4,3x6,2x8", "--against", "eager", "--seconds", "0.05", "--storage", url])
    assert result.exit_code == 0, result.output
    # only ffn_up and pooler were searched: the bench says which kinds ran the reference
    assert "tuned runtime: attention: the tuned config has no choice" in \
        result.output.replace("\n", " ")
    result = CliRunner().invoke(main, ["report", "--storage", url, "--output", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "End-to-end latency by shape" in html and "3x6" in html

    result = CliRunner().invoke(main, ["studies", "--storage", url])
    assert result.exit_code == 0, result.output
    assert "tiny-bert:ffn_up:b2s8:cpu:" in result.output.replace("\n", "").replace("│", "")


def test_report_errors_are_one_line(tmp_path: Path, recorded_url: str) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    r = CliRunner().invoke(main, ["report", "--storage", empty])
    assert r.exit_code == 2 and "holds no autotune studies on cpu" in r.output
    r = CliRunner().invoke(main, ["report", "--storage", recorded_url, "--model", "nope"])
    assert r.exit_code == 2 and "no studies of model 'nope'" in r.output
    assert "'bert-base-uncased'" in r.output
    r = CliRunner().invoke(main, ["report", "--storage", recorded_url, "--machine", "abc"])
    assert r.exit_code == 2 and "no per-operator studies" in r.output
    r = CliRunner().invoke(main, ["studies", "--storage", empty])
    assert r.exit_code == 0 and "no studies in sqlite:///" in r.output
    assert not list(tmp_path.glob("reports/*"))


def test_studies_lists_every_study(recorded_url: str) -> None:
    r = CliRunner().invoke(main, ["studies", "--storage", recorded_url])
    assert r.exit_code == 0, r.output
    text = r.output.replace("\n", "")
    for op in ("attention", "ffn_up", "pooler", "model-level"):
        assert op in text


def test_measured_peaks_are_plausible() -> None:
    p = measure_peaks("cpu", seconds=0.05)
    assert set(p["gflops"]) >= {"float32", "bfloat16"}
    assert all(v > 0 for v in p["gflops"].values()) and p["gbps"] > 0
