"""Paste-back: inverse warp of the aligned crop into its frame, feathered mask, colour matching."""

from __future__ import annotations

import numpy as np

from styleface_cli.face.align import estimate_affine, ffhq_template, warp_crop
from styleface_cli.face.blend import crop_bounds, face_mask, match_colours, paste_back

LANDMARKS = np.array([[130, 120], [170, 121], [150, 145], [134, 168], [166, 167]], np.float32)


def frame_and_matrix(size=64):
    rng = np.random.default_rng(0)
    frame = cv_smooth(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    matrix = estimate_affine(LANDMARKS, ffhq_template(size))
    return frame, matrix


def cv_smooth(image):
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 3)


def test_face_mask_is_one_in_the_middle_and_zero_at_the_crop_border():
    mask = face_mask(64)
    assert mask[35, 32] == 1.0
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() < 0.05


def test_pasting_the_crop_itself_changes_almost_nothing():
    frame, matrix = frame_and_matrix()
    crop = warp_crop(frame, matrix, 64)
    out = paste_back(frame.copy(), crop, matrix, colour_match=False)
    x0, y0, x1, y1 = crop_bounds(matrix, 64, 320, 240)
    # a down- then up-sampled copy of a smooth image: small interpolation error only
    assert np.abs(out.astype(int) - frame).mean() < 2


def test_only_the_crop_area_is_touched_and_the_face_is_replaced():
    frame, matrix = frame_and_matrix()
    generated = np.zeros((64, 64, 3), np.uint8)
    generated[...] = (250, 10, 10)
    out = paste_back(frame.copy(), generated, matrix, colour_match=False)
    x0, y0, x1, y1 = crop_bounds(matrix, 64, 320, 240)
    outside = np.ones((240, 320), bool)
    outside[y0:y1, x0:x1] = False
    assert (out[outside] == frame[outside]).all()
    nose = LANDMARKS[2].astype(int)
    assert tuple(out[nose[1], nose[0]]) == (250, 10, 10)


def test_colour_matching_moves_the_statistics_to_the_original():
    rng = np.random.default_rng(1)
    original = np.clip(rng.normal(150, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    generated = np.clip(rng.normal(60, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    weight = np.ones((32, 32), np.float32)
    matched = match_colours(generated, original, weight)
    assert abs(matched.mean() - original.mean()) < 6
    assert abs(generated.mean() - original.mean()) > 60
