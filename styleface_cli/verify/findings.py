"""Per-face checks of ``styleface verify`` and the re-identification ranking; pure functions on arrays.

untouched: the mean absolute luma difference inside the face (its inner part, where the identity is) is
compared with the codec noise of the same frame: an output is re-encoded, so even an untouched face
differs from the original a little, by as much as the rest of the frame does. The noise is measured in
16x16 blocks outside every face (each face box enlarged 2x, a little more than anonymisers' masks); the
75th percentile of the blocks' mean differences is the frame's noise level. A face is untouched when it
changed less than ``noise_factor`` times that, or less than ``min_change`` grey levels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from styleface_cli.verify.records import FaceCheck, Reidentification

BLOCK = 16  # px, side of the blocks the codec noise is measured in
MARGIN = 2.0  # face boxes are enlarged this much to exclude what an anonymiser may have hidden
NOISE_PERCENTILE = 75
INNER = 0.15  # the inner face: the box shrunk by this fraction of its size on each side


def luma(image: np.ndarray) -> np.ndarray:
    """[H, W] int16 luma of an [H, W, 3] uint8 RGB image."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.int16)


def _grow(box: np.ndarray, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return (int(max(cx - hw, 0)), int(max(cy - hh, 0)), int(min(math.ceil(cx + hw), width)),
            int(min(math.ceil(cy + hh), height)))


def codec_noise(difference: np.ndarray, boxes: list[np.ndarray]) -> float:
    """Noise level (grey levels) of a frame's absolute luma ``difference`` [H, W] outside the ``boxes``."""
    height, width = difference.shape
    rows, cols = max(height // BLOCK, 1), max(width // BLOCK, 1)
    cropped = difference[: rows * BLOCK, : cols * BLOCK].astype(np.float32)
    if cropped.shape[0] < BLOCK or cropped.shape[1] < BLOCK:
        return float(difference.mean())
    blocks = cropped.reshape(rows, BLOCK, cols, BLOCK).mean(axis=(1, 3))  # [rows, cols]
    outside = np.ones((rows, cols), bool)
    for box in boxes:
        x0, y0, x1, y1 = _grow(box, MARGIN, width, height)
        outside[y0 // BLOCK : -(-y1 // BLOCK), x0 // BLOCK : -(-x1 // BLOCK)] = False
    values = blocks[outside] if outside.any() else blocks.ravel()
    return float(np.percentile(values, NOISE_PERCENTILE))


def face_change(difference: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute luma difference (grey levels) inside the inner face of ``box``."""
    height, width = difference.shape
    x0, y0, x1, y1 = _grow(box, 1.0 - 2 * INNER, width, height)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float(difference[y0:y1, x0:x1].mean())


def is_untouched(change: float, noise: float, noise_factor: float, min_change: float) -> bool:
    return change < max(noise_factor * noise, min_change)


def rank_own_originals(originals: np.ndarray, outputs: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[N] int: for each output descriptor ``outputs[i]`` ([N, 128]), the rank (1 = nearest) of its own
    original ``originals[i]`` among all N originals ([N, 128]); ties count against it. Rows are ranked
    ``chunk`` at a time, so memory stays at ``chunk`` x N distances."""
    ranks = np.empty(len(outputs), np.int64)
    gallery_norms = (originals**2).sum(axis=1)  # [N]
    for start in range(0, len(outputs), chunk):
        rows = outputs[start : start + chunk]
        squared = (rows**2).sum(axis=1)[:, None] + gallery_norms[None, :] - 2.0 * rows @ originals.T
        distances = np.sqrt(np.clip(squared, 0.0, None))  # [chunk, N]
        own = distances[np.arange(len(rows)), np.arange(start, start + len(rows))][:, None]
        ranks[start : start + len(rows)] = (distances < own).sum(axis=1) + (distances == own).sum(axis=1)
    return ranks


def reidentification(faces: list[FaceCheck], originals: np.ndarray, outputs: np.ndarray) -> tuple[list[FaceCheck], Reidentification]:
    """Rank every output face against the gallery of all original faces of the file; the faces get their
    ``reid_rank``, the summary the rank-1 rate, its chance level (1/N) and a one-sided binomial p-value."""
    import dataclasses

    from scipy.stats import binomtest

    count = len(faces)
    if count == 0:
        return faces, Reidentification(faces=0, gallery=0, rank1=0, chance=0.0, p_value=1.0)
    ranks = rank_own_originals(originals, outputs)
    ranked = [dataclasses.replace(face, reid_rank=int(rank)) for face, rank in zip(faces, ranks)]
    rank1 = int((ranks == 1).sum())
    chance = 1.0 / count
    p_value = binomtest(rank1, count, chance, alternative="greater").pvalue if count > 1 else 1.0
    return ranked, Reidentification(faces=count, gallery=count, rank1=rank1, chance=chance, p_value=float(p_value))
