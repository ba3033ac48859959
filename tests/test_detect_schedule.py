"""The detection schedule: which frames are detected at which size, and that it loses no face.

Small videos are detected at their own size in every frame and enlarged (as the fixed schedule does in
every frame) only in every ``enlarged_every``-th frame; the fixture checks compare the regions a default
run records with every detection of the fixed schedule (``tests/schedule_check.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from styleface_cli import pipeline
from styleface_cli.cli.anonymize import build_config
from styleface_cli.config import DetectConfig
from styleface_cli.face.detect import DetectionPlan, create_detector, plan_detection
from styleface_cli.records import Frame
from tests.yunet import FIXTURES


def test_small_videos_are_enlarged_only_every_few_frames():
    plan = plan_detection(480, 360, DetectConfig())
    assert plan == DetectionPlan(every_frame=480, enlarged=640, stride=4)
    assert [plan.size_for(i) for i in range(9)] == [640, 480, 480, 480, 640, 480, 480, 480, 640]
    assert plan_detection(270, 480, DetectConfig()).size_for(1) == 480  # portrait: the longest side counts


@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (1920, 1080), (720, 1280)])
def test_videos_at_or_above_the_detection_size_keep_one_size_for_every_frame(size):
    plan = plan_detection(*size, DetectConfig())
    assert plan == DetectionPlan(640)
    assert {plan.size_for(i) for i in range(8)} == {640}


@pytest.mark.parametrize("cfg", [DetectConfig(schedule="fixed"), DetectConfig(enlarged_every=1), DetectConfig(max_size=0)])
def test_fixed_schedule_enlarged_every_frame_or_native_size(cfg):
    assert plan_detection(480, 270, cfg) == DetectionPlan(cfg.max_size)


def test_explicit_det_size_fixes_the_schedule():
    assert build_config(method="blur").detect == DetectConfig()
    fixed = build_config(method="blur", det_size=640).detect
    assert (fixed.max_size, fixed.schedule) == (640, "fixed")
    assert plan_detection(480, 270, fixed) == DetectionPlan(640)
    assert build_config(method="blur", det_size=0).detect.max_size == 0


class RecordingDetector:
    """Records the detection size of each call; finds nothing."""

    def __init__(self):
        self.calls: list[tuple[list[int], int | None]] = []

    def detect_batch(self, images, upright_k=0, max_size=None):
        self.calls.append(([frame.index for frame in images], max_size))
        return [[] for _ in images]


def test_batches_fill_although_the_schedule_alternates_sizes():
    """On a GPU (8 frames a call) the small-video schedule's one enlarged frame in four would otherwise cut
    every batch to 1 or 3 frames."""
    frames = [Frame(i, None, i / 10, image=np.zeros((36, 48, 3), np.uint8)) for i in range(70)]
    detector = RecordingDetector()
    plan = DetectionPlan(every_frame=48, enlarged=64, stride=4)
    out = list(pipeline.detect(iter(frames), detector, plan, batch_size=8, workers=1))
    assert [frame.index for frame, _ in out] == list(range(70))
    assert {index: size for indices, size in detector.calls for index in indices} == {i: plan.size_for(i) for i in range(70)}
    # 32-frame windows: 8 enlarged + 24 native frames = 4 full calls; the last 6 frames: 2 + 4
    assert [len(indices) for indices, _ in detector.calls] == [8, 8, 8, 8, 8, 8, 8, 8, 2, 4]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_detect_stage_gives_each_frame_its_planned_size(batch_size):
    frames = [Frame(i, None, i / 10, image=np.zeros((36, 48, 3), np.uint8)) for i in range(10)]
    detector = RecordingDetector()
    plan = DetectionPlan(every_frame=48, enlarged=64, stride=4)
    out = list(pipeline.detect(iter(frames), detector, plan, batch_size=batch_size, workers=2))
    assert [frame.index for frame, _ in out] == list(range(10))
    sizes = {index: size for indices, size in detector.calls for index in indices}
    assert sizes == {i: plan.size_for(i) for i in range(10)}
    assert all(len(indices) <= batch_size for indices, _ in detector.calls)


def test_detection_size_override_matches_a_detector_configured_with_it():
    image = np.zeros((90, 120, 3), np.uint8)
    image[30:60, 40:70] = 200
    base = create_detector(DetectConfig(max_size=640))
    assert base.detect_batch([image], max_size=120) == create_detector(DetectConfig(max_size=120)).detect_batch([image])


VIDEOS = FIXTURES / "videos"


@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["walking_small_faces.mp4", "classroom_far_faces.mp4"])
def test_adaptive_schedule_hides_every_face_the_fixed_schedule_finds(name, tmp_path):
    """The small-face clips: every detection of the fixed schedule (every frame enlarged) is hidden by
    the regions of a default run, in its own frame."""
    if not (VIDEOS / name).is_file():
        pytest.skip("../shared/fixtures not present")
    from tests.schedule_check import check_clip

    result = check_clip(VIDEOS / name, tmp_path)
    assert result.detections > 50 and result.smallest < 20  # the small faces are there to be lost
    assert result.lost_by_fixed == []
    assert result.lost_by_auto == [], result.lost_by_auto[:5]
