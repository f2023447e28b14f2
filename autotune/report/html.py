"""The report page: one self-contained HTML file, plotly.js inlined once, no external request.

Every string from the user or the database goes through ``e`` (HTML) before it reaches the
page; figure data travels as JSON inside a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` escaped, so no value can close the block or open a tag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

import plotly.graph_objects as go
import plotly.offline
import plotly.utils

from autotune.models.kinds import OP_KINDS
from autotune.report import data, figures, graph
from autotune.report.read import ReportInput, StudyView

_CONFIG = {"displaylogo": False, "responsive": True, "showLink": False,
           "showSendToCloud": False, "showEditInChartStudio": False,
           "modeBarButtonsToRemove": ["sendDataToCloud", "select2d", "lasso2d"]}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
  background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:12px 24px 60px}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:34px 0 8px;
  border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:22px 0 6px}
nav{font-size:13px;margin:6px 0 14px}nav a{margin-right:14px;color:#36c;text-decoration:none}
dl.meta{display:grid;grid-template-columns:170px 1fr;gap:3px 14px;margin:10px 0}
dl.meta dt{color:#666}dl.meta dd{margin:0}
table{border-collapse:collapse;margin:8px 0;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.cfg{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;max-width:430px}
.plot{background:#fff;border:1px solid #e4e4e4;border-radius:4px;margin:6px 0;min-height:300px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:8px}.grid .wide{grid-column:1 / 3}
.note{color:#555;font-size:13px;max-width:900px}.bad{color:#b00}.good{color:#070}
svg.graph{background:#fff;border:1px solid #e4e4e4;border-radius:4px}
svg .node{fill:#f4f8fd;stroke:#4c78a8}svg .bar{fill:#4c78a8;opacity:.55}
svg .layer{fill:none;stroke:#aaa;stroke-dasharray:5 4}svg .io{fill:#eee;stroke:#999}
svg .t{font:600 13px system-ui,sans-serif}svg .d,svg .s{font:12px system-ui,sans-serif;
  fill:#444}svg .io-t,svg .layer-t{font:12px system-ui,sans-serif;fill:#555}
svg .edge{stroke:#555;stroke-width:1.3}
"""

_BOOT = """
(function(){
  var figs = JSON.parse(document.getElementById('figure-data').textContent);
  var config = JSON.parse(document.getElementById('plot-config').textContent);
  figs.forEach(function(f){ Plotly.newPlot(f.id, f.data, f.layout, config); });
})();
"""


def e(value: object) -> str:
    return escape(str(value), quote=True)


