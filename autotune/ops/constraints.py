"""Named constraints that search-space files may list. Each returns True when allowed.

``context`` holds the operator instance (``rows``, ``batch``, ``seq``, ``hidden``, the GEMM's
``n`` and ``k``, ``head_dim``, ``heads``) and the machine (``cores``, ``qengines``; on CUDA also
``shared_memory`` and ``compute_capability``); see ``autotune.search.spaces.space_context``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from autotune.ops.cuda import PRECISION_BYTES
from autotune.space import ConstraintFn, Value, constraint


@constraint("row_block_below_rows", "a row block must split the rows (else it equals no block)")
def _row_block_below_rows(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("row_block", 0)) < int(ctx["rows"])


@constraint("heads_per_block_below_heads",
            "a block of heads must split a sequence's heads (else it equals all of them: 0)")
def _heads_per_block_below_heads(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("heads_per_block", 0)) < int(ctx["heads"])


@constraint("mkl_packed_float32_only", "MKL's packed GEMM exists for float32 only")
def _mkl_packed_float32_only(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("impl") != "mkl_packed" or p.get("precision") == "float32"


@constraint("mkl_packed_bucket_bound",
            "MKL's packed weights serve only calls of exactly the bucket's rows (others run "
            "unpacked) and take a copy per bucket: the runtime sends every shape to a bucket's "
            "choice, so the search leaves them out (configs that hold them still load)")
def _mkl_packed_bucket_bound(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("impl") != "mkl_packed"


@constraint("compiled_embeddings_memory",
            "torch.compile of the embeddings saved ~10 µs per forward (0.052 against 0.063 ms "
            "at 1x128, of a ~60 ms bert-base forward) and cost ~200 MB of resident memory "
            "(inductor, once per process): the search leaves it out (configs that hold it "
            "still load)")
def _compiled_embeddings_memory(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return p.get("variant") != "compiled"


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
    return PRECISION_BYTES[str(p.get("precision", "float32"))]


def _pow2_cover(n: int, least: int = 16) -> int:
    """The smallest power of two >= ``n`` (a Triton block that covers ``n``), at least ``least``."""
    return max(least, 1 << max(0, int(n) - 1).bit_length())


class _Tiles(NamedTuple):
    m: int  # BLOCK_M
    n: int  # BLOCK_N
    k: int  # BLOCK_K (GEMMs; 0 for attention, whose K is the head dimension)
    warps: int
    stages: int


def _gemm_tiles(p: Mapping[str, Value]) -> _Tiles | None:
    if "block_k" not in p:
        return None
    return _Tiles(int(p["block_m"]), int(p["block_n"]), int(p["block_k"]),
                  int(p["num_warps"]), int(p["num_stages"]))


def _attention_tiles(p: Mapping[str, Value]) -> _Tiles | None:
    if p.get("variant") != "triton_flash":
        return None
    return _Tiles(int(p["block_m"]), int(p["block_n"]), 0, int(p["num_warps"]),
                  int(p["num_stages"]))


TiledRule = Callable[[_Tiles, Mapping[str, Value], Mapping[str, Any]], bool]


def _on_tiles(tiles_of: Callable[[Mapping[str, Value]], _Tiles | None],
              ) -> Callable[[TiledRule], ConstraintFn]:
    """A rule about a Triton kernel's tiles, allowing every config that has none."""

    def deco(rule: TiledRule) -> ConstraintFn:
        def check(p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
            t = tiles_of(p)
            return t is None or rule(t, p, ctx)

        return check

    return deco


@constraint("gemm_fits_shared_memory",
            "a GEMM's pipelined input tiles must fit the device's shared memory per block")
@_on_tiles(_gemm_tiles)
def _gemm_fits_shared_memory(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return t.stages * (t.m * t.k + t.k * t.n) * _bytes(p) <= int(ctx["shared_memory"])


@constraint("gemm_fits_registers",
            "a GEMM's float32 accumulator and operand tiles must fit 255 registers per thread")
@_on_tiles(_gemm_tiles)
def _gemm_fits_registers(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    words = t.m * t.n + (t.m * t.k + t.k * t.n) * _bytes(p) / 4
    return words / (32 * t.warps) + REGISTER_OVERHEAD <= REGISTERS_PER_THREAD


@constraint("gemm_blocks_within_shape",
            "a GEMM block no larger than its dimension rounded up to a power of two (>= 16): "
            "a bigger block only computes padding")
@_on_tiles(_gemm_tiles)
def _gemm_blocks_within_shape(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any],
                              ) -> bool:
    return (t.m <= _pow2_cover(ctx["rows"]) and t.n <= _pow2_cover(ctx["n"])
            and t.k <= _pow2_cover(ctx["k"]))


@constraint("split_k_within_k",
            "every split of K gets a BLOCK_K step of its own (more splits would be the same "
            "config as fewer)")
@_on_tiles(_gemm_tiles)
def _split_k_within_k(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any]) -> bool:
    return int(p.get("split_k", 1)) <= -(-int(ctx["k"]) // t.k)


@constraint("attention_fits_shared_memory",
            "the Q tile and the pipelined K and V tiles must fit shared memory per block")
@_on_tiles(_attention_tiles)
def _attention_fits_shared_memory(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any],
                                  ) -> bool:
    d = _pow2_cover(ctx["head_dim"])
    return (t.m * d + 2 * max(1, t.stages) * t.n * d) * _bytes(p) <= int(ctx["shared_memory"])


@constraint("attention_fits_registers",
            "the output accumulator, score tile and Q tile must fit 255 registers per thread")
@_on_tiles(_attention_tiles)
def _attention_fits_registers(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any],
                              ) -> bool:
    d = _pow2_cover(ctx["head_dim"])
    words = t.m * d + t.m * t.n + t.m * d * _bytes(p) / 4
    return words / (32 * t.warps) + REGISTER_OVERHEAD <= REGISTERS_PER_THREAD


@constraint("attention_blocks_within_seq",
            "query and key blocks no larger than the sequence rounded up to a power of two")
@_on_tiles(_attention_tiles)
def _attention_blocks_within_seq(t: _Tiles, p: Mapping[str, Value], ctx: Mapping[str, Any],
                                 ) -> bool:
    return max(t.m, t.n) <= _pow2_cover(ctx["seq"])


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
