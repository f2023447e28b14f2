"""Plotly figures from the report's data (``data``): one function per figure, no database.

Plotly renders a subset of HTML inside text, so every string that comes from the database
(parameter values, reasons) is escaped before it becomes a label or a hover line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import plotly.graph_objects as go

from autotune.models.kinds import OP_KINDS
from autotune.report.data import Axis, ErrorPoint, History, Line, RoofPoint, Share, roof

KIND_COLORS = dict(zip(OP_KINDS, ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2",
                                  "#b279a2", "#9d755d"), strict=True))
OK, BAD, BEST = "#4c78a8", "#e45756", "#222222"
_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "cross")
# Tick values for time-ratio axes (log): plain numbers instead of plotly's minor-digit labels.
_RATIO_TICKS = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 10, 20, 50]
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white", "height": 340, "margin": {"l": 60, "r": 20, "t": 44, "b": 50},
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
    "hoverlabel": {"align": "left"},
}


def _fig(title: str, **layout: Any) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(**_LAYOUT, title={"text": title, "x": 0.01, "font": {"size": 14}})
    fig.update_layout(**layout)
    return fig


def params_text(params: Mapping[str, Any]) -> str:
    return "<br>".join(f"{escape(str(k))}={escape(str(v))}" for k, v in params.items())


def bench_figure(by_bucket: Mapping[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """Median end-to-end latency per contender and bucket, IQR as error bars, accuracy as
    the bar label."""
    fig = _fig("End-to-end latency (median, bars = IQR; label = rel. error vs float32)",
               barmode="group", yaxis_title="ms per batch", legend_title_text="contender",
               height=380)
    peers: list[str] = []
    for rows in by_bucket.values():
        peers += [r["peer"] for r in rows if r["peer"] not in peers]
    for peer in peers:
        xs, ys, err, text, hover = [], [], [], [], []
        for bucket, rows in by_bucket.items():
            for r in rows:
                if r["peer"] == peer:
                    xs.append(bucket)
                    ys.append(r["median_ms"])
                    err.append(r["iqr_ms"] / 2)
                    text.append(f"{r['rel_error']:.0e}" if r["rel_error"] else "0")
                    hover.append(f"{escape(peer)} {escape(bucket)}: {r['median_ms']:.1f} ms "
                                 f"(IQR {r['iqr_ms']:.1f})<br>rel. error {r['rel_error']:.1e}")
        fig.add_bar(name=escape(peer), x=xs, y=ys, text=text, textposition="outside",
                    error_y={"type": "data", "array": err, "visible": True},
                    hovertext=hover, hoverinfo="text",
                    marker_line_width=2 if peer == "tuned" else 0, marker_line_color=BEST)
    return fig


def shapes_figure(by_bucket: Mapping[str, Sequence[dict[str, Any]]]) -> go.Figure:
    """Median latency against shape (ordered by tokens per batch), one line per contender;
    the hover gives the ratio to the tuned model and the error."""
    fig = _fig("End-to-end latency by shape (median; x ordered by tokens per batch)",
               xaxis_title="batch x padded length", yaxis_title="ms per batch (log)",
               yaxis_type="log", legend_title_text="contender", height=420)
    order = sorted(by_bucket, key=lambda b: (by_bucket[b][0]["batch"] * by_bucket[b][0]["seq"],
                                             by_bucket[b][0]["batch"]))
    peers: list[str] = []
    for rows in by_bucket.values():
        peers += [r["peer"] for r in rows if r["peer"] not in peers]
    for peer in peers:
        xs, ys, hover = [], [], []
        for bucket in order:
            rows = by_bucket[bucket]
            tuned = next((r["median_ms"] for r in rows if r["peer"] == "tuned"), None)
            for r in rows:
                if r["peer"] != peer:
                    continue
                shape = f"{r['batch']}x{r['seq']}"
                xs.append(shape)
                ys.append(r["median_ms"])
                ratio = "" if tuned is None else f", {r['median_ms'] / tuned:.2f}× tuned"
                hover.append(f"{escape(peer)} {shape}: {r['median_ms']:.1f} ms{ratio}<br>"
                             f"rel. error {r['rel_error']:.1e}")
        fig.add_scatter(name=escape(peer), x=xs, y=ys, mode="lines+markers", hovertext=hover,
                        hoverinfo="text",
                        line={"width": 4 if peer == "tuned" else 1.5,
                              **({"color": BEST} if peer == "tuned" else {})})
    fig.update_xaxes(type="category", categoryorder="array",
                     categoryarray=[f"{by_bucket[b][0]['batch']}x{by_bucket[b][0]['seq']}"
                                    for b in order])
    return fig


def shares_figure(shares: Mapping[str, Sequence[Share]]) -> go.Figure:
    """One forward pass before and after tuning, stacked by op kind."""
    fig = _fig("Where the time goes: one forward pass, reference vs tuned",
               barmode="stack", xaxis_title="ms per forward pass", legend_traceorder="normal",
               height=120 + 70 * len(shares))
    ylabels = [f"{b} {side}" for b in shares for side in ("reference", "tuned")]
    for kind in OP_KINDS:
        xs, ys, hover = [], [], []
        for b, ss in shares.items():
            total_before = sum(s.before_ms for s in ss)
            total_after = sum(s.after_ms if s.after_ms is not None else s.before_ms for s in ss)
            for s in ss:
                if s.kind != kind:
                    continue
                after = s.after_ms if s.after_ms is not None else s.before_ms
                for side, v, tot in (("reference", s.before_ms, total_before),
                                     ("tuned", after, total_after)):
                    xs.append(v)
                    ys.append(f"{b} {side}")
                    hover.append(f"{kind} {b} {side}: {v:.2f} ms ({100 * v / tot:.0f}%)")
        if xs:
            fig.add_bar(name=kind, x=xs, y=ys, orientation="h", hovertext=hover,
                        hoverinfo="text", marker_color=KIND_COLORS[kind])
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(ylabels)))
    return fig


def history_figure(h: History, tol: float) -> go.Figure:
    fig = _fig("Optimization history", xaxis_title="trial",
               yaxis_title="time / reference (lower is better)", yaxis_type="log",
               yaxis_tickvals=_RATIO_TICKS)
    for feasible, name, color, symbol in ((True, "feasible", OK, "circle"),
                                          (False, f"error > {tol:g}", BAD, "x")):
        idx = [i for i, f in enumerate(h.feasible) if f == feasible]
        fig.add_scatter(x=[h.numbers[i] for i in idx], y=[h.values[i] for i in idx],
                        mode="markers", name=name, marker={"color": color, "symbol": symbol})
    fig.add_scatter(x=h.best_numbers, y=h.best_values, mode="lines", name="best feasible",
                    line={"shape": "hv", "color": BEST})
    return fig


def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    fig = _fig("Parameter importance for speed (fANOVA)", xaxis_title="importance",
               xaxis_range=[0, 1])
    items = sorted(importances.items(), key=lambda kv: kv[1])
    if not items:
        fig.add_annotation(text="too few distinct trials to estimate", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    fig.add_bar(x=[v for _, v in items], y=[escape(k) for k, _ in items], orientation="h",
                marker_color=OK, hovertemplate="%{y}: %{x:.2f}<extra></extra>")
    return fig


def parallel_figure(axes: Sequence[Axis], lines: Sequence[Line]) -> go.Figure:
    """Parallel coordinates drawn with SVG lines (no WebGL, so it renders anywhere):
    feasible configs shaded from fastest (dark) to slowest (light), infeasible grey."""
    ok = sorted((ln for ln in lines if ln.feasible), key=lambda ln: ln.ratio)
    traces = []
    for rank, ln in enumerate(reversed(ok)):  # slowest first, so the fastest is drawn on top
        shade = 0.15 + 0.7 * rank / (len(ok) - 1) if len(ok) > 1 else 0.85
        traces.append(_line(ln, f"rgba(31, 73, 125, {shade:.2f})"))
    traces += [_line(ln, "rgba(150, 150, 150, 0.45)") for ln in lines if not ln.feasible]
    shapes = [{"type": "line", "x0": x, "x1": x, "y0": 0, "y1": 1,
               "line": {"color": "#888", "width": 1}} for x in range(len(axes))]
    labels = [{"x": x, "y": y, "text": escape(label), "showarrow": False, "xanchor": "left",
               "xshift": 3, "font": {"size": 10}, "bgcolor": "rgba(255,255,255,0.7)"}
              for x, a in enumerate(axes) for y, label in zip(a.ticks, a.labels, strict=True)]
    # One Figure call: adding hundreds of lines and labels one by one re-validates them all.
    fig = go.Figure(data=traces, layout={"shapes": shapes, "annotations": labels})
    fig.update_layout(**_LAYOUT)
    fig.update_layout(title={"text": "Parallel coordinates (one line per config)", "x": 0.01,
                             "font": {"size": 14}},
                      showlegend=False, height=420,
                      xaxis={"tickvals": list(range(len(axes))), "range": [-0.3, len(axes) - 0.7],
                             "ticktext": [escape(a.name) for a in axes], "showgrid": False,
                             "zeroline": False},
                      yaxis={"visible": False, "range": [-0.15, 1.08]})
    return fig


def _line(ln: Line, color: str) -> dict[str, Any]:
    return {"type": "scatter", "x": list(range(len(ln.ys))), "y": ln.ys,
            "mode": "lines+markers", "line": {"color": color, "width": 1.5},
            "marker": {"size": 4, "color": color},
            "hovertemplate": f"trial {ln.number}: time ratio {ln.ratio:.3f}<extra></extra>"}


def error_figure(points: Sequence[ErrorPoint], tol: float) -> go.Figure:
    """Speed against error; the line joins the trade-offs no config beats on both."""
    floor = min([p.rel_error for p in points if p.rel_error > 0] or [1e-7]) / 3
    fig = _fig("Latency vs error (line: front of best trade-offs)", xaxis_type="log",
               yaxis_type="log", xaxis_title="relative error vs float32 (0 drawn at the left)",
               yaxis_title="time / reference", yaxis_tickvals=_RATIO_TICKS, xaxis_dtick=1,
               xaxis_exponentformat="power")
    for feasible, name, color in ((True, "feasible", OK), (False, "over tolerance", BAD)):
        sel = [p for p in points if p.feasible == feasible]
        fig.add_scatter(x=[max(p.rel_error, floor) for p in sel], y=[p.ratio for p in sel],
                        mode="markers", name=name, marker={"color": color, "size": 7},
                        hovertext=[f"trial {p.number}: {p.ratio:.3f}, error {p.rel_error:.1e}"
                                   f"<br>{params_text(p.params)}" for p in sel],
                        hoverinfo="text")
    front = sorted((p for p in points if p.on_front), key=lambda p: p.rel_error)
    fig.add_scatter(x=[max(p.rel_error, floor) for p in front], y=[p.ratio for p in front],
                    mode="lines+markers", name="front", line={"shape": "hv", "color": BEST},
                    marker={"symbol": "circle-open", "size": 13, "color": BEST},
                    hoverinfo="skip")
    fig.add_vline(x=tol, line={"dash": "dash", "color": BAD},
                  annotation_text=f"tolerance {tol:g}", annotation_position="top left")
    return fig


def roofline_figure(points: Sequence[RoofPoint], peaks: Mapping[str, Any]) -> go.Figure:
    fig = _fig("Roofline: achieved vs attainable throughput", xaxis_type="log",
               yaxis_type="log", xaxis_title="arithmetic intensity (FLOP/byte)",
               yaxis_title="GFLOP/s", height=460, xaxis_dtick=1, yaxis_dtick=1)
    xs_all = [p.intensity for p in points] + [p.ref_intensity for p in points] or [1.0]
    lo, hi = min(xs_all) / 3, max(xs_all) * 3
    grid = [lo * (hi / lo) ** (k / 60) for k in range(61)]
    used = {p.precision for p in points} | {"float32"}
    dashes = {"float32": "solid", "bfloat16": "dash", "float16": "dash", "int8": "dot"}
    for prec, peak in sorted(peaks["gflops"].items()):
        if prec not in used:
            continue
        fig.add_scatter(x=grid, y=roof(peak, peaks["gbps"], grid), mode="lines",
                        name=f"roof {prec} ({peak:.0f} GFLOP/s, {peaks['gbps']:.0f} GB/s)",
                        line={"color": "#999", "dash": dashes.get(prec, "solid")},
                        hoverinfo="skip")
    buckets = list(dict.fromkeys(p.bucket for p in points))
    symbol = {b: _SYMBOLS[i % len(_SYMBOLS)] for i, b in enumerate(buckets)}
    for b in buckets:  # legend entries for the marker shapes
        fig.add_scatter(x=[None], y=[None], mode="markers", name=f"bucket {escape(b)}",
                        marker={"color": "#666", "symbol": symbol[b], "size": 10})
    for kind in OP_KINDS:
        mine = [p for p in points if p.kind == kind]
        if not mine:
            continue
        color = KIND_COLORS[kind]
        fig.add_scatter(x=[p.ref_intensity for p in mine], y=[p.ref_gflops for p in mine],
                        mode="markers", name=f"{kind} reference", legendgroup=kind,
                        showlegend=False,
                        marker={"color": color, "size": 9,
                                "symbol": [symbol[p.bucket] + "-open" for p in mine]},
                        hovertext=[f"{kind} {p.bucket} reference float32: "
                                   f"{p.ref_gflops:.1f} GFLOP/s" for p in mine],
                        hoverinfo="text")
        fig.add_scatter(x=[p.intensity for p in mine], y=[p.tuned_gflops for p in mine],
                        mode="markers", name=kind, legendgroup=kind,
                        marker={"color": color, "size": 11,
                                "symbol": [symbol[p.bucket] for p in mine]},
                        hovertext=[f"{kind} {p.bucket} tuned {p.precision}: "
                                   f"{p.tuned_gflops:.1f} GFLOP/s at {p.intensity:.1f} FLOP/B"
                                   for p in mine], hoverinfo="text")
    ys = [p.tuned_gflops for p in points] + [p.ref_gflops for p in points] + \
        list(peaks["gflops"].values())
    ys = [y for y in ys if y > 0] or [1.0]
    fig.update_yaxes(range=[math.log10(min(ys) / 3), math.log10(max(ys) * 2)])
    return fig


def replay_figure(title: str, curves: Mapping[str, Sequence[float | None]]) -> go.Figure:
    """Median best-so-far per sampler, as % above the recording's best, against trials."""
    fig = _fig(title, xaxis_title="distinct configs measured", yaxis_type="log",
               yaxis_title="best so far, % above the recording's best",
               yaxis_tickvals=[0.1, 0.3, 1, 3, 10, 30, 100, 300])
    for name, curve in curves.items():
        # 0% cannot sit on a log axis: draw it at 0.1%
        ys = [None if v is None else max(100 * (v - 1), 0.1) for v in curve]
        fig.add_scatter(x=list(range(1, len(ys) + 1)), y=ys, mode="lines",
                        name=escape(name), line={"shape": "hv", "width": 2})
    fig.add_hline(y=3, line={"dash": "dash", "color": BAD}, annotation_text="within 3%")
    return fig
