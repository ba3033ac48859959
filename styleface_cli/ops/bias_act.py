"""Fused bias + activation + gain + clamp, with a plain-PyTorch reference twin (after NVlabs stylegan3).

``bias_act(x, b, ...)`` computes ``clamp(act(x + b) * gain, -clamp, clamp)`` with ``b`` broadcast along
``dim``. One table (``ACTIVATIONS``) drives both implementations: the reference uses ``spec.func``, the
compiled kernels (``kernels/bias_act.{cpp,cu}``) use ``spec.kernel_idx``; ``tests/test_ops_bias_act.py``
proves they agree in values and gradients.

Gradients of the compiled path:

* first order: the same kernel in gradient mode (``grad=1``), from the saved input and/or output
  (``spec.ref``), exactly as stylegan3;
* second order: for activations with ``has_2nd_grad`` the same kernel in second-gradient mode
  (``grad=2``); for the piecewise-linear ones (linear, relu, lrelu) the second derivative is zero almost
  everywhere, so only the gradient through ``dy`` flows (again a ``grad=1`` kernel call).

One deliberate difference from stylegan3: when ``clamp`` is set, the output is always saved for the
backward pass, so the gradient of ``swish`` is zeroed where the output was clamped (stylegan3's kernel
ignores the clamp there, which disagrees with its own reference).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from styleface_cli.ops import build

__all__ = ["ACTIVATIONS", "ActivationSpec", "bias_act", "bias_act_ref"]


@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    func: Callable[..., torch.Tensor]  # reference activation: func(x, alpha) -> tensor like x
    def_alpha: float  # default alpha (only lrelu uses it: the negative slope)
    def_gain: float  # default gain (sqrt(2) keeps the variance of relu-like activations)
    kernel_idx: int  # activation id in kernels/bias_act.h (stylegan3's cuda_idx)
    ref: str  # which tensor the kernel's gradient needs: 'x' (input), 'y' (output) or '' (neither)
    has_2nd_grad: bool  # second derivative nonzero (so the grad=2 kernel mode exists)

    @property
    def cuda_idx(self) -> int:
        """stylegan3's name for ``kernel_idx`` (the same id drives the CPU and the CUDA kernel)."""
        return self.kernel_idx


_SQRT2 = math.sqrt(2.0)

# Keep in sync with the activation ids in kernels/bias_act.h.
ACTIVATIONS: dict[str, ActivationSpec] = {
    "linear": ActivationSpec(lambda x, alpha: x, 0.0, 1.0, 1, "", False),
    "relu": ActivationSpec(lambda x, alpha: torch.nn.functional.relu(x), 0.0, _SQRT2, 2, "y", False),
    "lrelu": ActivationSpec(lambda x, alpha: torch.nn.functional.leaky_relu(x, alpha), 0.2, _SQRT2, 3, "y", False),
    "tanh": ActivationSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0, 4, "y", True),
    "sigmoid": ActivationSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, 5, "y", True),
    "elu": ActivationSpec(lambda x, alpha: torch.nn.functional.elu(x), 0.0, 1.0, 6, "y", True),
    "selu": ActivationSpec(lambda x, alpha: torch.nn.functional.selu(x), 0.0, 1.0, 7, "y", True),
    "softplus": ActivationSpec(lambda x, alpha: torch.nn.functional.softplus(x), 0.0, 1.0, 8, "y", True),
    "swish": ActivationSpec(lambda x, alpha: torch.sigmoid(x) * x, 0.0, _SQRT2, 9, "x", True),
}


