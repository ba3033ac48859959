"""Temporal stage: a SORT-style face tracker with a short look-behind, so gaps can be filled in hindsight.

SORT (Bewley et al. 2016): one constant-velocity Kalman filter per track on ``(cx, cy, area, aspect)``,
Hungarian assignment of detections to the tracks' predicted boxes on IoU. On top of that, because this
stage decides which pixels get hidden, recall comes first:

- every raw detection is covered in its own frame, by a box that contains it, confirmed track or not;
- a confirmed track the detector loses keeps being covered with its predicted box for ``max_age`` frames;
- the tracker holds the last ``backfill`` frames back before releasing them, so that when a track is
  first seen, the frames just before it are covered too (faces are usually found a few frames late),
  and when a track is found again after a gap, the frames of the gap still held get an interpolated box.

A scene cut ends every track: no box is dragged across it and nothing is back-filled before it.
Everything here is pure and deterministic: no I/O, no globals.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from styleface_cli.config import TrackConfig
from styleface_cli.errors import ConfigError
from styleface_cli.records import Detection, FaceRegion, FrameFaces, RegionSource


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of rows to columns of ``cost`` [N, M]: ``(rows, cols)`` int64, ``min(N, M)``
    pairs, rows ascending; the same answer as ``scipy.optimize.linear_sum_assignment`` (a test checks).

    The shortest augmenting path method (Jonker-Volgenant, in Crouse's 2016 rectangular form, as scipy's
    own C++ solver): one Dijkstra search per row over reduced costs, then the duals are updated so every
    later search stays on non-negative edges. Exact, O(N^2 M); the tracker's matrices are tracks x faces,
    a few each, where this takes tens of microseconds. Written here because importing ``scipy.optimize``
    for it cost 44 MB of memory and about 0.4 s of start-up (measured here).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, not {cost.ndim}-D")
    if not np.isfinite(cost).all():
        raise ValueError("cost must be finite")
    transpose = cost.shape[1] < cost.shape[0]
    if transpose:
        cost = cost.T
    n_rows, n_cols = cost.shape
    u = np.zeros(n_rows)  # row duals
    v = np.zeros(n_cols)  # column duals
    col_for_row = np.full(n_rows, -1, np.int64)
    row_for_col = np.full(n_cols, -1, np.int64)
    for current in range(n_rows):
        shortest = np.full(n_cols, np.inf)  # reduced path cost to each column so far
        path = np.full(n_cols, -1, np.int64)  # the row each column is reached from
        seen_rows = np.zeros(n_rows, bool)
        seen_cols = np.zeros(n_cols, bool)
        reach = 0.0
        row, sink = current, -1
        while sink < 0:
            seen_rows[row] = True
            through = reach + cost[row] - u[row] - v
            better = ~seen_cols & (through < shortest)
            path[better] = row
            shortest[better] = through[better]
            open_cols = np.flatnonzero(~seen_cols)
            lowest = shortest[open_cols].min()
            ties = open_cols[shortest[open_cols] == lowest]
            free = ties[row_for_col[ties] < 0]  # on a tie, a free column ends the search now
            col = int(free[0] if free.size else ties[0])
            reach = float(lowest)
            seen_cols[col] = True
            if row_for_col[col] < 0:
                sink = col
            else:
                row = int(row_for_col[col])
        u[current] += reach
        others = seen_rows.copy()
        others[current] = False
        u[others] += reach - shortest[col_for_row[others]]
        v[seen_cols] -= reach - shortest[seen_cols]
        col = sink
        while True:  # flip the path's edges: every row on it takes the column it was reached through
            row = int(path[col])
            row_for_col[col] = row
            col_for_row[row], col = col, int(col_for_row[row])
            if row == current:
                break
    if transpose:
        order = np.argsort(col_for_row, kind="stable")
        return col_for_row[order], order.astype(np.int64)
    return np.arange(n_rows, dtype=np.int64), col_for_row


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` [N, 4] with every box of ``b`` [M, 4].

    Boxes are ``(x0, y0, x1, y1)`` pixels. Returns [N, M] float64 in [0, 1]; 0 where a union is empty.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0.0, None) * np.clip(iy1 - iy0, 0.0, None)  # [N, M]
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[4] float32: the smallest box that contains both boxes ``a`` and ``b`` [4]."""
    union = np.minimum(a, b).astype(np.float32)
    union[2:] = np.maximum(a[2:], b[2:])
    return union


