"""bias_act: the reference against hand computations, and the compiled kernel against the reference."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from styleface_cli.ops import ACTIVATIONS, bias_act, bias_act_ref
from styleface_cli.ops import build
from tests.test_ops_build import compiled, kernel_cache  # noqa: F401  (fixtures: the session's CPU build)

ACTS = sorted(ACTIVATIONS)


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values [2, 5, 6, 7] in several memory layouts (only 'contiguous' is contiguous)."""
    big = torch.zeros(x.shape[0], x.shape[1] * 2, x.shape[2], x.shape[3] + 3, dtype=x.dtype)
    big[:, ::2, :, 1:-2] = x
    return {
        "contiguous": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "transposed": x.transpose(2, 3).contiguous().transpose(2, 3),
        "sliced": big[:, ::2, :, 1:-2],
    }


# --- the reference ---------------------------------------------------------------------------------


def test_reference_matches_a_hand_computation():
    x = torch.tensor([[-2.0, 0.5], [1.0, -0.25]])  # [N=2, C=2]
    b = torch.tensor([0.5, -1.0])
    # lrelu(x + b) * gain with alpha=0.1, gain=2: x + b = [[-1.5, -0.5], [1.5, -1.25]]
    want = torch.tensor([[-0.3, -0.1], [3.0, -0.25]])
    torch.testing.assert_close(bias_act_ref(x, b, act="lrelu", alpha=0.1, gain=2.0), want)
    # defaults: lrelu's alpha 0.2 and gain sqrt(2); a clamp caps the magnitude.
    torch.testing.assert_close(bias_act_ref(x, b, act="lrelu"), torch.where(x + b > 0, x + b, 0.2 * (x + b)) * math.sqrt(2))
    torch.testing.assert_close(bias_act_ref(x, b, act="lrelu", alpha=0.1, gain=2.0, clamp=1.0), want.clamp(-1, 1))
    # bias along another dim
    torch.testing.assert_close(bias_act_ref(x, b, dim=0), x + b[:, None])


def test_reference_contract_is_checked():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="b has 4 elements"):
        bias_act_ref(x, torch.zeros(4))
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act_ref(x, act="gelu")
    with pytest.raises(ValueError, match="clamp"):
        bias_act_ref(x, clamp=-1)
    with pytest.raises(ValueError, match="dim"):
        bias_act_ref(x, torch.zeros(3), dim=4)


# --- compiled vs reference -------------------------------------------------------------------------


def _values_and_grads(x, b, impl, weight, **kwargs):
    x = x.detach().requires_grad_(True)  # a new leaf with x's strides
    b = b.detach().requires_grad_(True)
    y = bias_act(x, b, impl=impl, **kwargs)
    dx, db = torch.autograd.grad((y * weight).sum(), [x, b])
    return y.detach(), dx, db


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("act", ACTS)
def test_compiled_matches_reference(compiled, act, clamp, dtype, layout):
    generator = torch.Generator().manual_seed(zlib.crc32(f"{act} {clamp} {layout}".encode()))
    x = torch.randn(2, 5, 6, 7, generator=generator, dtype=dtype) * 2
    b = torch.randn(5, generator=generator, dtype=dtype)
    weight = torch.randn(2, 5, 6, 7, generator=generator, dtype=dtype)
    x = _layouts(x)[layout]
    kwargs = dict(act=act, clamp=clamp, alpha=0.3 if act == "lrelu" else None, gain=1.7)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for want, got in zip(_values_and_grads(x, b, "ref", weight, **kwargs),
                         _values_and_grads(x, b, "compiled", weight, **kwargs)):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.parametrize("act", ACTS)
def test_compiled_gradients_pass_gradcheck_to_second_order(compiled, act):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 3, 2, generator=generator, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(3, generator=generator, dtype=torch.float64).requires_grad_(True)
    for clamp in (None, 0.8):
        def op(x, b):
            return bias_act(x, b, act=act, alpha=0.3, gain=1.3, clamp=clamp, impl="compiled")

        assert torch.autograd.gradcheck(op, (x, b))
        assert torch.autograd.gradgradcheck(op, (x, b))


def test_compiled_second_order_gradients_match_the_reference(compiled):
    # The gradient penalty's case: a gradient that is itself differentiated (create_graph=True).
    x0 = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    b0 = torch.randn(4, dtype=torch.float64)
    results = []
    for impl in ("ref", "compiled"):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        (dx,) = torch.autograd.grad(bias_act(x, b, act="swish", impl=impl).square().sum(), [x], create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), [x, b]))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, dim", [([6, 4], 1), ([4, 6], 0), ([3, 2, 4, 5], 2), ([2, 3, 4], 2)])
