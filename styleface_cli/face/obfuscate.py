"""Obfuscation: hide each face region behind a feathered ellipse of blur, pixels or a solid mask.

The ellipse is centred on the face box and ``mask_scale`` times its size (the safety margin). Inside
the ellipse the replacement is fully opaque; the feather lies *outside* it, so softening the edge never
uncovers any part of the protected region.

All work happens on the region of interest around each face, never on the whole frame, so the cost
grows with the faces' area and not with the video's resolution.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from styleface_cli.config import ObfuscateConfig
from styleface_cli.records import FaceRegion, Frame, FrameFaces

METHODS = ("blur", "pixelate", "mask")
# How many samples across the face survive: 5 is far below what face recognisers need (they see
# 112 px; below ~16 px identification collapses) yet keeps the blur looking like a face-coloured smudge.
BLUR_SAMPLES_ACROSS = 5
PIXELATE_BLOCKS_ACROSS = 5
MASK_COLOUR = (0, 0, 0)


def ellipse_geometry(box: np.ndarray, mask_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``[2]`` and semi-axes ``[2]`` (pixels) of the covering ellipse of a face box ``[4]`` xyxy."""
    box = np.asarray(box, np.float64)
    centre = (box[:2] + box[2:]) / 2
    axes = np.maximum((box[2:] - box[:2]) / 2 * mask_scale, 1.0)
    return centre, axes


def feathered_alpha(height: int, width: int, centre: np.ndarray, axes: np.ndarray, feather: float) -> np.ndarray:
    """[height, width] float32 in [0, 1]: 1 inside the ellipse, a soft falloff of ``feather`` x size outside.

    ``centre`` is in the coordinates of this (region-of-interest) array.
    """
    # distance in "ellipse radii": 1.0 on the ellipse's border (float32 and in place: this runs per face per frame)
    ys = (np.arange(height, dtype=np.float32)[:, None] + np.float32(0.5 - centre[1])) / np.float32(axes[1])
    xs = (np.arange(width, dtype=np.float32)[None, :] + np.float32(0.5 - centre[0])) / np.float32(axes[0])
    radius = cv2.sqrt(ys * ys + xs * xs)
    if feather <= 0:
        return (radius <= 1.0).astype(np.float32)
    # 1 - (r - 1) / feather, clipped to [0, 1]
    radius *= np.float32(-1.0 / feather)
    radius += np.float32(1.0 + 1.0 / feather)
    return np.clip(radius, 0.0, 1.0, out=radius)


