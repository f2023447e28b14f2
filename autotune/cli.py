"""The ``autotune`` command. Heavy imports (torch, optuna) happen inside each subcommand."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from autotune.bench import PEERS
from autotune.cli_common import (
    SAMPLERS,
    TRIAL_TIMEOUT_S,
    device_option,
    positive_float,
    storage_option,
    tolerance_option,
)
from autotune.cli_quality import landscape, replay
from autotune.cli_report import report, studies
from autotune.errors import UserError
from autotune.models.kinds import OP_KINDS

if TYPE_CHECKING:
    from rich.console import Console

    from autotune.models.bert import Bucket, ResolvedModel
    from autotune.search.driver import SearchOptions, StudyOutcome

F = TypeVar("F", bound=Callable[..., Any])


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not items or any(v < 1 for v in items):
        raise click.BadParameter(f"{value!r}: every value must be a positive integer")
    return tuple(sorted(set(items)))


def _shapes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[Bucket, ...]:
    from autotune.models.bert import Bucket

    out = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        b, _, s = item.lower().partition("x")
        if not (b.isdigit() and s.isdigit() and int(b) > 0 and int(s) > 0):
            raise click.BadParameter(f"{item!r} is not BATCHxLENGTH with positive integers "
                                     "(e.g. 8x128)")
        out.append(Bucket(int(b), int(s)))
    return tuple(dict.fromkeys(out))


def _optional_int_list(ctx: click.Context, param: click.Parameter, value: str,
                       ) -> tuple[int, ...]:
    return _int_list(ctx, param, value) if value.strip() else ()


def _ops(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    if value == "all":
        return OP_KINDS
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in OP_KINDS]
    if bad or not items:
        raise click.BadParameter(f"unknown op {', '.join(map(repr, bad)) or repr(value)}; "
                                 f"choose from all, {', '.join(OP_KINDS)}")
    return tuple(k for k in OP_KINDS if k in items)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autotune")
def main() -> None:
    """Search, store and export the fastest correct configuration of every BERT operator."""


@main.command()
@click.option("--model", default="bert-base-uncased", show_default=True,
              help="Known name (bert-base-uncased, bert-large-uncased), local directory with "
                   "config.json, or hub id.")
@device_option
@click.option("--ops", default="all", show_default=True, callback=_ops,
              help=f"Comma-separated op kinds to tune: {', '.join(OP_KINDS)}.")
@click.option("--batch-sizes", default="", callback=_optional_int_list,
              help="Batch sizes of the shape buckets (with --seq-lens: every pair; alone: "
                   "with sequence 128). Default: buckets 1x32, 1x128, 8x128 and 8x512 (the "
                   "model's maximum), covering batches of 1-32 inputs of 16 tokens up to the "
                   "maximum: other shapes run the nearest bucket's choice.")
@click.option("--seq-lens", default="", callback=_optional_int_list,
              help="Sequence lengths of the shape buckets (alone: with batch sizes 1 and 8).")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Trials per study (one study per op kind and bucket); finished trials of "
                   "earlier runs count.")
@click.option("--timeout", type=positive_float(), default=None,
              help="Stop starting new trials after this many seconds overall.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True,
              help="Optuna sampler; grid runs every config of the space in random order.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler and data seed.")
@tolerance_option("Correctness bound ‖out−ref‖/‖ref‖ against float32; 0.02 admits "
                  "bfloat16, 1e-4 float32 only.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the tuned config (default tuned/<model>-<device>.json).")
@storage_option
@click.option("--trial-timeout", type=positive_float(), default=TRIAL_TIMEOUT_S,
              show_default=True, help="Seconds before a hanging measurement is killed.")
@click.option("--time-per-trial", type=positive_float(), default=1.0,
              show_default=True, help="Seconds of interleaved timing per trial.")
@click.option("--spaces", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of search spaces (<device>/<kind>.yaml).")
@click.option("--lengths", default="fixed", show_default=True,
              help="Inputs the model-level study is timed on: fixed, LO..HI (uniform "
                   "lengths), a file with one length per line, or a text file with one input "
                   "per line (tokenized with the model's tokenizer: real ids, real lengths). "
                   "Each batch is padded to its longest input, as HF tokenizers do.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Text file, one input per line, that the model-level study judges "
                   "accuracy on (16 texts per bucket, the model's tokenizer). Default: the "
                   "--lengths text file if it is one, else texts shipped with autotune "
                   "(English) when the model has a tokenizer, else random token ids.")
@click.option("--compose-trials", type=click.IntRange(min=0), default=4, show_default=True,
              help="Trials of the model-level study that composes per-op configs and "
                   "layouts (0 skips it; it needs every op kind).")
@click.option("--local-search/--no-local-search", default=True, show_default=True,
              help="Make every new config a one-parameter change of the best config whose "
                   "neighbours are not all measured yet (best-first hill climbing), every "
                   "fourth first a recombination of two of the five best configs, and after "
                   "15 configs without a new best a child bred from the best configs (a "
                   "genetic algorithm's step); the sampler starts the climb and proposes "
                   "when no step is left. Off: the sampler alone.")
@click.option("--warm-start/--no-warm-start", default=True, show_default=True,
              help="Try the best configs of the buckets already searched first.")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop a study early after this many configs without a new best.")
@click.option("--heartbeat", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="Shared (PostgreSQL) databases: seconds between a trial's heartbeats; a "
                   "trial silent for three is failed and retried (default 10).")
@click.option("--wait", is_flag=True,
              help="If another search is writing the same SQLite file, wait for it instead "
                   "of stopping with a message.")
def search(model: str, device: str, ops: tuple[str, ...], batch_sizes: tuple[int, ...],
           seq_lens: tuple[int, ...], trials: int, timeout: float | None, sampler: str,
           seed: int, max_rel_error: float, output: Path | None, storage: str | None,
           trial_timeout: float, time_per_trial: float, spaces: Path | None, lengths: str,
           calibration: Path | None, compose_trials: int, local_search: bool, warm_start: bool,
           patience: int | None, heartbeat: int | None, wait: bool) -> None:
    """Tune every operator of MODEL, store every trial, export the best config.

    One Optuna study per (model, op kind, shape bucket, device, machine). Each candidate is
    checked against the float32 reference, timed interleaved with it in a worker process,
    and stored; rerunning resumes and never measures a config twice.
    """
    from rich.console import Console

    from autotune import settings
    from autotune.search.driver import SearchOptions
    from autotune.search.samplers import (
        DEFAULT_EVOLVE_AFTER,
        DEFAULT_LOCAL_EVERY,
        DEFAULT_RECOMBINE_EVERY,
    )

    _check_device(device)
    opts = SearchOptions(
        model=model, device=device, ops=ops, batch_sizes=batch_sizes, seq_lens=seq_lens,
        trials=trials, timeout=timeout, sampler=sampler, seed=seed,
        max_rel_error=max_rel_error, storage=settings.storage_url(storage),
        spaces_dir=settings.spaces_dir(str(spaces) if spaces else None),
        trial_timeout=trial_timeout, time_per_trial=time_per_trial,
        compose_trials=compose_trials, lengths=lengths,
        calibration=None if calibration is None else str(calibration), warm_start=warm_start,
        patience=patience, local_every=DEFAULT_LOCAL_EVERY if local_search else 0,
        recombine_every=DEFAULT_RECOMBINE_EVERY if local_search else 0,
        evolve_after=DEFAULT_EVOLVE_AFTER if local_search else 0, wait=wait,
        heartbeat=heartbeat,
    )
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs: keep table rows on one line
    sys.exit(run_search(opts, output, console))


def _check_device(device: str) -> None:
    if device == "cuda":
        import importlib.util

        import torch

        if importlib.util.find_spec("triton") is None:
            raise UserError("--device cuda: the Triton kernels need triton "
                            "(pip install 'autotune[cuda]')")
        if torch.cuda.is_available():
            return
        if os.environ.get("TRITON_INTERPRET") == "1":
            click.echo("notice: no CUDA device; cuda variants run on CPU tensors under Triton's "
                       "interpreter (TRITON_INTERPRET=1): a test of the path, timings say "
                       "nothing about a GPU", err=True)
            return
        raise UserError("--device cuda: no CUDA device is available on this machine")


def run_search(opts: SearchOptions, output: Path | None, console: Console,
               preload: Sequence[str] = ()) -> int:
    """Run the search with a progress bar, print the summary, export. Returns the exit code.
    On SQLite, only while no other search writes the same file (see ``storage.lock``)."""
    from autotune.bench.lengths import calibration_texts, parse_lengths
    from autotune.models.bert import resolve_model
    from autotune.search.driver import check_spaces
    from autotune.storage import prepare_url
    from autotune.storage.lock import writer_lock

    started, t0 = datetime.now(UTC), time.monotonic()
    resolved = resolve_model(opts.model)
    check_spaces(opts, resolved)  # bad input: one line, nothing written
    mix = parse_lengths(opts.lengths, resolved.path or resolved.name,  # not after the studies
                        resolved.arch.max_seq)
    if opts.calibration is not None:
        calibration_texts(opts.calibration, resolved.path or resolved.name,
                          resolved.arch.max_seq, mix)
    url = prepare_url(opts.storage)
    with writer_lock(url, opts.wait, lambda msg: console.print(f"[yellow]{msg}[/]")):
        return _run_search(opts, resolved, output, console, preload, started, t0)


def _run_search(opts: SearchOptions, resolved: ResolvedModel, output: Path | None,
                console: Console, preload: Sequence[str], started: datetime, t0: float) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from autotune.search.driver import Searcher
    from autotune.storage import redact

    if resolved.notice:
        console.print(f"[yellow]note:[/] {resolved.notice}")
    opts.preload = tuple(preload) or opts.preload
    searcher = Searcher(opts, resolved)
    console.print(f"{resolved.name}: {resolved.arch.describe()}")
    budget = sum(searcher.trials(i.kind, i.bucket) for i in searcher.instances)
    console.print(f"storage: {redact(searcher.url)}   studies: {len(searcher.instances)} "
                  f"({len(searcher.buckets)} buckets: "
                  f"{', '.join(b.label for b in searcher.buckets)})   trials: at most {budget} "
                  f"({opts.trials} per study, fewer for cheap ops and warm-started studies "
                  f"that stop improving)   sampler: {opts.sampler}")
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    outcomes: list[StudyOutcome] = []

    def on_sigint(signum: int, frame: object) -> None:
        searcher.request_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts
        console.print("[yellow]interrupted: stopping after the trial in flight "
                      "(Ctrl-C again to abort)[/]")

    previous = signal.signal(signal.SIGINT, on_sigint)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=budget)
        searcher.progress = lambda desc, n: bar.update(task, advance=n, description=desc)
        searcher.say = lambda msg: bar.console.print(f"[yellow]{escape(msg)}[/]")
        try:
            for inst in searcher.instances:
                if searcher.out_of_time():
                    if not searcher.stop_requested:
                        console.print("[yellow]--timeout reached: remaining studies skipped[/]")
                    break
                outcome = searcher.run_study(inst)
                outcomes.append(outcome)
                bar.console.print(_study_line(outcome))
            if (opts.compose_trials and set(opts.ops) == set(OP_KINDS)
                    and len(outcomes) == len(searcher.instances)
                    and not searcher.stop_requested):
                searcher.compose(outcomes, bar.console.print)
        finally:
            searcher.close()
            signal.signal(signal.SIGINT, previous)
    code = 130 if searcher.stop_requested else 0
    print_summary(outcomes, console)
    _export(searcher.storage, resolved.name,
            opts.device, opts.max_rel_error, output, console)
    _record_run(searcher.url, opts, resolved.name, searcher.buckets, started,
                time.monotonic() - t0,
                "interrupted" if code else "finished")
    return code


def _record_run(url: str, opts: SearchOptions, model: str, buckets: Sequence[Bucket],
                started: datetime, wall_s: float, status: str) -> None:
    from autotune.fingerprint import machine
    from autotune.storage.runs import record_run

    record_run(url, model, opts.device, machine(opts.device)["fingerprint"], started, wall_s,
               status, {"trials": opts.trials, "compose_trials": opts.compose_trials,
                        "sampler": opts.sampler, "seed": opts.seed,
                        "max_rel_error": opts.max_rel_error, "ops": list(opts.ops),
                        "buckets": [b.label for b in buckets], "lengths": opts.lengths,
                        "calibration": opts.calibration,
                        "time_per_trial": opts.time_per_trial, "warm_start": opts.warm_start,
                        "local_every": opts.local_every,
                        "recombine_every": opts.recombine_every,
                        "evolve_after": opts.evolve_after, "patience": opts.patience})


def _study_line(o: StudyOutcome) -> str:
    head = f"{o.instance.kind} {o.instance.bucket.label}:"
    c = o.counts
    counts = f"{c['feasible']} feasible, {c['infeasible']} over tolerance, {c['failed']} failed"
    if o.final is None:
        return f"{head} no feasible config ({counts})"
    f = o.final
    return (f"{head} {f['cand_ms']:.3f} ms vs reference {f['ref_ms']:.3f} ms "
            f"({f['ref_ms'] / f['cand_ms']:.2f}×) with {f['params']['variant']} ({counts})")


def print_summary(outcomes: Sequence[StudyOutcome], console: Console) -> None:
    from rich.table import Table

    table = Table(title="autotune: per-operator results (time per call)")
    for col in ("op", "bucket", "ref ms", "best ms", "speedup", "chosen config", "rel err",
                "trials ok/bad/fail"):
        table.add_column(col, justify="right" if "ms" in col or col in ("speedup",) else "left")
    totals: dict[str, list[float]] = {}
    for o in outcomes:
        c = o.counts
        counts = f"{c['feasible']}/{c['infeasible']}/{c['failed']}"
        f = o.final
        if f is None:
            table.add_row(o.instance.kind, o.instance.bucket.label, "-", "-", "-",
                          "[red]no feasible config[/]", "-", counts)
            continue
        ref, best = f["ref_ms"], f["cand_ms"]
        acc = totals.setdefault(o.instance.bucket.label, [0.0, 0.0])
        acc[0] += o.instance.count * ref
        acc[1] += o.instance.count * best
        chosen = format_params(f["params"])
        if f.get("slower_than_reference"):
            chosen += " [yellow](the reference's own: every tuned config re-measured slower)[/]"
        table.add_row(o.instance.kind, o.instance.bucket.label, f"{ref:.3f}", f"{best:.3f}",
                      f"{ref / best:.2f}×", chosen, f"{f['rel_error']:.1e}", counts)
    console.print(table)
    for label, (ref, best) in totals.items():
        console.print(f"{label}: sum over the forward pass of tuned ops {ref:.2f} ms → "
                      f"{best:.2f} ms ({ref / best:.2f}×; per-op, before end-to-end checks)")


def format_params(params: dict[str, Any]) -> str:
    p = dict(params)
    head = str(p.pop("variant", ""))
    return " ".join([head, *(f"{k}={v}" for k, v in p.items())])


def _export(storage: Any, model: str, device: str, tol: float, output: Path | None,
            console: Console) -> None:
    from autotune.export import build_config, default_output, write_config

    try:
        config = build_config(storage, model, device, tol)
    except UserError as e:
        console.print(f"[yellow]no config exported:[/] {e}")
        return
    path = write_config(config, output or default_output(model, device))
    console.print(f"tuned config written to {path}")


@main.command("export")
@click.option("--model", default="bert-base-uncased", show_default=True,
              help="Model name as given to `autotune search` (a directory: its folder name).")
@device_option
@storage_option
@tolerance_option("Only configs within this error qualify.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file (default tuned/<model>-<device>.json).")
def export_cmd(model: str, device: str, storage: str | None, max_rel_error: float,
               output: Path | None) -> None:
    """Write the tuned config of MODEL from the database alone (no measuring)."""
    from autotune import settings
    from autotune.export import build_config, default_output, write_config
    from autotune.storage import open_optuna_storage, prepare_url

    url = prepare_url(settings.storage_url(storage))
    name = Path(model).resolve().name if Path(model).is_dir() else model
    config = build_config(open_optuna_storage(url), name, device, max_rel_error)
    path = write_config(config, output or default_output(name, device))
    n = sum(len(v) for v in config["ops"].values())
    click.echo(f"wrote {path}: {n} tuned op buckets for {name} on {device}")


def _peers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in PEERS]
    if bad:
        raise click.BadParameter(f"unknown peer {', '.join(map(repr, bad))}; "
                                 f"choose from {', '.join(PEERS)}")
    return items


@main.command()
@click.option("--model", default="bert-base-uncased", show_default=True,
              help="Known name, local directory with config.json (and weights), or hub id.")
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tuned config written by `autotune search` / `autotune export`.")
@click.option("--shapes", default="", callback=_shapes, metavar="BxS,...",
              help="Shapes to time, e.g. 1x16,3x77,32x512 (batch x padded length). Default: "
                   "a grid spanning the config's buckets (3 batch sizes x 4 lengths from 16 "
                   "to its longest, most of them no bucket).")
@click.option("--batch-sizes", default="", callback=_optional_int_list,
              help="Instead of --shapes: every pair of these batch sizes and --seq-lens.")
@click.option("--seq-lens", default="", callback=_optional_int_list,
              help="Instead of --shapes: padded lengths (alone: with batch sizes 1 and 8).")
@click.option("--lengths", default="fixed", show_default=True,
              help="Inputs of each batch: fixed, LO..HI (uniform lengths), a file with one "
                   "length per line, or a text file with one input per line (tokenized with "
                   "the model's tokenizer). Every contender gets the batch padded to its "
                   "longest input (padding=True); the tuned model runs its own layout.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Text file, one input per line, that every contender embeds for the "
                   "sentence-embedding and retrieval table, and that static int8 peers "
                   "calibrate on. Default: the --lengths text file if it is one, else texts "
                   "shipped with autotune when the model has a tokenizer.")
@click.option("--against", default=",".join(PEERS), show_default=True, callback=_peers,
              help="Contenders to time next to the tuned model (onnxruntime needs the "
                   "`peers` extra; absent ones are skipped with a note).")
@click.option("--seconds", type=positive_float(), default=10.0,
              show_default=True, help="Interleaved timing budget per bucket.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON results (default: next to the config, .bench.json).")
@storage_option
@click.option("--seed", type=int, default=0, show_default=True)
def bench(model: str, config_path: Path, shapes: tuple[Bucket, ...],
          batch_sizes: tuple[int, ...], seq_lens: tuple[int, ...], lengths: str,
          calibration: Path | None, against: tuple[str, ...], seconds: float,
          output: Path | None, storage: str | None, seed: int) -> None:
    """Time the tuned model and its peers interleaved in one process, with accuracy against
    float32 HF eager and memory; print a table, write JSON, store it in the database."""
    from rich.console import Console

    from autotune import settings
    from autotune.bench.run import BenchOptions, run_bench

    if shapes and (batch_sizes or seq_lens):
        raise click.UsageError("give either --shapes or --batch-sizes/--seq-lens, not both")
    if batch_sizes or seq_lens:
        from autotune.models.bert import Bucket

        shapes = tuple(Bucket(b, s) for b in batch_sizes or (1, 8) for s in seq_lens or (128,))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)
    run_bench(BenchOptions(model, config_path, shapes, lengths, against,
                           seconds, settings.storage_url(storage), output, seed,
                           None if calibration is None else str(calibration)), console)


main.add_command(landscape)
main.add_command(replay)
main.add_command(report)
main.add_command(studies)

if __name__ == "__main__":
    main()
