"""Upsample, FIR-filter, downsample (upfirdn2d), with a plain-PyTorch reference twin (after NVlabs stylegan3).

``upfirdn2d`` does, per channel of an ``[N, C, H, W]`` tensor:

1. upsample by inserting ``up - 1`` zeros after each pixel,
2. pad (positive) or crop (negative) by ``padding = [x0, x1, y0, y1]``,
3. convolve with the FIR filter ``f`` (true convolution: ``flip_filter=True`` makes it a correlation),
   scaled by ``gain``,
4. downsample by keeping every ``down``-th pixel.

The output is ``[N, C, (H * up_y + y0 + y1 - fh + down_y) // down_y, (W * up_x + x0 + x1 - fw + down_x) // down_x]``.
The filter is float32, 2-D ``[fh, fw]`` or 1-D ``[fw]`` (separable: applied along x then y), or None
(identity). The compiled kernels (``kernels/upfirdn2d.{cpp,cu}``) run step 1-4 in one pass; their
gradient with respect to x is itself an upfirdn2d with up and down swapped, the filter flipped and
the padding adjusted (as stylegan3), so every order of gradient uses the same kernel.
"""

from __future__ import annotations

from typing import Sequence

import torch

from styleface_cli.ops import build

__all__ = ["downsample2d", "filter2d", "setup_filter", "upfirdn2d", "upfirdn2d_ref", "upsample2d"]

Scaling = int | Sequence[int]  # one factor for both axes, or [x, y]
Padding = int | Sequence[int]  # one for all sides, [x, y], or [x0, x1, y0, y1]


def _parse_scaling(scaling: Scaling) -> tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not (isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(isinstance(s, int) for s in scaling)):
        raise ValueError(f"upfirdn2d: scaling must be an int or [x, y] ints, got {scaling!r}")
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: scaling factors must be >= 1, got {scaling!r}")
    return sx, sy


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and all(isinstance(p, int) for p in padding)):
        raise ValueError(f"upfirdn2d: padding must be an int or a list of ints, got {padding!r}")
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    if len(padding) != 4:
        raise ValueError(f"upfirdn2d: padding must have 1, 2 or 4 entries, got {padding!r}")
    padx0, padx1, pady0, pady1 = padding
    return padx0, padx1, pady0, pady1


def _get_filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a 1-D (separable) or 2-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError("upfirdn2d: f must be a 1-D or 2-D tensor or None")
    fw, fh = int(f.shape[-1]), int(f.shape[0])
    if fw < 1 or fh < 1:
        raise ValueError("upfirdn2d: f must not be empty")
    return fw, fh


