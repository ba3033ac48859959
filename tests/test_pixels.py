"""Frames that keep the decoder's YUV 4:2:0 planes: conversion, scaling, editing and hiding in the planes."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from styleface_cli.config import ObfuscateConfig
from styleface_cli.face.obfuscate import covered_mask, hide_faces, obfuscate_frame, obfuscate_planes
from styleface_cli.records import FaceRegion, Frame, RegionSource
from styleface_cli.video.pixels import YuvPixels, keeps_planes


def yuv_frame(rgb: np.ndarray) -> av.VideoFrame:
    """A yuv420p VideoFrame of an RGB image (BT.601, limited range, as untagged video is read)."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def textured(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth colour patches, like a picture (4:2:0 keeps their colours; random pixels it would not)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 216, (height // 16, width // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def region(box) -> FaceRegion:
    return FaceRegion(track_id=0, box=np.asarray(box, np.float32), landmarks=None, score=0.9, source=RegionSource.DETECTED)


def test_frame_holds_either_rgb_or_planes():
    with pytest.raises(ValueError):
        Frame(0, 0, 0.0)
    with pytest.raises(ValueError):
        Frame(0, 0, 0.0, image=np.zeros((4, 4, 3), np.uint8), yuv=YuvPixels(yuv_frame(np.zeros((4, 4, 3), np.uint8))))


def test_image_converts_the_planes_once_and_then_rgb_is_the_pixels():
    rgb = textured()
    frame = Frame(3, 3, 0.1, yuv=YuvPixels(yuv_frame(rgb)))
    assert frame.size == (160, 120) and frame.yuv is not None
    image = frame.image
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - rgb).mean() < 4  # 4:2:0 and rounding
    assert frame.yuv is None and frame.image is image


def test_scaled_from_planes_matches_scaled_from_rgb():
    rgb = textured(240, 320)
    from_planes = Frame(0, 0, 0.0, yuv=YuvPixels(yuv_frame(rgb))).scaled(160, 120)
    from_rgb = Frame(0, 0, 0.0, image=rgb).scaled(160, 120)
    assert from_planes.shape == from_rgb.shape == (120, 160, 3)
    assert np.abs(from_planes.astype(int) - from_rgb).mean() < 4
    assert Frame(0, 0, 0.0, yuv=YuvPixels(yuv_frame(rgb))).scaled(64, 36, nearest=True).shape == (36, 64, 3)


def test_only_even_sized_yuv420p_keeps_planes():
    assert keeps_planes(yuv_frame(np.zeros((10, 12, 3), np.uint8)))
    assert not keeps_planes(av.VideoFrame.from_ndarray(np.zeros((10, 12, 3), np.uint8), format="rgb24"))
    odd = av.VideoFrame(13, 10, "yuv420p")
    assert not keeps_planes(odd)
    with pytest.raises(ValueError):
        YuvPixels(odd)


def test_unedited_planes_go_to_the_encoder_as_decoded_and_edits_are_copies():
    source = yuv_frame(textured())
    before = source.to_ndarray().copy()
    pixels = YuvPixels(source)
    assert pixels.video_frame() is source and not pixels.edited
    luma, u, v = pixels.planes()
    assert luma.shape == (120, 160) and u.shape == v.shape == (60, 80)
    luma[:10] = 0
    u[:5] = 128
    assert np.array_equal(source.to_ndarray(), before)  # the decoder's buffer is never written
    out = pixels.video_frame()
    assert out is not source and out.format.name == "yuv420p" and int(out.pict_type) == 0
    assert (out.to_ndarray()[:10] == 0).all()


@pytest.mark.parametrize("box", [[40, 30, 90, 95], [-20, -10, 25, 30], [130.3, 70.7, 171.1, 131.9], [61, 41, 64, 45]])
def test_mask_in_the_planes_covers_everything_the_rgb_ellipse_covers(box):
    height, width = 120, 160
    luma = np.full((height, width), 235, np.uint8)
    u = np.full((height // 2, width // 2), 40, np.uint8)
    v = np.full((height // 2, width // 2), 200, np.uint8)
    cfg = ObfuscateConfig(method="mask")
    obfuscate_planes((luma, u, v), [region(box)], cfg, full_range=False)
    covered = covered_mask(height, width, [region(box)], cfg.mask_scale)
    assert covered.any()
    assert (luma[covered] == 16).all()  # black, limited range
    # chroma samples whose whole 2x2 block of luma is covered are neutral
    blocks = covered.reshape(height // 2, 2, width // 2, 2).all(axis=(1, 3))
    assert (u[blocks] == 128).all() and (v[blocks] == 128).all()
    # far from the face nothing changes
    far = ~cv2.dilate(covered.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert (luma[far] == 235).all()


def test_full_range_mask_is_black_at_zero():
    luma = np.full((64, 64), 255, np.uint8)
    chroma = np.full((32, 32), 128, np.uint8)
    obfuscate_planes((luma, chroma, chroma.copy()), [region([20, 20, 40, 40])], ObfuscateConfig(method="mask"), full_range=True)
    assert luma[30, 30] == 0


def test_blur_in_the_planes_looks_like_blur_in_rgb():
    checker = ((np.indices((240, 320)).sum(axis=0) // 4) % 2 * 80 - 40)[..., None]  # fine detail, like a face's
    rgb = np.clip(textured(240, 320, seed=1).astype(int) + checker, 0, 255).astype(np.uint8)
    box = [100, 60, 200, 180]
    cfg = ObfuscateConfig(method="blur")
    in_rgb = obfuscate_frame(rgb.copy(), [region(box)], cfg)
    frame = Frame(0, 0, 0.0, yuv=YuvPixels(yuv_frame(rgb)))
    hide_faces(frame, [region(box)], cfg)
    assert frame.yuv is not None and frame.yuv.edited  # hidden in the planes, never turned into RGB
    in_planes = frame.image
    covered = covered_mask(240, 320, [region(box)], cfg.mask_scale)
    difference = np.abs(in_planes.astype(int) - in_rgb.astype(int))[covered]
    assert difference.mean() < 6  # the same smooth replacement, up to 4:2:0 and rounding
    original = np.abs(rgb.astype(int) - in_rgb.astype(int))[covered].mean()
    assert original > 20  # and it is far from the face it hides


def test_hide_faces_without_regions_leaves_the_planes_unedited():
    frame = Frame(0, 0, 0.0, yuv=YuvPixels(yuv_frame(textured())))
    hide_faces(frame, [], ObfuscateConfig())
    assert not frame.yuv.edited
