"""One check of the CUDA path on a GPU machine, within a fixed time (default 7.5 minutes).

    python benchmarks/gpu_check.py [--budget-s 450] [--output gpu_check.json]
    python benchmarks/gpu_check.py --smoke     # no GPU: tiny model, Triton interpreted

1. Correctness: every Triton variant (each precision) against its float32 reference at
   bert-base shapes, batch 8 × seq 128 with padding.
2. A short search per op (`autotune search --device cuda`, buckets 1/8/32 × 128, torch.compile
   left out of the spaces: it is the peer in 3 and 4), then the export.
3. Per op at 8×128 in bfloat16: the best Triton config the search found vs torch (cuBLAS, unfused
   epilogues) vs torch.compile(mode="max-autotune") of the same op, interleaved, CUDA events.
4. bert-base end to end at 1×128, 8×128, 32×128: the exported config vs HF eager, HF SDPA and
   torch.compile(mode="max-autotune") of HF SDPA, all bfloat16.

Each phase checks the time left; what does not fit is reported as skipped, never dropped
silently. Timings are medians of interleaved runs; ratios are what to compare.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SMOKE = "--smoke" in sys.argv
if SMOKE and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from autotune.bench.run import base_model  # noqa: E402
from autotune.measure.run import execution_device  # noqa: E402
from autotune.measure.timing import time_many, time_many_cuda  # noqa: E402
from autotune.models.bert import BertArch, Bucket, resolve_model  # noqa: E402
from autotune.models.kinds import OP_KINDS  # noqa: E402
from autotune.ops import cast_inputs, get_variant, op_spec, rel_error  # noqa: E402
from autotune.settings import DEFAULT_SPACES_DIR  # noqa: E402

TILES = {"block_m": 64, "block_n": 64, "block_k": 32, "group_m": 8, "num_warps": 4,
         "num_stages": 3}
TRITON = {
    "embeddings": {"variant": "triton_fused", "block_rows": 4, "num_warps": 4},
    "qkv_proj": {"variant": "triton", **TILES, "head_split": True},
    "attention": {"variant": "triton_flash", "block_m": 64, "block_n": 64, "num_warps": 4,
                  "num_stages": 2, "skip_padded_keys": True},
    "attn_out": {"variant": "triton", **TILES, "residual": "epilogue", "ln_rows": 1,
                 "ln_warps": 4},
    "ffn_up": {"variant": "triton", **TILES, "gelu": "erf"},
    "ffn_down": {"variant": "triton", **TILES, "residual": "epilogue", "ln_rows": 1,
                 "ln_warps": 4},
    "pooler": {"variant": "triton", **TILES, "block_m": 16},
}
PRECISIONS = {"embeddings": ("float32", "float16", "bfloat16"),
              "attention": ("float32", "float16", "bfloat16")}
#: seconds kept for phase 4 (three shapes, a max-autotune compile each) when phase 3 compiles
END_TO_END_RESERVE_S = 200.0
BOUND = {"float32": 1e-5, "tfloat32": 3e-3, "float16": 5e-3, "bfloat16": 3e-2}


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.end = time.monotonic() + budget_s

    def left(self) -> float:
        return self.end - time.monotonic()


def timer(on: str) -> Callable[[dict[str, Callable[[], object]], float], dict[str, float]]:
    """Median ms per side, sides interleaved: CUDA events on a GPU, the CPU loop otherwise."""
    def run(sides: dict[str, Callable[[], object]], budget_s: float) -> dict[str, float]:
        with torch.inference_mode():
            if on == "cuda":
                stats = time_many_cuda({k: [f] for k, f in sides.items()}, budget_s)
            else:
                stats = time_many({k: ([f], 0) for k, f in sides.items()}, budget_s)
        return {k: s.median_ms for k, s in stats.items()}

    return run


def fixture(kind: str, arch: BertArch, bucket: Bucket, on: str) -> tuple[dict, dict, Any]:
    spec = op_spec(kind)
    gen = torch.Generator().manual_seed(0)
    w = {k: v.to(on) for k, v in spec.make_weights(arch, gen).items()}
    inputs = {k: v.to(on) for k, v in spec.make_inputs(arch, bucket, gen).items()}
    with torch.inference_mode():
        return w, inputs, spec.reference(w, inputs, arch)


def build(kind: str, params: dict, w: dict, arch: BertArch, bucket: Bucket, inputs: dict,
          compile_mode: str | None = None) -> Callable[[], object]:
    """The variant as a call on fixed inputs; with ``compile_mode``, torch.compile of it."""
    v = get_variant(kind, "cuda", str(params["variant"]))
    fn = v.build(w, params, arch, bucket)
    if compile_mode:
        fn = torch.compile(fn, mode=compile_mode, dynamic=False)
    cast = cast_inputs(inputs, v.input_dtype(params))
    return lambda: fn(cast)


def correctness(arch: BertArch, bucket: Bucket, on: str) -> list[dict[str, Any]]:
    rows = []
    for kind in OP_KINDS:
        w, inputs, ref = fixture(kind, arch, bucket, on)
        configs = [{**TRITON[kind], "precision": p}
                   for p in PRECISIONS.get(kind, ("float32", "tfloat32", "float16", "bfloat16"))]
        if TRITON[kind]["variant"] == "triton":  # split-K, at the shapes it is meant for
            configs.append({**TRITON[kind], "precision": "bfloat16", "split_k": 4})
        for params in configs:
            with torch.inference_mode():
                err = rel_error(build(kind, params, w, arch, bucket, inputs)(), ref)
            rows.append({"op": kind, "variant": params["variant"],
                         "precision": params["precision"], "split_k": params.get("split_k", ""),
                         "rel_error": err, "ok": err <= BOUND[str(params["precision"])]})
    return rows


def search(model: str, buckets: list[Bucket], trials: int, budget_s: float, folder: Path,
           ) -> tuple[str, Path]:
    """The real `autotune search`, shipped cuda spaces minus torch.compile."""
    from rich.console import Console

    from autotune.cli import run_search
    from autotune.search.driver import SearchOptions

    spaces = folder / "spaces"
    shutil.copytree(DEFAULT_SPACES_DIR / "cuda", spaces / "cuda")
    for f in (spaces / "cuda").glob("*.yaml"):
        text = f.read_text().replace(", compiled]", "]")
        f.write_text("\n".join(ln for ln in text.splitlines() if "compile_mode" not in ln))
    storage = f"sqlite:///{folder / 'gpu_check.sqlite3'}"
    opts = SearchOptions(model=model, device="cuda", batch_sizes=tuple(b.batch for b in buckets),
                         seq_lens=(buckets[0].seq,), trials=trials, time_per_trial=0.1,
                         storage=storage, spaces_dir=spaces, trial_timeout=90.0,
                         compose_trials=4, timeout=budget_s)
    out = folder / "tuned.json"
    code = run_search(opts, out, Console(file=io.StringIO(), width=200))
    if code != 0:
        raise RuntimeError(f"search exited with {code}")
    return storage, out


def best_triton(storage: str, kind: str, bucket: Bucket) -> dict[str, Any] | None:
    """The fastest feasible bfloat16 Triton config the search measured for (kind, bucket)."""
    import optuna

    from autotune.storage import open_optuna_storage
    from autotune.storage.results import ranked_configs

    st = open_optuna_storage(storage)
    for s in st.get_all_studies():
        a = s.user_attrs
        if a.get("kind") == kind and a.get("batch") == bucket.batch and a.get("seq") == bucket.seq:
            study = optuna.load_study(study_name=s.study_name, storage=st)
            for r in ranked_configs(study, 0.02, 1000):
                p = r["params"]
                if str(p["variant"]).startswith("triton") and p.get("precision") == "bfloat16":
                    return dict(p)
    return None


def per_op(arch: BertArch, bucket: Bucket, on: str, storage: str | None, clock: Clock,
           compile_mode: str | None) -> list[dict[str, Any]]:
    rows, timed = [], timer(on)
    for kind in OP_KINDS:
        w, inputs, _ = fixture(kind, arch, bucket, on)
        found = best_triton(storage, kind, bucket) if storage else None
        tri = found or {**TRITON[kind], "precision": "bfloat16"}
        # the vendor path: cuBLAS with separate epilogues, SDPA (memory-efficient), eager
        vendor: dict[str, Any] = {"variant": "torch", "precision": "bfloat16"}
        if kind == "qkv_proj":
            vendor["fused_qkv"] = True
        elif kind == "attention":
            vendor |= {"variant": "sdpa", "backend": "efficient" if on == "cuda" else "math",
                       "mask": "additive"}
        elif kind == "embeddings":
            vendor["variant"] = "eager"
        elif kind == "ffn_up":
            vendor["gelu"] = tri["gelu"]  # the same GELU form as the Triton config
        sides = {"triton": build(kind, tri, w, arch, bucket, inputs),
                 "torch": build(kind, vendor, w, arch, bucket, inputs)}
        row: dict[str, Any] = {"op": kind, "config": "tuned" if found else "default tiles",
                               "params": tri}
        # torch.compile of that same vendor path, while the end-to-end phase keeps its time
        if compile_mode and clock.left() > END_TO_END_RESERVE_S:
            sides["compile"] = build(kind, vendor, w, arch, bucket, inputs, compile_mode)
        try:
            ms = timed(sides, 0.5)  # the first (untimed) calls compile
        except Exception as e:  # a peer that fails here is reported, the others still timed
            row["compile_ms"] = f"failed: {type(e).__name__}"
            sides.pop("compile", None)
            ms = timed(sides, 0.5)
        rows.append(row | {f"{k}_ms": v for k, v in ms.items()}
                    | {"triton_vs_torch": ms["triton"] / ms["torch"]})
    return rows


def end_to_end(model: str, config: Path | None, shapes: list[Bucket], on: str, clock: Clock,
               compile_mode: str | None) -> list[dict[str, Any]]:
    from autotune.bench.lengths import make_batch, parse_lengths
    from autotune.bench.peers import hf_model
    from autotune.runtime import parse_config
    from autotune.runtime.model import TunedBert

    resolved = resolve_model(model)
    hf, _ = base_model(resolved.arch, resolved.path)
    tuned = TunedBert(resolved.arch, hf.state_dict(), parse_config(config), on) if config \
        else None
    peers: dict[str, Any] = {"eager": hf_model(hf, "eager", torch.bfloat16).to(on),
                             "sdpa": hf_model(hf, "sdpa", torch.bfloat16).to(on)}
    ref = hf.to(on)
    compiled = torch.compile(peers["sdpa"], mode=compile_mode) if compile_mode else None
    rows, timed = [], timer(on)
    full = parse_lengths("fixed")
    for b in shapes:
        batch = {k: v.to(on) for k, v in make_batch(b.batch, b.seq, resolved.arch.vocab_size,
                                                      full).items()}
        sides = {name: call(m, batch) for name, m in peers.items()}
        if tuned is not None:
            sides["tuned"] = call(tuned, batch)
        if compiled is not None and clock.left() > 60:  # compiles for this shape first
            sides["compile"] = call(compiled, batch)
        with torch.inference_mode():
            want = ref(**batch).last_hidden_state
            err = None if tuned is None else float(
                (tuned(**batch).last_hidden_state - want).norm() / want.norm())
        row: dict[str, Any] = {"shape": b.label, "tuned_rel_error": err}
        try:
            ms = timed(sides, 2.0)
        except Exception as e:
            row["compile_ms"] = f"failed: {type(e).__name__}"
            sides.pop("compile", None)
            ms = timed(sides, 2.0)
        row |= {f"{k}_ms": v for k, v in ms.items()}
        if "tuned" in ms and "compile" in ms:
            row["tuned_vs_compile"] = ms["tuned"] / ms["compile"]
        rows.append(row)
        if clock.left() < 30:
            break
    return rows


def call(model: Callable[..., object], batch: dict[str, torch.Tensor]) -> Callable[[], object]:
    return lambda: model(**batch)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "skipped")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=450.0, help="whole run (default 450 s)")
    ap.add_argument("--output", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--smoke", action="store_true",
                    help="check the script without a GPU: tiny model, interpreter, no compile")
    args = ap.parse_args()
    clock = Clock(args.budget_s)
    on = execution_device("cuda")
    folder = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    if args.smoke:
        arch = BertArch(101, 32, 2, 4, 64, max_position_embeddings=64)
        (folder / "tiny").mkdir()
        (folder / "tiny" / "config.json").write_text(json.dumps(
            {"model_type": "bert", "architectures": ["BertModel"], **arch.to_dict()}))
        model, seq, compile_mode, trials = str(folder / "tiny"), 16, None, 3
    else:
        model, seq, compile_mode, trials = "bert-base-uncased", 128, "max-autotune", 6
        arch = resolve_model(model).arch
    buckets = [Bucket(b, seq) for b in (1, 8, 32)]
    result: dict[str, Any] = {"device": torch.cuda.get_device_name() if on == "cuda" else
                              "cpu (Triton interpreter)", "torch": torch.__version__}
    print(f"device {result['device']}   torch {torch.__version__}   budget {args.budget_s:.0f} s")

    result["correctness"] = correctness(arch, buckets[1], on)
    print("\n1. correctness against the float32 reference, "
          f"{buckets[1].label} padded\n" + table(result["correctness"],
                                                 ["op", "variant", "precision", "split_k",
                                                  "rel_error", "ok"]))
    storage, config = None, None
    print(f"\n2. searching {model} on {', '.join(b.label for b in buckets)} ...", flush=True)
    try:
        search_s = max(30.0, min(150.0, clock.left() * 0.35))
        storage, config = search(model, buckets, trials, search_s, folder)
        print(f"   exported {config} ({clock.left():.0f} s left)")
    except Exception as e:  # the tables below still run, on default tiles
        print(f"   search failed: {type(e).__name__}: {e}")
    result["per_op"] = per_op(arch, buckets[1], on, storage, clock, compile_mode)
    print(f"\n3. per op at {buckets[1].label}, bfloat16, ms (median)\n"
          + table(result["per_op"], ["op", "config", "triton_ms", "torch_ms", "compile_ms",
                                     "triton_vs_torch"]))
    result["end_to_end"] = end_to_end(model, config, buckets, on, clock, compile_mode)
    print("\n4. end to end, bfloat16 peers, ms (median)\n" + table(
        result["end_to_end"], ["shape", "tuned_ms", "eager_ms", "sdpa_ms", "compile_ms",
                               "tuned_vs_compile", "tuned_rel_error"]))
    args.output.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.output}   ({args.budget_s - clock.left():.0f} s)")
    return 0 if all(r["ok"] for r in result["correctness"]) else 1


if __name__ == "__main__":
    sys.exit(main())
