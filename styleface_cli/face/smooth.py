"""Temporal smoothing of each track's alignment, so the generated face sits still on a still head.

The tracker already smooths landmarks; what still jitters is the similarity transform fitted to five
noisy points (scale and angle above all). ``AlignmentSmoother`` keeps, per track, an exponential
moving average of the transform's four parameters ``(s cos a, s sin a, tx, ty)``; a jump larger than
``reset`` (relative to the face size) restarts it, so a fast move is followed at once rather than
dragged. Pure: the only state is the dict of per-track averages.
"""

from __future__ import annotations

import dataclasses
from typing import Hashable

import numpy as np


def similarity_params(matrix: np.ndarray) -> np.ndarray:
    """[2, 3] similarity -> [4] ``(a, b, tx, ty)`` with the 2x2 part ``[[a, -b], [b, a]]``."""
    return np.array([matrix[0, 0], matrix[1, 0], matrix[0, 2], matrix[1, 2]], np.float64)


def similarity_matrix(params: np.ndarray) -> np.ndarray:
    a, b, tx, ty = params
    return np.array([[a, -b, tx], [b, a, ty]], np.float64)


@dataclasses.dataclass
class AlignmentSmoother:
    size: int  # the crop size the maps produce (their translations are in crop pixels)
    alpha: float = 0.6  # weight of the new frame (1 = no smoothing)
    reset: float = 0.25  # relative change of scale/angle, or translation in crop sizes, that restarts
    state: dict[Hashable, np.ndarray] = dataclasses.field(default_factory=dict)

    def __call__(self, key: Hashable, matrix: np.ndarray) -> np.ndarray:
        """The smoothed [2, 3] frame-to-crop map for track ``key`` given this frame's fitted map."""
        params = similarity_params(matrix)
        previous = self.state.get(key)
        if previous is not None:
            scale = max(np.hypot(*previous[:2]), 1e-9)
            turn = np.abs(params[:2] - previous[:2]).max() / scale
            shift = np.hypot(*(params[2:] - previous[2:])) / self.size
            if turn < self.reset and shift < self.reset:
                params = self.alpha * params + (1.0 - self.alpha) * previous
        self.state[key] = params
        return similarity_matrix(params)
