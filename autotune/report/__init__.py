"""The HTML report: what was searched, what won and why, in one offline file.

``read`` collects everything from the database once; ``data`` turns it into the numbers on
the page (pure functions); ``figures``, ``graph`` and ``html`` draw them.
"""

from __future__ import annotations

import re
from pathlib import Path

from autotune.files import write_text_atomic
from autotune.report.graph import mermaid
from autotune.report.read import ReportInput, read_report_input

__all__ = ["ReportInput", "default_output", "read_report_input", "write_report"]


def default_output(model: str, device: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).name or "model")
    return Path("reports") / f"{name}-{device}.html"


def write_report(inp: ReportInput, output: Path, storage: str) -> tuple[Path, Path]:
    """Write the page and, next to it, the forward-pass graph as Mermaid (``.mmd``).
    ``storage`` is shown in the header and must already be redacted."""
    from autotune.report import data, html

    output.parent.mkdir(parents=True, exist_ok=True)
    mmd = output.with_suffix(".mmd")
    nodes = data.forward_graph(data.op_rows(inp))
    write_text_atomic(mmd, mermaid(nodes, inp.arch.num_hidden_layers,
                                   f"autotune: {inp.model} on {inp.device}, machine "
                                   f"{inp.machine.get('fingerprint', '?')}"))
    write_text_atomic(output, html.render(inp, storage, mmd.name))
    return output, mmd
