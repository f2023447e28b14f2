"""``autotune landscape export`` and ``autotune replay``: judge the search itself.

Kept apart from ``cli`` (which adds these commands to the ``autotune`` group); heavy
imports happen inside each command, as there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from autotune.cli_common import device_option, storage_option, tolerance_option
from autotune.errors import UserError
from autotune.models.kinds import OP_KINDS

if TYPE_CHECKING:
    from autotune.search.replay import SamplerScore
    from autotune.space import Params



@click.group()
def landscape() -> None:
    """Recorded landscapes: every config of a space with its result (exported from a study,
    or imported from Kernel Tuner)."""


@landscape.command("export")
@click.option("--op", "kind", type=click.Choice(OP_KINDS), required=True,
              help="Op kind whose study to export.")
@click.option("--model", default="bert-base-uncased", show_default=True,
              help="Model name as given to `autotune search`.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), default=128, show_default=True)
@device_option
@storage_option
@tolerance_option("Tolerance replays judge feasibility at.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file (default landscapes/<model>-<op>-<bucket>-<device>.json).")
def export_landscape_cmd(kind: str, model: str, batch_size: int, seq_len: int, device: str,
                         storage: str | None, max_rel_error: float,
                         output: Path | None) -> None:
    """Write the recorded results of one op study (ideally a full grid search:
    `autotune search --ops KIND --sampler grid --trials N`, N ≥ the space size)."""
    import optuna

    from autotune import settings
    from autotune.export import matching_studies
    from autotune.fingerprint import machine
    from autotune.search.landscape import export_landscape
    from autotune.search.spaces import load_spaces
    from autotune.storage import open_optuna_storage, prepare_url

    url = prepare_url(settings.storage_url(storage))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = [s for s in matching_studies(open_optuna_storage(url), model, device,
                                           machine(device)["fingerprint"])
               if s.user_attrs["kind"] == kind and s.user_attrs["batch"] == batch_size
               and s.user_attrs["seq"] == seq_len]
    label = f"{kind} b{batch_size}s{seq_len}"
    if not studies:
        raise UserError(f"no {label} study of {model!r} on {device} for this machine")
    space = load_spaces(settings.spaces_dir(None), device, (kind,))[kind]
    out = output or Path("landscapes") / f"{Path(model).name}-{kind}-b{batch_size}s{seq_len}" \
        f"-{device}.json"
    n, size = export_landscape(studies[0], space, max_rel_error, out)
    click.echo(f"wrote {out}: {n} of the {size} configs of {label}")
    if n < size:
        click.echo(f"note: the recording is incomplete; replay treats the {size - n} missing "
                   "configs as failed. Record all with --sampler grid --trials "
                   f"{size}.", err=True)


@landscape.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Landscape file to write (.json, or .json.gz to compress; default "
                   "landscapes/<file name>.json).")
@click.option("--higher-is-better/--lower-is-better", "higher", default=None,
              help="Whether the file's objective is better higher (default: higher for a "
                   "rate such as GFLOP/s, lower otherwise, e.g. time). A higher-is-better "
                   "objective is ranked by its inverse.")
def import_landscape_cmd(file: Path, output: Path | None, higher: bool | None) -> None:
    """Import a brute-forced Kernel Tuner file (cache .json / .json.gz, or T4 output) as a
    landscape that `autotune replay` runs samplers against: its parameters become the space,
    its failed configs failed trials, its objective what is ranked."""
    from autotune.measure.result import Status
    from autotune.search.kernel_tuner import import_kernel_tuner
    from autotune.search.landscape import load_landscape, write_landscape

    doc = import_kernel_tuner(file, higher)
    stem = file.name.removesuffix(".gz").removesuffix(".json")
    out = output or Path("landscapes") / f"{stem}.json"
    write_landscape(doc, out)
    land = load_landscape(out)  # what replay will read: checked now
    failed = sum(1 for _, r in land.entries.values() if r.status != Status.OK)
    size = sum(1 for _ in land.search_space(Path()).configs())
    inverse = doc["source"]["higher_is_better"]
    click.echo(f"wrote {out}: {land.kind} on {land.device}, {land.size} configs "
               f"({failed} failed) of the {size} its parameters span; best "
               f"{doc['source']['objective']} {1 / land.best() if inverse else land.best():g}"
               f"{' (higher is better: ranked by its inverse)' if inverse else ''}")


def _csv(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from autotune.search.replay import STRATEGIES

    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in STRATEGIES]
    if bad or not items:
        raise click.BadParameter(f"unknown sampler {', '.join(map(repr, bad)) or repr(value)}; "
                                 f"choose from {', '.join(STRATEGIES)}")
    return items


@click.command()
@click.option("--landscape", "paths", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Recorded landscape (repeat for several).")
@click.option("--sampler", "samplers", default="default,tpe,random", show_default=True,
              callback=_csv, help="Comma-separated strategies to compare: Optuna samplers, "
                                  "X+local (with hill-climbing steps), default (what "
                                  "`autotune search` does).")
@click.option("--seeds", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="Trials per replay, as `autotune search --trials` (default: a quarter of "
                   "the recording's size).")
@tolerance_option("Tolerance (default: the recording's).", default=None)
@click.option("--warm-from", "warm_from", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path), default=None,
              help="Landscape of the same op in another bucket: its best configs are tried "
                   "first, as a live search does with the buckets searched before.")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop a replay after this many configs without a new best.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON with every best-so-far curve (and an HTML figure next to it).")
def replay(paths: tuple[Path, ...], samplers: tuple[str, ...], seeds: int, budget: int | None,
           max_rel_error: float | None, warm_from: Path | None, patience: int | None,
           output: Path | None) -> None:
    """Run samplers against recorded landscapes (no measuring) and print, per sampler, the
    median number of trials to get within 1%, 3% and 5% of the recording's best."""
    from rich.console import Console
    from rich.progress import Progress

    from autotune import settings
    from autotune.search.landscape import load_landscape
    from autotune.search.loop import warm_configs
    from autotune.search.replay import score

    console = Console()
    results: list[dict[str, Any]] = []
    warm: list[Params] = []
    if warm_from is not None:
        warm = warm_configs([load_landscape(warm_from).ranked(max_rel_error)])
    for path in paths:
        land = load_landscape(path)
        space = land.search_space(settings.spaces_dir(None))
        land = land.within(space)
        n = budget or max(1, land.size // 4)
        scores = []
        with Progress(console=console, transient=True) as bar:
            for s in samplers:
                task = bar.add_task(f"{land.label} {s}", total=seeds)
                scores.append(score(land, space, s, seeds, n, max_rel_error, warm, patience,
                                    lambda t=task: bar.advance(t)))  # type: ignore[misc]
        _print_scores(console, land.label, land.size, n, seeds, scores)
        results.append({"landscape": str(path), "kind": land.kind,
                        "bucket": land.bucket.label if land.bucket else land.device,
                        "size": land.size, "budget": n, "seeds": seeds,
                        "samplers": {s.sampler: s.to_json() for s in scores}})
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"replays": results}, indent=1) + "\n")
        from autotune.report.html import replay_page

        page = output.with_suffix(".html")
        page.write_text(replay_page(results), encoding="utf-8")
        console.print(f"curves written to {output}, figure to {page}")


def _fmt(v: float, size: int) -> str:
    return "> budget" if math.isinf(v) else f"{v:.0f} ({100 * v / size:.0f}%)"


def _print_scores(console: Any, label: str, size: int, budget: int, seeds: int,
                  scores: list[SamplerScore]) -> None:
    from rich.table import Table

    from autotune.search.replay import WITHIN

    table = Table(title=f"replay: {label}, {size} configs, budget {budget}, "
                        f"{seeds} seeds (median trials; % of the recording's size)")
    table.add_column("sampler")
    for w in WITHIN:
        table.add_column(f"within {w:.0%}", justify="right")
    table.add_column("reached 3%", justify="right")
    table.add_column("best at budget", justify="right")
    for s in scores:
        final = sorted(c[-1] if c else math.inf for c in s.curves)[len(s.curves) // 2]
        table.add_row(s.sampler, *(_fmt(s.median_trials[w], size) for w in WITHIN),
                      f"{s.reached[0.03]:.0%}", f"+{100 * (final - 1):.1f}%")
    console.print(table)