def expand_box(box: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """[4] float32: ``box`` [4] scaled by ``scale`` about its centre, clipped to a ``width x height`` image."""
    box = np.asarray(box, dtype=np.float64)
    centre = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) * (scale / 2)
    lo = np.clip(centre - half, 0.0, [width, height])
    hi = np.clip(centre + half, 0.0, [width, height])
    return np.concatenate([lo, hi]).astype(np.float32)


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """float32: ``a`` at ``t = 0``, ``b`` at ``t = 1``, linear in between."""
    return ((1.0 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)).astype(np.float32)


def _box_to_z(box: np.ndarray) -> np.ndarray:
    """[4] box -> [4, 1] SORT measurement (centre x, centre y, area, aspect w/h)."""
    w = max(float(box[2] - box[0]), 1e-3)
    h = max(float(box[3] - box[1]), 1e-3)
    return np.array([[box[0] + w / 2], [box[1] + h / 2], [w * h], [w / h]])


def _x_to_box(x: np.ndarray) -> np.ndarray:
    """SORT state [7, 1] -> [4] float64 box."""
    area = max(float(x[2, 0]), 1e-6)
    aspect = max(float(x[3, 0]), 1e-6)
    w = np.sqrt(area * aspect)
    h = area / w
    return np.array([x[0, 0] - w / 2, x[1, 0] - h / 2, x[0, 0] + w / 2, x[1, 0] + h / 2])


