"""The generative method and face swap, end to end, with a tiny random StyleFace checkpoint.

A random network draws noise, not faces; what these tests check is the machinery: which pixels are
replaced, that identities stay with their tracks, that crops travel in batches, and which faces each
selection mode touches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from styleface_cli.checkpoints import find_checkpoint, resolve_method
from styleface_cli.cli.app import app
from styleface_cli.config import IdentityConfig
from styleface_cli.errors import ConfigError, ExitCode, WeightsError
from styleface_cli.face.identity import IdentityBank, code_fingerprint, to_images, to_tensor
from styleface_cli.face.smooth import AlignmentSmoother, similarity_matrix
from styleface_cli.model import StyleFaceConfig, init_checkpoint
from styleface_cli.tracks_file import read_tracks
from tests import media
from tests.test_cli_anonymize import face_crop, paste
from tests.yunet import FIXTURES


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    init_checkpoint(StyleFaceConfig.tiny(32), path, seed=0)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    from styleface_cli.model import load_checkpoint

    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def two_faces_clip(tmp_path_factory):
    """16 frames, 320x240, a big face on the left and a smaller one on the right, both still; stereo audio."""
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    big, small = face_crop(0), face_crop(1)
    boxes = {}

    def draw(i: int) -> np.ndarray:
        import cv2

        canvas = media.gradient(320, 240, i)
        boxes["big"] = paste(canvas, cv2.resize(big, (120, 150)), 10, 40)
        boxes["small"] = paste(canvas, cv2.resize(small, (90, 120)), 200, 60)
        return canvas

    media.make_video(path, width=320, height=240, frames=16, fps=12, audio_streams=1, draw=draw)
    return path, boxes


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def inner(box, margin=0.32):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return int(x0 + w * margin), int(y0 + h * margin), int(x1 - w * margin), int(y1 - h * margin)


def changed(before: np.ndarray, after: np.ndarray, box) -> float:
    x0, y0, x1, y1 = inner(box)
    return float(np.abs(before[y0:y1, x0:x1].astype(int) - after[y0:y1, x0:x1]).mean())


# --------------------------------------------------------------------------------------------------
# Checkpoint discovery and the method that runs


def test_checkpoint_discovery_order(tmp_path, checkpoint):
    cache = tmp_path / "cache"
    (cache / "checkpoints").mkdir(parents=True)
    assert find_checkpoint(None, {"STYLEFACE_CACHE": str(cache)}).path is None
    cached = cache / "checkpoints" / "mine.safetensors"
    cached.write_bytes(checkpoint.read_bytes())
    env = {"STYLEFACE_CACHE": str(cache)}
    assert find_checkpoint(None, env).origin == "cache"
    assert find_checkpoint(None, {**env, "STYLEFACE_CHECKPOINT": str(checkpoint)}).path == checkpoint
    assert find_checkpoint(checkpoint, {**env, "STYLEFACE_CHECKPOINT": "/nope"}).origin == "--checkpoint"
    with pytest.raises(WeightsError):
        find_checkpoint(None, {"STYLEFACE_CHECKPOINT": str(tmp_path / "missing.safetensors")})


def test_auto_falls_back_to_blur_and_says_why(two_faces_clip, tmp_path):
    clip, _ = two_faces_clip
    env = {"STYLEFACE_CACHE": str(tmp_path / "empty"), "STYLEFACE_CHECKPOINT": ""}
    result = invoke("anonymize", clip, "-o", tmp_path / "o.mp4", "--json", "--quiet", env=env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["method"] == "blur" and "no StyleFace checkpoint" in record["method_reason"]
    method, reason = resolve_method("auto", find_checkpoint(None, env))
    assert method == "blur"


def test_explicit_styleface_without_checkpoint_is_a_clear_error(two_faces_clip, tmp_path):
    clip, _ = two_faces_clip
    env = {"STYLEFACE_CACHE": str(tmp_path / "empty"), "STYLEFACE_CHECKPOINT": ""}
    result = CliRunner().invoke(app, ["anonymize", str(clip), "--method", "styleface"], env=env)
    # CliRunner calls the app itself; the console script (main) turns this into exit code 2
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == ExitCode.USAGE
    assert "styleface model init" in str(result.exception)


# --------------------------------------------------------------------------------------------------
# anonymize --method styleface


def test_generative_anonymize_replaces_faces_keeps_the_rest(two_faces_clip, tmp_path, checkpoint):
    clip, boxes = two_faces_clip
    out, tracks = tmp_path / "gen.mp4", tmp_path / "tracks.json"
    env = {"STYLEFACE_CHECKPOINT": str(checkpoint)}
    result = invoke("anonymize", clip, "-o", out, "--export-tracks", tracks, "--json", "--quiet", "--batch-size", "4", env=env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["method"] == "styleface" and "STYLEFACE_CHECKPOINT" in record["method_reason"]
    assert max(record["generator_batches"]) > 1  # crops from several frames share a generator call
    assert sum(record["generator_batches"]) == record["faces"] == 32
    in_info, in_frames = media.read_all(clip)
    out_info, out_frames = media.read_all(out)
    assert (out_info.width, out_info.height, len(out_frames)) == (320, 240, 16)
    assert len(media.read_audio_streams(out)) == 1
    for before, after in zip(in_frames, out_frames):
        assert changed(before.image, after.image, boxes["big"]) > 8
        assert changed(before.image, after.image, boxes["small"]) > 8
        # far from the faces only codec noise
        assert np.abs(before.image[200:, 130:190].astype(int) - after.image[200:, 130:190]).mean() < 3
    listed = read_tracks(tracks)
    identities: dict[int, set[str]] = {}
    for index in range(16):
        for region in listed.faces(index).regions:
            identities.setdefault(region.track_id, set()).add(region.identity)
    assert len(identities) == 2
    assert all(len(names) == 1 for names in identities.values())  # one code per track, every frame
    assert len(set.union(*identities.values())) == 2  # two people, two new identities


def test_same_seed_same_people(two_faces_clip, tmp_path, checkpoint):
    clip, _ = two_faces_clip
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / f"{name}.mp4"
        tracks = tmp_path / f"{name}.json"
        assert invoke("anonymize", clip, "-o", out, "--checkpoint", checkpoint, "--method", "styleface", "--seed", seed,
                      "--export-tracks", tracks, "--quiet").exit_code == 0
        outs.append(sorted({r.identity for r in read_tracks(tracks).faces(0).regions}))
    assert outs[0] == outs[1] and outs[0] != outs[2]


# --------------------------------------------------------------------------------------------------
# swap and selection


@pytest.fixture(scope="module")
def source_photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("src") / "source.jpg"
    Image.fromarray(face_crop(0, margin=50)).save(path)
    return path


@pytest.mark.parametrize("target, expect", [("all", {"big", "small"}), ("largest", {"big"})])
def test_swap_target_modes(two_faces_clip, tmp_path, checkpoint, source_photo, target, expect):
    clip, boxes = two_faces_clip
    out = tmp_path / "swap.mp4"
    result = invoke("swap", clip, "--source", source_photo, "--target", target, "--checkpoint", checkpoint, "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    _, in_frames = media.read_all(clip)
    _, out_frames = media.read_all(out)
    for name, box in boxes.items():
        diff = changed(in_frames[5].image, out_frames[5].image, box)
        assert (diff > 8) == (name in expect), (name, diff)


def test_swap_by_track_id_and_one_source_code_for_all(two_faces_clip, tmp_path, checkpoint, source_photo):
    clip, boxes = two_faces_clip
    tracks = tmp_path / "t.json"
    assert invoke("swap", clip, "-s", source_photo, "--checkpoint", checkpoint, "-o", tmp_path / "all.mp4",
                  "--export-tracks", tracks, "--quiet").exit_code == 0
    listed = read_tracks(tracks)
    assert len({r.identity for i in range(16) for r in listed.faces(i).regions}) == 1  # the source's one code
    small_id = next(r.track_id for r in listed.faces(0).regions if r.box[0] > 150)
    out = tmp_path / "one.mp4"
    assert invoke("swap", clip, "-s", source_photo, "--checkpoint", checkpoint, "-o", out, "--target",
                  f"tracks:{small_id}", "--quiet").exit_code == 0
    _, in_frames = media.read_all(clip)
    _, out_frames = media.read_all(out)
    assert changed(in_frames[3].image, out_frames[3].image, boxes["small"]) > 8
    assert changed(in_frames[3].image, out_frames[3].image, boxes["big"]) < 3


def test_swap_needs_a_face_in_the_source(two_faces_clip, tmp_path, checkpoint):
    clip, _ = two_faces_clip
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((100, 100, 3), 128, np.uint8)).save(blank)
    result = CliRunner().invoke(app, ["swap", str(clip), "-s", str(blank), "--checkpoint", str(checkpoint)])
    assert result.exception.exit_code == ExitCode.INPUT and "no face" in str(result.exception)


@pytest.mark.skipif(not (FIXTURES / "identities").is_dir(), reason="../shared/fixtures not present")
def test_keep_face_and_target_face_follow_the_reference_person(tmp_path, checkpoint):
    """A clip of two different people (Family1 dad and mom): --keep-face dad leaves him alone and hides
    her; swap --target-face dad replaces only him. Matching uses dlib's recogniser (no checkpoint
    recogniser for obfuscation; the tiny random one cannot recognise anyone, so swap is told dlib too)."""
    pytest.importorskip("dlib")
    import cv2

    from styleface_cli.config import DetectConfig
    from styleface_cli.face.detect import create_detector
    from styleface_cli.video.images import read_image

    detector = create_detector(DetectConfig())
    people = {}
    for name in ("Family1-Dad1.jpg", "Family1-Mom1.jpg"):
        image, _ = read_image(FIXTURES / "identities" / "family" / name)
        face = max(detector.detect(image), key=lambda d: d.box[2] - d.box[0])
        x0, y0, x1, y1 = face.box.astype(int)
        w, h = x1 - x0, y1 - y0
        crop = image[max(y0 - h // 3, 0) : y1 + h // 3, max(x0 - w // 3, 0) : x1 + w // 3]
        people[name] = cv2.resize(crop, (140, 180))
    clip = tmp_path / "pair.mp4"
    boxes = {}

    def draw(i):
        canvas = media.gradient(360, 240, i)
        boxes["dad"] = paste(canvas, people["Family1-Dad1.jpg"], 10, 30)
        boxes["mom"] = paste(canvas, people["Family1-Mom1.jpg"], 200, 30)
        return canvas

    media.make_video(clip, width=360, height=240, frames=8, fps=8, draw=draw)
    reference = FIXTURES / "identities" / "family" / "Family1-Dad2.jpg"  # another photo of him
    _, in_frames = media.read_all(clip)
    kept = tmp_path / "kept.mp4"
    result = invoke("anonymize", clip, "-o", kept, "--method", "blur", "--keep-face", reference, "--quiet")
    assert result.exit_code == 0, result.output
    _, out_frames = media.read_all(kept)
    for before, after in zip(in_frames, out_frames):
        assert changed(before.image, after.image, boxes["dad"]) < 3
        assert changed(before.image, after.image, boxes["mom"]) > 8


# --------------------------------------------------------------------------------------------------
# Units: identity bank and alignment smoothing


def test_identity_bank_codes_are_per_track_seeded_and_stable(model):
    target = torch.zeros(1, 3, 32, 32)
    target112 = torch.zeros(1, 3, 112, 112)
    bank = IdentityBank(model, IdentityConfig(seed=3, min_distance=0.0))
    first = bank.code_for(1, target, target112)
    assert bank.code_for(1, target + 0.5, target112) is first  # made on first sight, then kept
    other = bank.code_for(2, target, target112)
    assert code_fingerprint(first) != code_fingerprint(other)
    again = IdentityBank(model, IdentityConfig(seed=3, min_distance=0.0)).code_for(1, target, target112)
    assert torch.equal(again.w_plus, first.w_plus)


def test_identity_bank_rejects_draws_too_close_to_the_original(model):
    bank = IdentityBank(model, IdentityConfig(seed=0, min_distance=3.0, max_tries=3))  # cosine distance <= 2: never met
    bank.code_for(0, torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 112, 112))
    assert bank.rejections == 3


def test_identity_strength_zero_keeps_the_targets_own_code(model):
    crop112 = torch.rand(1, 3, 112, 112) * 2 - 1
    bank = IdentityBank(model, IdentityConfig(strength=0.0, min_distance=0.0))
    code = bank.code_for(0, torch.zeros(1, 3, 32, 32), crop112)
    assert torch.allclose(code.w_plus, model.encode_identity(crop112).w_plus)


def test_tensor_image_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(to_images(to_tensor(images)), images)


def test_alignment_smoother_averages_jitter_and_follows_jumps():
    smoother = AlignmentSmoother(size=64, alpha=0.5)
    base = similarity_matrix(np.array([0.5, 0.0, 10.0, 10.0]))
    jitter = similarity_matrix(np.array([0.5, 0.0, 12.0, 10.0]))
    smoother(0, base)
    assert smoother(0, jitter)[0, 2] == pytest.approx(11.0)  # halfway: jitter halved
    jump = similarity_matrix(np.array([0.5, 0.0, 60.0, 10.0]))  # moved most of a crop: follow at once
    assert smoother(0, jump)[0, 2] == pytest.approx(60.0)
    assert smoother(1, jitter)[0, 2] == pytest.approx(12.0)  # tracks are independent


@pytest.mark.skipif(not (FIXTURES / "videos").is_dir(), reason="../shared/fixtures not present")
def test_generative_anonymize_on_real_footage(tmp_path, checkpoint):
    """The two-person fixture clip: every face region the tracker reports is replaced by generator output
    (pixels change inside the face areas, not elsewhere), one identity per track, batches of several crops."""
    from styleface_cli.face.blend import face_mask
    from styleface_cli.face.align import estimate_affine, ffhq_template

    clip = FIXTURES / "videos" / "head_pose_two_people.mp4"
    out, tracks = tmp_path / "gen.mp4", tmp_path / "t.json"
    result = invoke("anonymize", clip, "-o", out, "--checkpoint", checkpoint, "--export-tracks", tracks, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["method"] == "styleface" and max(record["generator_batches"]) > 1
    in_info, in_frames = media.read_all(clip)
    out_info, out_frames = media.read_all(out)
    assert (out_info.width, out_info.height, len(out_frames)) == (in_info.width, in_info.height, len(in_frames))
    listed = read_tracks(tracks)
    per_track: dict[int, set[str]] = {}
    inside_changes, outside_changes = [], []
    for before, after in zip(in_frames, out_frames):
        regions = listed.faces(before.index).regions
        replaced = np.zeros(before.image.shape[:2], bool)
        for region in regions:
            per_track.setdefault(region.track_id, set()).add(region.identity)
            if region.landmarks is None:
                continue
            matrix = estimate_affine(region.landmarks, ffhq_template(32))
            import cv2

            back = cv2.warpAffine(face_mask(32), matrix, before.image.shape[1::-1], flags=cv2.WARP_INVERSE_MAP)
            core = back >= 0.999
            replaced |= back > 0
            if core.sum() > 20:
                inside_changes.append(np.abs(before.image[core].astype(int) - after.image[core]).mean())
        outside = ~replaced
        outside_changes.append(np.abs(before.image[outside].astype(int) - after.image[outside]).mean())
    assert len(inside_changes) >= len(in_frames)  # at least one face per frame on average
    assert np.median(inside_changes) > 10
    assert np.mean(outside_changes) < 2.5  # codec noise only
    assert all(len(names) == 1 for names in per_track.values())
