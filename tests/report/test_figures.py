"""Figures: what each one draws, from hand-made data (no browser)."""

from __future__ import annotations

from autotune.report import figures
from autotune.report.data import Axis, ErrorPoint, Line, Share


def test_parallel_lines_fastest_darkest_infeasible_grey() -> None:
    axes = [Axis("impl", [0.0, 1.0], ["a", "b"]), Axis("time ratio", [0.0, 1.0], ["1", "2"])]
    lines = [Line(0, [0.0, 1.0], 2.0, True), Line(1, [1.0, 0.0], 0.5, True),
             Line(2, [1.0, 0.5], 1.0, True), Line(3, [0.0, 0.2], 0.1, False)]
    fig = figures.parallel_figure(axes, lines)
    alpha = {t.hovertemplate.split(":")[0]: float(t.line.color.rsplit(",", 1)[1].rstrip(")"))
             for t in fig.data}
    assert alpha["trial 1"] > alpha["trial 2"] > alpha["trial 0"]
    assert fig.data[-1].line.color.startswith("rgba(150, 150, 150")  # infeasible drawn last
    assert [a.text for a in fig.layout.annotations] == ["a", "b", "1", "2"]


def test_labels_from_the_database_are_escaped() -> None:
    axes = [Axis("<b>x", [0.5], ["<img src=x>"])]
    fig = figures.parallel_figure(axes, [Line(0, [0.5], 1.0, True)])
    assert fig.layout.xaxis.ticktext == ("&lt;b&gt;x",)
    assert fig.layout.annotations[0].text == "&lt;img src=x&gt;"
    pts = [ErrorPoint(0, 0.01, 0.5, True, True, {"impl": "<script>"})]
    hover = figures.error_figure(pts, 0.02).data[0].hovertext[0]
    assert "&lt;script&gt;" in hover and "<script>" not in hover
    fig = figures.importance_figure({"<i>p": 1.0})
    assert list(fig.data[0].y) == ["&lt;i&gt;p"]


def test_bench_figure_one_trace_per_contender_with_iqr_bars() -> None:
    rows = {"b1s8": [{"peer": "tuned", "median_ms": 1.0, "iqr_ms": 0.2, "rel_error": 0.01},
                     {"peer": "eager", "median_ms": 3.0, "iqr_ms": 0.4, "rel_error": 0.0}],
            "b8s8": [{"peer": "eager", "median_ms": 9.0, "iqr_ms": 1.0, "rel_error": 0.0}]}
    fig = figures.bench_figure(rows)
    assert [t.name for t in fig.data] == ["tuned", "eager"]
    eager = fig.data[1]
    assert list(eager.x) == ["b1s8", "b8s8"] and list(eager.error_y.array) == [0.2, 0.5]
    assert list(eager.text) == ["0", "0"]


def test_shapes_figure_one_line_per_contender_ordered_by_tokens() -> None:
    def row(peer: str, b: int, s: int, ms: float) -> dict:
        return {"peer": peer, "batch": b, "seq": s, "median_ms": ms, "rel_error": 0.01}

    by_bucket = {"b8s16": [row("tuned", 8, 16, 4.0), row("eager", 8, 16, 8.0)],
                 "b1s512": [row("tuned", 1, 512, 9.0), row("eager", 1, 512, 12.0)],
                 "b1s16": [row("eager", 1, 16, 2.0)]}
    fig = figures.shapes_figure(by_bucket)
    lines = {t.name: t for t in fig.data}
    assert list(lines["eager"].x) == ["1x16", "8x16", "1x512"]  # 16, 128, 512 tokens
    assert list(lines["eager"].y) == [2.0, 8.0, 12.0]
    assert list(lines["tuned"].x) == ["8x16", "1x512"]
    assert "2.00× tuned" in lines["eager"].hovertext[1]
    assert fig.layout.yaxis.type == "log"


def test_shares_figure_stacks_reference_and_tuned() -> None:
    fig = figures.shares_figure({"b1s8": [Share("qkv_proj", 4.0, 1.0),
                                          Share("pooler", 1.0, None)]})
    by_kind = {t.name: (list(t.x), list(t.y)) for t in fig.data}
    assert by_kind["qkv_proj"] == ([4.0, 1.0], ["b1s8 reference", "b1s8 tuned"])
    assert by_kind["pooler"] == ([1.0, 1.0], ["b1s8 reference", "b1s8 tuned"])  # untuned


def test_empty_importances_say_so() -> None:
    fig = figures.importance_figure({})
    assert "too few" in fig.layout.annotations[0].text