def _to_box_frame(landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[5, 2] pixels -> [5, 2] relative to ``box`` (0 at its top-left corner, 1 at its bottom-right)."""
    size = np.maximum(box[2:] - box[:2], 1e-6)
    return (landmarks - box[:2]) / size


def _from_box_frame(relative: np.ndarray, box: np.ndarray) -> np.ndarray:
    return (box[:2] + relative * (box[2:] - box[:2])).astype(np.float32)


# SORT's constant-velocity model on (cx, cy, area, aspect); the aspect has no velocity.
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_H = np.eye(4, 7)
_I7 = np.eye(7)


def _inverse_of_diagonal(s: np.ndarray) -> np.ndarray:
    """Inverse of the innovation covariance S = H P H' + R [4, 4], which is diagonal under this model:
    P starts diagonal and F, Q, R only ever couple a measured quantity with its own velocity, so the four
    measured quantities never share a covariance entry. A quarter of the cost of ``np.linalg.inv``, and
    ``update`` runs for every face in every frame."""
    return np.diag(1.0 / np.diag(s))


class SortFilter:
    """SORT's Kalman filter (Bewley et al., sort.py) on the state [7, 1] = (cx, cy, area, aspect, and the
    velocities of the first three), measuring [4, 1] = (cx, cy, area, aspect); with SORT's noise settings.

    The equations are filterpy's ``KalmanFilter`` (which sort.py uses; a test checks they agree), written
    out here because importing filterpy pulls in scipy.stats: about 0.7 s of start-up for 20 lines.
    """

    F = _F  # [7, 7] constant-velocity transition (shared, never written)
    H = _H  # [4, 7] measurement

    def __init__(self, z: np.ndarray) -> None:
        self.x = np.zeros((7, 1))  # [7, 1] state
        self.x[:4] = z
        self.P = np.eye(7)  # [7, 7] state covariance
        self.P[4:, 4:] *= 1000.0  # the first velocity is unknown
        self.P *= 10.0
        self.Q = np.eye(7)  # [7, 7] process noise
        self.Q[-1, -1] *= 0.01
        self.Q[4:, 4:] *= 0.01
        self.R = np.eye(4)  # [4, 4] measurement noise
        self.R[2:, 2:] *= 10.0

    def predict(self) -> None:
        self.x = self.F @ self.x
        self.P = (self.F @ self.P) @ self.F.T + self.Q

    def update(self, z: np.ndarray) -> None:
        """Correct the state with the measurement ``z`` [4, 1] (Joseph form, as filterpy)."""
        y = z - self.H @ self.x
        pht = self.P @ self.H.T
        gain = pht @ _inverse_of_diagonal(self.H @ pht + self.R)  # [7, 4] (S is diagonal: see there)
        self.x = self.x + gain @ y
        i_kh = _I7 - gain @ self.H
        self.P = (i_kh @ self.P) @ i_kh.T + (gain @ self.R) @ gain.T


class _Track:
    """One face followed over time: its Kalman filter, its hits and misses, its smoothed geometry."""

    def __init__(self, track_id: int, box: np.ndarray, detection: Detection, step: int) -> None:
        self.track_id = track_id
        self.hits = 1  # frames with a detection
        self.misses = 0  # frames since the last detection
        self.last_step = step  # push() count of the last detection
        self.box = box  # [4] float32, the last raw detection
        self.landmarks = detection.landmarks  # [5, 2] float32 or None, the last raw landmarks
        self.score = detection.score
        # Smoothed state: an exponential moving average of the box, moved along by the Kalman
        # velocity between frames so it does not lag behind a moving face, and of the landmarks
        # relative to the box, so they move with whatever box carries them.
        self.smooth_box = box.astype(np.float64)
        self.smooth_landmarks = None if detection.landmarks is None else _to_box_frame(detection.landmarks, box)
        self.kf = SortFilter(_box_to_z(box))

    def predict(self) -> None:
        x = self.kf.x
        if x[6, 0] + x[2, 0] <= 0:  # never predict a negative area
            x[6, 0] = 0.0
        vx, vy = float(x[4, 0]), float(x[5, 0])
        self.smooth_box += (vx, vy, vx, vy)
        self.kf.predict()
        self.misses += 1

    def update(self, box: np.ndarray, detection: Detection, step: int, smoothing: float) -> None:
        self.kf.update(_box_to_z(box))
        self.hits += 1
        self.misses = 0
        self.last_step = step
        self.box = box
        self.landmarks = detection.landmarks
        self.score = detection.score
        self.smooth_box = smoothing * self.smooth_box + (1.0 - smoothing) * box
        if detection.landmarks is not None:
            relative = _to_box_frame(detection.landmarks, box)
            if self.smooth_landmarks is None:
                self.smooth_landmarks = relative
            else:
                self.smooth_landmarks = smoothing * self.smooth_landmarks + (1.0 - smoothing) * relative

    def predicted_box(self) -> np.ndarray:
        """[4] float32: the Kalman prediction, never smaller than the face last seen (the filter may
        extrapolate a shrinking face to nothing, and a box too small leaks the face)."""
        box = _x_to_box(self.kf.x)
        centre = (box[:2] + box[2:]) / 2
        half = np.maximum(box[2:] - box[:2], self.box[2:] - self.box[:2]) / 2
        return np.concatenate([centre - half, centre + half]).astype(np.float32)

    def smoothed_landmarks(self, box: np.ndarray) -> np.ndarray | None:
        return None if self.smooth_landmarks is None else _from_box_frame(self.smooth_landmarks, box)


@dataclasses.dataclass
class _HeldFrame:
    """A frame not released yet: back-filling may still add regions to it."""

    frame_index: int
    shot: int  # scene-cut count when the frame was pushed; back-fill stays within one shot
    step: int  # push() count
    regions: dict[int, FaceRegion]  # by track id, in insertion order


class Tracker:
    """Streaming SORT-style tracker that turns per-frame detections into the regions to hide.

    Feed every frame in order with ``push``; it returns the frames that are final, in order, each
    exactly once, at most ``delay`` frames late. ``flush`` returns the rest at the end of the stream.
    Track ids are ints from 0, never reused within one tracker.
    """

    def __init__(self, cfg: TrackConfig) -> None:
        if cfg.min_hits < 1 or cfg.max_age < 0 or cfg.backfill < 0:
            raise ConfigError(
                f"tracking needs min_hits >= 1, max_age >= 0 and backfill >= 0, "
                f"got {cfg.min_hits}, {cfg.max_age} and {cfg.backfill}"
            )
        if not 0.0 <= cfg.smoothing <= 1.0 or not 0.0 <= cfg.iou_threshold <= 1.0:
            raise ConfigError(
                f"tracking smoothing and IoU threshold must lie in [0, 1], "
                f"got {cfg.smoothing} and {cfg.iou_threshold}"
            )
        self._cfg = cfg
        self._tracks: list[_Track] = []
        self._held: collections.deque[_HeldFrame] = collections.deque()
        self._next_id = 0
        self._shot = 0
        self._step = 0
        self._last_index: int | None = None

    @property
    def delay(self) -> int:
        """How many frames ``push`` may hold back before releasing them."""
        return self._cfg.backfill

    def push(self, frame_index: int, detections: list[Detection], scene_cut: bool = False) -> list[FrameFaces]:
        """Add one frame: all of its ``detections``, and ``scene_cut`` when it starts a new shot.

        ``frame_index`` must grow from call to call (gaps are allowed). Returns the frames that are now
        final, in order (possibly none).
        """
        if self._last_index is not None and frame_index <= self._last_index:
            raise ValueError(f"frames must be pushed in order: {frame_index} after {self._last_index}")
        self._last_index = frame_index
        self._step += 1
        if scene_cut:
            self._tracks = []
            self._shot += 1
        cfg = self._cfg
        frame = _HeldFrame(frame_index, self._shot, self._step, {})

        for track in self._tracks:
            track.predict()
        boxes = [np.asarray(d.box, dtype=np.float32).reshape(4) for d in detections]
        matches, unmatched = self._associate(boxes)

        for track, d in matches:
            detection = detections[d]
            self._fill_gap(track, boxes[d], detection)
            track.update(boxes[d], detection, self._step, cfg.smoothing)
            if track.hits >= cfg.min_hits:
                # Smoothing trades a little lag for steady boxes, so the smoothed box alone can trail a
                # moving face and uncover part of it. The detector's box is the best evidence of where
                # the face is in this very frame, so the covered box is the union of both: smooth where
                # the face is still, never smaller than the detection.
                box = box_union(track.smooth_box, boxes[d])
                landmarks = track.smoothed_landmarks(track.smooth_box)
            else:
                box, landmarks = boxes[d], detection.landmarks
            frame.regions[track.track_id] = FaceRegion(
                track.track_id, box, landmarks, detection.score, RegionSource.DETECTED
            )

        for d in unmatched:
            # A new track: covered right away with its raw box (recall first), confirmed or not.
            detection = detections[d]
            track = _Track(self._next_id, boxes[d], detection, self._step)
            self._next_id += 1
            self._tracks.append(track)
            region = FaceRegion(track.track_id, boxes[d], detection.landmarks, detection.score, RegionSource.DETECTED)
            frame.regions[track.track_id] = region
            self._backfill(region)

        alive = []
        for track in self._tracks:
            if track.misses > cfg.max_age:
                continue
            alive.append(track)
            # Only confirmed tracks are carried through misses: an unconfirmed one may be a false
            # detection. If it is seen again while the gap is still held back, _fill_gap covers the gap.
            if track.misses > 0 and track.hits >= cfg.min_hits:
                # The motion model can be wrong exactly when the detector fails (a turn, a zoom, a
                # stop): the covered box spans both the prediction and where the face was last seen.
                # Landmarks follow the prediction alone, so alignment (generative method) stays sane.
                predicted = track.predicted_box()
                frame.regions[track.track_id] = FaceRegion(
                    track.track_id, box_union(predicted, track.box), track.smoothed_landmarks(predicted),
                    track.score, RegionSource.PREDICTED,
                )
        self._tracks = alive

        self._held.append(frame)
        released = []
        while len(self._held) > cfg.backfill:
            released.append(self._release())
        return released

    def flush(self) -> list[FrameFaces]:
        """At the end of the stream: every frame still held back, in order."""
        return [self._release() for _ in range(len(self._held))]

    def _release(self) -> FrameFaces:
        held = self._held.popleft()
        return FrameFaces(held.frame_index, list(held.regions.values()))

    def _associate(self, boxes: list[np.ndarray]) -> tuple[list[tuple[_Track, int]], list[int]]:
        """Hungarian assignment of detections to the tracks' predicted boxes on IoU.

        Returns (track, detection index) pairs and the indices of unmatched detections, in order.
        Pairs below the IoU threshold (or with no overlap at all) are not matched.
        """
        if not boxes or not self._tracks:
            return [], list(range(len(boxes)))
        predicted = np.stack([_x_to_box(t.kf.x) for t in self._tracks])  # [T, 4]
        iou = iou_matrix(predicted, np.stack(boxes))  # [T, D]
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] >= max(self._cfg.iou_threshold, 1e-9)
        matches = [(self._tracks[r], int(c)) for r, c in zip(rows[keep], cols[keep])]
        matched = set(cols[keep].tolist())
        return matches, [d for d in range(len(boxes)) if d not in matched]

    def _backfill(self, region: FaceRegion) -> None:
        """Cover a new track in the held frames of the same shot, with the box of its first detection:
        a face found now was most likely there, barely moved, a few frames earlier."""
        for held in self._held:
            if held.shot == self._shot:
                held.regions[region.track_id] = dataclasses.replace(region, source=RegionSource.BACKFILLED)

    def _fill_gap(self, track: _Track, box: np.ndarray, detection: Detection) -> None:
        """A track seen again after missing frames: the missed frames still held get the box interpolated
        between the detections on both sides (united with the predicted box where there is one)."""
        if track.last_step == self._step - 1:
            return
        span = self._step - track.last_step
        for held in self._held:
            if held.step <= track.last_step:
                continue
            t = (held.step - track.last_step) / span
            between = _lerp(track.box, box, t)
            region = held.regions.get(track.track_id)
            if region is not None:
                held.regions[track.track_id] = dataclasses.replace(region, box=box_union(region.box, between))
            else:
                landmarks = None
                if track.landmarks is not None and detection.landmarks is not None:
                    landmarks = _lerp(track.landmarks, detection.landmarks, t)
                held.regions[track.track_id] = FaceRegion(
                    track.track_id, between, landmarks, min(track.score, detection.score), RegionSource.BACKFILLED
                )
