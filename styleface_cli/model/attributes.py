"""The adaptive attribute extractor: a U-Net over the target image, and the AttrInjection gates.

StyleFace appendix 1.1: a U-shaped network extracts multi-level attribute features from the target
image; the encoder input and the shortcut connections work at 512 px (``attr_resolution``), the feature is
then upsampled to the generator's resolution; every layer has one eighth of the channels of the matching
generator block, and a 1x1 convolution adjusts the channels before the AttrInjection module, which
adaptively filters the attributes and injects them into the generator.

Choices where the appendix is silent:

* Encoder: from ``attr_resolution`` down to 4x4 (the generator's first block), one 3x3 conv with FIR
  downsampling (lrelu) per level, after a 1x1 ``fromrgb`` -- StyleGAN2's discriminator convolutions.
  A target larger than ``attr_resolution`` is FIR-downsampled to it first.
* Decoder: per level one 3x3 conv with FIR upsampling, concatenated with the encoder feature of that
  level (the shortcut) and fused by a 3x3 conv -- FaceShifter's multi-level attributes encoder, with
  StyleGAN2's resampling. The decoder output at each resolution 4 ... ``attr_resolution`` is that level's
  attribute feature; above ``attr_resolution`` the top feature is FIR-upsampled (x2 per level).
* ``to_gen{res}``: linear 1x1 conv from attribute channels to the generator block's channels.
* ``AttrInjection`` (FaceShifter's AAD gate): a per-pixel sigmoid mask ``M = sigmoid(conv1x1([h, a]))``
  and ``out = M * a + (1 - M) * h``, where ``h`` is the generator feature and ``a`` the attribute feature.
  AAD computes the mask from ``h`` alone; here it also sees ``a``, so the gate can tell attribute
  content (background, occlusion) from identity content. The mask conv is 1x1 (public AAD
  re-implementations use 1x1 or 3x3): both inputs already carry 3x3 context, and a one-output 3x3 conv
  over 2C channels is pathologically slow in oneDNN on CPUs. Unlike AAD, the attribute feature enters
  directly (no instance norm, no gamma/beta modulation): identity is already in the generator feature
  through the W+ modulation. The gate is applied to each block's features after its convolutions and
  before its ToRGB (``SynthesisNetwork`` ``feature_hooks``), so the injected attributes reach both this
  block's image and the next block.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from styleface_cli.errors import ConfigError
from styleface_cli.model.layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, assert_shape
from styleface_cli.ops.upfirdn2d import downsample2d, setup_filter, upsample2d

__all__ = ["AdaptiveAttributeExtractor", "AttrInjection", "attribute_channels"]


def attribute_channels(gen_channels: dict[int, int], attr_resolution: int) -> dict[int, int]:
    """Channels of the U-Net at each resolution 4 ... attr_resolution: 1/8 of the generator's (at least 1)."""
    return {res: max(1, gen_channels[res] // 8) for res in gen_channels if res <= attr_resolution}


class AttrInjection(nn.Module):
    """Adaptive gate that mixes an attribute feature into a generator feature (AAD-style)."""

    def __init__(
        self,
        channels: int,  # channels of the generator feature (and of the projected attribute feature)
        resolution: int,  # resolution of the generator block
    ):
        super().__init__()
        self.channels = channels
        self.resolution = resolution
        self.gate = Conv2dLayer(2 * channels, 1, kernel_size=1, activation="sigmoid")

    def forward(self, x: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
        """``x`` (generator) and ``attr``, both ``[N, C, res, res]`` -> ``M * attr + (1 - M) * x``."""
        assert_shape("AttrInjection x", x, [None, self.channels, self.resolution, self.resolution])
        assert_shape("AttrInjection attr", attr, [x.shape[0], self.channels, self.resolution, self.resolution])
        attr = attr.to(x.dtype)
        mask = self.gate(torch.cat([x, attr], dim=1))  # [N, 1, res, res] in (0, 1)
        return torch.lerp(x, attr, mask)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, resolution={self.resolution}"


class AdaptiveAttributeExtractor(nn.Module):
    """U-Net over the target image -> per generator block attribute features, plus their AttrInjection gates.

    Modules: ``fromrgb``; ``enc{res}`` (res -> res/2) for res = attr_resolution ... 8; ``up{res}`` and
    ``fuse{res}`` for res = 8 ... attr_resolution; per generator block ``res`` = 4 ... img_resolution
    ``to_gen{res}`` (1x1) and ``inject{res}`` (``AttrInjection``).
    """

    def __init__(
        self,
        img_resolution: int,  # generator output resolution (the target image's size)
        attr_resolution: int,  # U-Net input resolution (512 in the paper; <= img_resolution)
        gen_channels: dict[int, int],  # feature channels of each generator block {4: c, ..., img_resolution: c}
        img_channels: int = 3,  # target image channels
        resample_filter: tuple[int, ...] = DEFAULT_RESAMPLE_FILTER,  # FIR filter for all resampling
    ):
        super().__init__()
        if attr_resolution < 8 or attr_resolution > img_resolution or attr_resolution & (attr_resolution - 1):
            raise ConfigError(
                f"attr_resolution must be a power of two in [8, resolution={img_resolution}], got {attr_resolution}"
            )
        if sorted(gen_channels) != [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]:
            raise ConfigError("gen_channels must list every generator block 4 ... img_resolution")
        self.img_resolution = img_resolution
        self.attr_resolution = attr_resolution
        self.img_channels = img_channels
        self.gen_channels = dict(gen_channels)
        self.channels = attribute_channels(self.gen_channels, attr_resolution)
        self.impl = "auto"
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)), persistent=False)
        ch = self.channels
        unet_resolutions = [r for r in ch if r >= 8]  # 8 ... attr_resolution

        self.fromrgb = Conv2dLayer(img_channels, ch[attr_resolution], kernel_size=1, activation="lrelu")
        for res in reversed(unet_resolutions):
            setattr(self, f"enc{res}", Conv2dLayer(ch[res], ch[res // 2], kernel_size=3, activation="lrelu", down=2))
        for res in unet_resolutions:
            setattr(self, f"up{res}", Conv2dLayer(ch[res // 2], ch[res], kernel_size=3, activation="lrelu", up=2))
            setattr(self, f"fuse{res}", Conv2dLayer(2 * ch[res], ch[res], kernel_size=3, activation="lrelu"))
        for res, gen_ch in self.gen_channels.items():
            setattr(self, f"to_gen{res}", Conv2dLayer(ch[min(res, attr_resolution)], gen_ch, kernel_size=1))
            setattr(self, f"inject{res}", AttrInjection(gen_ch, res))

    def forward(self, target: torch.Tensor) -> dict[int, torch.Tensor]:
        """``target [N, 3, R, R]`` in [-1, 1] -> ``{res: [N, gen_channels[res], res, res]}`` for every block."""
        assert_shape("AdaptiveAttributeExtractor target",
                     target, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = target.to(torch.float32)
        while x.shape[-1] > self.attr_resolution:
            x = downsample2d(x, self.resample_filter, impl=self.impl)

        x = self.fromrgb(x)
        skips: dict[int, torch.Tensor] = {}
        res = self.attr_resolution
        while res > 4:  # encoder: attr_resolution -> 4
            skips[res] = x
            x = getattr(self, f"enc{res}")(x)
            res //= 2
        features = {4: x}
        while res < self.attr_resolution:  # decoder: 4 -> attr_resolution, with shortcuts
            res *= 2
            x = getattr(self, f"up{res}")(x)
            x = getattr(self, f"fuse{res}")(torch.cat([x, skips[res]], dim=1))
            features[res] = x
        while res < self.img_resolution:  # above attr_resolution: upsample the top feature
            res *= 2
            x = upsample2d(x, self.resample_filter, impl=self.impl)
            features[res] = x
        return {res: getattr(self, f"to_gen{res}")(feature) for res, feature in features.items()}

    def inject(self, res: int, x: torch.Tensor, attr: torch.Tensor) -> torch.Tensor:
        """Gate the attribute feature of block ``res`` into the generator feature ``x`` (see ``AttrInjection``)."""
        return getattr(self, f"inject{res}")(x, attr)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, attr_resolution={self.attr_resolution}"
