"""Building blocks of the StyleGAN2 networks: equalized-learning-rate layers and modulated convolution.

The layout follows NVlabs ``training/networks_stylegan2.py`` (stylegan2-ada-pytorch / stylegan3): one class
per concept, the same attribute names (they are the checkpoint format, and they let a StyleGAN2 state
dict exported from the NVIDIA code load by name), the math as free functions (``modulated_conv2d``,
``conv2d_resample``). Equalized learning rate: weights are stored with unit variance and scaled by
``1 / sqrt(fan_in)`` at run time.

Custom ops: every layer that calls ``bias_act`` or ``upfirdn2d`` keeps a plain attribute ``impl``
(``'auto'`` by default; not a parameter or buffer, so not in checkpoints) and passes it to the op.
``set_kernel_policy(module, policy)`` sets it on a whole model.

Differences from the NVIDIA code, on purpose:

* No FP16 / channels-last per-block switches: everything runs in the input's dtype (use autocast
  to run in half precision); ``modulated_conv2d`` keeps NVIDIA's FP16 pre-normalization for that case.
* ``resample_filter`` buffers are not persistent: they are constants, not weights, so checkpoints do not
  carry them (a state dict from the NVIDIA code loads after dropping its ``*.resample_filter`` keys).
* ``conv2d_resample`` lives here (the ops package provides only ``bias_act`` and ``upfirdn2d``) and uses
  plain ``torch.nn.functional.conv2d`` (NVIDIA's ``conv2d_gradfix`` only sped up the R1 double backward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from styleface_cli.errors import ConfigError
from styleface_cli.ops.bias_act import ACTIVATIONS, bias_act
from styleface_cli.ops.build import KERNEL_POLICIES
from styleface_cli.ops.upfirdn2d import setup_filter, upfirdn2d

__all__ = [
    "KERNEL_POLICIES",
    "Conv2dLayer",
    "FullyConnectedLayer",
    "MappingNetwork",
    "SynthesisLayer",
    "ToRGBLayer",
    "conv2d_resample",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "assert_shape",
    "set_kernel_policy",
]

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)  # the FIR low-pass filter of StyleGAN2's up/downsampling


def set_kernel_policy(module: nn.Module, policy: str) -> nn.Module:
    """Set the custom-op policy of every layer in ``module`` ('auto' | 'compiled' | 'ref'); returns it.

    'ref' runs the plain-PyTorch twins; 'compiled' requires the compiled kernels (``KernelBuildError``
    when they cannot be built); 'auto' uses them when they build and falls back otherwise.
    """
    if policy not in KERNEL_POLICIES:
        raise ConfigError(f"unknown kernel policy {policy!r}; expected one of {', '.join(KERNEL_POLICIES)}")
    for layer in module.modules():
        if "impl" in vars(layer):
            layer.impl = policy
    return module


def normalize_2nd_moment(x: torch.Tensor, dim: int | Sequence[int] = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit mean square along ``dim`` (StyleGAN's pixel norm of the latent)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def assert_shape(name: str, x: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Contract check where a tensor enters a layer; ``None`` matches any size."""
    if x.ndim != len(shape) or any(want is not None and got != want for got, want in zip(x.shape, shape)):
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {expected}, got {list(x.shape)}")


# ----------------------------------------------------------------------------------------------------
# Math: convolution with up/downsampling, modulated convolution.


