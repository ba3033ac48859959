"""benchmarks/bench_quality.py: its geometry on synthetic points, and an end-to-end run on a tiny random
checkpoint over the shared fixtures (skipped without them or without dlib)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_quality  # noqa: E402

from styleface_cli.face.match import dlib_available  # noqa: E402


def _project(yaw: float, pitch: float, roll: float, size: int = 320) -> np.ndarray:
    """68 image points whose six pose points are the generic face seen at these angles (degrees)."""
    rx, ry, rz = (math.radians(a) for a in (pitch, yaw, roll))
    rot_x = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    rot_y = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    rot_z = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    rotation = rot_z @ rot_y @ rot_x  # the order cv2.RQDecomp3x3 decomposes into
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    rvec, _ = cv2.Rodrigues(rotation)
    image, _ = cv2.projectPoints(bench_quality.POSE_MODEL, rvec, np.array([0.0, 0.0, 2000.0]), camera, np.zeros(4))
    points = np.zeros((68, 2))
    points[list(bench_quality.POSE_POINTS)] = image.reshape(-1, 2)
    return points


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, -10, 5), (-30, 15, -8)])
def test_head_pose_recovers_known_angles(angles):
    np.testing.assert_allclose(bench_quality.head_pose(_project(*angles), 320), angles, atol=0.5)


def test_expression_descriptor_ignores_position_scale_and_in_plane_rotation():
    rng = np.random.default_rng(0)
    points = rng.uniform(50, 250, (68, 2))
    points[36], points[45] = (100, 120), (200, 122)
    angle = 0.4
    moved = 1.7 * points @ np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]).T + 30
    np.testing.assert_allclose(bench_quality.expression_descriptor(moved), bench_quality.expression_descriptor(points),
                               atol=1e-9)
    mouth_open = points.copy()
    mouth_open[57] += (0, 20)  # lower lip down by a fifth of the eye distance
    diff = bench_quality.expression_descriptor(mouth_open) - bench_quality.expression_descriptor(points)
    assert np.linalg.norm(diff, axis=1).max() > 0.15


@pytest.mark.skipif(not (bench_quality.FIXTURES / "photos").is_dir(), reason="../shared/fixtures not present")
@pytest.mark.skipif(not dlib_available(), reason="dlib not installed")
def test_benchmark_runs_end_to_end_on_a_tiny_random_checkpoint(tmp_path, capsys):
    from styleface_cli.model import StyleFaceConfig, init_checkpoint

    checkpoint = tmp_path / "tiny.safetensors"
    init_checkpoint(StyleFaceConfig.tiny(32), checkpoint, seed=0)
    result = bench_quality.main([str(checkpoint), "--faces", "3", "--swap-faces", "2", "--frames", "3"])
    printed = capsys.readouterr().out
    assert "pose error, de-id" in printed and "temporal, swap: identity jitter" in printed
    assert result["swap"]["pairs"] == 2 and result["deid"]["faces"] == 3
    for part in ("swap", "deid"):
        assert np.isfinite(result[part]["pose_error"]) and result[part]["pose_error"] >= 0
        assert np.isfinite(result[part]["expression_error"]) and result[part]["expression_error"] >= 0
    assert -1 <= result["swap"]["cos_to_source"] <= 1 and 0 <= result["swap"]["source_match_rate"] <= 1
    assert 0 <= result["deid"]["matches_original"] + result["deid"]["matches_someone_else"] <= 1
    assert set(result["deid"]["matched_to"]) and result["temporal"]["frames"] >= 2
    assert np.isfinite(result["temporal"]["swap"]["landmark_jitter_ratio"])


@pytest.mark.skipif(not (bench_quality.FIXTURES / "photos").is_dir(), reason="../shared/fixtures not present")
@pytest.mark.skipif(not dlib_available(), reason="dlib not installed")
def test_a_model_that_returns_its_target_scores_perfect_geometry_and_no_anonymity(tmp_path, monkeypatch):
    from styleface_cli.model import StyleFaceConfig, init_checkpoint

    checkpoint = tmp_path / "tiny.safetensors"
    init_checkpoint(StyleFaceConfig.tiny(32), checkpoint, seed=0)
    monkeypatch.setattr(bench_quality.Model, "render", lambda self, targets, w_plus: [t.copy() for t in targets])
    result = bench_quality.evaluate(checkpoint=checkpoint, recognizer_name="dlib", faces_limit=3, swap_faces=2,
                                    clip=None, frames=0)
    deid, swap = result["deid"], result["swap"]
    assert deid["pose_error"] == 0 and deid["expression_error"] == 0
    assert deid["matches_original"] == 1 and deid["matches_someone_else"] == 0
    assert swap["cos_to_target"] == pytest.approx(1.0) and swap["pose_error"] == 0
    assert result["temporal"] is None
