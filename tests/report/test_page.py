"""The report page: self-contained, escaped, and rendered by a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import plotly.offline
import pytest
import torch
from optuna.trial import TrialState, create_trial

from autotune.report import default_output, write_report
from autotune.report.graph import mermaid
from autotune.report.read import read_report_input
from autotune.storage import open_optuna_storage
from autotune.storage.peaks import load_peaks
from tests.report.browser import visit
from tests.report.conftest import EVIL
from tests.report.recorded import RECORDED

PAYLOAD = '</script><script>alert("reason")</script>'


def _write(url: str, model: str, out: Path) -> tuple[Path, Path]:
    storage = open_optuna_storage(url)
    peaks = load_peaks(url, json.loads(RECORDED.read_text())["machine"], torch.__version__)
    assert peaks is not None
    inp = read_report_input(url, storage, model, "cpu", "elsewhere", peaks=peaks)
    return write_report(inp, out, "sqlite:///recorded.sqlite3")


def test_page_is_self_contained(recorded_url: str, tmp_path: Path) -> None:
    page, mmd = _write(recorded_url, "bert-base-uncased", tmp_path / "r.html")
    html = page.read_text()
    plotly_js = plotly.offline.get_plotlyjs()
    assert html.count(plotly_js) == 1 and html.count("Plotly.newPlot") == 1
    # nothing loaded from elsewhere: no external src/href, no stylesheet or font links
    ours = html.replace(plotly_js, "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert "<link" not in ours and "@import" not in ours and "@font-face" not in ours
    assert "displaylogo" in html and '"showSendToCloud":false' in html
    assert page.stat().st_size < 8 * 2**20
    assert mmd.read_text().startswith("%% autotune: bert-base-uncased on cpu")


def test_mermaid_graph_is_valid_flowchart(recorded_url: str, tmp_path: Path) -> None:
    _, mmd = _write(recorded_url, "bert-base-uncased", tmp_path / "r.html")
    lines = mmd.read_text().splitlines()
    assert lines[1] == "flowchart TD"
    edges = [ln.strip() for ln in lines if "-->" in ln]
    assert edges == ["attention --> ffn_up", "input --> attention", "ffn_up --> pooler",
                     "pooler --> output"]
    assert any(ln.strip().startswith('subgraph layer["encoder layer × 12"]') for ln in lines)


def test_mermaid_labels_cannot_break_out() -> None:
    from autotune.report.data import GraphNode

    node = GraphNode("ffn_up", "ffn_up", 'x"] --> evil["<b>', {"b1s1": 0.5}, True)
    text = mermaid([node], 2, "a\nflowchart LR")
    assert '#quot;] --#gt; evil[#quot;#lt;b#gt;' in text
    assert text.count("flowchart") == 2 and text.splitlines()[1] == "flowchart TD"


@pytest.fixture(scope="module")
def evil_page(evil_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = open_optuna_storage(evil_url)
    name = next(s.study_name for s in storage.get_all_studies() if ":ffn_up:" in s.study_name)
    study = optuna.load_study(study_name=name, storage=storage)
    dist = optuna.distributions.CategoricalDistribution([PAYLOAD])
    study.add_trial(create_trial(state=TrialState.FAIL, params={"evil<b>": PAYLOAD},
                                 distributions={"evil<b>": dist},
                                 user_attrs={"status": "error", "reason": PAYLOAD}))
    out = tmp_path_factory.mktemp("evil-page") / "evil.html"
    return _write(evil_url, EVIL, out)[0]


def test_names_and_reasons_from_the_database_are_escaped(evil_page: Path) -> None:
    html = evil_page.read_text()
    assert "<script>alert(" not in html
    assert html.count("<script") == 4  # figure data, plot config, plotly.js, boot
    assert "bert&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;co" in html
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;reason&quot;)" in html  # failure table


def test_report_renders_in_chromium(recorded_url: str, tmp_path: Path,
                                    artifacts: Path) -> None:
    page, _ = _write(recorded_url, "bert-base-uncased", tmp_path / "r.html")
    v = visit(page, artifacts, "report")
    assert v.errors == []
    assert [u for u in v.requests if not u.startswith("file://")] == []
    assert len(v.drawn) == 3 + 6 * 4  # bench, time shares, roofline, 4 per study
    assert all(n > 0 for n in v.drawn), v.drawn
    assert v.graph_ops == 3
    assert (artifacts / "report-full.png").stat().st_size > 50_000


def test_escaped_page_renders_without_running_the_payload(evil_page: Path,
                                                          artifacts: Path) -> None:
    v = visit(evil_page, artifacts, "report-escaped")
    assert v.dialogs == [] and v.errors == []
    assert v.title == f"autotune report: {EVIL} on cpu"  # shown as text, not markup


def test_default_output_is_a_plain_file_name() -> None:
    assert default_output("bert-base-uncased", "cpu") == Path("reports/bert-base-uncased-cpu.html")
    assert default_output("/models/My Bert", "cuda") == Path("reports/My_Bert-cuda.html")
    assert default_output("org/bert-ft", "cpu") == Path("reports/bert-ft-cpu.html")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", default_output(EVIL, "cpu").name)