def _padding4(padding: int | Sequence[int]) -> list[int]:
    """``p`` | ``[px, py]`` | ``[px0, px1, py0, py1]`` -> ``[px0, px1, py0, py1]``."""
    if isinstance(padding, int):
        return [padding] * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")
    return padding


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of an FIR filter prepared by ``setup_filter`` ([taps] or [h, w]); None = 1x1."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    stride: int = 1,
    padding: Sequence[int] = (0, 0),
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    """``conv2d`` / ``conv_transpose2d``; ``flip_weight=False`` turns the correlation into a convolution."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=list(padding), groups=groups)
    return F.conv2d(x, w, stride=stride, padding=list(padding), groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """2-D convolution with optional FIR up/downsampling (semantics of NVIDIA's ``conv2d_resample``).

    Args:
        x: ``[N, C_in, H, W]``.
        w: ``[C_out, C_in // groups, kh, kw]``, x's dtype.
        f: low-pass filter from ``ops.upfirdn2d.setup_filter`` (float32), None = identity.
        up, down: integer resampling factors.
        padding: padding with respect to the upsampled image (int, [x, y] or [x0, x1, y0, y1]).
        groups: grouped convolution.
        flip_weight: True = correlation (as ``F.conv2d``), False = convolution.
        flip_filter: True = correlate with ``f``, False = convolve.
        impl: kernel policy of the ``upfirdn2d`` calls.

    Returns:
        ``[N, C_out, H * up / down, W * up / down]`` for the paddings the layers use.

    Padding happens once, before the convolution; each case below picks the cheapest equivalent order.
    """
    assert_shape("conv2d_resample x", x, [None, None, None, None])
    if w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError(f"conv2d_resample: w must be 4-D with x's dtype, got {list(w.shape)} {w.dtype}")
    if up < 1 or down < 1 or groups < 1:
        raise ValueError(f"conv2d_resample: up, down, groups must be >= 1, got {up}, {down}, {groups}")
    out_channels, in_channels_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # Extra padding so that the filter footprint stays inside the (up/down)sampled image.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1, downsample: filter + decimate first
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, impl=impl)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1, upsample: convolve at low resolution first
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up**2, flip_filter=flip_filter, impl=impl)

    if down > 1 and up == 1:  # downsample: filter, then strided convolution
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, impl=impl)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:  # upsample: transposed strided convolution, then filter (then downsample)
        if groups == 1:
            w = w.transpose(0, 1)  # [C_in, C_out, kh, kw]
        else:
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2).reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        px0, px1 = px0 - (kw - 1), px1 - (kw - up)
        py0, py1 = py0 - (kh - 1), py1 - (kh - up)
        pxt = max(min(-px0, -px1), 0)  # the part of the (negative) padding the transposed conv can crop
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(
            x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up**2, flip_filter=flip_filter, impl=impl
        )
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain convolution
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # Asymmetric or negative padding without resampling: pad/crop with upfirdn2d, then convolve.
    x = upfirdn2d(x, None, padding=pad, flip_filter=flip_filter, impl=impl)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """StyleGAN2's modulated (and demodulated) convolution.

    Args:
        x: ``[N, I, H, W]`` activations.
        weight: ``[O, I, kh, kw]`` shared weight.
        styles: ``[N, I]`` per-sample input-channel scales (from the layer's affine map of w).
        noise: tensor broadcastable to the output (``[N, 1, H', W']`` or ``[H', W']``), added after the
            demodulation, or None.
        up, down, padding, resample_filter, flip_weight: as in ``conv2d_resample``.
        demodulate: normalize each output channel of the modulated weight to unit norm.
        fused_modconv: True = one grouped convolution with per-sample weights (fast for inference);
            False = scale the activations before and after a shared-weight convolution (training).
        impl: kernel policy of the ``upfirdn2d`` calls.

    Returns:
        ``[N, O, H', W']``.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert_shape("modulated_conv2d x", x, [batch_size, in_channels, None, None])
    assert_shape("modulated_conv2d styles", styles, [batch_size, in_channels])

    if x.dtype == torch.float16 and demodulate:  # keep FP16 from overflowing: demodulation undoes the scale
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    if not fused_modconv:
        dcoefs = None
        if demodulate:  # |w[n, o]|^2 = sum_i styles[n, i]^2 * |weight[o, i]|^2, without the [N, O, I, k, k] tensor
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(
            x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight, impl=impl
        )
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N*I, H, W]: one group per sample
    w = w.reshape(-1, in_channels, kh, kw)  # [N*O, I, kh, kw]
    x = conv2d_resample(
        x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=batch_size,
        flip_weight=flip_weight, impl=impl,
    )
    x = x.reshape(batch_size, -1, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# ----------------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate and an optional fused bias + activation."""

    def __init__(
        self,
        in_features: int,  # number of input features
        out_features: int,  # number of output features
        bias: bool = True,  # add a bias before the activation
        activation: str = "linear",  # a key of bias_act.ACTIVATIONS: 'linear', 'lrelu', ...
        lr_multiplier: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial bias value (1 for the style affines: styles start at 1)
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.impl = "auto"
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_features]`` -> ``[N, out_features]``."""
        assert_shape("FullyConnectedLayer input", x, [None, self.in_features])
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, bias + activation + clamp."""

    def __init__(
        self,
        in_channels: int,  # number of input channels
        out_channels: int,  # number of output channels
        kernel_size: int,  # width and height of the kernel
        bias: bool = True,  # add a bias before the activation
        activation: str = "linear",  # a key of bias_act.ACTIVATIONS
        up: int = 1,  # integer upsampling factor
        down: int = 1,  # integer downsampling factor
        resample_filter: Sequence[int] = DEFAULT_RESAMPLE_FILTER,  # FIR low-pass filter for resampling
        conv_clamp: float | None = None,  # clamp the output to +-X; None = no clamp
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.impl = "auto"
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """``[N, in_channels, H, W]`` -> ``[N, out_channels, H * up / down, W * up / down]``."""
        assert_shape("Conv2dLayer input", x, [None, self.in_channels, None, None])
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(
            x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
            flip_weight=(self.up == 1), impl=self.impl,  # flip only where it is free (see conv2d_resample)
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """StyleGAN2's mapping network z -> w: pixel norm, then ``num_layers`` lrelu FC layers at lr x0.01.

    Unconditional (no label embedding): StyleFace conditions on identity through z itself. Keeps a
    moving average ``w_avg`` of w (updated when ``update_emas=True``) for the truncation trick.
    """

    def __init__(
        self,
        z_dim: int,  # input latent (Z) dimensionality
        w_dim: int,  # intermediate latent (W) dimensionality
        num_ws: int | None,  # number of w vectors to broadcast to; None = return [N, w_dim]
        num_layers: int = 8,  # number of FC layers
        layer_features: int | None = None,  # width of the hidden layers; None = w_dim
        activation: str = "lrelu",  # activation of every layer
        lr_multiplier: float = 0.01,  # learning-rate multiplier of every layer
        w_avg_beta: float | None = 0.998,  # decay of the moving average of w; None = do not track
    ):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"the mapping network needs at least one layer, got {num_layers}")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """``z [N, z_dim]`` -> ``w [N, num_ws, w_dim]`` (or ``[N, w_dim]`` when ``num_ws`` is None).

        ``truncation_psi < 1`` pulls w towards ``w_avg`` (for the first ``truncation_cutoff`` ws, or all).
        """
        assert_shape("MappingNetwork z", z, [None, self.z_dim])
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ConfigError("truncation needs a mapping network that tracks w_avg")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, num_layers={self.num_layers}"


class SynthesisLayer(nn.Module):
    """One modulated 3x3 convolution of the synthesis network, with per-pixel noise and lrelu."""

    NOISE_MODES = ("random", "const", "none")

    def __init__(
        self,
        in_channels: int,  # number of input channels
        out_channels: int,  # number of output channels
        w_dim: int,  # intermediate latent (W) dimensionality
        resolution: int,  # output resolution of this layer
        kernel_size: int = 3,  # convolution kernel size
        up: int = 1,  # integer upsampling factor (2 for the first layer of a block)
        use_noise: bool = True,  # add per-pixel noise
        activation: str = "lrelu",  # activation after the bias
        resample_filter: Sequence[int] = DEFAULT_RESAMPLE_FILTER,  # FIR low-pass filter for upsampling
        conv_clamp: float | None = None,  # clamp the output to +-X; None = no clamp
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.impl = "auto"
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = True,
        gain: float = 1.0,
    ) -> torch.Tensor:
        """``x [N, in_channels, res/up, res/up]``, ``w [N, w_dim]`` -> ``[N, out_channels, res, res]``.

        noise_mode: 'random' draws fresh noise, 'const' uses the stored ``noise_const`` (deterministic,
        what video wants), 'none' adds no noise.
        """
        if noise_mode not in self.NOISE_MODES:
            raise ConfigError(f"unknown noise mode {noise_mode!r}; expected one of {', '.join(self.NOISE_MODES)}")
        in_resolution = self.resolution // self.up
        assert_shape("SynthesisLayer x", x, [None, self.in_channels, in_resolution, in_resolution])
        styles = self.affine(w)  # [N, in_channels]

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv,
            impl=self.impl,
        )
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(
            x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp, impl=self.impl
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
            f"resolution={self.resolution}, up={self.up}, activation={self.activation}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution (no demodulation) from features to image channels."""

    def __init__(
        self,
        in_channels: int,  # number of input feature channels
        out_channels: int,  # number of image channels
        w_dim: int,  # intermediate latent (W) dimensionality
        kernel_size: int = 1,  # convolution kernel size
        conv_clamp: float | None = None,  # clamp the output to +-X; None = no clamp
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.impl = "auto"
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """``x [N, in_channels, H, W]``, ``w [N, w_dim]`` -> ``[N, out_channels, H, W]``."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv, impl=self.impl)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"
