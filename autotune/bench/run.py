"""Time the tuned model and its peers interleaved in one process, check each one's accuracy
against float32 HF eager, measure memory, print a table, write JSON, store in the database."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from autotune.bench import PEER_TIERS, PEERS, TIERS, quality
from autotune.bench.lengths import LengthMix, calibration_texts, make_batch, parse_lengths
from autotune.bench.memory import peak_mb, reset_peak, rss_mb, weights_at_precisions_mb
from autotune.bench.peers import Peer, PeerUnavailable, build_peer, pooled, temp_dir
from autotune.errors import UserError
from autotune.fingerprint import machine
from autotune.measure.timing import time_many
from autotune.models.bert import BertArch, Bucket, resolve_model
from autotune.runtime.config import TunedConfig, check_fit, parse_config
from autotune.runtime.model import FallbackWarning, TunedBert
from autotune.runtime.weights import read_checkpoint, strip_prefix


@dataclass
class BenchOptions:
    model: str
    config: Path
    shapes: tuple[Bucket, ...] = ()  # empty: ``default_shapes`` of the config
    lengths: str = "fixed"
    against: tuple[str, ...] = PEERS
    seconds: float = 10.0
    storage: str | None = None
    output: Path | None = None
    seed: int = 0
    calibration: str | None = None  # texts to embed and calibrate on (see calibration_texts)


def _geometric(lo: int, hi: int, n: int) -> list[int]:
    """``n`` integers from ``lo`` to ``hi``, evenly spaced in log scale (duplicates dropped)."""
    if n < 2 or lo >= hi:
        return sorted({lo, hi})
    return sorted({round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)})


def default_shapes(cfg: TunedConfig, max_positions: int) -> tuple[Bucket, ...]:
    """A grid spanning what the config was tuned for: 3 batch sizes from its smallest to its
    largest batch, 4 sequence lengths from 16 (or its shortest, if shorter) to its longest,
    evenly spaced in log scale, so most shapes are no bucket of the search (e.g. 1, 3, 8 x
    16, 51, 161, 512 for the default workload)."""
    buckets = {c.bucket for cs in cfg.ops.values() for c in cs}
    if not buckets:
        return (Bucket(1, min(128, max_positions)),)
    batches = _geometric(min(b.batch for b in buckets), max(b.batch for b in buckets), 3)
    longest = min(max(b.seq for b in buckets), max_positions)
    seqs = _geometric(min(16, *(b.seq for b in buckets)), longest, 4)
    return tuple(Bucket(b, s) for b in batches for s in seqs)


def base_model(arch: BertArch, folder: Path | None) -> tuple[torch.nn.Module, str]:
    """The family's HF base model (BertModel, RobertaModel, ...; float32, eager attention)
    with the real weights when there are any, else HF's own initialisation (seeded)."""
    from transformers import AutoModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = AutoModel.from_config(arch.hf_config()).eval()
    state = read_checkpoint(folder) if folder else None
    if state is None:
        return hf, "random weights"
    missing, _ = hf.load_state_dict(strip_prefix(state), strict=False)
    if [k for k in missing if "position_ids" not in k and not k.startswith("pooler")]:
        raise ValueError(f"checkpoint is missing {missing[:3]}")
    return hf, "checkpoint"


def _accuracy(got: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor],
              mask: torch.Tensor) -> tuple[float, float]:
    keep = mask.bool()
    diff = (got[0] - ref[0])[keep]
    rel = float(diff.norm() / ref[0][keep].norm())
    cos = float(torch.nn.functional.cosine_similarity(got[1], ref[1]).min())
    return rel, cos


