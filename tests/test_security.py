"""No network, no secrets: search, export and load make no connection; passwords in storage
URLs never reach output; constraints that leave nothing to search are refused up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from autotune.cli import main
from autotune.storage import redact

# Loaded by every Python process started with this folder on PYTHONPATH (the CLI and the
# measurement worker it spawns): any TCP/UDP connection attempt is recorded and refused.
BLOCKER = '''
import os, socket
_log = os.environ["NETWORK_ATTEMPTS"]
def _refuse(self, address, *a, **k):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        with open(_log, "a") as f:
            f.write(f"{os.getpid()} {address!r}\\n")
        raise OSError("network blocked by the test")
    return _connect(self, address, *a, **k)
_connect = socket.socket.connect
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
'''


def test_search_export_and_load_make_no_connection(tmp_path: Path,
                                                   tiny_model_dir: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "attempts.log"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NETWORK_ATTEMPTS": str(log)}
    db, out = f"sqlite:///{tmp_path / 'at.sqlite3'}", tmp_path / "tuned.json"

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr

    run("-c", "import socket, urllib.request\ntry:\n"
              "    urllib.request.urlopen('http://127.0.0.1:9', timeout=2)\n"
              "except OSError:\n    pass")
    assert log.read_text().count("127.0.0.1") == 1  # the blocker works in child processes
    log.unlink()
    run("-m", "autotune.cli", "search", "--model", str(tiny_model_dir), "--batch-sizes", "2",
        "--seq-lens", "8", "--ops", "pooler,ffn_up", "--trials", "3", "--time-per-trial",
        "0.02", "--compose-trials", "0", "--storage", db, "--output", str(out))
    run("-m", "autotune.cli", "export", "--model", str(tiny_model_dir), "--storage", db,
        "--output", str(tmp_path / "exported.json"))
    run("-c", f"import autotune, torch\nm = autotune.load({str(tiny_model_dir)!r}, "
              f"config={str(out)!r})\nids = torch.randint(0, 100, (2, 8))\n"
              "m(ids, attention_mask=torch.ones_like(ids))")
    assert not log.exists(), log.read_text()


def test_passwords_never_reach_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    url = "postgresql+psycopg://tuner:s3cr3t-pw@127.0.0.1:9/autotune"
    assert "s3cr3t-pw" not in redact(url) and "***" in redact(url)
    for cmd in (["search", "--model", str(tiny_model_dir), "--seq-lens", "8"],
                ["export"], ["report"], ["studies"]):
        r = CliRunner().invoke(main, [*cmd, "--storage", url])
        assert r.exit_code == 2, (cmd, r.output)
        assert "s3cr3t-pw" not in r.output and "cannot open storage" in r.output, r.output
        assert "Traceback" not in r.output
    env_url = CliRunner().invoke(main, ["export"], env={"AUTOTUNE_STORAGE": url})
    assert env_url.exit_code == 2 and "s3cr3t-pw" not in env_url.output


def test_constraints_that_exclude_every_config_are_refused(tmp_path: Path,
                                                           tiny_model_dir: Path) -> None:
    spaces = tmp_path / "spaces" / "cpu"
    spaces.mkdir(parents=True)
    (spaces / "pooler.yaml").write_text(
        "kind: pooler\nparams:\n"
        "  variant: {type: categorical, choices: [dense]}\n"
        "  precision: {type: categorical, choices: [bfloat16]}\n"
        "  impl: {type: categorical, choices: [mkl_packed]}\n"
        "  threads: {type: int, low: 1, high: 1}\n"
        "constraints: [mkl_packed_float32_only]\n")
    db = tmp_path / "x.sqlite3"
    r = CliRunner().invoke(main, ["search", "--model", str(tiny_model_dir), "--seq-lens", "8",
                                  "--ops", "pooler", "--spaces", str(tmp_path / "spaces"),
                                  "--storage", f"sqlite:///{db}"])
    assert r.exit_code == 2, r.output
    assert "pooler.yaml: the constraints exclude every config for pooler" in r.output
    assert not db.exists() and not list(tmp_path.glob("x.sqlite3*"))
