"""Bad input gives one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from autotune.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials"),
        (["--trials", "-3"], "--trials"),
        (["--batch-sizes", "0"], "positive integer"),
        (["--batch-sizes", "a,b"], "comma-separated list"),
        (["--seq-lens", "-1"], "positive integer"),
        (["--ops", "ffn_up,softmax"], "unknown op 'softmax'"),
        (["--sampler", "annealing"], "--sampler"),
        (["--max-rel-error", "0"], "--max-rel-error"),
        (["--model", "./no/such/dir"], "no such directory"),
        (["--model", "/"], "no config.json"),
        (["--lengths", "no/such/file"], "expected fixed, LO..HI"),
    ],
)
def test_bad_flags(args: list[str], message: str, tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    result = CliRunner().invoke(main, ["search", "--storage", f"sqlite:///{db}", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not db.exists()  # nothing written


def _float_options() -> list[tuple[str, str]]:
    """Every float option of every subcommand (nested groups included)."""
    out: list[tuple[str, str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType):
                out.append((" ".join(path), p.opts[0]))
    walk(main, [])
    return out


def _options(command: str) -> set[str]:
    cmd: click.Command = main
    for name in command.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return {o for p in cmd.params for o in p.opts}


def test_every_float_option_is_checked() -> None:
    assert len(_float_options()) >= 8  # search has four, bench one, several take a tolerance


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
@pytest.mark.parametrize(("command", "option"), _float_options())
def test_float_options_refuse_nan_and_inf(command: str, option: str, value: str,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "x.sqlite3"
    storage = ["--storage", f"sqlite:///{db}"] if "--storage" in _options(command) else []
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = CliRunner().invoke(main, [*command.split(), f"{option}={value}", *storage])
    assert not list((tmp_path / "cwd").iterdir())  # nothing written
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert "finite" in result.output or "range" in result.output
    assert not db.exists()


def test_cuda_without_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    result = CliRunner().invoke(main, ["search", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output


def test_cuda_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real(name, *a))
    result = CliRunner().invoke(main, ["search", "--device", "cuda"])
    assert result.exit_code == 2 and "autotune[cuda]" in result.output


def test_cuda_search_under_the_interpreter_says_so(tmp_path: Path,
                                                   tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(main, [
        "search", "--device", "cuda", "--model", str(tiny_model_dir), "--ops", "pooler",
        "--batch-sizes", "1", "--seq-lens", "8", "--trials", "2", "--time-per-trial", "0.01",
        "--compose-trials", "0", "--storage", f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "--output", str(tmp_path / "tuned.json")])
    assert result.exit_code == 0, result.output
    assert "Triton's interpreter" in result.output and "say nothing about a GPU" in result.output
    assert json.loads((tmp_path / "tuned.json").read_text())["device"] == "cuda"


def test_bad_space_file_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "spaces" / "cpu").mkdir(parents=True)
    (tmp_path / "spaces" / "cpu" / "pooler.yaml").write_text(
        "kind: pooler\nparams:\n  variant: {type: tensor}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "search", "--model", str(tiny_model_dir),
         "--ops", "pooler", "--spaces", str(tmp_path / "spaces"),
         "--storage", f"sqlite:///{tmp_path / 'x.sqlite3'}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "pooler.yaml: params.variant.type" in err[-1]
    assert "unknown parameter type 'tensor'" in err[-1]


def test_corrupted_database_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    db = tmp_path / "bad.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(main, ["search", "--model", str(tiny_model_dir),
                                       "--seq-lens", "8", "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 2 and "not an SQLite database" in result.output


def test_export_without_studies(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "--storage",
                                       f"sqlite:///{tmp_path / 'empty.sqlite3'}"])
    assert result.exit_code == 2 and "no studies" in result.output


def test_help_explains() -> None:
    result = CliRunner().invoke(main, ["search", "--help"])
    assert result.exit_code == 0
    for flag in ("--model", "--trials", "--sampler", "--max-rel-error", "--storage", "--timeout"):
        assert flag in result.output


@pytest.mark.parametrize(("model", "message"), [
    ("someone/not-a-bert", "unknown model 'someone/not-a-bert'"),
    ("MALFORMED", "config.json"),
])
def test_bad_models_are_one_line_and_write_nothing(model: str, message: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    if model == "MALFORMED":
        bad = tmp_path / "bad-bert"
        bad.mkdir()
        (bad / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
        model = str(bad)
    db = tmp_path / "x.sqlite3"
    r = CliRunner().invoke(main, ["search", "--model", model, "--storage", f"sqlite:///{db}"])
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not list(tmp_path.glob("x.sqlite3*"))


def test_cli_names_match_the_registries() -> None:
    from autotune.cli_common import SAMPLERS
    from autotune.search.samplers import SAMPLERS as NAMES

    assert SAMPLERS == NAMES


def test_the_cli_starts_without_torch_or_optuna() -> None:
    """`autotune --help` must not wait for torch: the option lists (op kinds, samplers, peers)
    come from modules that import neither."""
    code = "import sys, autotune.cli; print(sorted({'torch', 'optuna'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
