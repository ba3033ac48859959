"""The generative stage: align each face, give it its track's identity, run StyleFace in batches, paste back.

Crops from many frames and faces are gathered until a batch is full (``batch_size`` crops), run through
the generator in one call under ``torch.inference_mode()`` (fp16 autocast on CUDA), then scattered
back to their frames by position, and the frames leave in order. Memory is bounded by the frames that
one batch spans.

A region without landmarks (a box a reviewer drew, say) cannot be aligned: it is obfuscated instead,
so it is never left visible.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Hashable, Iterator

import numpy as np
import torch

from styleface_cli.config import GenerateConfig, ObfuscateConfig
from styleface_cli.face.align import ARCFACE_SIZE, align_face, estimate_affine, ffhq_template, warp_crop
from styleface_cli.face.blend import paste_back
from styleface_cli.face.identity import IdentityBank, code_fingerprint, to_images, to_tensor
from styleface_cli.face.obfuscate import obfuscate_frame
from styleface_cli.face.smooth import AlignmentSmoother
from styleface_cli.model import IdentityCode, StyleFace
from styleface_cli.records import Frame, FrameFaces

Stream = Iterator[tuple[Frame, FrameFaces]]


@dataclasses.dataclass
class AlignedFace:
    """One face ready for the generator: where it sits in which frame, and its crops."""

    key: Hashable  # the track id (or a per-frame key for untracked faces)
    region_index: int  # position in its frame's regions
    matrix: np.ndarray  # [2, 3] frame -> generator crop
    crop: np.ndarray  # [R, R, 3] uint8 RGB, FFHQ-aligned (the target's attributes)
    crop112: np.ndarray  # [112, 112, 3] uint8 RGB, arcface-aligned (the target's identity, first sight only)


class FaceGenerator:
    """Replaces the faces of a stream with the identities that ``bank`` gives their tracks."""

    def __init__(self, model: StyleFace, bank: IdentityBank, cfg: GenerateConfig, fallback: ObfuscateConfig) -> None:
        self.model = model
        self.bank = bank
        self.cfg = cfg
        self.fallback = fallback
        self.size = model.resolution
        self.template = ffhq_template(self.size)
        self.smoother = AlignmentSmoother(self.size, alpha=cfg.smoothing)
        self.device = torch.device(cfg.device)
        self.batch_sizes: list[int] = []  # crops per generator call, for reports and tests

    def __call__(self, stream: Stream) -> Stream:
        pending: list[tuple[Frame, FrameFaces, list[AlignedFace]]] = []
        crops = 0
        for frame, faces in stream:
            aligned = self.align(frame, faces)
            pending.append((frame, faces, aligned))
            crops += len(aligned)
            if crops >= self.cfg.batch_size:
                yield from self.flush(pending)
                pending, crops = [], 0
        yield from self.flush(pending)

    def align(self, frame: Frame, faces: FrameFaces) -> list[AlignedFace]:
        aligned = []
        for index, region in enumerate(faces.regions):
            if region.landmarks is None:
                obfuscate_frame(frame.image, [region], self.fallback)
                continue
            key: Hashable = region.track_id if region.track_id >= 0 else ("frame", frame.index, index)
            matrix = self.smoother(key, estimate_affine(region.landmarks, self.template))
            aligned.append(AlignedFace(
                key=key,
                region_index=index,
                matrix=matrix,
                crop=warp_crop(frame.image, matrix, self.size, border="reflect"),
                crop112=align_face(frame.image, region.landmarks, ARCFACE_SIZE, frame="arcface")[0],
            ))
        return aligned

    def flush(self, pending: list[tuple[Frame, FrameFaces, list[AlignedFace]]]) -> Stream:
        faces = [face for _, _, aligned in pending for face in aligned]
        generated, fingerprints = self.generate(faces)
        position = 0
        for frame, frame_faces, aligned in pending:
            for face in aligned:
                paste_back(frame.image, generated[position], face.matrix, colour_match=self.cfg.colour_match)
                region = frame_faces.regions[face.region_index]
                frame_faces.regions[face.region_index] = dataclasses.replace(region, identity=fingerprints[position])
                position += 1
            yield frame, frame_faces

    def generate(self, faces: list[AlignedFace]) -> tuple[list[np.ndarray], list[str]]:
        """Generated crops [R, R, 3] uint8 and identity fingerprints, in the order of ``faces``."""
        images: list[np.ndarray] = []
        names: list[str] = []
        autocast = (torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            for start in range(0, len(faces), self.cfg.batch_size):
                chunk = faces[start : start + self.cfg.batch_size]
                targets = to_tensor(np.stack([f.crop for f in chunk]), self.device)  # [B, 3, R, R]
                codes = [self.code(face, targets[i : i + 1]) for i, face in enumerate(chunk)]
                output = self.model(targets, IdentityCode.cat(codes).w_plus)
                self.batch_sizes.append(len(chunk))
                images.extend(to_images(output))
                names.extend(code_fingerprint(code) for code in codes)
        return images, names

    def code(self, face: AlignedFace, target: torch.Tensor) -> IdentityCode:
        return self.bank.code_for(face.key, target, to_tensor(face.crop112, self.device))
