"""Obfuscation: geometry of the covering ellipse, the three methods, and that faces become unrecognisable."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from styleface_cli.config import DetectConfig, ObfuscateConfig
from styleface_cli.face.detect import create_detector
from styleface_cli.face.obfuscate import covered_mask, ellipse_geometry, feathered_alpha, obfuscate_frame
from styleface_cli.records import FaceRegion, RegionSource
from tests import recognition
from tests.test_detect import insightface_photo


def region(box) -> FaceRegion:
    return FaceRegion(track_id=0, box=np.asarray(box, np.float32), landmarks=None, score=1.0, source=RegionSource.DETECTED)


def textured(height=120, width=160, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_ellipse_geometry_applies_the_safety_margin():
    centre, axes = ellipse_geometry(np.array([10, 20, 50, 80]), 1.5)
    assert np.allclose(centre, [30, 50]) and np.allclose(axes, [30, 45])


def test_feathered_alpha_is_one_inside_zero_far_outside_and_monotonic():
    alpha = feathered_alpha(101, 101, np.array([50.5, 50.5]), np.array([20.0, 30.0]), 0.2)
    assert alpha[50, 50] == 1.0 and alpha[50, 50 + 19] == 1.0  # inside the ellipse: fully opaque
    assert alpha[50, 50 + 25] == 0.0  # beyond 1.2 radii: untouched
    row = alpha[50, 50:]
    assert (np.diff(row) <= 0).all()
    assert 0 < alpha[50, 50 + 22] < 1  # the feather lies outside the ellipse


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_methods_change_inside_and_keep_outside(method):
    image = textured()
    original = image.copy()
    cfg = ObfuscateConfig(method=method, mask_scale=1.3, feather=0.1)
    box = [60, 30, 100, 80]
    obfuscate_frame(image, [region(box)], cfg)
    inside = covered_mask(*image.shape[:2], [region(box)], cfg.mask_scale)
    assert inside.sum() > 0.7 * 40 * 50
    changed = np.abs(image.astype(int) - original).sum(axis=2) > 0
    assert changed[inside].mean() > 0.95
    # beyond the feather nothing moves
    far = np.ones(image.shape[:2], bool)
    far[30 - 20 : 80 + 20, 60 - 20 : 100 + 20] = False
    assert (image[far] == original[far]).all()
    if method == "mask":
        assert (image[inside] == 0).all()


def test_pixelate_leaves_few_distinct_blocks_across_the_face():
    image = textured(200, 200)
    cfg = ObfuscateConfig(method="pixelate", mask_scale=1.3, feather=0.0)
    obfuscate_frame(image, [region([50, 50, 150, 150])], cfg)
    row = image[100, 70:130, 0]
    assert len(np.unique(row)) <= 8


def test_blur_removes_fine_detail():
    image = textured(200, 200)
    cfg = ObfuscateConfig(method="blur")
    before = cv2.Laplacian(image[80:120, 80:120, 0], cv2.CV_32F).var()
    obfuscate_frame(image, [region([50, 50, 150, 150])], cfg)
    after = cv2.Laplacian(image[80:120, 80:120, 0], cv2.CV_32F).var()
    assert after < 0.01 * before


def test_regions_at_the_frame_border_are_clipped():
    image = textured(50, 60)
    obfuscate_frame(image, [region([-20, -10, 15, 20]), region([50, 40, 90, 80])], ObfuscateConfig())
    assert image.shape == (50, 60, 3)


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_obfuscated_faces_cannot_be_recognised(method):
    """dlib's recogniser (independent of styleface) no longer matches any hidden face to its original,
    while it does match each original to itself after a mild change (JPEG round trip): the test can
    tell a recognisable face from an unrecognisable one."""
    photo = insightface_photo()
    found = create_detector(DetectConfig(threshold=0.2)).detect(photo)
    assert len(found) == 6
    hidden = obfuscate_frame(photo.copy(), [region(d.box) for d in found], ObfuscateConfig(method=method))
    _, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 60])
    recompressed = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    for det in found:
        original = recognition.descriptor(photo, det.box)
        assert recognition.distance(original, recognition.descriptor(recompressed, det.box)) < recognition.SAME_PERSON
        assert recognition.distance(original, recognition.descriptor(hidden, det.box)) > recognition.SAME_PERSON