def _json_for_script(obj: object) -> str:
    text = json.dumps(obj, cls=plotly.utils.PlotlyJSONEncoder, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Page:
    """Collects sections and figures; ``render`` writes the page."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figs: list[dict[str, Any]] = []

    def add(self, html: str) -> None:
        self.parts.append(html)

    def figure(self, fig: go.Figure, wide: bool = False) -> str:
        fid = f"fig-{len(self.figs)}"
        self.figs.append({"id": fid, **fig.to_plotly_json()})
        return f'<div class="plot{" wide" if wide else ""}" id="{fid}"></div>'

    def render(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>"
                + "".join(self.parts) + "</main>"
                f'<script type="application/json" id="figure-data">'
                f"{_json_for_script(self.figs)}</script>"
                f'<script type="application/json" id="plot-config">'
                f"{_json_for_script(_CONFIG)}</script>"
                f"<script>{plotly.offline.get_plotlyjs()}</script>"
                f"<script>{_BOOT}</script></body></html>\n")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (),
           cfg: Sequence[int] = ()) -> str:
    """``rows`` hold HTML already escaped by the caller."""
    out = ["<table><thead><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td class="{"n" if i in numeric else "cfg" if i in cfg else ""}">{c}</td>'
            for i, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _ms(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _params(variant: str | None, params: dict[str, Any]) -> str:
    if variant is None:
        return '<span class="bad">no feasible config (reference runs)</span>'
    return e(" ".join([variant, *(f"{k}={v}" for k, v in params.items())]))


def _date(d: datetime | None) -> str:
    return "–" if d is None else d.strftime("%Y-%m-%d %H:%M UTC")


def header(inp: ReportInput, storage: str) -> str:
    a, m, sw = inp.arch, inp.machine, inp.software
    hw = (f"{m['gpu']} (compute capability {m['capability']}, {m['memory_gib']} GiB)"
          if "gpu" in m else f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores")
    isa = ", ".join(m.get("isa", [])) or "–"
    if inp.runs:
        r = inp.runs[-1]
        search = (f"{r.get('trials')} trials per study ({r.get('sampler')} sampler), "
                  f"{r.get('compose_trials')} model-level trials, buckets "
                  f"{', '.join(r.get('buckets', []))}; wall time {r['wall_s'] / 60:.1f} min "
                  f"({r['status']}), started {_date(r['started'])}; "
                  f"{len(inp.runs)} run(s) recorded")
    else:
        search = "no run record in this database (searched before runs were recorded)"
    if inp.trial_span:
        first, last = inp.trial_span
        search += f"; trials ran from {_date(first)} to {_date(last)}"
    trials = [t for s in inp.studies for t in s.trials]
    measured = sum(1 for t in trials if t.state in ("COMPLETE", "FAIL") and not t.cached)
    items = [
        ("Model", f"{inp.model} — {a.describe()} (architecture {a.hash})"),
        ("Device", f"{inp.device}: {hw}"), ("ISA flags", isa),
        ("Machine fingerprint", m.get("fingerprint", "?")),
        ("Software", ", ".join(f"{k} {v}" for k, v in sw.items() if v is not None)),
        ("Search", search),
        ("Trials", f"{len(inp.studies)} per-op studies, {len(trials)} trials, {measured} "
                   "measurements (the rest answered from the cache or pruned)"),
        ("Tolerance", f"relative error ≤ {inp.max_rel_error:g} against float32"),
        ("Storage", storage), ("Generated", _date(inp.generated)),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("summary", "Summary"), ("ops", "Operators"), ("time", "Where the time goes"),
        ("graph", "Forward pass"), ("roofline", "Roofline"), ("per-op", "Per operator"),
        ("failures", "Failures"), *([("replay", "Search quality")] if inp.replays else [])))
    return (f"<h1>autotune report: {e(inp.model)} on {e(inp.device)}</h1><nav>{nav}</nav>"
            f'<dl class="meta">{dl}</dl>')


def summary(page: Page, inp: ReportInput) -> str:
    out = ['<h2 id="summary">Summary</h2>']
    if inp.composition:
        c = inp.composition
        out.append(f'<p class="note">Model-level study ({e(c.get("lengths"))} lengths): one '
                   f"batch of each bucket takes {c['ms']:.1f} ms end to end with the shipped "
                   f"composition, {c['anchor_ms']:.1f} ms with the per-op winners put together; "
                   f"error of last_hidden_state {c['rel_error']:.1e}, pooler cosine "
                   f"{c['pooler_cos']:.5f}; padding multiple {e(c['pad_to_multiple'])}, "
                   f"padding-free {'yes' if c['varlen'] else 'no'}, threads "
                   f"{e(c['threads'] or 'per op')}.</p>")
    if not inp.bench:
        out.append('<p class="note">No benchmark in this database yet: run <code>autotune '
                   "bench --config tuned/…json</code> to compare the tuned model with HF eager, "
                   "SDPA, torch.compile, ONNX Runtime and OpenVINO.</p>")
        return "".join(out)
    by_bucket = data.bench_by_bucket(inp.bench)
    grid = len(by_bucket) > 2  # a shape grid reads as lines, a couple of shapes as bars
    out.append(page.figure(figures.shapes_figure(by_bucket) if grid
                           else figures.bench_figure(by_bucket)))
    rows = []
    for bucket, rs in by_bucket.items():
        tuned = next((r["median_ms"] for r in rs if r["peer"] == "tuned"), None)
        for r in rs:
            ratio = "–" if tuned is None else f"{r['median_ms'] / tuned:.2f}×"
            rows.append([e(bucket), e(r["peer"]), _ms(r["median_ms"], 1), _ms(r["iqr_ms"], 1),
                         ratio, f"{r['rel_error']:.1e}"])
    tol = inp.bench[0].get("max_rel_error")
    out.append(f'<p class="note">Newest <code>autotune bench</code>, {_date(inp.bench_date)}'
               f", lengths {e(inp.bench[0].get('lengths', '?'))}"
               + (f", config tuned at tolerance {e(tol)}" if tol is not None else "")
               + ". “÷ tuned” above 1 means the tuned model is faster.</p>")
    out.append(_table(["bucket", "contender", "median ms", "IQR ms", "÷ tuned",
                       "rel. error"], rows, numeric=(2, 3, 4, 5)))
    return "".join(out)


def op_table(rows: Sequence[data.OpRow]) -> str:
    body = []
    for r in rows:
        c = r.counts
        sp = r.speedup
        body.append([e(r.kind), e(r.bucket), _ms(r.ref_ms), _ms(r.best_ms),
                     "–" if sp is None else f'<span class="{"good" if sp >= 1 else "bad"}">'
                                            f"{sp:.2f}×</span>",
                     _params(r.variant, r.params),
                     "–" if r.rel_error is None else f"{r.rel_error:.1e}",
                     f"{c['feasible'] + c['infeasible']} / {c['infeasible']} / {c['failed']}"
                     f" / {c['pruned']}"])
    return ('<h2 id="ops">Operators</h2><p class="note">Time per call, measured interleaved '
            "with the float32 reference and re-measured for the winner. Trials count distinct "
            "configs: complete / of which over tolerance / failed / pruned by a constraint."
            "</p>" + _table(["op", "bucket", "reference ms", "best ms", "speedup",
                             "chosen configuration", "rel. error", "trials"], body,
                            numeric=(2, 3, 4, 6), cfg=(5,)))


def shares_section(page: Page, rows: Sequence[data.OpRow]) -> str:
    shares = data.time_shares(rows)
    body = []
    for b, ss in shares.items():
        before = sum(s.before_ms for s in ss)
        after = sum(s.after_ms if s.after_ms is not None else s.before_ms for s in ss)
        body.append([e(b), _ms(before, 2), _ms(after, 2), f"{before / after:.2f}×"])
    return ('<h2 id="time">Where the time goes</h2><p class="note">Each op kind’s time per '
            "call × its calls per forward pass. Per-op sums, before the end-to-end effects "
            "(casts between ops, thread-pool switches) that the model-level study "
            f"measures.</p>{page.figure(figures.shares_figure(shares))}"
            + _table(["bucket", "reference ms", "tuned ms", "speedup"], body,
                     numeric=(1, 2, 3)))


def graph_section(rows: Sequence[data.OpRow], inp: ReportInput, mmd_name: str) -> str:
    nodes = data.forward_graph(rows)
    return ('<h2 id="graph">The forward pass</h2><p class="note">One encoder layer expanded; '
            "each box holds the chosen variant and its share of the tuned forward pass per "
            f"bucket (bar: first bucket). The same graph as Mermaid: <code>{e(mmd_name)}</code>"
            f".</p>{graph.svg(nodes, inp.arch.num_hidden_layers)}")


def roofline_section(page: Page, rows: Sequence[data.OpRow], inp: ReportInput) -> str:
    out = ['<h2 id="roofline">Roofline</h2>']
    if not inp.peaks:
        out.append('<p class="note">No measured peaks for this machine in the database (the '
                   "report measures them when it runs on the machine that was tuned).</p>")
        return "".join(out)
    p = inp.peaks
    out.append('<p class="note">Achieved GFLOP/s of each op (filled: tuned, at its precision; '
               "open: float32 reference) against its arithmetic intensity. FLOPs count "
               "multiply-adds as 2 plus a few per element for bias, GELU, softmax and "
               "LayerNorm; bytes are the least traffic (weights, inputs and outputs once). Roofs: "
               "measured GEMM throughput per precision and copy bandwidth, "
               f"{e(p.get('threads', '?'))} threads. A point above the slope ran from cache: "
               "its weights fit in the last-level cache between calls.</p>")
    out.append(page.figure(figures.roofline_figure(data.roofline(rows, inp.arch), p)))
    peak_rows = [[e(k), f"{v:.0f}"] for k, v in sorted(p["gflops"].items())]
    peak_rows.append(["memory bandwidth (GB/s)", f"{p['gbps']:.1f}"])
    out.append(_table(["peak", "GFLOP/s"], peak_rows, numeric=(1,)))
    return "".join(out)


def per_op_section(page: Page, studies: Sequence[StudyView], tol: float) -> str:
    ordered = sorted(studies, key=lambda s: (OP_KINDS.index(s.kind), s.batch, s.seq))
    links = " ".join(f'<a href="#{e(s.kind)}-{e(s.bucket)}">{e(s.kind)} {e(s.bucket)}</a>'
                     for s in ordered)
    out = ['<h2 id="per-op">Per operator</h2><p class="note">Time ratio = candidate / '
           "reference (lower is better); infeasible: relative error above the tolerance. "
           f"Each study: history, importances, parallel coordinates, latency vs error.</p>"
           f"<nav>{links}</nav>"]
    for s in ordered:
        axes, lines = data.parallel_coords(s, tol)
        out.append(f'<h3 id="{e(s.kind)}-{e(s.bucket)}">{e(s.kind)} {e(s.bucket)}</h3>'
                   f'<p class="note">study <code>{e(s.name)}</code></p><div class="grid">'
                   + page.figure(figures.history_figure(data.history(s, tol), tol))
                   + page.figure(figures.importance_figure(s.importances))
                   + page.figure(figures.parallel_figure(axes, lines), wide=True)
                   + page.figure(figures.error_figure(data.latency_vs_error(s, tol), tol),
                                 wide=True)
                   + "</div>")
    return "".join(out)


def failures_section(studies: Sequence[StudyView]) -> str:
    groups = data.failure_groups(studies)
    head = '<h2 id="failures">Failures</h2>'
    if not groups:
        return head + '<p class="note">No failed or pruned configs.</p>'
    rows = [[e(g.outcome), e(g.reason), str(g.count), e(", ".join(g.studies)),
             e(" ".join(f"{k}={v}" for k, v in g.example.items()))] for g in groups]
    return (head + '<p class="note">Distinct configs that failed to build or run, or that a '
            "named constraint pruned before measuring, grouped by reason.</p>"
            + _table(["outcome", "reason", "configs", "where", "example config"], rows,
                     numeric=(2,), cfg=(4,)))


def render(inp: ReportInput, storage: str, mmd_name: str) -> str:
    page = Page()
    rows = data.op_rows(inp)
    page.add(header(inp, storage))
    page.add(summary(page, inp))
    page.add(op_table(rows))
    page.add(shares_section(page, rows))
    page.add(graph_section(rows, inp, mmd_name))
    page.add(roofline_section(page, rows, inp))
    page.add(per_op_section(page, inp.studies, inp.max_rel_error))
    page.add(failures_section(inp.studies))
    if inp.replays:
        page.add(replay_section(page, inp.replays))
    return page.render(f"autotune report: {inp.model} on {inp.device}")


def replay_section(page: Page, replays: Sequence[dict[str, Any]]) -> str:
    """Replay results (``autotune replay --output``): per landscape, the median trials each
    sampler needed and its median best-so-far curve."""
    out = ['<h2 id="replay">Search quality (replay)</h2><p class="note">Each sampler run '
           "against a recorded landscape (every config measured once), many seeds. Trials: "
           "median number of distinct configs until the best found is within 1/3/5% of the "
           "recording's best. Curves: median best so far, as % above that best. Imported "
           "recordings (Kernel Tuner files, `benchmarks/replay_search.py --external`) also "
           "show Kernel Tuner's own strategies (kt:…), random search's expectation and, where "
           "the autotuning-methodology package was installed, its performance score over "
           "the budget (0: random search, 1: the best config from the first trial).</p>"]
    for r in replays:
        title = f"{r['kind']} {r['bucket']}: {r['size']} configs, budget {r['budget']}, " \
                f"{r['seeds']} seeds"
        scored = any(s.get("methodology_score") is not None for s in r["samplers"].values())
        rows = [[e(name), *("> budget" if v is None else f"{v:g}"
                            for v in s["median_trials"].values()),
                 *([_score(s.get("methodology_score"))] if scored else [])]
                for name, s in r["samplers"].items()]
        if r.get("random_expected"):  # imported recordings: what random search needs
            rows.append(["random (expected)",
                         *(f"{v:.0f}" for v in r["random_expected"].values()),
                         *(["0"] if scored else [])])
        curves = {name: s["median_curve"] for name, s in r["samplers"].items()}
        head = ["sampler", "≤ 1%", "≤ 3%", "≤ 5%", *(["score"] if scored else [])]
        out.append(f"<h3>{e(title)}</h3>"
                   + _table(head, rows, numeric=tuple(range(1, len(head))))
                   + page.figure(figures.replay_figure(title, curves)))
    return "".join(out)


def _score(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def replay_page(replays: Sequence[dict[str, Any]]) -> str:
    page = Page()
    page.add("<h1>autotune replay</h1>" + replay_section(page, replays))
    return page.render("autotune replay")