def region_bounds(centre: np.ndarray, axes: np.ndarray, feather: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer ROI ``x0, y0, x1, y1`` (clipped to the frame) that holds the ellipse and its feather."""
    reach = axes * (1.0 + max(feather, 0.0)) + 1
    x0, y0 = np.floor(centre - reach).astype(int)
    x1, y1 = np.ceil(centre + reach).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _replacement(roi: np.ndarray, face_size: float, cfg: ObfuscateConfig, fill: tuple[int, ...]) -> np.ndarray:
    """What the face is replaced by, for an ROI [h, w, C] or [h, w] uint8 around a face ``face_size`` px
    across (in the ROI's own pixels); ``fill`` is the mask colour in the ROI's channels."""
    height, width = roi.shape[:2]
    if cfg.method == "mask":
        return np.full_like(roi, fill if roi.ndim == 3 else fill[0])
    if cfg.method == "pixelate":
        block = max(face_size / (PIXELATE_BLOCKS_ACROSS / max(cfg.strength, 1e-3)), 2.0)
        small = _shrink(roi, max(1, round(width / block)), max(1, round(height / block)))
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    if cfg.method == "blur":
        # Average down to a few samples across the face (that is what destroys identity), soften them
        # there, and scale back up smoothly: the cost is that of the small image, not of a wide kernel.
        step = max(face_size / (BLUR_SAMPLES_ACROSS / max(cfg.strength, 1e-3)), 2.0)
        small = _shrink(roi, max(1, round(width / step)), max(1, round(height / step)))
        small = cv2.GaussianBlur(small, (0, 0), sigmaX=0.6, sigmaY=0.6, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    raise ValueError(f"unknown obfuscation method {cfg.method!r}")


def _shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``image`` down to ``width x height``. OpenCV's area resampling is about 10x faster for
    whole-number factors, so most of the reduction is done by one, on the image less its last few rows and
    columns (under half an output sample), and the rest on the small result."""
    factor = min(image.shape[1] // width, image.shape[0] // height) // 2
    if factor >= 2:
        rows, cols = image.shape[0] // factor, image.shape[1] // factor
        image = cv2.resize(image[: rows * factor, : cols * factor], (cols, rows), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def obfuscate_frame(image: np.ndarray, regions: Iterable[FaceRegion], cfg: ObfuscateConfig) -> np.ndarray:
    """Hide every region of one frame. ``image`` [H, W, 3] uint8 RGB is modified in place and returned."""
    height, width = image.shape[:2]
    for region in regions:
        centre, axes = ellipse_geometry(region.box, cfg.mask_scale)
        x0, y0, x1, y1 = region_bounds(centre, axes, cfg.feather, width, height)
        if x1 <= x0 or y1 <= y0:
            continue
        alpha = feathered_alpha(y1 - y0, x1 - x0, centre - (x0, y0), axes, cfg.feather)
        face_size = float(np.max(region.box[2:] - region.box[:2]))
        _blend(image[y0:y1, x0:x1], alpha, face_size, cfg, MASK_COLOUR)
    return image


def obfuscate_planes(planes: tuple[np.ndarray, np.ndarray, np.ndarray], regions: Iterable[FaceRegion],
                     cfg: ObfuscateConfig, full_range: bool) -> None:
    """Hide every region in a frame's YUV 4:2:0 planes (Y ``[H, W]``, U and V ``[H/2, W/2]`` uint8, even
    ``H`` and ``W``), in place.

    Each plane gets what ``obfuscate_frame`` does to RGB, at its own resolution: blurring, pixelating and
    masking are linear in the pixels, so the result matches the RGB path up to rounding, for half the
    samples and no colour conversion. The ellipse's alpha is computed once per face on the chroma grid
    and enlarged 2x for Y; that alpha belongs to an ellipse grown by ``_UPSAMPLING_REACH`` pixels, so
    that every luma pixel of the true ellipse interpolates between samples that are all fully opaque:
    everything ``obfuscate_frame`` hides fully is hidden fully here too.
    """
    luma, u, v = planes
    height, width = luma.shape
    black = 0 if full_range else 16  # the mask colour, black: Y at its floor, neutral chroma
    for region in regions:
        box = np.asarray(region.box, np.float64)
        centre, axes = ellipse_geometry(box, cfg.mask_scale)
        grown = axes * (1.0 + _UPSAMPLING_REACH / float(axes.min()))  # contains the ellipse widened by the reach
        # a luma ROI with even edges, so the chroma ROI is exactly half of it
        reach = grown * (1.0 + max(cfg.feather, 0.0)) + 2
        x0, y0 = (np.floor((centre - reach) / 2).astype(int) * 2).clip(0)
        x1, y1 = np.minimum(np.ceil((centre + reach) / 2).astype(int) * 2, (width, height))
        if x1 <= x0 or y1 <= y0:
            continue
        # alpha at the chroma samples (centre of each 2x2 block of luma), then bilinear for Y
        chroma_alpha = feathered_alpha((y1 - y0) // 2, (x1 - x0) // 2, (centre - (x0, y0)) / 2, grown / 2, cfg.feather)
        luma_alpha = cv2.resize(chroma_alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        face_size = float(np.max(box[2:] - box[:2]))
        _blend(luma[y0:y1, x0:x1], luma_alpha, face_size, cfg, (black,))
        for chroma in (u, v):
            _blend(chroma[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], chroma_alpha, face_size / 2, cfg, (128,))


# How far (in luma pixels) the samples that 2x bilinear enlarging mixes into a pixel can lie from it.
_UPSAMPLING_REACH = 2.0 * np.sqrt(2.0)


def _blend(roi: np.ndarray, alpha: np.ndarray, face_size: float, cfg: ObfuscateConfig, fill: tuple[int, ...]) -> None:
    """Mix the replacement into ``roi`` (a view, changed in place) with per-pixel weights ``alpha``."""
    hidden = _replacement(roi, face_size, cfg, fill)
    roi[...] = cv2.blendLinear(hidden, roi, alpha, 1.0 - alpha)  # per-pixel mix, rounded, in one pass


def hide_faces(frame: Frame, regions: list[FaceRegion], cfg: ObfuscateConfig) -> None:
    """Hide ``regions`` in ``frame``: in its YUV planes while it holds them, else in its RGB image."""
    if not regions:
        return
    if frame.yuv is not None:
        obfuscate_planes(frame.yuv.planes(), regions, cfg, frame.yuv.full_range)
    else:
        obfuscate_frame(frame.image, regions, cfg)


def covered_mask(height: int, width: int, regions: Iterable[FaceRegion], mask_scale: float) -> np.ndarray:
    """[height, width] bool: pixels fully hidden (alpha 1) by the regions; used by checks and tests."""
    mask = np.zeros((height, width), bool)
    for region in regions:
        centre, axes = ellipse_geometry(region.box, mask_scale)
        x0, y0, x1, y1 = region_bounds(centre, axes, 0.0, width, height)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] |= feathered_alpha(y1 - y0, x1 - x0, centre - (x0, y0), axes, 0.0) >= 1.0
    return mask


def obfuscate_stream(stream: Iterator[tuple[Frame, FrameFaces]], cfg: ObfuscateConfig) -> Iterator[tuple[Frame, FrameFaces]]:
    """The hiding stage for the obfuscation methods: every region of every frame."""
    for frame, faces in stream:
        hide_faces(frame, faces.regions, cfg)
        yield frame, faces
