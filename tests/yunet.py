"""An independent face detector for evaluation only: YuNet from ../shared/models (not shipped).

``coverage_failures`` checks that every face YuNet finds in an input frame is hidden by the regions
styleface recorded for that frame.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = SHARED / "models" / "yunet_n_dynamic.onnx"
FIXTURES = SHARED / "fixtures"
# YuNet's own default is 0.9; 0.8 keeps the hard faces (profiles, small ones) it is less sure of.
SCORE_THRESHOLD = 0.8


@functools.lru_cache(maxsize=8)
def _detector(width: int, height: int):
    return cv2.FaceDetectorYN.create(str(MODEL), "", (width, height), SCORE_THRESHOLD, 0.3, 5000)


def yunet_faces(image_rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Faces as (box [4] xyxy, landmarks [5, 2], score) in an RGB uint8 image."""
    height, width = image_rgb.shape[:2]
    detector = _detector(width, height)
    _, faces = detector.detect(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    out = []
    for row in faces if faces is not None else []:
        x, y, w, h = row[:4]
        out.append((np.array([x, y, x + w, y + h], np.float32), row[4:14].reshape(5, 2).astype(np.float32), float(row[14])))
    return out


def uncovered(face_box: np.ndarray, landmarks: np.ndarray, covered: np.ndarray) -> str | None:
    """Why a face counts as visible under the ``covered`` mask [H, W] bool, or None when it is hidden.

    Hidden means: all 5 landmarks (eyes, nose, mouth corners) lie in the covered area, and at least
    80% of the inner face (the box shrunk by 15% on each side, where the identity is) is covered.
    """
    height, width = covered.shape
    for x, y in landmarks:
        xi, yi = int(np.clip(x, 0, width - 1)), int(np.clip(y, 0, height - 1))
        if not covered[yi, xi]:
            return f"landmark ({x:.0f}, {y:.0f}) visible"
    x0, y0, x1, y1 = face_box
    dx, dy = 0.15 * (x1 - x0), 0.15 * (y1 - y0)
    xa, ya = int(max(x0 + dx, 0)), int(max(y0 + dy, 0))
    xb, yb = int(min(x1 - dx, width)), int(min(y1 - dy, height))
    if xb > xa and yb > ya:
        fraction = covered[ya:yb, xa:xb].mean()
        if fraction < 0.8:
            return f"only {fraction:.0%} of the inner face covered"
    return None
