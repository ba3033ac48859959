"""The StyleFace model: recognizer + identity projector + attribute extractor + StyleGAN2 synthesis.

Data flow (Luo et al., ECCV 2022, appendix Fig. 1)::

    source crop [N,3,112,112] -> recognizer -> feature map [N,C,7,7] -> projector -> IdentityCode (Z+, W+)
    target [N,3,R,R] -> attribute U-Net -> per-block features --AttrInjection--> synthesis(W+) -> [N,3,R,R]

``StyleFaceConfig`` (frozen) fixes every size; it is stored in the checkpoint (``weights.py``), so a
checkpoint rebuilds its own network. Parameter groups (``PARTS``, the first key component except for
``mapping`` and ``injection``): recognizer, projector, mapping (``projector.mapping``), attributes,
injection (``attributes.inject*``), synthesis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from styleface_cli.errors import ConfigError
from styleface_cli.model.attributes import AdaptiveAttributeExtractor
from styleface_cli.model.generator import SynthesisNetwork, block_channels, num_ws_for
from styleface_cli.model.layers import assert_shape
from styleface_cli.model.projector import IdentityCode, IdentityProjector
from styleface_cli.model.recognizer import RECOGNIZER_ARCHS, IResNet, build_recognizer

__all__ = ["CONFIG_VERSION", "PARTS", "StyleFace", "StyleFaceConfig", "part_of"]

CONFIG_VERSION = 1  # bump when the network layout for a given config changes
PARTS = ("recognizer", "projector", "mapping", "attributes", "injection", "synthesis")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
_ADDED_FIELDS = ("channels", "conv_clamp")  # config fields newer than format 1; optional when reading


@dataclasses.dataclass(frozen=True)
class StyleFaceConfig:
    """Every size of a StyleFace network; validated on construction."""

    resolution: int = 1024  # generator output resolution (power of two, 8 ... 1024)
    channel_base: int = 32768  # generator block channels = min(channel_base // res, channel_max)
    channel_max: int = 512  # maximum generator channels
    z_dim: int = 512  # Z dimensionality per identity level
    w_dim: int = 512  # W dimensionality
    mapping_layers: int = 8  # FC layers of the mapping network
    attr_resolution: int = 512  # input resolution of the attribute U-Net (<= resolution)
    recognizer: str = "iresnet100"  # 'tiny' | 'iresnet50' | 'iresnet100'
    version: int = CONFIG_VERSION  # network layout version
    # Added for imported StyleGAN2 networks (``stylegan_import``); absent from older checkpoints, which
    # read with these defaults (``from_dict``).
    channels: tuple[int, ...] | None = None  # generator channels of blocks 4, 8, ..., resolution; None = base/max rule
    conv_clamp: float | None = 256  # clamp of the synthesis (and discriminator) convolutions; None = none

    def __post_init__(self) -> None:
        def power_of_two(name: str, value: Any, low: int, high: int) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high or value & (value - 1):
                raise ConfigError(f"{name} must be a power of two in [{low}, {high}], got {value!r}")

        power_of_two("resolution", self.resolution, MIN_RESOLUTION, MAX_RESOLUTION)
        power_of_two("attr_resolution", self.attr_resolution, 8, self.resolution)
        for name in ("channel_base", "channel_max", "z_dim", "w_dim", "mapping_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.channel_base // self.resolution < 1:
            raise ConfigError(f"channel_base {self.channel_base} leaves no channels at resolution {self.resolution}")
        if self.recognizer not in RECOGNIZER_ARCHS:
            raise ConfigError(f"unknown recognizer {self.recognizer!r}; expected one of {', '.join(RECOGNIZER_ARCHS)}")
        if self.channels is not None:
            channels = tuple(self.channels)
            object.__setattr__(self, "channels", channels)  # a JSON list -> tuple, so the config stays hashable
            if len(channels) != num_ws_for(self.resolution) // 2 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels
            ):
                raise ConfigError(f"channels must list one positive integer per block 4 ... {self.resolution}, "
                                  f"got {list(channels)}")
        if self.conv_clamp is not None and not (isinstance(self.conv_clamp, (int, float)) and self.conv_clamp > 0):
            raise ConfigError(f"conv_clamp must be positive or None, got {self.conv_clamp!r}")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version!r} is not supported (this build reads {CONFIG_VERSION})")

    @classmethod
    def preset(cls, resolution: int) -> StyleFaceConfig:
        """The paper-scale network at ``resolution`` (the presets are 256, 512 and 1024): StyleGAN2 config F
        channels (channel_base 32768, max 512), 512-d Z and W, 8 mapping layers, IR-100 recognizer,
        attribute U-Net at min(resolution, 512) (the appendix's 512 px, upsampled to 1024 px)."""
        return cls(resolution=resolution, attr_resolution=min(resolution, 512))

    @classmethod
    def tiny(cls, resolution: int = 32) -> StyleFaceConfig:
        """A small network with the same layout, for tests and smoke runs (seconds on a CPU)."""
        return cls(resolution=resolution, channel_base=1024, channel_max=64, z_dim=32, w_dim=32,
                   mapping_layers=2, attr_resolution=resolution, recognizer="tiny")

    @property
    def num_ws(self) -> int:
        return num_ws_for(self.resolution)

    @property
    def block_channels(self) -> dict[int, int]:
        """Generator feature channels per block ``{4: c4, ..., resolution: c}`` (the discriminator uses the same)."""
        if self.channels is not None:
            return {2 ** (i + 2): c for i, c in enumerate(self.channels)}
        return block_channels(self.resolution, self.channel_base, self.channel_max)

    def to_dict(self) -> dict[str, Any]:
        """All fields, except the added ones (``_ADDED_FIELDS``) at their defaults: a network that does not use
        them writes the same config as before they existed (and older builds can read it)."""
        data = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in _ADDED_FIELDS:
            if data[name] == defaults[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StyleFaceConfig:
        """Inverse of ``to_dict``; unknown or missing fields raise ``ConfigError``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        missing = sorted(fields - set(data) - set(_ADDED_FIELDS))
        if unknown or missing:
            raise ConfigError(f"config fields do not match: unknown {unknown}, missing {missing}")
        return cls(**dict(data))


def part_of(key: str) -> str:
    """The parameter group (one of ``PARTS``) of a state-dict key."""
    if key.startswith("projector.mapping."):
        return "mapping"
    if key.startswith("attributes.inject"):
        return "injection"
    head = key.split(".", 1)[0]
    if head not in PARTS:
        raise KeyError(f"{key} belongs to no part of StyleFace")
    return head


class StyleFace(nn.Module):
    """Identity swapping and de-identification in one network.

    Submodules (and checkpoint key prefixes): ``recognizer`` (IResNet, frozen by default),
    ``projector`` (IdentityProjector, with its ``mapping`` network), ``attributes``
    (AdaptiveAttributeExtractor, with the ``inject{res}`` AttrInjection gates), ``synthesis``
    (SynthesisNetwork). Images are float ``[-1, 1]`` RGB, NCHW.
    """

    def __init__(self, config: StyleFaceConfig, *, freeze_recognizer: bool = True):
        super().__init__()
        self.config = config
        self.freeze_recognizer = freeze_recognizer
        gen_channels = config.block_channels
        self.recognizer: IResNet = build_recognizer(config.recognizer)
        self.synthesis = SynthesisNetwork(
            config.w_dim, config.resolution, img_channels=3, channels=gen_channels, conv_clamp=config.conv_clamp,
        )
        self.projector = IdentityProjector(
            in_channels=self.recognizer.feature_channels, in_size=self.recognizer.feature_size,
            z_dim=config.z_dim, w_dim=config.w_dim, num_ws=self.synthesis.num_ws,
            mapping_layers=config.mapping_layers,
        )
        self.attributes = AdaptiveAttributeExtractor(config.resolution, config.attr_resolution, gen_channels)
        if freeze_recognizer:
            self.recognizer.requires_grad_(False)
            self.recognizer.eval()

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def train(self, mode: bool = True) -> StyleFace:
        """As ``nn.Module.train``, but a frozen recognizer stays in eval mode (its BN statistics are fixed)."""
        super().train(mode)
        if self.freeze_recognizer:
            self.recognizer.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (``PARTS``) and ``total``."""
        counts = dict.fromkeys(PARTS, 0)
        for name, parameter in self.named_parameters():
            counts[part_of(name)] += parameter.numel()
        counts["total"] = sum(counts[p] for p in PARTS)
        return counts

    # -- identity ---------------------------------------------------------------------------------

    def _check_crops(self, crops112: torch.Tensor) -> None:
        size = self.recognizer.input_size
        assert_shape("StyleFace crops112", crops112, [None, 3, size, size])

    def encode_identity(
        self,
        crops112: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        use_mean: bool = True,
        truncation_psi: float = 1.0,
    ) -> IdentityCode:
        """Identity codes of aligned source crops ``[N, 3, 112, 112]`` in [-1, 1] (for swapping).

        use_mean: True = the posterior mean (deterministic; inference); False = a reparameterised draw
        seeded by ``generator`` (training).
        """
        self._check_crops(crops112)
        feature_map, _ = self.recognizer(crops112)
        return self.projector(feature_map, generator=generator, use_mean=use_mean, truncation_psi=truncation_psi)

    def identity_posterior(self, crops112: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of Z+, each ``[N, 3, z_dim]``, for losses on the distribution (e.g. a KL term);
        ``self.projector.sample(mean, logvar, ...)`` turns them into an ``IdentityCode``."""
        self._check_crops(crops112)
        feature_map, _ = self.recognizer(crops112)
        return self.projector.posterior(feature_map)

    def sample_identity(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        truncation_psi: float = 1.0,
    ) -> IdentityCode:
        """``n`` random identities for de-identification: z ~ N(0, I) per level; seed with ``generator``."""
        if n < 1:
            raise ConfigError(f"the number of identities must be >= 1, got {n}")
        return self.projector.random(n, generator=generator, truncation_psi=truncation_psi)

    def embed(self, crops112: torch.Tensor) -> torch.Tensor:
        """L2-normalized recognizer embedding ``[N, 512]`` of crops ``[N, 3, 112, 112]`` in [-1, 1]
        (gradients flow to the crops, not to the frozen recognizer)."""
        self._check_crops(crops112)
        _, embedding = self.recognizer(crops112)
        return F.normalize(embedding, dim=1)

    # -- generation -------------------------------------------------------------------------------

    def forward(
        self,
        target: torch.Tensor,
        w_plus: torch.Tensor,
        noise_mode: str = "const",
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        """Render the identity ``w_plus [N, num_ws, w_dim]`` with the attributes of ``target [N, 3, R, R]``.

        Returns ``[N, 3, R, R]`` float32, roughly in [-1, 1] (not clamped). ``noise_mode``: 'const'
        (default; deterministic, what video needs), 'random' (training), or 'none'. ``fused_modconv``:
        None = one grouped convolution per layer for CUDA inference, the shared-weight path otherwise.
        """
        assert_shape("StyleFace target", target, [None, 3, self.resolution, self.resolution])
        assert_shape("StyleFace w_plus", w_plus, [target.shape[0], self.num_ws, self.w_dim])
        attributes = self.attributes(target)  # {res: [N, C_res, res, res]}
        hooks = {res: partial(self._inject, res, attr) for res, attr in attributes.items()}
        return self.synthesis(w_plus, noise_mode=noise_mode, fused_modconv=fused_modconv, feature_hooks=hooks)

    def _inject(self, res: int, attr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.attributes.inject(res, x, attr)

    def extra_repr(self) -> str:
        c = self.config
        return f"resolution={c.resolution}, attr_resolution={c.attr_resolution}, recognizer={c.recognizer}"