def _check_args(x: torch.Tensor, f: torch.Tensor | None) -> torch.Tensor:
    """The contract both implementations share; returns the filter (None becomes a 1x1 one)."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f"upfirdn2d: x must be a 4-D tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError("upfirdn2d: f must be a 1-D or 2-D tensor or None")
    if f.dtype != torch.float32 or f.requires_grad:
        raise ValueError("upfirdn2d: f must be float32 and must not require grad (use setup_filter)")
    return f


def _check_fits(x: torch.Tensor, fw: int, fh: int, upx: int, upy: int,
                padx0: int, padx1: int, pady0: int, pady1: int) -> None:
    if x.shape[3] * upx + padx0 + padx1 < fw or x.shape[2] * upy + pady0 + pady1 < fh:
        raise ValueError("upfirdn2d: the upsampled and padded input is smaller than the filter")


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 filter tensor that :func:`upfirdn2d` expects.

    Args:
        f: None (identity), a scalar, 1-D taps ``[fw]`` or a 2-D filter ``[fh, fw]`` (anything
            ``torch.as_tensor`` takes).
        device: where the result lives.
        normalize: divide by the sum of the taps so the filter keeps the mean.
        flip_filter: flip the taps (correlation instead of convolution).
        gain: overall gain of the 2-D filter (a separable filter gets ``sqrt(gain)`` per axis).
        separable: keep 1-D taps separable; None = only when there are at least 8 taps.

    Returns:
        float32 ``[fw]`` (separable) or ``[fh, fw]``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError("setup_filter: f must be a non-empty scalar, 1-D or 2-D array")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)  # [fw] -> [fw, fw]
    if f.ndim != (1 if separable else 2):
        raise ValueError("setup_filter: a 2-D filter cannot be separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Plain-PyTorch twin of :func:`upfirdn2d` (same signature minus ``impl``; autograd does the rest).

    Args:
        x: ``[N, C, H, W]``, float32 or float64 (float16 on CUDA).
        f: float32 filter ``[fh, fw]`` or separable ``[fw]``, or None (identity).
        up: upsampling factor, int or ``[x, y]``.
        down: downsampling factor, int or ``[x, y]``.
        padding: int, ``[x, y]`` or ``[x0, x1, y0, y1]`` (negative crops).
        flip_filter: correlate instead of convolve.
        gain: scale of the output.

    Returns:
        ``[N, C, outH, outW]`` of x's dtype (see the module docstring for the output size).
    """
    f = _check_args(x, f)
    batch_size, num_channels, in_height, in_width = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)

    _check_fits(x, *_get_filter_size(f), upx, upy, padx0, padx1, pady0, pady1)

    # Upsample by inserting zeros: [N, C, H, 1, W, 1] -> [N, C, H * upy, W * upx].
    x = x.reshape([batch_size, num_channels, in_height, 1, in_width, 1])
    x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([batch_size, num_channels, in_height * upy, in_width * upx])

    # Pad the positive sides, crop the negative ones.
    x = torch.nn.functional.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    # conv2d correlates, so flip the filter to convolve (unless the caller asked for correlation).
    # Apply the gain in the wider of the two dtypes, so a float64 x does not see float32 rounding.
    f = f.to(torch.promote_types(f.dtype, x.dtype)) * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))

    # Depthwise convolution: one copy of the filter per channel.
    f = f[None, None].repeat([num_channels, 1] + [1] * f.ndim)  # [C, 1, fh, fw] or [C, 1, fw]
    if f.ndim == 4:
        x = torch.nn.functional.conv2d(x, f, groups=num_channels)
    else:
        x = torch.nn.functional.conv2d(x, f.unsqueeze(2), groups=num_channels)  # along x
        x = torch.nn.functional.conv2d(x, f.unsqueeze(3), groups=num_channels)  # along y

    return x[:, :, ::downy, ::downx]  # downsample by dropping pixels


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 1,
    down: Scaling = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample, filter, downsample ``x [N, C, H, W]``; see :func:`upfirdn2d_ref` for the arguments.

    ``impl`` is a kernel policy: ``'ref'`` runs :func:`upfirdn2d_ref`; ``'compiled'`` runs the compiled
    kernel of x's device (the C++ CPU build for a CPU tensor, the CUDA build for a CUDA tensor),
    building it on first use, and raises ``KernelBuildError`` if it cannot be built; ``'auto'`` tries the
    compiled kernel and falls back to the reference (warning once) if it cannot be built. The compiled
    path differentiates with respect to x to any order; not with respect to f (as stylegan3).
    """
    f = _check_args(x, f)
    plugin = build.plugin_for("upfirdn2d", x.device, impl)
    if plugin is None:
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    if f.device != x.device:
        raise ValueError("upfirdn2d: f must be on the same device as x")
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    _check_fits(x, fw, fh, upx, upy, padx0, padx1, pady0, pady1)
    return _upfirdn2d_function(
        plugin, (upx, upy), (downx, downy), (padx0, padx1, pady0, pady1), flip_filter, float(gain)
    ).apply(x, f)


_FUNCTION_CACHE: dict[tuple, type[torch.autograd.Function]] = {}


def _upfirdn2d_function(plugin, up: tuple[int, int], down: tuple[int, int], pad: tuple[int, int, int, int],
                        flip_filter: bool, gain: float):
    """The autograd Function for one (plugin, up, down, padding, flip, gain); cached like stylegan3."""
    key = (id(plugin), up, down, pad, flip_filter, gain)
    if key in _FUNCTION_CACHE:
        return _FUNCTION_CACHE[key]
    (upx, upy), (downx, downy), (padx0, padx1, pady0, pady1) = up, down, pad

    class Upfirdn2d(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, f):  # x: [N, C, H, W] (any strides); f: float32 [fh, fw] or [fw]
            if f.ndim == 1 and f.shape[0] == 1:
                f = f.square().unsqueeze(0)  # separable 1-tap -> the equivalent 1x1 filter
            if f.ndim == 2:
                y = plugin.upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)
            else:  # separable: along x (gain 1), then along y (with the gain)
                y = plugin.upfirdn2d(x, f.unsqueeze(0), upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, 1.0)
                y = plugin.upfirdn2d(y, f.unsqueeze(1), 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, gain)
            ctx.save_for_backward(f)
            ctx.x_shape = x.shape
            return y

        @staticmethod
        def backward(ctx, dy):  # dy: [N, C, outH, outW]
            (f,) = ctx.saved_tensors
            _, _, ih, iw = ctx.x_shape
            _, _, oh, ow = dy.shape
            fw, fh = _get_filter_size(f)
            # The transpose of upfirdn2d: swap up/down, flip the filter, and pad so the sizes match back.
            p = [
                fw - padx0 - 1,
                iw * upx - ow * downx + padx0 - upx + 1,
                fh - pady0 - 1,
                ih * upy - oh * downy + pady0 - upy + 1,
            ]
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _upfirdn2d_function(plugin, down, up, tuple(p), not flip_filter, gain).apply(dy, f)
            if ctx.needs_input_grad[1]:
                raise RuntimeError("upfirdn2d: the compiled path does not differentiate with respect to f")
            return dx, None

    _FUNCTION_CACHE[key] = Upfirdn2d
    return Upfirdn2d


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter ``x [N, C, H, W]`` with ``f``, keeping the size (plus ``padding``); same padding rules."""
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample ``x [N, C, H, W]`` to ``[N, C, H * up_y, W * up_x]`` (plus ``padding``) with filter ``f``.

    The gain is multiplied by ``up_x * up_y`` so that the zeros inserted do not darken the image.
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down: Scaling = 2,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Downsample ``x [N, C, H, W]`` to ``[N, C, H // down_y, W // down_x]`` (plus ``padding``) with filter ``f``."""
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
