"""The StyleGAN2 generator: synthesis blocks with skip ToRGB outputs, and the plain z -> image Generator.

Follows NVlabs ``networks_stylegan2.py`` configuration F ('skip' generator): a learned 4x4 constant,
per block one upsampling modulated conv (``conv0``) and one modulated conv (``conv1``) with noise, and a
ToRGB whose output is added to the FIR-upsampled image of the previous block. Attribute names are
NVIDIA's (``b{res}.conv0.affine.weight``, ``b{res}.torgb.*``, ``b{res}.const``, ...).

W+ layout (``num_ws`` rows): block 4 uses row 0 for ``conv1`` and row 1 for its ToRGB; every later block
``res`` uses rows ``k, k+1`` for ``conv0, conv1`` and row ``k+2`` for its ToRGB, where ``k`` is the row after
the previous block's ``conv1`` (a ToRGB shares its row with the next block's ``conv0``, as in NVIDIA's
code). So ``num_ws = 2 * log2(resolution) - 2`` (14 at 256, 16 at 512, 18 at 1024).

StyleFace addition: ``SynthesisNetwork.forward(..., feature_hooks={res: fn})`` calls ``fn(x)`` on block
``res``'s feature map after its convolutions and before its ToRGB, and continues with the returned map;
the StyleFace model injects the target's attributes there (see ``attributes.AttrInjection``). Without
hooks the network is plain StyleGAN2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from styleface_cli.errors import ConfigError
from styleface_cli.model.layers import (
    DEFAULT_RESAMPLE_FILTER,
    MappingNetwork,
    SynthesisLayer,
    ToRGBLayer,
    assert_shape,
)
from styleface_cli.ops.upfirdn2d import setup_filter, upsample2d

__all__ = ["Generator", "SynthesisBlock", "SynthesisNetwork", "block_channels", "num_ws_for", "ws_resolutions"]

FeatureHook = Callable[[torch.Tensor], torch.Tensor]


def _check_resolution(resolution: int, what: str = "resolution", low: int = 4) -> int:
    if not isinstance(resolution, int) or resolution < low or resolution & (resolution - 1):
        raise ConfigError(f"{what} must be a power of two >= {low}, got {resolution!r}")
    return resolution


def block_channels(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature channels of each synthesis block ``{4: c4, 8: c8, ..., resolution: c}`` (NVIDIA's rule)."""
    _check_resolution(resolution)
    return {2**i: min(channel_base // 2**i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


def num_ws_for(resolution: int) -> int:
    """Rows of W+ for a generator of this output resolution: ``2 * log2(resolution) - 2``."""
    return 2 * int(math.log2(_check_resolution(resolution))) - 2


def ws_resolutions(num_ws: int) -> list[int]:
    """The resolution of the layer that consumes each W+ row (the last row is the final ToRGB)."""
    if num_ws < 2 or num_ws % 2:
        raise ConfigError(f"num_ws must be even and >= 2, got {num_ws}")
    top = (num_ws + 2) // 2  # log2 of the output resolution
    return [2 ** min((row + 5) // 2, top) for row in range(num_ws)]


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network ('skip' architecture)."""

    def __init__(
        self,
        in_channels: int,  # input feature channels; 0 = the first (4x4 constant) block
        out_channels: int,  # feature channels of this block
        w_dim: int,  # intermediate latent (W) dimensionality
        resolution: int,  # resolution of this block
        img_channels: int,  # image channels of the ToRGB output
        resample_filter: tuple[int, ...] = DEFAULT_RESAMPLE_FILTER,  # FIR filter for up-sampling
        conv_clamp: float | None = 256,  # clamp conv outputs to +-X; None = no clamp
        fused_modconv_default: bool | str = "inference_only",  # True/False, or fused for CUDA inference only
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.fused_modconv_default = fused_modconv_default
        self.impl = "auto"
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                resample_filter=resample_filter, conv_clamp=conv_clamp,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool | None = None,
        feature_hook: FeatureHook | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block.

        Args:
            x: ``[N, in_channels, res/2, res/2]`` features of the previous block (None for the first).
            img: ``[N, img_channels, res/2, res/2]`` image so far (None for the first), float32.
            ws: ``[N, num_conv + num_torgb, w_dim]`` this block's rows of W+.
            noise_mode: 'random' | 'const' | 'none'.
            fused_modconv: None = the block's default.
            feature_hook: called on the features before ToRGB; returns the features to continue with.

        Returns:
            ``(x [N, out_channels, res, res], img [N, img_channels, res, res])``.
        """
        assert_shape("SynthesisBlock ws", ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == "inference_only":
            # Fused (one grouped conv per layer) is NVIDIA's choice for GPU inference; on a CPU the grouped
            # conv measured slower than the shared-weight path (128 px, batch 1 and 4: by 3-30 %).
            fused_modconv = not self.training and ws.device.type == "cuda"

        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        else:
            assert_shape("SynthesisBlock x", x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if feature_hook is not None:
            x = feature_hook(x)

        if img is not None:
            assert_shape("SynthesisBlock img", img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upsample2d(img, self.resample_filter, impl=self.impl)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in_channels={self.in_channels}, out_channels={self.out_channels}"


class SynthesisNetwork(nn.Module):
    """W+ -> image: one ``SynthesisBlock`` per resolution 4, 8, ..., ``img_resolution`` (attributes ``b{res}``)."""

    def __init__(
        self,
        w_dim: int,  # intermediate latent (W) dimensionality
        img_resolution: int,  # output resolution (power of two >= 4)
        img_channels: int = 3,  # image channels
        channel_base: int = 32768,  # channels of block res = min(channel_base // res, channel_max)
        channel_max: int = 512,  # maximum channels of any block
        conv_clamp: float | None = 256,  # clamp conv outputs to +-X; None = no clamp
        fused_modconv_default: bool | str = "inference_only",  # see SynthesisBlock
        channels: Mapping[int, int] | None = None,  # explicit {res: channels} table; overrides base/max
    ):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = _check_resolution(img_resolution)
        self.img_channels = img_channels
        self.channels = block_channels(img_resolution, channel_base, channel_max)
        if channels is not None:  # an imported StyleGAN2 whose channel table follows no base/max rule
            if sorted(channels) != sorted(self.channels):
                raise ConfigError(f"channel table {dict(channels)} does not cover resolutions {list(self.channels)}")
            self.channels = {res: int(channels[res]) for res in self.channels}
        if min(self.channels.values()) < 1:
            raise ConfigError(f"channel_base {channel_base} leaves no channels at resolution {img_resolution}")
        self.block_resolutions = list(self.channels)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                self.channels[res // 2] if res > 4 else 0, self.channels[res], w_dim=w_dim, resolution=res,
                img_channels=img_channels, conv_clamp=conv_clamp, fused_modconv_default=fused_modconv_default,
            )
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last ToRGB
        assert self.num_ws == num_ws_for(img_resolution)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool | None = None,
        feature_hooks: Mapping[int, FeatureHook] | None = None,
    ) -> torch.Tensor:
        """``ws [N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` float32, roughly in [-1, 1].

        feature_hooks: ``{block resolution: fn}``, see the module docstring.
        """
        assert_shape("SynthesisNetwork ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        hooks = feature_hooks or {}
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv, feature_hook=hooks.get(res))
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


class Generator(nn.Module):
    """Plain unconditional StyleGAN2 generator z -> image (mapping + synthesis), for tests and baselines."""

    def __init__(
        self,
        z_dim: int,  # input latent (Z) dimensionality
        w_dim: int,  # intermediate latent (W) dimensionality
        img_resolution: int,  # output resolution
        img_channels: int = 3,  # output image channels
        mapping_layers: int = 8,  # FC layers of the mapping network
        channel_base: int = 32768,  # see SynthesisNetwork
        channel_max: int = 512,  # see SynthesisNetwork
        channels: Mapping[int, int] | None = None,  # see SynthesisNetwork
        conv_clamp: float | None = 256,  # see SynthesisNetwork
    ):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base=channel_base, channel_max=channel_max,
            conv_clamp=conv_clamp, channels=channels,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, num_ws=self.num_ws, num_layers=mapping_layers)

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
    ) -> torch.Tensor:
        """``z [N, z_dim]`` -> image ``[N, img_channels, R, R]``."""
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)
