"""int8 with per-token activation scales: accurate where per-tensor scales are not."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autotune.kernels.cpu import make_linear
from autotune.ops import rel_error


def _case(rows: int = 24, k: int = 96, n: int = 80) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=gen)
    w = torch.randn(n, k, generator=gen) * 0.02
    b = torch.randn(n, generator=gen) * 0.02
    return x, w, b


def test_a_token_with_outliers_does_not_cost_the_other_tokens_their_precision() -> None:
    """One token 100x larger than the rest (BERT's CLS and SEP carry such activations on real
    weights): with one scale per token the others keep int8's ~1% error; with one scale per
    tensor they lose almost every bit."""
    x, w, b = _case()
    x[0] *= 100.0
    ref = F.linear(x, w, b)
    token = make_linear(w, b, precision="int8_token")(x)
    assert rel_error(token[1:], ref[1:]) < 0.02
    assert rel_error(token[0], ref[0]) < 0.02
    engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "onednn"
    tensor = make_linear(w, b, precision="int8_dynamic", qengine=engine)(x)
    assert rel_error(tensor[1:], ref[1:]) > 5 * rel_error(token[1:], ref[1:])


def test_odd_shapes_epilogues_and_rows_without_signal() -> None:
    x, w, b = _case(rows=7, k=33, n=65)
    x[3] = 0.0  # a padding row: its output is the bias, not NaN
    r = torch.randn(2, 7, 65)
    x3 = torch.stack([x, x * 0.5])  # (batch, seq, k): the leading dims are kept
    for epilogue, fn in (("none", lambda y, o: y), ("gelu_erf", lambda y, o: F.gelu(y)),
                         ("tanh", lambda y, o: torch.tanh(y)), ("add", lambda y, o: y + o)):
        lin = make_linear(w, b, precision="int8_token", epilogue=epilogue, rows=7)
        got = lin(x3, r if epilogue == "add" else None)
        want = fn(F.linear(x3, w, b), r)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert rel_error(got, want) < 0.02, epilogue
        assert torch.isfinite(got).all()
    assert torch.equal(make_linear(w, b, precision="int8_token")(x)[3], b)
    assert make_linear(w, b, precision="int8_token")(x[:0]).shape == (0, 65)


def test_bfloat16_activations_in_float32_out() -> None:
    x, w, b = _case()
    got = make_linear(w, b, precision="int8_token")(x.bfloat16())
    assert got.dtype == torch.float32
    assert rel_error(got, F.linear(x.bfloat16().float(), w, b)) < 0.02
