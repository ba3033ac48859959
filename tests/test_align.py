"""Alignment geometry: similarity fits, inverses, crops of synthetic images with a known transform."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from styleface_cli.face import align


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_templates_have_the_expected_layout():
    assert align.ARCFACE_TEMPLATE_112.shape == (5, 2)
    for size in (112, 256, 1024):
        t = align.ffhq_template(size)
        assert t.shape == (5, 2)
        assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # left before right, as seen in the image
        assert t[0, 1] < t[2, 1] < t[3, 1]  # eyes above the nose above the mouth
        assert np.all((t > 0) & (t < size))
    np.testing.assert_allclose(align.ffhq_template(1024), 2 * align.ffhq_template(512))


def test_landmarks_mapped_by_the_fit_land_on_the_template():
    template = align.ffhq_template(256)
    truth = _similarity(17.0, 0.4, -30.0, 55.0)
    landmarks = align.transform_points(template, align.invert_affine(truth))
    matrix = align.estimate_affine(landmarks, template)
    np.testing.assert_allclose(align.transform_points(landmarks, matrix), template, atol=1e-9)
    np.testing.assert_allclose(matrix, truth, atol=1e-9)


def test_fit_is_least_squares_and_deterministic_with_noise():
    rng = np.random.default_rng(0)
    template = align.ARCFACE_TEMPLATE_112
    landmarks = template * 3 + 40 + rng.normal(0, 1.5, template.shape)
    first = align.estimate_affine(landmarks, template)
    assert np.array_equal(first, align.estimate_affine(landmarks, template))
    # agrees with the least-squares similarity insightface's norm_crop uses (scikit-image)
    from skimage.transform import SimilarityTransform

    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        reference = SimilarityTransform.from_estimate(landmarks, template)
    else:
        reference = SimilarityTransform()
        reference.estimate(landmarks, template)
    np.testing.assert_allclose(first, reference.params[:2], atol=1e-6)
    # never a reflection, even for mirrored landmarks
    mirrored = landmarks * [-1, 1]
    m = align.estimate_affine(mirrored, template)
    assert np.linalg.det(m[:, :2]) > 0


def test_invert_twice_is_identity_and_compose_with_inverse_is_identity():
    m = _similarity(-33.0, 2.5, 10.0, -4.0)
    np.testing.assert_allclose(align.invert_affine(align.invert_affine(m)), m, atol=1e-12)
    eye = align.compose_affine(align.invert_affine(m), m)
    np.testing.assert_allclose(eye, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_degenerate_or_misshaped_landmarks_raise():
    with pytest.raises(ValueError):
        align.estimate_affine(np.ones((5, 2)), align.ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError):
        align.estimate_affine(np.ones((4, 2)), align.ARCFACE_TEMPLATE_112)


def test_crop_of_a_synthetic_image_with_known_transform():
    size = 128
    template = align.ffhq_template(size)
    # draw dots at the template positions in the crop frame, place them in a big image with a known map
    truth = _similarity(25.0, 1.7, 60.0, 35.0)  # crop -> image
    image = np.zeros((400, 420, 3), np.uint8)
    in_image = align.transform_points(template, truth)
    for x, y in in_image:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1, lineType=cv2.LINE_AA)
    crop, matrix = align.align_face(image, in_image, size)
    assert crop.shape == (size, size, 3)
    np.testing.assert_allclose(matrix, align.invert_affine(truth), atol=1e-9)
    for x, y in template:  # each dot is found where the template says (brightness centroid)
        x0, y0 = int(x) - 5, int(y) - 5
        patch = crop[y0 : y0 + 11, x0 : x0 + 11, 0].astype(np.float64)
        ys, xs = np.mgrid[y0 : y0 + 11, x0 : x0 + 11]
        cx, cy = (patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()
        assert abs(cx - x) < 0.6 and abs(cy - y) < 0.6
    # and pasted back it covers the dots in the original image
    back = align.warp_back(crop, matrix, image.shape[1], image.shape[0])
    for x, y in in_image:
        assert back[int(round(y)), int(round(x)), 0] > 150


def test_ffhq_to_arcface_maps_one_template_onto_the_other():
    m = align.ffhq_to_arcface(256)
    np.testing.assert_allclose(align.transform_points(align.ffhq_template(256), m), align.ARCFACE_TEMPLATE_112,
                               atol=2.5)  # the templates come from different mean faces: ~2 px apart
    assert 0 < m[0, 0] < 1  # the generator frame is wider than the recogniser's


def test_affine_grid_theta_warps_like_warp_crop():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (96, 80, 3)).astype(np.float32), (0, 0), 3)
    matrix = align.ffhq_to_arcface(96, 40)  # a 96 -> 40 similarity
    matrix = matrix + np.array([[0.0, 0.02, 1.5], [-0.02, 0.0, -2.0]])  # plus a little shear: any affine
    expected = align.warp_crop(image, matrix, 40)
    theta = torch.from_numpy(align.affine_grid_theta(matrix, (80, 96), (40, 40))).float()[None]
    source = torch.from_numpy(image).permute(2, 0, 1)[None]
    grid = F.affine_grid(theta, [1, 3, 40, 40], align_corners=False)
    got = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].permute(1, 2, 0)
    inner = (slice(4, -4), slice(4, -4))  # away from the border, where the two treat outside pixels alike
    assert np.abs(got.numpy()[inner] - expected[inner]).max() < 0.5


def test_warp_crop_border_modes():
    image = np.full((20, 20, 3), 200, np.uint8)
    shifted = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]])
    assert warp_value(image, shifted, "constant") == 0
    assert warp_value(image, shifted, "reflect") == 200
    with pytest.raises(ValueError):
        align.warp_crop(image, shifted, 20, border="wrap")


def warp_value(image, matrix, border):
    return int(align.warp_crop(image, matrix, 20, border=border)[10, 2, 0])
