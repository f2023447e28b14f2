"""Named constraints that search-space files may list. Each returns True when allowed.

``context`` holds the operator instance (``rows``, ``batch``, ``seq``) and the machine
(``cores``, ``qengines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.space import Value, constraint


@constraint("row_block_below_rows", "a row block must split the rows (else it equals no block)")
def _row_block_below_rows(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("row_block", 0)) < int(ctx["rows"])


@constraint("mkl_packed_float32_only", "MKL's packed GEMM exists for float32 only")
def _mkl_packed_float32_only(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("impl") != "mkl_packed" or p.get("precision") == "float32"


@constraint("qengine_available", "the quantized engine must be built into this torch")
def _qengine_available(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return "qengine" not in p or p["qengine"] in ctx["qengines"]


@constraint("threads_within_cores", "no more threads than cores")
def _threads_within_cores(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("threads", 1)) <= int(ctx["cores"])


# -- CUDA: what cannot launch, or only computes padding, is pruned before anything compiles ----

#: registers one CUDA thread may hold (every architecture since Kepler); more spills to memory
REGISTERS_PER_THREAD = 255
#: a rough allowance for addresses, masks and loop state beside the tiles
REGISTER_OVERHEAD = 32


def _bytes(p: Mapping[str, Value]) -> int:
    from autotune.ops.cuda import PRECISION_BYTES

    return PRECISION_BYTES[str(p.get("precision", "float32"))]


def _pow2_cover(n: int, least: int = 16) -> int:
    """The smallest power of two >= ``n`` (a Triton block that covers ``n``), at least ``least``."""
    return max(least, 1 << max(0, int(n) - 1).bit_length())


def _gemm(p: Mapping[str, Value]) -> tuple[int, int, int, int, int] | None:
    if "block_k" not in p:
        return None
    return (int(p["block_m"]), int(p["block_n"]), int(p["block_k"]), int(p["num_warps"]),
            int(p["num_stages"]))


@constraint("gemm_fits_shared_memory",
            "a GEMM's pipelined input tiles must fit the device's shared memory per block")
def _gemm_fits_shared_memory(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    g = _gemm(p)
    if g is None:
        return True
    bm, bn, bk, _, stages = g
    return stages * (bm * bk + bk * bn) * _bytes(p) <= int(ctx["shared_memory"])


@constraint("gemm_fits_registers",
            "a GEMM's float32 accumulator and operand tiles must fit 255 registers per thread")
def _gemm_fits_registers(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    g = _gemm(p)
    if g is None:
        return True
    bm, bn, bk, warps, _ = g
    threads = 32 * warps
    words = bm * bn + (bm * bk + bk * bn) * _bytes(p) / 4
    return words / threads + REGISTER_OVERHEAD <= REGISTERS_PER_THREAD


@constraint("gemm_blocks_within_shape",
            "a GEMM block no larger than its dimension rounded up to a power of two (>= 16): "
            "a bigger block only computes padding")
def _gemm_blocks_within_shape(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    g = _gemm(p)
    if g is None:
        return True
    bm, bn, bk, _, _ = g
    return (bm <= _pow2_cover(ctx["rows"]) and bn <= _pow2_cover(ctx["n"])
            and bk <= _pow2_cover(ctx["k"]))


@constraint("split_k_within_k",
            "every split of K gets a BLOCK_K step of its own (more splits would be the same "
            "config as fewer)")
def _split_k_within_k(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    g = _gemm(p)
    if g is None:
        return True
    steps = -(-int(ctx["k"]) // g[2])
    return int(p.get("split_k", 1)) <= steps


def _attention(p: Mapping[str, Value]) -> tuple[int, int, int, int] | None:
    if p.get("variant") != "triton_flash":
        return None
    return int(p["block_m"]), int(p["block_n"]), int(p["num_warps"]), int(p["num_stages"])


@constraint("attention_fits_shared_memory",
            "the Q tile and the pipelined K and V tiles must fit shared memory per block")
def _attention_fits_shared_memory(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    a = _attention(p)
    if a is None:
        return True
    bm, bn, _, stages = a
    d = _pow2_cover(ctx["head_dim"])
    return (bm * d + 2 * max(1, stages) * bn * d) * _bytes(p) <= int(ctx["shared_memory"])


@constraint("attention_fits_registers",
            "the output accumulator, score tile and Q tile must fit 255 registers per thread")
def _attention_fits_registers(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    a = _attention(p)
    if a is None:
        return True
    bm, bn, warps, _ = a
    d = _pow2_cover(ctx["head_dim"])
    words = bm * d + bm * bn + bm * d * _bytes(p) / 4
    return words / (32 * warps) + REGISTER_OVERHEAD <= REGISTERS_PER_THREAD


@constraint("attention_blocks_within_seq",
            "query and key blocks no larger than the sequence rounded up to a power of two")
def _attention_blocks_within_seq(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    a = _attention(p)
    return a is None or max(a[0], a[1]) <= _pow2_cover(ctx["seq"])


@constraint("row_blocks_within_rows",
            "a LayerNorm or embeddings row block no larger than the rows rounded up")
def _row_blocks_within_rows(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    cover = _pow2_cover(ctx["rows"], least=1)
    return all(int(p.get(k, 1)) <= cover for k in ("ln_rows", "block_rows"))


@constraint("bfloat16_needs_sm80", "bfloat16 tensor cores start at compute capability 8.0")
def _bfloat16_needs_sm80(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("precision") != "bfloat16" or float(ctx["compute_capability"]) >= 8.0


@constraint("sdpa_flash_takes_no_mask",
            "torch's flash SDPA backend takes no attention mask, and BERT's padding needs one")
def _sdpa_flash_takes_no_mask(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return not (p.get("variant") == "sdpa" and p.get("backend") == "flash")


#: float32 values a thread may hold for a row-wise kernel's rows (LayerNorm, embeddings), so
#: that weights, bias and addresses still fit beside them without spilling
ROW_VALUES_PER_THREAD = 128


@constraint("rows_fit_registers",
            "a LayerNorm or embeddings program's rows (hidden size rounded up to a power of "
            "two) must fit 128 float32 values per thread")
def _rows_fit_registers(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    width = _pow2_cover(ctx["hidden"])
    for rows, warps in (("ln_rows", "ln_warps"), ("block_rows", "num_warps")):
        if rows in p and width * int(p[rows]) > ROW_VALUES_PER_THREAD * 32 * int(p[warps]):
            return False
    return True
