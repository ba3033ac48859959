"""Which frames ``styleface verify`` checks.

dlib's CNN detector costs about a second a frame on two CPU cores, so long videos are sampled: by default
every frame of a video of at most ``dense_frames`` frames (60: a short clip is checked completely), else
about one frame a second (every round(fps)-th frame), or every ``--every`` K-th frame when given. Whatever
the sampling, the first frame and the ``after_cut`` frames from every scene cut on are always checked: the
first frames of a new shot are where an anonymiser's tracker has not caught up yet.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from styleface_cli.config import VerifyConfig
from styleface_cli.face.scenecut import SAMPLE_SIZE, SceneCutDetector
from styleface_cli.records import Frame


def sampling_step(cfg: VerifyConfig, frame_count: int, fps: Fraction | float) -> int:
    """Every how many frames a frame is checked: ``cfg.every`` when set, else 1 for short videos and about
    one a second for long ones (and for videos whose length is unknown)."""
    if cfg.every > 0:
        return cfg.every
    if 0 < frame_count <= cfg.dense_frames:
        return 1
    return max(1, round(float(fps or 0)))


class FrameSampler:
    """Call it on every original frame in order; True when that frame is to be checked.

    ``cut_frames`` lists the frames checked because a scene cut starts at or just before them.
    """

    def __init__(self, cfg: VerifyConfig, step: int) -> None:
        self.step = step
        self._after_cut = cfg.after_cut
        self._cuts = SceneCutDetector(cfg.scene_cut_threshold) if cfg.scene_cut_threshold > 0 else None
        self._since_cut = cfg.after_cut  # frames since the last cut (>= after_cut: none pending)
        self.cut_frames: list[int] = []

    def __call__(self, frame: Frame) -> bool:
        if self._cuts is not None and self._cuts(frame.scaled(*SAMPLE_SIZE, nearest=True)):
            self._since_cut = 0
        sampled = frame.index % self.step == 0
        after_cut = self._since_cut < self._after_cut
        self._since_cut += 1
        if after_cut and not sampled:
            self.cut_frames.append(frame.index)
        return sampled or after_cut

    def describe(self) -> str:
        every = "every frame" if self.step == 1 else f"every {self.step}th frame"
        cuts = f" + {self._after_cut} frames from each scene cut" if self._cuts is not None else ""
        return every + cuts


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The image as a viewer sees it: turned by the video's display rotation (degrees counter-clockwise)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image
