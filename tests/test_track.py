"""Tracker on synthetic trajectories: ids, coverage through misses, back-fill, scene cuts, containment."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from styleface_cli.config import TrackConfig
from styleface_cli.errors import ConfigError
from styleface_cli.face import track as track_module
from styleface_cli.face.track import Tracker, box_union, expand_box, iou_matrix
from styleface_cli.records import Detection, FrameFaces, RegionSource

# Where the five landmarks sit inside a face box (relative), as a detector would put them.
_LANDMARKS_IN_BOX = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])


def _box(x: float, y: float, size: float = 60.0) -> np.ndarray:
    return np.array([x, y, x + size, y + size], dtype=np.float32)


def _det(box: np.ndarray, landmarks: bool = True, score: float = 0.9) -> Detection:
    lm = None
    if landmarks:
        lm = (box[:2] + _LANDMARKS_IN_BOX * (box[2:] - box[:2])).astype(np.float32)
    return Detection(box=box, score=score, landmarks=lm)


def _run(cfg: TrackConfig, frames: list[list[Detection]], cuts: frozenset[int] = frozenset()) -> list[FrameFaces]:
    """Push every frame (index = position), flush, and check the streaming contract on the way."""
    tracker = Tracker(cfg)
    assert tracker.delay == cfg.backfill
    out: list[FrameFaces] = []
    for index, detections in enumerate(frames):
        released = tracker.push(index, detections, scene_cut=index in cuts)
        out += released
        assert len(out) >= index + 1 - cfg.backfill  # never held back more than the look-behind
    out += tracker.flush()
    assert [f.frame_index for f in out] == list(range(len(frames)))  # in order, each exactly once
    assert tracker.flush() == []
    return out


def _contains(outer: np.ndarray, inner: np.ndarray, tolerance: float = 0.0) -> bool:
    return bool(np.all(outer[:2] <= inner[:2] + tolerance) and np.all(outer[2:] >= inner[2:] - tolerance))


def _only(frame: FrameFaces):
    assert len(frame.regions) == 1, frame
    return frame.regions[0]


def test_iou_matrix_known_values_and_shapes():
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110], [3, 3, 3, 3]], dtype=np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 0.0])
    np.testing.assert_allclose(iou[1], [100 / 400, 100 / 400, 0.0, 0.0])
    np.testing.assert_allclose(iou_matrix(b, a), iou.T)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (2, 0)


def test_expand_and_union_boxes():
    np.testing.assert_allclose(expand_box(np.array([40, 40, 60, 80]), 2.0, 100, 100), [30, 20, 70, 100])
    np.testing.assert_allclose(expand_box(np.array([0, 0, 20, 20]), 2.0, 100, 100), [0, 0, 30, 30])
    u = box_union(np.array([0, 5, 10, 10]), np.array([2, 0, 12, 8]))
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [0, 0, 12, 10])


@pytest.mark.parametrize("backfill", [0, 4])
@pytest.mark.parametrize("gap", [1, 3, 8])
def test_dropped_detections_are_predicted_and_keep_the_id(gap, backfill):
    cfg = TrackConfig(max_age=8, backfill=backfill)
    truth = [_box(50 + 4 * i, 80 + 2 * i) for i in range(40)]  # a face moving steadily
    dropped = set(range(15, 15 + gap))
    frames = [[] if i in dropped else [_det(b)] for i, b in enumerate(truth)]
    out = _run(cfg, frames)
    regions = [_only(f) for f in out]
    assert {r.track_id for r in regions} == {0}
    for i, region in enumerate(regions):
        if i in dropped:
            assert region.source is RegionSource.PREDICTED
            # the constant-velocity prediction follows the face: the covered box (prediction joined
            # with the last detection) holds the true face and is not much larger than the gap travelled
            assert _contains(region.box, truth[i], tolerance=2.0)
            last_seen = truth[min(dropped) - 1]
            assert iou_matrix(region.box[None], box_union(truth[i], last_seen)[None])[0, 0] > 0.8
            if backfill:  # found again while the gap was held back: the gap box also holds the interpolation
                assert _contains(region.box, truth[i], tolerance=1e-3)
        else:
            assert region.source is RegionSource.DETECTED
            assert _contains(region.box, truth[i])


def test_track_ends_after_max_age():
    cfg = TrackConfig(max_age=5, backfill=0)
    truth = [_box(100 + 2 * i, 100) for i in range(40)]
    frames = [[_det(b)] if i < 10 or i >= 25 else [] for i, b in enumerate(truth)]
    out = _run(cfg, frames)
    for i in range(10, 15):
        assert _only(out[i]).source is RegionSource.PREDICTED
        assert _only(out[i]).track_id == 0
    for i in range(15, 25):
        assert out[i].regions == []  # the track has ended
    assert {r.track_id for f in out[25:] for r in f.regions} == {1}  # a new track, not the old one


def test_track_ends_after_max_age_but_backfill_still_covers_before_a_new_detection():
    cfg = TrackConfig(max_age=5, backfill=3)
    truth = [_box(100, 100) for _ in range(40)]
    frames = [[_det(b)] if i < 10 or i >= 25 else [] for i, b in enumerate(truth)]
    out = _run(cfg, frames)
    assert [r.source for i in range(10, 15) for r in out[i].regions] == [RegionSource.PREDICTED] * 5
    assert all(out[i].regions == [] for i in range(15, 22))
    for i in range(22, 25):
        region = _only(out[i])
        assert (region.track_id, region.source) == (1, RegionSource.BACKFILLED)


def test_crossing_faces_keep_distinct_ids():
    cfg = TrackConfig()
    n = 40
    left_to_right = [_box(20 + 12 * i, 100) for i in range(n)]
    right_to_left = [_box(20 + 12 * (n - 1 - i), 125) for i in range(n)]
    frames = [[_det(a), _det(b)] for a, b in zip(left_to_right, right_to_left)]
    out = _run(cfg, frames)
    ids_a, ids_b = set(), set()
    for i, frame in enumerate(out):
        assert len(frame.regions) == 2
        ids = [r.track_id for r in frame.regions]
        assert len(set(ids)) == 2
        for region in frame.regions:
            (ids_a if _contains(region.box, left_to_right[i]) else ids_b).add(region.track_id)
    assert ids_a == {0} and ids_b == {1}


@pytest.mark.parametrize("min_hits", [2, 3])  # with min_hits=1 one detection confirms a track
def test_single_frame_detection_appears_in_exactly_that_frame(min_hits):
    cfg = TrackConfig(min_hits=min_hits, backfill=0)
    frames: list[list[Detection]] = [[] for _ in range(20)]
    box = _box(10, 20)
    frames[7] = [_det(box)]
    out = _run(cfg, frames)
    for i, frame in enumerate(out):
        if i == 7:
            region = _only(frame)
            assert region.source is RegionSource.DETECTED and region.track_id == 0
            np.testing.assert_array_equal(region.box, box)
        else:
            assert frame.regions == []


def test_single_frame_detection_is_backfilled_but_never_carried_forward():
    cfg = TrackConfig(backfill=4, min_hits=2)  # an unconfirmed track: not carried through misses
    frames: list[list[Detection]] = [[] for _ in range(20)]
    frames[7] = [_det(_box(10, 20))]
    out = _run(cfg, frames)
    assert _only(out[7]).source is RegionSource.DETECTED
    assert [_only(out[i]).source for i in range(3, 7)] == [RegionSource.BACKFILLED] * 4
    assert all(out[i].regions == [] for i in list(range(3)) + list(range(8, 20)))


def test_backfill_covers_the_frames_before_the_first_detection():
    cfg = TrackConfig(backfill=4)
    first = _box(200, 100)
    frames = [[] for _ in range(10)] + [[_det(_box(200 + 3 * i, 100))] for i in range(10)]
    out = _run(cfg, frames)
    assert all(out[i].regions == [] for i in range(6))
    for i in range(6, 10):
        region = _only(out[i])
        assert (region.track_id, region.source) == (0, RegionSource.BACKFILLED)
        np.testing.assert_array_equal(region.box, first)
        assert region.landmarks is not None
    assert _only(out[10]).source is RegionSource.DETECTED


def test_backfill_does_not_reach_across_a_scene_cut():
    cfg = TrackConfig(backfill=4)
    frames = [[] for _ in range(10)] + [[_det(_box(200, 100))] for _ in range(5)]
    out = _run(cfg, frames, cuts=frozenset({8}))
    assert out[6].regions == [] and out[7].regions == []
    assert [_only(out[i]).source for i in (8, 9)] == [RegionSource.BACKFILLED] * 2


def test_scene_cut_ends_every_track():
    cfg = TrackConfig(max_age=8, backfill=4)
    frames = [[_det(_box(100, 100)), _det(_box(300, 100))] for _ in range(10)]
    frames += [[] for _ in range(3)]  # the shot after the cut: nobody detected for a while
    frames += [[_det(_box(100, 100))] for _ in range(5)]  # then a face at the very same place
    out = _run(cfg, frames, cuts=frozenset({10}))
    assert {r.track_id for f in out[:10] for r in f.regions} == {0, 1}
    assert {r.source for f in out[:10] for r in f.regions} == {RegionSource.DETECTED}
    # no predicted box dragged across the cut; the back-fill reaches the cut (frame 10), not before
    assert [_only(out[i]).source for i in (10, 11, 12)] == [RegionSource.BACKFILLED] * 3
    assert {r.track_id for f in out[10:] for r in f.regions} == {2}
    assert all(r.source is not RegionSource.PREDICTED for f in out[10:] for r in f.regions)


def test_detection_on_the_cut_frame_starts_a_new_track():
    cfg = TrackConfig()
    frames = [[_det(_box(100, 100))] for _ in range(20)]
    out = _run(cfg, frames, cuts=frozenset({10}))
    assert [_only(f).track_id for f in out] == [0] * 10 + [1] * 10


def test_unconfirmed_track_missed_for_a_frame_is_filled_in_hindsight():
    cfg = TrackConfig(min_hits=3, backfill=2)
    frames: list[list[Detection]] = [[] for _ in range(12)]
    frames[5] = [_det(_box(100, 100))]
    frames[7] = [_det(_box(110, 100))]
    frames[8] = [_det(_box(115, 100))]
    out = _run(cfg, frames)
    gap = _only(out[6])
    assert (gap.track_id, gap.source) == (0, RegionSource.BACKFILLED)
    np.testing.assert_allclose(gap.box, _box(105, 100))
    assert gap.landmarks is not None
    assert [_only(out[i]).track_id for i in (5, 7, 8)] == [0, 0, 0]


def test_streaming_contract_with_sparse_frame_indices():
    tracker = Tracker(TrackConfig(backfill=3))
    released = []
    for index in (0, 2, 5, 6, 10, 11):
        released += tracker.push(index, [_det(_box(5 * index, 0))])
        assert len(released) == max(0, [0, 2, 5, 6, 10, 11].index(index) + 1 - 3)
    released += tracker.flush()
    assert [f.frame_index for f in released] == [0, 2, 5, 6, 10, 11]
    with pytest.raises(ValueError):
        tracker.push(11, [])


@pytest.mark.parametrize("smoothing", [0.0, 0.5, 0.9])
def test_every_raw_detection_is_inside_a_covered_box_of_its_frame(smoothing):
    cfg = TrackConfig(smoothing=smoothing, backfill=2, min_hits=2)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(200):
        detections = []
        for k, (x0, vx, y0) in enumerate([(50, 3, 50), (600, -4, 60), (300, 0.5, 300)]):
            if rng.random() < 0.2:  # the detector misses faces now and then
                continue
            jitter = rng.normal(0, 3, 4)  # and its boxes wobble
            size = 50 + 10 * k + 5 * np.sin(i / 9)
            box = np.array([x0 + vx * i, y0, x0 + vx * i + size, y0 + size]) + jitter
            detections.append(_det(box.astype(np.float32), landmarks=k != 2))
        if rng.random() < 0.05:  # and sometimes fires on nothing
            detections.append(_det(rng.uniform(0, 500, 2).astype(np.float32).repeat(2) + [0, 0, 30, 30]))
        frames.append(detections)
    out = _run(cfg, frames)
    for detections, frame in zip(frames, out):
        detected = [r for r in frame.regions if r.source is RegionSource.DETECTED]
        assert len(detected) == len(detections)  # one DETECTED region per detection, no more, no less
        assert len({r.track_id for r in frame.regions}) == len(frame.regions)
        for detection in detections:
            assert any(_contains(r.box, detection.box) for r in detected)
        for region in frame.regions:
            assert region.box.dtype == np.float32 and region.box.shape == (4,)


def test_landmarks_are_smoothed_and_carried_with_the_box():
    cfg = TrackConfig(smoothing=0.8, max_age=4, backfill=2)
    rng = np.random.default_rng(1)
    truth = [_box(100 + 2 * i, 100) for i in range(60)]
    frames = []
    raw_landmarks = []
    for i, box in enumerate(truth):
        detection = _det(box)
        landmarks = detection.landmarks + rng.normal(0, 2, (5, 2)).astype(np.float32)
        raw_landmarks.append(landmarks)
        frames.append([] if 30 <= i < 33 else [dataclasses.replace(detection, landmarks=landmarks)])
    out = _run(cfg, frames)
    expected = [(b[:2] + _LANDMARKS_IN_BOX * (b[2:] - b[:2])) for b in truth]
    smoothed_error, raw_error = [], []
    for i, frame in enumerate(out):
        region = _only(frame)
        assert region.landmarks is not None and region.landmarks.shape == (5, 2)
        assert region.landmarks.dtype == np.float32
        error = np.abs(region.landmarks - expected[i]).mean()
        if 30 <= i < 33:
            assert region.source is RegionSource.PREDICTED
            assert error < 3.0  # moved along with the predicted box
        elif i >= 5:
            smoothed_error.append(error)
            raw_error.append(np.abs(raw_landmarks[i] - expected[i]).mean())
    assert np.mean(smoothed_error) < 0.7 * np.mean(raw_error)


def test_no_smoothing_gives_the_raw_boxes():
    cfg = TrackConfig(smoothing=0.0)
    rng = np.random.default_rng(2)
    boxes = [(_box(100 + 3 * i, 50) + rng.normal(0, 2, 4)).astype(np.float32) for i in range(20)]
    out = _run(cfg, [[_det(b)] for b in boxes])
    for box, frame in zip(boxes, out):
        np.testing.assert_allclose(_only(frame).box, box, atol=1e-4)


def test_ids_are_never_reused():
    cfg = TrackConfig(max_age=2, backfill=0)
    frames = []
    for i in range(60):  # a face that comes and goes, each time for longer than max_age
        frames.append([_det(_box(100, 100))] if (i // 6) % 2 == 0 else [])
    out = _run(cfg, frames)
    ids = [r.track_id for f in out for r in f.regions if r.source is RegionSource.DETECTED]
    assert ids == sorted(ids)
    assert sorted(set(ids)) == list(range(5))


@pytest.mark.parametrize(
    "cfg",
    [TrackConfig(min_hits=0), TrackConfig(max_age=-1), TrackConfig(backfill=-1), TrackConfig(smoothing=1.5),
     TrackConfig(iou_threshold=-0.1)],
)
def test_bad_config_is_refused(cfg):
    with pytest.raises(ConfigError):
        Tracker(cfg)


def test_innovation_covariance_stays_diagonal():
    # The tracker inverts S by its diagonal (track._inverse_of_diagonal); this is what makes that exact.
    box = _box(100, 100)
    kalman_track = track_module._Track(0, box, _det(box), 0)
    kf = kalman_track.kf
    for i in range(40):
        kalman_track.predict()
        if i % 4 != 3:
            moved = _box(100 + 5 * i, 100 - 2 * i, 60 + i)
            kalman_track.update(moved, _det(moved), i + 1, 0.5)
        s = kf.H @ kf.P @ kf.H.T + kf.R
        assert np.count_nonzero(s - np.diag(np.diag(s))) == 0
        np.testing.assert_allclose(track_module._inverse_of_diagonal(s), np.linalg.inv(s))


def test_push_is_fast_with_ten_faces():
    tracker = Tracker(TrackConfig())
    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 1500, (10, 2))
    frames = []
    for i in range(300):
        detections = []
        for k, (x, y) in enumerate(starts):
            box = np.array([x + i, y, x + i + 40 + 3 * k, y + 40 + 3 * k]) + rng.normal(0, 1, 4)
            detections.append(_det(box.astype(np.float32)))
        frames.append(detections)
    for i in range(50):  # warm up
        tracker.push(i, frames[i])
    start = time.perf_counter()
    for i in range(50, 300):
        tracker.push(i, frames[i])
    per_push = (time.perf_counter() - start) / 250
    assert per_push < 3e-3, f"push() took {per_push * 1e3:.2f} ms"  # typically ~0.4 ms; lenient for busy CI
