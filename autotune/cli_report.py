"""``autotune report`` and ``autotune studies``: what was searched, what won and why.

Heavy imports happen inside each command, as in ``cli``, which adds these to its group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from autotune.cli_common import device_option, storage_option, tolerance_option
from autotune.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console


@click.command()
@click.option("--model", default=None,
              help="Model name as given to `autotune search` (default: the only model in the "
                   "database).")
@device_option
@storage_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file (default reports/<model>-<device>.html); the forward-pass graph "
                   "is written next to it as .mmd (Mermaid).")
@tolerance_option("Tolerance the results are judged at (default: that of the newest "
                  "search).", default=None)
@click.option("--machine", default=None, metavar="FINGERPRINT",
              help="Machine whose studies to show, when the database holds several.")
@click.option("--measure-peaks/--no-measure-peaks", default=True, show_default=True,
              help="Measure this machine's peak GFLOP/s and bandwidth for the roofline when "
                   "the database has none (a few seconds, stored once).")
@click.option("--replay", "replay_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Results of `autotune replay --output` to show (repeatable).")
def report(model: str | None, device: str, storage: str | None, output: Path | None,
           max_rel_error: float | None, machine: str | None, measure_peaks: bool,
           replay_files: tuple[Path, ...]) -> None:
    """Write one self-contained HTML report (plotly, works offline) of what was searched,
    what won and why: operators, time shares, roofline, per-op studies, failures."""
    from rich.console import Console

    from autotune import settings
    from autotune.report import default_output, read_report_input, write_report
    from autotune.report.read import models_in, pick_machine
    from autotune.storage import open_optuna_storage, prepare_url, redact

    console = Console(stderr=True)
    url = prepare_url(settings.storage_url(storage))
    optuna_storage = open_optuna_storage(url)
    if model is None:
        found = models_in(optuna_storage, device)
        if len(found) != 1:
            raise UserError("--model is needed: " + (
                f"the database holds {', '.join(map(repr, found))}" if found
                else f"the database holds no autotune studies on {device}"))
        model = found[0]
    fingerprint = _fingerprint(device)
    machine = machine or pick_machine(optuna_storage, model, device, fingerprint)
    peaks = _peaks(url, device, machine, fingerprint, measure_peaks, console)
    with console.status(f"reading the studies of {model} …"):
        inp = read_report_input(url, optuna_storage, model, device, fingerprint,
                                max_rel_error, machine, peaks)
    if replay_files:
        inp = dataclasses.replace(inp, replays=tuple(_read_replays(replay_files)))
    with console.status("writing the report …"):
        path, mmd = write_report(inp, output or default_output(model, device), redact(url))
    size = path.stat().st_size / 2**20
    console.print(f"report written to {path} ({size:.1f} MiB, {len(inp.studies)} studies); "
                  f"graph as Mermaid in {mmd}")


def _read_replays(paths: Sequence[Path]) -> list[dict[str, Any]]:
    import json

    out = []
    for p in paths:
        try:
            out += json.loads(p.read_text())["replays"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{p}: not the output of `autotune replay --output`") from None
    return out


def _fingerprint(device: str) -> str:
    from autotune.fingerprint import machine

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "-"  # reporting on a GPU database from a machine without one
    return str(machine(device)["fingerprint"])


def _peaks(url: str, device: str, machine: str, here: str, measure: bool,
           console: Console) -> dict[str, Any] | None:
    """Stored peaks of ``machine``; measured and stored first when it is this machine."""
    import torch

    from autotune.storage.peaks import load_peaks, store_peaks

    peaks = load_peaks(url, machine, torch.__version__)
    if peaks is None and measure and machine == here:
        from autotune.measure.peaks import measure_peaks

        with console.status("measuring this machine's peak throughput and bandwidth once …"):
            peaks = measure_peaks(device)
        store_peaks(url, machine, torch.__version__, peaks)
    return peaks


@click.command()
@storage_option
@click.option("--model", default=None, help="Only the studies of this model.")
def studies(storage: str | None, model: str | None) -> None:
    """List the studies in the database: op, bucket, trials by state, best result."""
    from rich.console import Console
    from rich.table import Table

    from autotune import settings
    from autotune.report.read import study_summaries
    from autotune.storage import open_optuna_storage, prepare_url, redact

    url = prepare_url(settings.storage_url(storage))
    rows = [r for r in study_summaries(open_optuna_storage(url))
            if model is None or r["model"] == model]
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 180)
    if not rows:
        console.print(f"no studies in {redact(url)}" + (f" for {model!r}" if model else ""))
        return
    table = Table(title=f"studies in {redact(url)}")
    for col in ("study", "op", "bucket", "device", "complete", "failed", "pruned", "running",
                "best ms", "best ÷ ref", "tolerance", "last trial"):
        table.add_column(col, justify="right" if col not in ("study", "op", "bucket", "device")
                         else "left", no_wrap=col == "study")
    for r in rows:
        st = r["states"]
        table.add_row(r["name"], r["op"], r["bucket"], r["device"] or "–",
                      *(str(st[k]) for k in ("COMPLETE", "FAIL", "PRUNED", "RUNNING")),
                      "–" if r["best_ms"] is None else f"{r['best_ms']:.3f}",
                      "–" if r["best_ratio"] is None else f"{r['best_ratio']:.3f}",
                      "–" if r["max_rel_error"] is None else f"{r['max_rel_error']:g}",
                      "–" if r["updated"] is None else r["updated"].strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    console.print("best ÷ ref: the re-measured winner's time over its reference (per-op) or "
                  "over the per-op winners put together (model-level); lower is better.")

