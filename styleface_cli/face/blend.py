"""Paste-back: put a generated face (in the aligned FFHQ frame) back into its video frame.

Only the frame's area under the crop is touched: the crop is warped with the inverse of its
alignment matrix into that region of interest alone, blended through a feathered face mask, after a
colour transfer that matches the generated face's colour statistics to the original face's, so no
seam or box edge shows.

Colour matching (Reinhard et al. 2001, per channel mean and standard deviation in Lab space) is the
simplest transfer that follows lighting changes frame to frame; a track's colours follow the scene.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from styleface_cli.face.align import invert_affine, transform_points
from styleface_cli.face.obfuscate import feathered_alpha


@functools.lru_cache(maxsize=8)
def face_mask(size: int, feather: float = 0.25) -> np.ndarray:
    """[size, size] float32 in [0, 1]: the face area of an FFHQ-aligned crop, feathered at its edge.

    Fully opaque inside an ellipse from the forehead to below the chin and from cheek to cheek (eyes,
    nose and mouth of the FFHQ template well inside), so the identity-bearing area is replaced whole;
    the feather (``feather`` ellipse radii wide) lies outside that ellipse and ends inside the crop, so
    the crop's own edges never show. Same falloff as the obfuscation masks.
    """
    centre = np.array([0.5, 0.54]) * size
    axes = np.array([0.30, 0.36]) * size
    return feathered_alpha(size, size, centre, axes, feather)


def match_colours(generated: np.ndarray, original: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Move ``generated``'s per-channel Lab mean and deviation onto ``original``'s, both measured under
    ``weight`` ([h, w] float in [0, 1]). Images [h, w, 3] uint8 RGB; returns uint8 RGB."""
    w = weight[..., None].astype(np.float32)
    total = float(w.sum())
    if total < 1.0:
        return generated
    gen = cv2.cvtColor(generated, cv2.COLOR_RGB2LAB).astype(np.float32)
    orig = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)

    def stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (lab * w).sum((0, 1)) / total
        std = np.sqrt(((lab - mean) ** 2 * w).sum((0, 1)) / total) + 1e-3
        return mean, std

    gen_mean, gen_std = stats(gen)
    orig_mean, orig_std = stats(orig)
    ratio = np.clip(orig_std / gen_std, 0.5, 2.0)  # bounded: a flat generated face must not explode
    matched = (gen - gen_mean) * ratio + orig_mean
    return cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def crop_bounds(matrix: np.ndarray, size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer ROI ``x0, y0, x1, y1`` of the frame that a ``size`` crop made with ``matrix`` covers."""
    corners = transform_points(np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64), invert_affine(matrix))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def paste_back(frame: np.ndarray, generated: np.ndarray, matrix: np.ndarray, *, colour_match: bool = True,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Blend ``generated`` ([size, size, 3] uint8 RGB, the aligned crop made from ``frame`` with the forward
    map ``matrix`` [2, 3]) back into ``frame`` ([H, W, 3] uint8 RGB), in place; returns ``frame``."""
    size = generated.shape[0]
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = crop_bounds(matrix, size, width, height)
    if x1 <= x0 or y1 <= y0:
        return frame
    crop_mask = face_mask(size) if mask is None else mask
    # the inverse map into the ROI only: frame point p -> crop point M p, so ROI point q -> M (q + offset)
    to_crop = np.asarray(matrix, np.float64).copy()
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], np.float64)
    roi_size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(generated, to_crop, roi_size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(crop_mask, to_crop, roi_size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1]
    if colour_match:
        face = match_colours(face, roi, alpha)
    a = alpha[..., None]
    roi[...] = (roi.astype(np.float32) * (1.0 - a) + face.astype(np.float32) * a + 0.5).astype(np.uint8)
    return frame
