"""upfirdn2d: the reference against hand computations, and the compiled kernel against the reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from styleface_cli.ops import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d
from styleface_cli.ops import build
from tests.test_ops_build import compiled, kernel_cache  # noqa: F401  (fixtures: the session's CPU build)


def _filters() -> dict[str, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(7)
    return {
        "4x4": setup_filter([1, 3, 3, 1]),  # the StyleGAN2 low-pass, 2-D
        "3x5": torch.rand(3, 5, generator=generator),  # non-square, asymmetric: catches flips and axis swaps
        "sep8": setup_filter([1, 2, 3, 4, 4, 3, 2, 1]),  # 1-D: applied along x then y
        "sep1": torch.tensor([1.5]),  # 1-tap separable: becomes a 1x1 filter of 1.5**2
        "none": None,
    }


# --- the reference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["ref", "compiled"])
def test_a_delta_through_upfirdn2d_gives_back_the_filter(impl, request):
    if impl == "compiled":
        request.getfixturevalue("compiled")
    f = torch.arange(1.0, 13.0).reshape(3, 4)  # [fh=3, fw=4]
    x = torch.zeros(1, 1, 3, 4)
    x[0, 0, 1, 2] = 1.0
    y = upfirdn2d(x, f, padding=[2, 3, 1, 2], impl=impl)  # [x0, x1, y0, y1]
    # out = [3 + 1 + 2 - 3 + 1, 4 + 2 + 3 - 4 + 1] = [4, 6]; the delta at (1, 2) is at (2, 4) after padding,
    # and a true convolution spreads it over rows 2 - (fh - 1) = 0 .. 2 and cols 4 - (fw - 1) = 1 .. 4
    # as f itself, not flipped.
    assert y.shape == (1, 1, 4, 6)
    torch.testing.assert_close(y[0, 0, 0:3, 1:5], f)
    assert y.abs().sum() == f.sum()
    # flip_filter correlates instead, so the delta picks up the flipped filter.
    flipped = upfirdn2d(x, f, padding=[2, 3, 1, 2], flip_filter=True, impl=impl)
    torch.testing.assert_close(flipped[0, 0, 0:3, 1:5], f.flip([0, 1]))


def test_reference_upsampling_and_downsampling_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, 1, 2, 2]
    # up=2 with no filter inserts zeros after each pixel.
    want = torch.tensor([[[[1.0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]]])
    torch.testing.assert_close(upfirdn2d_ref(x, None, up=2), want)
    # A [1, 1] box after up=2 (gain 4 restores the level) is nearest-neighbour upsampling.
    nearest = upsample2d(x, setup_filter([1, 1]), impl="ref")
    torch.testing.assert_close(nearest, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    # down=2 with a 2x2 box is 2x2 average pooling.
    y = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(downsample2d(y, setup_filter([1, 1]), impl="ref"), torch.nn.functional.avg_pool2d(y, 2))
    # Negative padding crops; gain scales.
    torch.testing.assert_close(upfirdn2d_ref(y, None, padding=[-1, 0, 0, -2], gain=3.0), 3.0 * y[:, :, :2, 1:])


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)  # 8 taps or more stay separable by default
    assert setup_filter([1, 2], separable=True).shape == (2,)
    torch.testing.assert_close(setup_filter([1, 2], separable=True, gain=4), torch.tensor([2.0, 4.0]) / 3)
    torch.testing.assert_close(setup_filter([1, 2], separable=True, flip_filter=True), torch.tensor([2.0, 1.0]) / 3)
    assert setup_filter(None).shape == (1, 1)
    with pytest.raises(ValueError):
        setup_filter(torch.ones(2, 2), separable=True)


def test_wrappers_keep_the_documented_sizes():
    x = torch.randn(2, 3, 8, 6)
    f = setup_filter([1, 3, 3, 1])
    assert upsample2d(x, f, impl="ref").shape == (2, 3, 16, 12)
    assert downsample2d(x, f, impl="ref").shape == (2, 3, 4, 3)
    assert filter2d(x, f, impl="ref").shape == (2, 3, 8, 6)
    assert filter2d(x, f, padding=1, impl="ref").shape == (2, 3, 10, 8)
    # A normalised low-pass keeps a constant image constant away from the borders.
    ones = torch.ones(1, 1, 8, 8)
    torch.testing.assert_close(upsample2d(ones, f, impl="ref")[..., 3:-3, 3:-3], torch.ones(1, 1, 10, 10))


def test_reference_contract_is_checked():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="4-D"):
        upfirdn2d_ref(x[0], None)
    with pytest.raises(ValueError, match="float32"):
        upfirdn2d_ref(x, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="smaller than the filter"):
        upfirdn2d_ref(x, torch.ones(5, 5))
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d_ref(x, None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="scaling"):
        upfirdn2d_ref(x, None, up=0)


# --- compiled vs reference -------------------------------------------------------------------------

SCALINGS = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4), (2, 2), ([2, 1], [1, 4])]
PADDINGS = [0, [1, 2, 0, 3], [-1, 2, 2, -1]]


def _values_and_grad(x, f, impl, weight_seed, **kwargs):
    x = x.detach().requires_grad_(True)  # a new leaf with x's strides
    y = upfirdn2d(x, f, impl=impl, **kwargs)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(weight_seed), dtype=y.dtype)
    (dx,) = torch.autograd.grad((y * weight).sum(), [x])
    return y.detach(), dx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fname", list(_filters()))
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("up, down", SCALINGS, ids=str)
def test_compiled_matches_reference(compiled, up, down, padding, fname, dtype):
    f = _filters()[fname]
    x = torch.randn(2, 3, 9, 10, generator=torch.Generator().manual_seed(3), dtype=dtype)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for flip_filter, gain in ((False, 1.0), (True, 2.5)):
        kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        want = _values_and_grad(x, f, "ref", 11, **kwargs)
        got = _values_and_grad(x, f, "compiled", 11, **kwargs)
        for w, g in zip(want, got):
            assert g.dtype == dtype and g.shape == w.shape
            torch.testing.assert_close(g, w, **tolerance)


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced", "expanded"])
def test_compiled_accepts_non_contiguous_inputs(compiled, layout):
    base = torch.randn(2, 4, 12, 10, dtype=torch.float64)
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "sliced": base[:, ::2, 1:-1, ::3],
        "expanded": base[:1, :1].expand(3, 2, 12, 10),
    }[layout]
    assert not x.is_contiguous()
    f = setup_filter([1, 3, 3, 1])
    for kwargs in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1)):
        want = _values_and_grad(x, f, "ref", 5, **kwargs)
        got = _values_and_grad(x, f, "compiled", 5, **kwargs)
        for w, g in zip(want, got):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
        if layout == "channels_last":  # the kernel keeps the memory format
            assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "up, down, padding, fname",
    [(1, 1, 1, "3x5"), (2, 1, [2, 1, 1, 2], "4x4"), (1, 2, [1, 1, 2, 0], "3x5"), (4, 2, 2, "sep8"), (1, 4, [3, 2, 0, 1], "4x4")],
    ids=str,
)
def test_compiled_gradients_pass_gradcheck_to_second_order(compiled, up, down, padding, fname):
    f = _filters()[fname]
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def op(x):
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=True, gain=1.5, impl="compiled")

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))


@pytest.mark.parametrize("wrapper", ["upsample2d", "downsample2d", "filter2d"])
@pytest.mark.parametrize("factor, fname", list(itertools.product([2, 4], ["4x4", "sep8", "none"])))
def test_compiled_wrappers_match_reference(compiled, wrapper, factor, fname):
    f = _filters()[fname]
    x = torch.randn(2, 3, 16, 12)
    call = {
        "upsample2d": lambda impl: upsample2d(x, f, up=factor, padding=1, impl=impl),
        "downsample2d": lambda impl: downsample2d(x, f, down=factor, padding=1, impl=impl),
        "filter2d": lambda impl: filter2d(x, f, padding=factor - 2, gain=factor, impl=impl),
    }[wrapper]
    torch.testing.assert_close(call("compiled"), call("ref"), rtol=1e-5, atol=1e-5)


def test_kernel_entry_point_checks_its_contract(compiled):
    plugin = build.plugin_for("upfirdn2d", "cpu", "compiled")
    x = torch.randn(1, 2, 4, 4)
    f = torch.ones(2, 2)
    with pytest.raises(RuntimeError, match="f must be rank 2"):
        plugin.upfirdn2d(x, torch.ones(2), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="f must be float32"):
        plugin.upfirdn2d(x, f.double(), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="x must be rank 4"):
        plugin.upfirdn2d(x[0], f, 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="upsampling factor"):
        plugin.upfirdn2d(x, f, 0, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="smaller than the filter"):
        plugin.upfirdn2d(x, torch.ones(5, 5), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="zero size"):
        plugin.upfirdn2d(x[:0], f, 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)


def test_compiled_path_does_not_differentiate_the_filter(compiled):
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="must not require grad"):
        upfirdn2d(x, torch.ones(2, 2, requires_grad=True), impl="compiled")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("up, down", SCALINGS, ids=str)
@pytest.mark.parametrize("fname", ["4x4", "3x5", "sep8"])
def test_cuda_matches_reference(up, down, fname, dtype):
    f = _filters()[fname]
    f = f.cuda() if f is not None else None
    x = torch.randn(4, 8, 17, 19, device="cuda", dtype=dtype)
    tolerance = {torch.float16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for layout in ("contiguous", "channels_last"):
        xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        for padding in PADDINGS:
            kwargs = dict(up=up, down=down, padding=padding, flip_filter=layout == "channels_last", gain=1.5)
            want = upfirdn2d_ref(xl.double(), f, **kwargs)
            got = upfirdn2d(xl, f, impl="compiled", **kwargs)
            torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance * max(1.0, float(want.abs().max())))
    xg = x[:1, :2, :5, :6].double().detach().requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda x: upfirdn2d(x, f, up=up, down=down, padding=1, impl="compiled"), (xg,))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("up, down", SCALINGS, ids=str)
@pytest.mark.parametrize("fname", ["4x4", "3x5", "sep8"])
def test_cuda_gradients_match_reference(up, down, fname, dtype):
    """First-order gradients in the network's own dtypes (gradgradcheck above covers float64 only)."""
    f = _filters()[fname].cuda()
    x = torch.randn(4, 8, 17, 19, device="cuda", dtype=dtype)
    tolerance = {torch.float16: 1e-2, torch.float32: 1e-5}[dtype]
    for layout in ("contiguous", "channels_last"):
        xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        kwargs = dict(up=up, down=down, padding=[1, 2, 0, 3], gain=1.5)
        x_ref = xl.double().detach().requires_grad_(True)
        y_ref = upfirdn2d_ref(x_ref, f, **kwargs)
        weight = torch.randn(y_ref.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(5))
        (want,) = torch.autograd.grad((y_ref * weight.double()).sum(), [x_ref])
        x_cuda = xl.detach().requires_grad_(True)
        y = upfirdn2d(x_cuda, f, impl="compiled", **kwargs)
        (got,) = torch.autograd.grad((y * weight.to(dtype)).sum(), [x_cuda])
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance * max(1.0, float(want.abs().max())))
