"""Static int8: activations quantized in a range calibrated beforehand, SmoothQuant-style
migration of outlier channels into the weights, oneDNN's u8×s8 GEMM with fused post-ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autotune.kernels.cpu import make_linear
from autotune.ops import rel_error

EPILOGUES = {"none": lambda y, o: y, "gelu_erf": lambda y, o: F.gelu(y),
             "gelu_tanh": lambda y, o: F.gelu(y, approximate="tanh"),
             "tanh": lambda y, o: torch.tanh(y), "add": lambda y, o: y + o}


def _case(rows: int = 24, k: int = 96, n: int = 80, outlier: float = 1.0,
          ) -> tuple[torch.Tensor, ...]:
    """Weights, inputs and a separate calibration draw; channel 3 ``outlier`` times larger in
    both (a model's outlier channels are its own, whatever the text)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=gen)
    calibration = torch.randn(256, k, generator=gen)
    x[:, 3] *= outlier
    calibration[:, 3] *= outlier
    w = torch.randn(n, k, generator=gen) * 0.02
    b = torch.randn(n, generator=gen) * 0.02
    return x, w, b, calibration.amin(0), calibration.amax(0)


def _static(w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
            **kw: object) -> object:
    return make_linear(w, b, precision="int8_static", x_min=lo, x_max=hi, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fuse", [False, True], ids=["separate", "post-op"])
def test_odd_shapes_and_every_epilogue_match_float32(fuse: bool) -> None:
    x, w, b, lo, hi = _case(rows=7, k=33, n=65)
    x3 = torch.stack([x, x * 0.5])  # (batch, seq, k): the leading dims are kept
    r = torch.randn(2, 7, 65)
    kept = r.clone()
    for epilogue, fn in EPILOGUES.items():
        for smooth in (0.0, 0.75):
            lin = _static(w, b, lo, hi, epilogue=epilogue, fuse_epilogue=fuse, smooth=smooth,
                          rows=7)
            got = lin(x3, r if epilogue == "add" else None)  # type: ignore[operator]
            want = fn(F.linear(x3, w, b), r)
            assert got.shape == want.shape and got.dtype == torch.float32
            assert rel_error(got, want) < 0.03, (epilogue, smooth)
    assert torch.equal(r, kept)  # the residual is read, not written (no in-place "sum")
    assert _static(w, b, lo, hi)(x[:0]).shape == (0, 65)  # type: ignore[operator]
    got = _static(w, b, lo, hi)(x.bfloat16())  # type: ignore[operator]
    assert got.dtype == torch.float32 and rel_error(got, F.linear(x, w, b)) < 0.03


def test_smoothing_moves_an_outlier_channel_into_the_weights() -> None:
    """A channel 30x larger than the rest sets the per-tensor range and leaves the others a few
    levels; migrating its range into the weights (smooth 0.75) gives them back."""
    x, w, b, lo, hi = _case(outlier=30.0)
    ref = F.linear(x, w, b)
    plain = rel_error(_static(w, b, lo, hi)(x), ref)  # type: ignore[operator]
    smoothed = rel_error(_static(w, b, lo, hi, smooth=0.75)(x), ref)  # type: ignore[operator]
    assert smoothed < 0.03 and plain > 2 * smoothed, (plain, smoothed)


@pytest.mark.parametrize("fuse", [False, True], ids=["separate", "post-op"])
def test_outlier_channels_kept_in_float32_take_their_error_out(fuse: bool) -> None:
    """The widest channel kept in float32: the int8 GEMM's range is the other channels', so
    their error drops to what they would have alone, and the outlier channel is exact (its
    product computed in float32), under every epilogue."""
    x, w, b, lo, hi = _case(rows=9, k=40, n=24, outlier=50.0)
    r = torch.randn(9, 24)
    for epilogue, fn in EPILOGUES.items():
        want = fn(F.linear(x, w, b), r)
        errors = [rel_error(_static(w, b, lo, hi, outliers=n, epilogue=epilogue,  # type: ignore[operator]
                                    fuse_epilogue=fuse)(x, r if epilogue == "add" else None),
                            want) for n in (0, 1)]
        assert errors[1] < 0.03 and errors[0] > 3 * errors[1], (epilogue, errors)
    only = torch.zeros_like(x)
    only[:, 3] = x[:, 3]  # the outlier channel alone: nothing left for int8 to round
    got = _static(w, b, lo, hi, outliers=1)(only)  # type: ignore[operator]
    assert torch.allclose(got, F.linear(only, w, b), atol=1e-5)
    with pytest.raises(ValueError, match="channels in float32"):
        _static(w, b, lo, hi, outliers=40)


def test_values_beyond_the_calibrated_range_are_clipped_to_it() -> None:
    """A static range holds what calibration saw: a larger input is clipped, as if it had
    been at the range's end (not wrapped around uint8, not NaN)."""
    x, w, b, lo, hi = _case()
    big = x.clone()
    big[0, 5] = 1e4
    clipped = big.clone()
    clipped[0, 5] = float(hi.max())
    lin = _static(w, b, lo, hi)
    got = lin(big)  # type: ignore[operator]
    assert torch.isfinite(got).all()
    assert rel_error(got[0], F.linear(clipped, w, b)[0]) < 0.03
    assert torch.equal(got[1:], lin(x)[1:])  # type: ignore[operator]


def test_a_missing_or_misshaped_range_is_an_error() -> None:
    _, w, b, lo, hi = _case()
    with pytest.raises(ValueError, match="calibrated input range"):
        make_linear(w, b, precision="int8_static")
    with pytest.raises(ValueError, match="per input channel"):
        _static(w, b, lo[:10], hi[:10])