def test_compiled_bias_along_any_dim(compiled, shape, dim):
    x = torch.randn(shape, dtype=torch.float64)
    b = torch.randn(shape[dim], dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b, dim=dim, act="tanh", impl="compiled"), bias_act_ref(x, b, dim=dim, act="tanh"))


def test_compiled_size_one_dims_with_odd_strides(compiled):
    # .contiguous() keeps the strides of size-1 dims, so the gradient can differ from x there.
    x = torch.randn(12, dtype=torch.float64).as_strided((3, 1, 4), (4, 100, 1)).requires_grad_(True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    assert x.is_contiguous()
    results = []
    for impl in ("ref", "compiled"):
        y = bias_act(x, b, act="tanh", clamp=0.5, impl=impl)
        results.append((y.detach(), *torch.autograd.grad(y.sum(), [x, b])))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want)


def test_compiled_float16_clamp_masks_the_gradient(compiled):
    # 0.9 is 0.89990234 in float16: the stored, clamped output must still count as clamped.
    x = torch.full((2, 3), 4.0, dtype=torch.float16, requires_grad=True)  # tanh(4) = 0.9993 > 0.9
    for impl in ("ref", "compiled"):
        y = bias_act(x, act="tanh", clamp=0.9, impl=impl)
        assert torch.all(y == torch.tensor(0.9, dtype=torch.float16))
        (grad,) = torch.autograd.grad(y.sum(), [x])
        assert torch.all(grad == 0), impl


def test_compiled_without_bias_and_the_identity_case(compiled):
    x = torch.randn(3, 4)
    torch.testing.assert_close(bias_act(x, act="elu", impl="compiled"), bias_act_ref(x, act="elu"))
    x = x.requires_grad_(True)
    y = bias_act(x, impl="compiled")  # linear, gain 1, no clamp, no bias: nothing to compute
    torch.testing.assert_close(y, x)
    (grad,) = torch.autograd.grad(y.sum(), [x])
    torch.testing.assert_close(grad, torch.ones_like(x))


def test_compiled_lrelu_respects_alpha(compiled):
    # rosinality's fused_act CPU path ignored negative_slope; the slope must reach the kernel.
    x = -torch.ones(1, 2)
    torch.testing.assert_close(bias_act(x, act="lrelu", alpha=0.5, gain=1.0, impl="compiled"), -0.5 * torch.ones(1, 2))


def test_kernel_entry_point_checks_its_contract(compiled):
    plugin = build.plugin_for("bias_act", "cpu", "compiled")
    x = torch.randn(2, 3, 4)
    null = torch.empty([0])
    idx = ACTIVATIONS["relu"].kernel_idx
    with pytest.raises(RuntimeError, match="b has the wrong number of elements"):
        plugin.bias_act(x, torch.zeros(4), null, null, null, 0, 1, idx, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="non-overlapping and dense"):
        plugin.bias_act(x[:, :, ::2], null, null, null, null, 0, 1, idx, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="same dtype and device"):
        plugin.bias_act(x, torch.zeros(3, dtype=torch.float64), null, null, null, 0, 1, idx, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="same layout"):
        plugin.bias_act(x, null, x.transpose(0, 1).contiguous().transpose(0, 1), null, null, 1, 1, idx, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="unknown activation"):
        plugin.bias_act(x, null, null, null, null, 0, 1, 42, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="floating-point"):
        plugin.bias_act(x.long(), null, null, null, null, 0, 1, idx, 0.0, 1.0, -1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("act", ACTS)
def test_cuda_matches_reference(act, dtype):
    x = torch.randn(4, 16, 8, 8, device="cuda", dtype=dtype)
    b = torch.randn(16, device="cuda", dtype=dtype)
    weight = torch.randn_like(x)
    tolerance = {torch.float16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    # No clamp in float16: outputs within a float16 step of the clamp would flip the gradient mask.
    clamp = None if dtype == torch.float16 else 0.9
    wide = torch.float32 if dtype == torch.float16 else dtype  # the reference runs in at least float32
    for layout in ("contiguous", "channels_last"):
        xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        want = _values_and_grads(xl.to(wide), b.to(wide), "ref", weight.to(wide), act=act, clamp=clamp)
        got = _values_and_grads(xl, b, "compiled", weight, act=act, clamp=clamp)
        for w, g in zip(want, got):
            torch.testing.assert_close(g.to(w.dtype), w, rtol=tolerance, atol=tolerance * max(1.0, float(w.abs().max())))
    assert torch.autograd.gradgradcheck(
        lambda x, b: bias_act(x, b, act=act, impl="compiled"),
        (x[:1, :2, :2, :2].double().detach().requires_grad_(True), b[:2].double().detach().requires_grad_(True)),
    )
