"""The forward pass as a graph: an inline SVG for the page and a Mermaid flowchart for docs.

Both are drawn from ``data.forward_graph``; every label is escaped for its format.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

from autotune.report.data import GraphNode

_W, _H, _GAP, _PAD = 460, 58, 26, 28  # node width/height, gap between nodes, layer padding
_IO_H = 34


def _shares(n: GraphNode) -> str:
    return " · ".join(f"{b} {100 * v:.1f}%" for b, v in n.shares.items())


def svg(nodes: Sequence[GraphNode], layers: int) -> str:
    """A top-to-bottom flowchart: input, embeddings, one encoder layer (boxed, × layers),
    pooler, output; each op box holds its variant, its share per bucket and a bar for the
    share in the first bucket."""
    x0 = 40
    y = 10.0
    parts: list[str] = []
    boxes: list[tuple[float, float]] = []  # (top, bottom) of each drawn box, in order

    def io(text: str) -> None:
        nonlocal y
        parts.append(f'<rect x="{x0 + 80}" y="{y}" width="{_W - 160}" height="{_IO_H}" '
                     f'rx="17" class="io"/><text x="{x0 + _W / 2}" y="{y + 21}" '
                     f'text-anchor="middle" class="io-t">{escape(text)}</text>')
        boxes.append((y, y + _IO_H))
        y += _IO_H + _GAP

    def op(n: GraphNode) -> None:
        nonlocal y
        share = next(iter(n.shares.values()), 0.0)
        parts.append(
            f'<g class="op"><title>{escape(n.title)}: {escape(n.detail)}</title>'
            f'<rect x="{x0}" y="{y}" width="{_W}" height="{_H}" rx="6" class="node"/>'
            f'<rect x="{x0}" y="{y + _H - 6}" width="{_W * min(share, 1.0):.1f}" height="6" '
            f'class="bar"/>'
            f'<text x="{x0 + 12}" y="{y + 19}" class="t">{escape(n.title)}</text>'
            f'<text x="{x0 + 12}" y="{y + 36}" class="d">{escape(n.detail)}</text>'
            f'<text x="{x0 + _W - 12}" y="{y + 19}" text-anchor="end" class="s">'
            f'{escape(_shares(n))}</text></g>')
        boxes.append((y, y + _H))
        y += _H + _GAP

    io("input_ids, attention_mask")
    layer_nodes = [n for n in nodes if n.in_layer]
    for n in nodes:
        if n.in_layer and n is layer_nodes[0]:
            top = y
            y += _PAD
            for m in layer_nodes:
                op(m)
            y += _PAD - _GAP
            parts.insert(0, f'<rect x="{x0 - 16}" y="{top}" width="{_W + 32}" '
                            f'height="{y - top}" rx="10" class="layer"/>'
                            f'<text x="{x0 + _W + 10}" y="{top + 18}" text-anchor="end" '
                            f'class="layer-t">encoder layer × {layers}</text>')
            y += _GAP
        elif not n.in_layer:
            op(n)
    io("last_hidden_state, pooler_output")
    for (_, bottom), (top, _) in itertools.pairwise(boxes):
        gap_top = bottom if top - bottom < 2 * _PAD else top - _GAP
        parts.append(f'<line x1="{x0 + _W / 2}" y1="{gap_top}" x2="{x0 + _W / 2}" '
                     f'y2="{top - 2}" class="edge" marker-end="url(#arrow)"/>')
    height = y - _GAP + 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{_W + 90}" '
            f'height="{height}" viewBox="0 0 {_W + 90} {height}" role="img" '
            f'aria-label="BERT forward pass">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/>'
            f'</marker></defs>{"".join(parts)}</svg>')


def _mermaid_text(text: str) -> str:
    """A label safe inside ``["..."]``: Mermaid's entity codes for the characters that would
    end the label or be read as markup."""
    for ch, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(ch, code)
    return " ".join(text.split())


def mermaid(nodes: Sequence[GraphNode], layers: int, title: str) -> str:
    """The same graph as a Mermaid flowchart (renders in GitHub, GitLab and most wikis)."""
    def label(n: GraphNode) -> str:
        return (f'    {n.id}["{_mermaid_text(n.title)}<br/>{_mermaid_text(n.detail)}'
                f'<br/>{_mermaid_text(_shares(n))}"]')

    lines = [f"%% {' '.join(title.split())}", "flowchart TD",
             '    input(["input_ids, attention_mask"])']
    inner = [n for n in nodes if n.in_layer]
    outer = [n for n in nodes if not n.in_layer]
    lines += [label(n) for n in outer]
    if inner:
        lines.append(f'    subgraph layer["encoder layer × {layers}"]')
        lines += ["    " + label(n) for n in inner]
        lines += [f"        {a.id} --> {b.id}" for a, b in itertools.pairwise(inner)]
        lines.append("    end")
    lines.append('    output(["last_hidden_state, pooler_output"])')
    order = ["input"]
    for n in nodes:
        if not n.in_layer:
            order.append(n.id)
        elif n is inner[0]:
            order.append(f"{inner[0].id}|{inner[-1].id}")
    order.append("output")
    for a, b in itertools.pairwise(order):
        lines.append(f"    {a.split('|')[-1]} --> {b.split('|')[0]}")
    return "\n".join(lines) + "\n"
