"""The identity projector: recognizer feature map -> a Gaussian over Z+ (three levels) -> W+.

StyleFace appendix 1.1: the source crop's identity prior is the recognizer's *last convolutional feature
map* (not the 512-d embedding, to keep information the embedding drops); the projector maps it to the
means and (diagonal) covariances of Z+, samples one latent per level -- low (4^2-16^2), middle
(32^2-128^2), high (256^2-1024^2) generator layers -- and maps each through a StyleGAN2 mapping network
into the W+ rows of that level.

Choices where the appendix is silent (documented here, once):

* Input: the feature map is scaled to unit mean square per sample (``normalize_2nd_moment`` over C, H,
  W), so the projector does not depend on the recognizer's arbitrary feature scale; the overall norm of a
  recognition feature tracks image quality more than identity.
* Trunk: one 3x3 conv (lrelu) at 7x7 keeps the spatial layout, then one FC over the flattened map
  (the recognizer's own head flattens the 7x7 map the same way), then per level one FC (lrelu) and a
  linear FC to ``2 * z_dim`` = [mean, log-variance]. Equalized-learning-rate layers as in StyleGAN2.
* One mapping network shared by the three levels (as StyleGAN's style mixing shares it), with
  ``lr_multiplier = 0.01`` and a tracked ``w_avg`` for truncation.
* Log-variance, not variance, is predicted (the usual VAE parameterisation: unconstrained and stable);
  z = mean + exp(logvar / 2) * eps. Random draws use the caller's ``torch.Generator`` on its own device
  and are moved to the model's device, so a seed gives the same identity on CPU and GPU.
* A W+ row belongs to the level of the resolution of the layer that consumes it (``generator.
  ws_resolutions``); the final ToRGB row belongs to the last block. A generator below 256 px has no
  high-level rows: the high z is still predicted and sampled but does not reach the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from styleface_cli.errors import ConfigError
from styleface_cli.model.generator import ws_resolutions
from styleface_cli.model.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MappingNetwork,
    assert_shape,
    normalize_2nd_moment,
)

__all__ = [
    "LEVELS",
    "IdentityCode",
    "IdentityProjector",
    "interpolate_w",
    "interpolate_z",
    "mix_levels",
    "ws_levels",
]

LEVELS = ("low", "mid", "high")  # index 0, 1, 2 of IdentityCode.z's level axis
_LEVEL_MAX_RESOLUTION = (16, 128)  # low: <= 16 px, mid: <= 128 px, high: above


def ws_levels(num_ws: int) -> torch.Tensor:
    """The level (0 low, 1 mid, 2 high) of each W+ row: int64 ``[num_ws]``."""
    levels = [0 if res <= _LEVEL_MAX_RESOLUTION[0] else 1 if res <= _LEVEL_MAX_RESOLUTION[1] else 2
              for res in ws_resolutions(num_ws)]
    return torch.tensor(levels, dtype=torch.long)


@dataclasses.dataclass(frozen=True, eq=False)  # tensors: compare fields with torch.equal
class IdentityCode:
    """One identity per batch row, in both latent spaces.

    z: ``[N, 3, z_dim]`` one latent per level (low, mid, high).
    w_plus: ``[N, num_ws, w_dim]`` what the generator consumes (each row from its level's z, except
        after ``interpolate_w``, where rows are interpolated in W+ directly).
    """

    z: torch.Tensor
    w_plus: torch.Tensor

    def __post_init__(self) -> None:
        if self.z.ndim != 3 or self.z.shape[1] != len(LEVELS):
            raise ValueError(f"IdentityCode.z must be [N, 3, z_dim], got {list(self.z.shape)}")
        if self.w_plus.ndim != 3 or self.w_plus.shape[0] != self.z.shape[0]:
            raise ValueError(f"IdentityCode.w_plus must be [N, num_ws, w_dim] with N = {self.z.shape[0]}, "
                             f"got {list(self.w_plus.shape)}")

    @property
    def batch_size(self) -> int:
        return self.z.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, index: int | slice | torch.Tensor) -> IdentityCode:
        """Rows of the batch; an int keeps the batch axis (``code[i]`` is a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return IdentityCode(self.z[index], self.w_plus[index])

    def to(self, *args, **kwargs) -> IdentityCode:
        return IdentityCode(self.z.to(*args, **kwargs), self.w_plus.to(*args, **kwargs))

    def detach(self) -> IdentityCode:
        return IdentityCode(self.z.detach(), self.w_plus.detach())

    @staticmethod
    def cat(codes: Sequence[IdentityCode]) -> IdentityCode:
        """Concatenate along the batch axis."""
        return IdentityCode(torch.cat([c.z for c in codes]), torch.cat([c.w_plus for c in codes]))


class IdentityProjector(nn.Module):
    """Recognizer feature map -> mean / log-variance of Z+ per level -> sampled z -> W+ (own mapping network)."""

    def __init__(
        self,
        in_channels: int,  # channels of the recognizer's last conv feature map (512 for IResNet)
        in_size: int,  # its spatial size (7 for 112x112 crops)
        z_dim: int,  # latent (Z) dimensionality per level
        w_dim: int,  # intermediate latent (W) dimensionality
        num_ws: int,  # rows of W+ of the generator
        mapping_layers: int = 8,  # FC layers of the mapping network
        hidden_features: int | None = None,  # width of the trunk and level heads; None = w_dim
    ):
        super().__init__()
        self.in_channels = in_channels
        self.in_size = in_size
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        hidden = w_dim if hidden_features is None else hidden_features
        self.conv = Conv2dLayer(in_channels, in_channels, kernel_size=3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * in_size**2, hidden, activation="lrelu")
        for level in LEVELS:
            setattr(self, f"{level}_fc", FullyConnectedLayer(hidden, hidden, activation="lrelu"))
            setattr(self, f"{level}_out", FullyConnectedLayer(hidden, 2 * z_dim))  # [mean, log-variance]
        self.mapping = MappingNetwork(z_dim, w_dim, num_ws=None, num_layers=mapping_layers)
        self.register_buffer("ws_level", ws_levels(num_ws), persistent=False)

    def posterior(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feature_map [N, C, S, S]`` -> ``(mean, logvar)``, each ``[N, 3, z_dim]`` (levels low, mid, high)."""
        assert_shape("IdentityProjector feature_map", feature_map, [None, self.in_channels, self.in_size, self.in_size])
        x = normalize_2nd_moment(feature_map.to(torch.float32), dim=[1, 2, 3])
        x = self.fc(self.conv(x).flatten(1))  # [N, hidden]
        heads = [getattr(self, f"{level}_out")(getattr(self, f"{level}_fc")(x)) for level in LEVELS]
        stats = torch.stack(heads, dim=1)  # [N, 3, 2 * z_dim]
        return stats[:, :, : self.z_dim], stats[:, :, self.z_dim :]

    def to_w_plus(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """``z [N, 3, z_dim]`` -> ``w_plus [N, num_ws, w_dim]``: map each level's z, copy it to the level's rows."""
        assert_shape("IdentityProjector z", z, [None, len(LEVELS), self.z_dim])
        n = z.shape[0]
        w = self.mapping(z.reshape(n * len(LEVELS), self.z_dim), truncation_psi=truncation_psi)
        return w.reshape(n, len(LEVELS), self.w_dim).index_select(1, self.ws_level)  # [N, num_ws, w_dim]

    def sample(
        self,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        use_mean: bool = False,
        truncation_psi: float = 1.0,
    ) -> IdentityCode:
        """Reparameterised draw ``z = mean + exp(logvar / 2) * eps`` (or ``z = mean``), mapped to W+."""
        z = mean if use_mean else mean + (0.5 * logvar).exp() * _standard_normal(mean.shape, mean, generator)
        return IdentityCode(z, self.to_w_plus(z, truncation_psi))

    def forward(
        self,
        feature_map: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        use_mean: bool = True,
        truncation_psi: float = 1.0,
    ) -> IdentityCode:
        """The identity code of each source: ``feature_map [N, C, S, S]`` -> ``IdentityCode``.

        use_mean: True = the posterior mean (deterministic, what inference uses); False = a draw.
        """
        mean, logvar = self.posterior(feature_map)
        return self.sample(mean, logvar, generator=generator, use_mean=use_mean, truncation_psi=truncation_psi)

    def random(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        truncation_psi: float = 1.0,
    ) -> IdentityCode:
        """``n`` random identities (de-identification): z ~ N(0, I) per level, independently."""
        ref = self.mapping.fc0.weight
        z = _standard_normal((n, len(LEVELS), self.z_dim), ref, generator)
        return IdentityCode(z, self.to_w_plus(z, truncation_psi))

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, in_size={self.in_size}, z_dim={self.z_dim}, "
                f"w_dim={self.w_dim}, num_ws={self.num_ws}")


def _standard_normal(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` on ``like``'s device and float dtype, drawn on the generator's device."""
    device = generator.device if generator is not None else like.device
    eps = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return eps.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)


# ----------------------------------------------------------------------------------------------------
# Editing identity codes.


def mix_levels(low: IdentityCode, mid: IdentityCode, high: IdentityCode) -> IdentityCode:
    """Identity mixing: the low / mid / high levels (z and W+ rows) taken from three codes of one shape.

    Pass the same code twice to replace one level only, e.g. ``mix_levels(a, b, a)`` = A with B's mid level.
    """
    for other in (mid, high):
        if other.z.shape != low.z.shape or other.w_plus.shape != low.w_plus.shape:
            raise ValueError("mix_levels: the codes must have the same shapes")
    z = torch.stack([low.z[:, 0], mid.z[:, 1], high.z[:, 2]], dim=1)  # [N, 3, z_dim]
    level = ws_levels(low.w_plus.shape[1]).to(low.w_plus.device).reshape(1, -1, 1)  # [1, num_ws, 1]
    w_plus = torch.where(level == 0, low.w_plus, torch.where(level == 1, mid.w_plus, high.w_plus))
    return IdentityCode(z, w_plus)


def _check_lambda(lam: float) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"the interpolation proportion must be in [0, 1], got {lam}")
    return lam