def _build(name: str, hf: torch.nn.Module, cfg: TunedConfig, arch: BertArch, tmp: Path,
           calibration: list[dict[str, torch.Tensor]]) -> tuple[Peer, float | None]:
    before = rss_mb()
    if name == "tuned":
        model = TunedBert(arch, dict(hf.state_dict()), cfg)

        def run(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            out = model(**batch)
            return out.last_hidden_state, pooled(out)

        peer = Peer("tuned", run, f"autotune runtime, {Path(str(cfg.model_name)).name} config",
                    [model])
        model.build_all(release_weights=True)  # as autotune.load leaves it
    else:
        peer = build_peer(name, hf, tmp, calibration)
    after = rss_mb()
    return peer, (after - before) if before is not None and after is not None else None


def run_bench(opts: BenchOptions, console: Console) -> dict[str, Any]:
    resolved = resolve_model(opts.model)
    cfg = parse_config(opts.config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_fit(cfg, resolved.arch)
    for w in caught:
        console.print(f"[yellow]note:[/] {w.message}")
    console.print(f"{resolved.name}: {resolved.arch.describe()}")
    top = resolved.arch.max_seq
    shapes = opts.shapes or default_shapes(cfg, top)
    too_long = [b.label for b in shapes if b.seq > top]
    if too_long:
        raise UserError(f"shapes {', '.join(too_long)} are longer than the model's maximum "
                        f"of {top} positions")
    tokenizer = resolved.path or resolved.name
    mix = parse_lengths(opts.lengths, tokenizer, top)
    texts = calibration_texts(opts.calibration, tokenizer, top, mix)
    hf, source = base_model(resolved.arch, resolved.path)
    if source != "checkpoint":
        console.print(f"[yellow]note:[/] no weights for {opts.model}: all contenders use the "
                      "same random weights (timings are valid, accuracy is judged on them)")
    # Static int8 peers calibrate on real texts where there are some, else on inputs like
    # the timed ones (never the same batches).
    calibration = [make_batch(1, min(128, top), resolved.arch.vocab_size, texts or mix,
                              opts.seed + 10_000 + i, pad_to_longest=True,
                              token_types=resolved.arch.n_token_types) for i in range(16)]
    peers: list[Peer] = []
    weights_mb: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    with temp_dir() as tmp, warnings.catch_warnings(record=True) as caught:
        # Exporters and quantizers are chatty; the table says what matters, and what the
        # tuned runtime warned (e.g. an op kind running the float32 reference) is shown.
        warnings.simplefilter("always")
        logging.getLogger().setLevel(logging.ERROR)
        for name in ("tuned", *opts.against):
            try:
                peer, mb = _build(name, hf, cfg, resolved.arch, Path(tmp), calibration)
            except PeerUnavailable as e:
                skipped[name] = str(e)
                console.print(f"[yellow]skipped {name}:[/] {e}")
                continue
            except Exception as e:  # a peer that breaks must not take the others down
                if name == "tuned":
                    raise
                skipped[name] = f"failed to build: {type(e).__name__}: {e}"[:300]
                console.print(f"[red]skipped {name}:[/] {skipped[name]}")
                continue
            peers.append(peer)
            weights_mb[name] = mb
        rows = []
        for i, shape in enumerate(shapes):
            console.print(f"[{i + 1}/{len(shapes)}] {shape.batch}x{shape.seq}: warming up "
                          f"{len(peers)} contenders (torch.compile compiles here)")
            rows += _bench_bucket(shape, peers, hf, resolved.arch, mix, opts, weights_mb)
        quality_of = _text_quality(peers, hf, resolved.arch, texts, console) if texts else {}
    runtime_warnings = list(dict.fromkeys(str(w.message) for w in caught
                                          if issubclass(w.category, FallbackWarning)))
    for message in runtime_warnings:
        console.print(f"[yellow]tuned runtime:[/] {message}")
    at_precisions = weights_at_precisions_mb(dict(hf.state_dict()), resolved.arch, cfg)
    result = {"model": resolved.name, "config": str(opts.config), "weights": source,
              "weights_at_precisions_mb": at_precisions,
              "max_rel_error": cfg.max_rel_error, "tier": config_tier(cfg),
              "tiers": best_per_tier(rows),
              "lengths": mix.desc, "texts": texts.desc if texts else None,
              "machine": machine("cpu"), "torch": torch.__version__,
              "rows": rows, "text_quality": quality_of, "skipped": skipped,
              "runtime_warnings": runtime_warnings,
              "notes": {p.name: p.note for p in peers}}
    _print_table(result, console)
    out = opts.output or opts.config.with_suffix(".bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")
    if opts.storage:
        from autotune.storage.bench import store_bench

        store_bench(opts.storage, result)
    return result


def _text_quality(peers: list[Peer], hf: torch.nn.Module, arch: BertArch, mix: LengthMix,
                  console: Console) -> dict[str, dict[str, float]]:
    """Every contender's sentence embeddings of the text file against float32 HF's."""
    batches = list(quality.text_batches(mix, arch.n_token_types))
    console.print(f"embedding {sum(len(b['input_ids']) for b in batches)} texts with "
                  f"{len(peers)} contenders and float32 HF")

    def reference(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            out = hf(**batch)
        return out.last_hidden_state, pooled(out)

    ref = quality.embed(reference, batches)
    return {p.name: quality.compare(quality.embed(p.run, batches), ref) for p in peers}


def _bench_bucket(bucket: Bucket, peers: list[Peer], hf: torch.nn.Module, arch: BertArch,
                  mix: LengthMix, opts: BenchOptions,
                  weights_mb: dict[str, float | None]) -> list[dict[str, Any]]:
    # Every contender gets the batch as HF tokenizers give it (padding=True): padded to its
    # longest input, not to the bucket; the tuned model then runs its own layout.
    batch = make_batch(bucket.batch, bucket.seq, arch.vocab_size, mix, opts.seed,
                       pad_to_longest=True, token_types=arch.n_token_types)
    with torch.inference_mode():
        ref_out = hf(**batch)
    ref = (ref_out.last_hidden_state.float(), pooled(ref_out).float())
    acc: dict[str, tuple[float, float]] = {}
    peak: dict[str, float | None] = {}
    for p in peers:
        p.run(batch)  # warm-up (compilation, first-call packing)
        base = rss_mb()
        reset_ok = reset_peak()
        acc[p.name] = _accuracy(p.run(batch), ref, batch["attention_mask"])
        top = peak_mb()
        peak[p.name] = top - base if reset_ok and top is not None and base is not None \
            else None
    def call(p: Peer) -> Callable[[], object]:
        return lambda: p.run(batch)

    stats = time_many({p.name: ([call(p)], 0) for p in peers},
                      budget_s=opts.seconds, min_rounds=5, max_rounds=1000, settle=1)
    tuned_ms = stats["tuned"].median_ms
    return [{"bucket": bucket.label, "batch": bucket.batch, "seq": bucket.seq,
             "peer": p.name, "median_ms": stats[p.name].median_ms,
             "iqr_ms": stats[p.name].iqr_ms, "rounds": stats[p.name].n,
             "speedup_of_tuned": stats[p.name].median_ms / tuned_ms,
             "rel_error": acc[p.name][0], "min_pooler_cos": acc[p.name][1],
             "weights_mb": weights_mb.get(p.name), "peak_mb": peak[p.name],
             "real_tokens": int(batch["attention_mask"].sum()),
             "padded_to": int(batch["input_ids"].shape[1]),
             **({"tier": p.tier} if p.tier else {})} for p in peers]


def config_tier(cfg: TunedConfig) -> str:
    """The tier of a tuned config: the lowest precision any of its GEMMs computes in."""
    from autotune.models.kinds import KINDS
    from autotune.ops.registry import PRECISION_RANK, precision_of

    used = {precision_of(kind, cfg.device, c.all_params)
            for kind, cs in (*cfg.ops.items(), *cfg.layer_ops.items()) if KINDS[kind].gemm
            for c in cs}
    lowest = min(used, key=PRECISION_RANK.__getitem__, default="float32")
    return {"float16": "bfloat16", "tfloat32": "float32"}.get(lowest, lowest)  # 16-bit, 32-bit


def best_per_tier(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per tier and shape: the fastest peer of that tier, its time and error, and the tuned
    model's time over its (below 1: the tuned model is faster)."""
    tuned = {r["bucket"]: r for r in rows if r["peer"] == "tuned"}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        tier = r.get("tier") or PEER_TIERS.get(r["peer"])
        if tier is None or r["bucket"] not in tuned:
            continue
        best = out.setdefault(tier, {}).get(r["bucket"])
        if best is None or r["median_ms"] < best["median_ms"]:
            t = tuned[r["bucket"]]
            out[tier][r["bucket"]] = {
                "peer": r["peer"], "median_ms": r["median_ms"], "rel_error": r["rel_error"],
                "tuned_ms": t["median_ms"], "tuned_over_peer": t["median_ms"] / r["median_ms"],
                "tuned_rel_error": t["rel_error"]}
    return {tier: out[tier] for tier in TIERS if tier in out}


def _tier_table(result: dict[str, Any]) -> Table:
    """One line per shape, one column per tier: its fastest peer, that peer's ms, and tuned ÷
    it (below 1× the tuned model is faster)."""
    tiers = list(result["tiers"])
    table = Table(title="per precision tier: the fastest peer of the tier and tuned ÷ it "
                        "(below 1× the tuned model is faster; * the config's own tier)")
    table.add_column("shape")
    for tier in tiers:
        table.add_column(f"{tier}{' *' if tier == result['tier'] else ''}", justify="right")
    for shape in dict.fromkeys(r["bucket"] for r in result["rows"]):
        cells = []
        for tier in tiers:
            b = result["tiers"][tier].get(shape)
            cells.append("-" if b is None else
                         f"{b['peer']} {b['median_ms']:.1f} ms: {b['tuned_over_peer']:.2f}×")
        table.add_row(shape, *cells)
    return table


def _print_table(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"autotune bench: {result['model']} ({result['lengths']} lengths, "
                        f"{result['weights']})")
    for col in ("bucket", "contender", "median ms", "IQR", "it ÷ tuned", "rel err",
                "min cos", "weights MB", "peak MB"):
        table.add_column(col, justify="left" if col in ("bucket", "contender") else "right")

    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    for r in result["rows"]:
        table.add_row(r["bucket"], r["peer"], f"{r['median_ms']:.2f}", f"{r['iqr_ms']:.2f}",
                      "—" if r["peer"] == "tuned" else f"{r['speedup_of_tuned']:.2f}×",
                      f"{r['rel_error']:.1e}", f"{r['min_pooler_cos']:.5f}",
                      mb(r["weights_mb"]), mb(r["peak_mb"]))
    console.print(table)
    held = next((r["weights_mb"] for r in result["rows"] if r["peer"] == "tuned"), None)
    if held is not None:
        console.print(f"tuned model: {held:.0f} MB resident for its weights (built for every "
                      f"bucket); its weights at the precisions it uses take "
                      f"{result['weights_at_precisions_mb']:.0f} MB")
    if len({r["bucket"] for r in result["rows"]}) > 1:
        console.print(_grid_table(result["rows"]))
    if result["tiers"]:
        console.print(_tier_table(result))
    if result.get("text_quality"):
        console.print(_text_table(result["text_quality"], result["texts"]))
    for name, note in result["notes"].items():
        if note:
            console.print(f"{name}: {note}")
    for name, why in result["skipped"].items():
        console.print(f"skipped {name}: {why}")


def _text_table(quality: dict[str, dict[str, float]], texts: str) -> Table:
    n = next(iter(quality.values()))["texts"]
    table = Table(title=f"sentence embeddings (mean-pooled) of the first {n} inputs of the "
                        f"{texts}, against float32 HF's")
    for col in ("contender", "min cos", "mean cos", "nearest neighbour kept"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    for name, q in quality.items():
        table.add_row(name, f"{q['min_cos']:.5f}", f"{q['mean_cos']:.5f}",
                      f"{100 * q['neighbours_kept']:.1f}%")
    return table


def _grid_table(rows: list[dict[str, Any]]) -> Table:
    """One line per shape, one column per contender: median ms and that ÷ tuned."""
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    table = Table(title="median ms per batch (÷ tuned: above 1× the tuned model is faster)")
    table.add_column("shape")
    for p in peers:
        table.add_column(p, justify="right")
    by_shape: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_shape.setdefault((r["batch"], r["seq"]), {})[r["peer"]] = r
    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        ms = f"{r['median_ms']:.1f}"
        return ms if r["peer"] == "tuned" else f"{ms} ({r['speedup_of_tuned']:.2f}×)"

    for (b, s), cells in by_shape.items():
        table.add_row(f"{b}x{s}", *(cell(cells.get(p)) for p in peers))
    return table
