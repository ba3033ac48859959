"""Scene-cut detector on synthetic shots (cuts, pans, moving blobs, fades, flicker) and on real footage."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from styleface_cli.face.scenecut import (
    THUMB_SIZE,
    SceneCutDetector,
    block_histograms,
    histogram_distance,
    luma_layout,
    thumbnail,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "videos"
W, H = 320, 180


def _street(shift: int = 0) -> np.ndarray:
    """Blue sky over grey houses and a road, seen by a camera panning ``shift`` pixels."""
    image = np.zeros((H, W, 3), np.uint8)
    image[:80] = np.linspace([90, 140, 230], [170, 200, 250], 80)[:, None, :].astype(np.uint8)
    image[80:] = (110, 110, 105)
    for k in range(8):
        x = 50 * k - shift % 50 - 20
        cv2.rectangle(image, (x, 50 + 9 * (k % 3)), (x + 35, 140), (150 + 10 * (k % 4), 90, 70), -1)
    image[150:] = (60, 60, 60)
    return image


def _stage(blob_x: int = 160) -> np.ndarray:
    """A dark stage with a warm spotlight and a face-coloured blob at ``blob_x``."""
    image = np.full((H, W, 3), (25, 15, 30), np.uint8)
    cv2.ellipse(image, (160, 120), (140, 60), 0, 0, 360, (120, 80, 30), -1)
    cv2.circle(image, (blob_x, 80), 30, (220, 170, 140), -1)
    return image


def _cuts(frames) -> list[int]:
    detector = SceneCutDetector()
    return [i for i, image in enumerate(frames) if detector(image)]


def test_first_frame_is_not_a_cut():
    assert SceneCutDetector()(_street()) is False


def test_a_hard_cut_is_found_once():
    frames = [_street(2 * i) for i in range(15)] + [_stage(100 + 2 * i) for i in range(15)]
    assert _cuts(frames) == [15]
    frames = [_stage() for _ in range(5)] + [_street() for _ in range(12)] + [_stage() for _ in range(20)]
    assert _cuts(frames) == [5, 17]


def test_a_shot_returning_within_the_history_is_not_a_new_cut():
    # A 4-frame insert: the return to the first shot still looks like the frames before the insert.
    frames = [_stage() for _ in range(10)] + [_street() for _ in range(4)] + [_stage() for _ in range(10)]
    assert _cuts(frames) == [10]


def test_threshold_zero_disables_detection():
    detector = SceneCutDetector(threshold=0.0)
    assert [detector(image) for image in [_street(), _stage(), _street(), _stage()]] == [False] * 4


def test_a_pan_is_not_a_cut():
    assert _cuts([_street(4 * i) for i in range(80)]) == []


def test_a_fast_pan_that_scrambles_the_layout_is_not_a_cut():
    # Bars of a few colours sliding by 20 px (a frame width in 16 frames): the luma layout decorrelates
    # within a few frames, the colours of each block stay alike.
    rng = np.random.default_rng(0)
    palette = np.array([(200, 60, 40), (40, 160, 60), (230, 220, 200), (30, 40, 120)], np.uint8)
    panorama = np.repeat(palette[rng.integers(0, 4, 100)], rng.integers(20, 60, 100), axis=0)  # [X, 3]
    frames = [np.ascontiguousarray(np.broadcast_to(panorama[20 * i : 20 * i + W], (H, W, 3))) for i in range(100)]
    layouts = [luma_layout(thumbnail(f)) for f in frames]
    assert float(layouts[0] @ layouts[8]) < 0.5  # so the colour cue is what keeps these from being cuts
    assert _cuts(frames) == []


def test_a_moving_gradient_is_not_a_cut():
    x = np.arange(W)[None, :]
    frames = []
    for i in range(60):
        hsv = np.empty((H, W, 3), np.uint8)
        hsv[..., 0] = ((x + 5 * i) * 180 // W) % 180
        hsv[..., 1] = 200
        hsv[..., 2] = np.linspace(60, 250, H)[:, None].astype(np.uint8)
        frames.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
    assert _cuts(frames) == []


def test_a_face_moving_across_the_frame_is_not_a_cut():
    assert _cuts([_stage(20 + 7 * i) for i in range(40)]) == []


@pytest.mark.parametrize("length", [12, 24])
@pytest.mark.parametrize("noise", [0.0, 4.0])
def test_fades_are_not_cuts(length, noise):
    rng = np.random.default_rng(0)
    a = _street().astype(np.float64) + rng.normal(0, noise, (H, W, 3))
    b = _stage().astype(np.float64) + rng.normal(0, noise, (H, W, 3))
    ramp = np.linspace(0, 1, length)
    crossfade = [(1 - t) * a + t * b for t in ramp]
    to_black = [(1 - t) * a for t in ramp]
    from_black = [t * b for t in ramp]
    for frames in (crossfade, to_black, from_black, to_black + from_black):
        assert _cuts([np.clip(f, 0, 255).astype(np.uint8) for f in frames]) == []


def test_flicker_and_flashes_are_not_cuts():
    dark, light = _stage(), np.clip(_stage().astype(np.int16) + 90, 0, 255).astype(np.uint8)
    assert _cuts([dark] * 5 + [light if (i // 2) % 2 else dark for i in range(30)]) == []
    white = np.full((H, W, 3), 250, np.uint8)
    assert _cuts([_stage()] * 10 + [white] + [_stage()] * 10) == []


def test_histograms_distance_and_layout():
    street, stage = thumbnail(_street()), thumbnail(_stage())
    assert street.shape == (THUMB_SIZE[1], THUMB_SIZE[0], 3) and street.dtype == np.uint8
    histograms = block_histograms(street)
    assert histograms.shape == (9, 128)
    np.testing.assert_allclose(histograms.sum(axis=1), 1.0)
    assert histogram_distance(histograms, histograms) == pytest.approx(0.0, abs=1e-6)
    assert 0.5 < histogram_distance(histograms, block_histograms(stage)) <= 1.0
    layout = luma_layout(street)
    assert layout.shape == (144,) and float(layout @ layout) == pytest.approx(1.0)
    assert float(layout @ luma_layout(thumbnail(_street() // 3))) > 0.95  # darker, same layout
    assert float(layout @ luma_layout(stage)) < 0.5
    assert luma_layout(thumbnail(np.full((H, W, 3), 7, np.uint8))) is None
    with pytest.raises(ValueError):
        thumbnail(np.zeros((H, W), np.uint8))


def test_fast_on_1080p():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    detector = SceneCutDetector()
    for _ in range(5):
        detector(image)
    start = time.perf_counter()
    for _ in range(50):
        detector(image)
    per_frame = (time.perf_counter() - start) / 50
    assert per_frame < 3e-3, f"{per_frame * 1e3:.2f} ms per 1080p frame"  # typically ~0.3 ms; lenient for CI


def _decode(name: str):
    av = pytest.importorskip("av")
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def test_hamilton_clip_cuts():
    # Checked by eye: three hard cuts (wide stage -> close-up at 20, -> singer at 82, -> audience at 211);
    # camera moves, zooms and lighting changes in between are not cuts.
    assert _cuts(_decode("hamilton_clip.mp4")) == [20, 82, 211]


def test_tears_of_steel_cuts():
    # Hard cuts at 21, 65 and 185; from 187 on, a hologram effect switches the robot shot between two
    # colourings every two frames, which may count once (192), not every time.
    cuts = _cuts(_decode("tears_of_steel_cuts.mp4"))
    assert {21, 65, 185} <= set(cuts)
    assert len(cuts) <= 4
