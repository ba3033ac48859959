"""Identity codes per track: one code per person for the whole shot, so the new face does not flicker.

- De-identification samples a random identity per track (seeded by ``--seed`` and the track id, so a
  rerun gives the same people), and rejects samples whose generated face the recogniser still finds
  close to the original person (a known weakness of random codes): up to ``max_tries`` draws, keeping
  the first at least ``min_distance`` away (cosine distance), else the farthest.
- Swap uses one source code, computed once from one or more source photos (codes averaged in Z+ and
  W+).
- ``strength`` < 1 interpolates in W+ between the target's own code and the new one (StyleFace
  appendix: identity interpolation, lambda = proportion of the new code).
- ``mix`` replaces the low / mid / high levels by those of other photos (appendix: identity mixing).

A track lost and found again within the tracker's gap keeps its id, hence its code.
"""

from __future__ import annotations

import hashlib
from typing import Hashable

import numpy as np
import torch

from styleface_cli.config import IdentityConfig
from styleface_cli.face.align import ARCFACE_SIZE, ffhq_to_arcface, warp_crop
from styleface_cli.model import IdentityCode, StyleFace, interpolate_w, mix_levels

LEVEL_NAMES = ("low", "mid", "high")


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """[N, H, W, 3] (or [H, W, 3]) uint8 RGB -> [N, 3, H, W] float32 in [-1, 1]."""
    if images.ndim == 3:
        images = images[None]
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_images(tensor: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] float in [-1, 1] -> [N, H, W, 3] uint8 RGB."""
    images = (tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return images.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def arcface_crops_from_aligned(crops: torch.Tensor) -> torch.Tensor:
    """[N, 3, R, R] FFHQ-aligned images in [-1, 1] -> [N, 3, 112, 112] recogniser crops (via numpy/OpenCV)."""
    matrix = ffhq_to_arcface(crops.shape[-1])
    images = to_images(crops)
    return to_tensor(np.stack([warp_crop(image, matrix, ARCFACE_SIZE) for image in images]), crops.device)


def code_fingerprint(code: IdentityCode) -> str:
    """A short stable name for a code (for reports and tests): the hash of its W+ values."""
    data = code.w_plus.detach().float().cpu().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:12]


def average_codes(codes: list[IdentityCode]) -> IdentityCode:
    """The mean of several single codes, in Z+ and in W+ (what several source photos of one person give)."""
    joined = IdentityCode.cat(codes)
    return IdentityCode(joined.z.mean(0, keepdim=True), joined.w_plus.mean(0, keepdim=True))


class IdentityBank:
    """The identity code of every track, made on first sight and kept for the track's life."""

    def __init__(self, model: StyleFace, cfg: IdentityConfig, *, source: IdentityCode | None = None,
                 mix: dict[str, IdentityCode] | None = None, device: torch.device | str = "cpu") -> None:
        unknown = set(mix or {}) - set(LEVEL_NAMES)
        if unknown:
            raise ValueError(f"unknown identity levels {sorted(unknown)}; use low, mid, high")
        self.model = model
        self.cfg = cfg
        self.source = None if source is None else source.to(device)
        self.mix = {k: v.to(device) for k, v in (mix or {}).items()}
        self.device = torch.device(device)
        self.codes: dict[Hashable, IdentityCode] = {}
        self.rejections = 0  # random draws rejected as too close to the original person

    def code_for(self, key: Hashable, target: torch.Tensor, target112: torch.Tensor) -> IdentityCode:
        """The code of the person ``key`` (a track id); ``target`` [1, 3, R, R] and ``target112``
        [1, 3, 112, 112] are that person's aligned crops in [-1, 1], used on first sight only."""
        if key not in self.codes:
            self.codes[key] = self._new_code(key, target, target112)
        return self.codes[key]

    def _new_code(self, key: Hashable, target: torch.Tensor, target112: torch.Tensor) -> IdentityCode:
        if self.source is not None:
            code = self.source
        else:
            code = self._sample_far_from(key, target, target112)
        if self.mix:
            levels = [self.mix.get(name, code) for name in LEVEL_NAMES]
            code = mix_levels(*levels)
        if self.cfg.strength < 1.0:
            own = self.model.encode_identity(target112)
            code = interpolate_w(own, code, self.cfg.strength)
        return code

    def _sample_far_from(self, key: Hashable, target: torch.Tensor, target112: torch.Tensor) -> IdentityCode:
        generator = torch.Generator(device="cpu").manual_seed(_seed_for(self.cfg.seed, key))
        original = self.model.embed(target112)  # [1, 512]
        best, best_distance = None, -1.0
        for _ in range(max(self.cfg.max_tries, 1)):
            code = self.model.sample_identity(1, generator=generator).to(self.device)
            face = self.model(target, code.w_plus)
            distance = 1.0 - float((self.model.embed(arcface_crops_from_aligned(face)) * original).sum())
            if distance > best_distance:
                best, best_distance = code, distance
            if distance >= self.cfg.min_distance:
                break
            self.rejections += 1
        assert best is not None
        return best


def _seed_for(seed: int, key: Hashable) -> int:
    digest = hashlib.sha256(repr((seed, key)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