def interpolate_w(target: IdentityCode, source: IdentityCode, lam: float) -> IdentityCode:
    """Linear interpolation in W+; ``lam`` is the proportion of the source (0 -> target, 1 -> source, exactly).

    The result's ``z`` is the same interpolation in Z+, kept for reference: its W+ is *not*
    ``to_w_plus(z)`` (the mapping is non-linear); the generator uses ``w_plus``.
    """
    lam = _check_lambda(lam)
    return IdentityCode(torch.lerp(target.z, source.z, lam), torch.lerp(target.w_plus, source.w_plus, lam))


def interpolate_z(
    target: IdentityCode,
    source: IdentityCode,
    lam: float,
    *,
    projector: IdentityProjector,
    truncation_psi: float = 1.0,
) -> IdentityCode:
    """Linear interpolation in Z+, mapped to W+ by ``projector``; ``lam`` is the proportion of the source.

    The endpoints return the given codes as they are (``lam == 0`` -> target, ``lam == 1`` -> source), so
    they are exact whatever batch the codes were mapped in.
    """
    lam = _check_lambda(lam)
    if lam == 0.0:
        return target
    if lam == 1.0:
        return source
    z = torch.lerp(target.z, source.z, lam)
    return IdentityCode(z, projector.to_w_plus(z, truncation_psi))
