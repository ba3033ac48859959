"""StyleGAN2's residual discriminator, which can also return its multi-level features.

Layout and attribute names of NVlabs ``networks_stylegan2.py`` ('resnet' architecture, unconditional):
``b{res}`` blocks from the image resolution down to 8 (``fromrgb`` in the first, ``conv0``, ``conv1`` with
FIR downsampling, ``skip``), then the 4x4 epilogue ``b4`` (minibatch standard deviation, ``conv``, ``fc``,
``out``). Not part of the StyleFace checkpoint (training only).

Features for StyleFace's feature-matching loss (appendix 1.2: L2 between the discriminator features of
the target and of the output; background-masked for the first m = 4 layers, i.e. 1024^2-128^2): one per
block at the block's own resolution -- the output of ``conv0`` of ``b{res}`` -- then the epilogue's conv
output at 4x4. The list runs from the highest resolution to the lowest, so ``features[i]`` has spatial
size ``feature_resolutions[i]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from styleface_cli.errors import ConfigError
from styleface_cli.model.layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer, assert_shape

__all__ = ["Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "MinibatchStdLayer"]


class DiscriminatorBlock(nn.Module):
    """One resolution: (fromrgb), conv0 3x3, conv1 3x3 with downsampling, plus a 1x1 downsampling skip."""

    def __init__(
        self,
        in_channels: int,  # input feature channels; 0 = first block (reads the image)
        tmp_channels: int,  # channels at this resolution
        out_channels: int,  # channels after downsampling
        resolution: int,  # resolution of this block
        img_channels: int = 3,  # image channels
        activation: str = "lrelu",  # activation of the convolutions
        resample_filter: tuple[int, ...] = DEFAULT_RESAMPLE_FILTER,  # FIR filter for downsampling
        conv_clamp: float | None = None,  # clamp conv outputs to +-X; None = no clamp
    ):
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ConfigError("a discriminator block's input channels must be 0 or its tmp_channels")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x [N, out_channels, res/2, res/2], feature [N, tmp_channels, res, res])``."""
        if self.in_channels == 0:
            assert_shape("DiscriminatorBlock img", img, [None, self.img_channels, self.resolution, self.resolution])
            x = self.fromrgb(img.to(torch.float32))
        else:
            assert_shape("DiscriminatorBlock x", x, [None, self.in_channels, self.resolution, self.resolution])
        y = self.skip(x, gain=math.sqrt(0.5))
        feature = self.conv0(x)
        x = self.conv1(feature, gain=math.sqrt(0.5))
        return y + x, feature

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in_channels={self.in_channels}"


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation over groups of samples as extra feature channels."""

    def __init__(
        self,
        group_size: int | None,  # samples per group; None = the whole minibatch
        num_channels: int = 1,  # number of appended channels
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, C + num_channels, H, W]``; N must be divisible by the group size."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g:
            raise ValueError(f"MinibatchStdLayer: batch {n} is not divisible by the group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # [n, F, c, H, W] variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F] mean standard deviation
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch std, conv, fc, out -> one logit per image."""

    def __init__(
        self,
        in_channels: int,  # feature channels at 4x4
        resolution: int = 4,  # resolution of the head
        mbstd_group_size: int | None = 4,  # see MinibatchStdLayer
        mbstd_num_channels: int = 1,  # see MinibatchStdLayer; 0 = disable
        activation: str = "lrelu",  # activation of conv and fc
        conv_clamp: float | None = None,  # clamp conv outputs to +-X; None = no clamp
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, C, 4, 4]`` -> ``(logits [N, 1], feature [N, C, 4, 4])``."""
        assert_shape("DiscriminatorEpilogue x", x, [None, self.in_channels, self.resolution, self.resolution])
        if self.mbstd is not None:
            x = self.mbstd(x)
        feature = self.conv(x)
        return self.out(self.fc(feature.flatten(1))), feature


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: image ``[N, 3, R, R]`` -> logits ``[N, 1]`` (and features)."""

    def __init__(
        self,
        img_resolution: int,  # input resolution (power of two >= 8)
        img_channels: int = 3,  # input image channels
        channel_base: int = 32768,  # channels at res = min(channel_base // res, channel_max)
        channel_max: int = 512,  # maximum channels
        conv_clamp: float | None = 256,  # clamp conv outputs to +-X; None = no clamp
        mbstd_group_size: int | None = 4,  # see MinibatchStdLayer
        channels: Mapping[int, int] | None = None,  # explicit {res: channels} for res 4 ... img_resolution
    ):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ConfigError(f"the discriminator resolution must be a power of two >= 8, got {img_resolution}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(int(math.log2(img_resolution)), 2, -1)]
        if channels is None:
            channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        elif not set(self.block_resolutions + [4]) <= set(channels):
            raise ConfigError(f"channel table {dict(channels)} does not cover resolutions 4 ... {img_resolution}")
        self.channels = {res: int(channels[res]) for res in self.block_resolutions + [4]}
        channels = self.channels
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                channels[res] if res < img_resolution else 0, channels[res], channels[res // 2], resolution=res,
                img_channels=img_channels, conv_clamp=conv_clamp,
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(channels[4], mbstd_group_size=mbstd_group_size, conv_clamp=conv_clamp)
        self.feature_resolutions = self.block_resolutions + [4]

    def forward(
        self, img: torch.Tensor, *, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``img [N, C, R, R]`` -> ``logits [N, 1]``, or ``(logits, features)`` with ``return_features``.

        features: one ``[N, C_res, res, res]`` per entry of ``feature_resolutions`` (highest first).
        """
        x = None
        features = []
        for res in self.block_resolutions:
            x, feature = getattr(self, f"b{res}")(x, img)
            features.append(feature)
        logits, feature = self.b4(x)
        features.append(feature)
        return (logits, features) if return_features else logits

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, img_channels={self.img_channels}"