def _parse_args(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    act: str,
    alpha: float | None,
    gain: float | None,
    clamp: float | None,
) -> tuple[ActivationSpec, float, float, float]:
    """Check the contract shared by both implementations; return (spec, alpha, gain, clamp or -1)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a tensor, got {type(x).__name__}")
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    if clamp is not None and clamp < 0:
        raise ValueError(f"bias_act: clamp must be None or >= 0, got {clamp}")
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1:
            raise ValueError("bias_act: b must be a 1-D tensor")
        if not 0 <= dim < x.ndim:
            raise ValueError(f"bias_act: dim={dim} is out of range for a {x.ndim}-D x")
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias_act: b has {b.shape[0]} elements but x.shape[{dim}] = {x.shape[dim]}")
    spec = ACTIVATIONS[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Plain-PyTorch twin of :func:`bias_act` (same signature minus ``impl``; autograd does the rest).

    Args:
        x: input of any shape and floating dtype, e.g. ``[N, C, H, W]`` or ``[N, C]``.
        b: bias ``[x.shape[dim]]`` of x's dtype and device, or None.
        dim: the dimension of ``x`` that ``b`` runs along.
        act: a key of :data:`ACTIVATIONS`.
        alpha: activation parameter (lrelu's negative slope); None = the activation's default.
        gain: output scale; None = the activation's default (sqrt(2) for relu, lrelu, swish).
        clamp: clamp the output to ``[-clamp, clamp]``; None = no clamp.

    Returns:
        A tensor with x's shape, dtype and device.
    """
    spec, alpha, gain, clamp = _parse_args(x, b, dim, act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # broadcast along dim
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Fused ``clamp(act(x + b) * gain)``; see :func:`bias_act_ref` for the arguments.

    ``impl`` is a kernel policy: ``'ref'`` runs :func:`bias_act_ref`; ``'compiled'`` runs the compiled
    kernel of x's device (the C++ CPU build for a CPU tensor, the CUDA build for a CUDA tensor),
    building it on first use, and raises ``KernelBuildError`` if it cannot be built; ``'auto'`` tries the
    compiled kernel and falls back to the reference (warning once) if it cannot be built.
    Supports float16 (CUDA), float32 and float64; the compiled path supports first and second order
    autograd (see the module docstring).
    """
    spec, alpha_f, gain_f, clamp_f = _parse_args(x, b, dim, act, alpha, gain, clamp)
    plugin = build.plugin_for("bias_act", x.device, impl)
    if plugin is None:
        return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    if b is not None and (b.dtype != x.dtype or b.device != x.device):
        raise ValueError("bias_act: b must have the same dtype and device as x")
    # Make the layout dense here, outside the autograd Function, so that the tensors it saves are its
    # own inputs and second-order gradients reach the caller's x and b through the copy.
    x = x.contiguous(memory_format=_memory_format(x))
    b = b.contiguous() if b is not None else None
    return _bias_act_function(plugin, dim, act, alpha_f, gain_f, clamp_f).apply(x, b)


_NULL = torch.empty([0])  # stands for "no tensor" in kernel calls (numel() == 0); a CPU tensor on purpose
_FUNCTION_CACHE: dict[tuple, type[torch.autograd.Function]] = {}


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    # The kernels run over dense storage in memory order; keep channels_last inputs channels_last.
    return torch.channels_last if x.ndim == 4 and x.stride(1) == 1 and x.shape[1] > 1 else torch.contiguous_format


def _null_like(x: torch.Tensor) -> torch.Tensor:
    return _NULL if x.device.type == "cpu" else torch.empty([0], device=x.device)


def _bias_act_function(plugin, dim: int, act: str, alpha: float, gain: float, clamp: float):
    """The autograd Function for one (plugin, dim, act, alpha, gain, clamp); cached like stylegan3."""
    key = (id(plugin), dim, act, alpha, gain, clamp)
    if key in _FUNCTION_CACHE:
        return _FUNCTION_CACHE[key]
    spec = ACTIVATIONS[act]
    save_x = "x" in spec.ref or spec.has_2nd_grad
    save_y = "y" in spec.ref or clamp >= 0  # clamp needs y to zero the gradient where it was clamped
    trivial = act == "linear" and gain == 1 and clamp < 0

    def kernel(x, b, xref, yref, dy, grad):
        # x, xref, yref, dy: same shape and layout; b: [x.shape[dim]] or empty. Returns a tensor like x.
        return plugin.bias_act(x, b, xref, yref, dy, grad, dim, spec.kernel_idx, alpha, gain, clamp)

    class BiasAct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # x: any shape; b: [x.shape[dim]] or None
            null = _null_like(x)
            ctx.memory_format = _memory_format(x)  # x is already dense in this format (see bias_act)
            b = b if b is not None else null
            y = x if trivial and b.numel() == 0 else kernel(x, b, null, null, null, 0)
            ctx.save_for_backward(
                x if save_x else null,
                b if save_x else null,
                y if save_y else null,
            )
            return y

        @staticmethod
        def backward(ctx, dy):
            dy = dy.contiguous(memory_format=ctx.memory_format)
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if trivial else BiasActGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = dx.sum([i for i in range(dx.ndim) if i != dim])
            return dx, db

    class BiasActGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, dy, x, b, y):  # dy: like the output; x, b, y: what BiasAct saved (or empty)
            ctx.memory_format = _memory_format(dy)
            dx = kernel(dy, b, x, y, _null_like(dy), 1)
            ctx.save_for_backward(dy if spec.has_2nd_grad else _null_like(dy), x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):
            d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActGrad.apply(d_dx, x, b, y)
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                d_x = kernel(d_dx, b, x, y, dy, 2)
            if spec.has_2nd_grad and ctx.needs_input_grad[2]:
                d_b = d_x.sum([i for i in range(d_x.ndim) if i != dim])
            return d_dy, d_x, d_b, None

    _FUNCTION_CACHE[key] = BiasAct
    return BiasAct
