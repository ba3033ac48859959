"""End to end on real footage from ../shared/fixtures (skipped when absent).

For every clip: the output has the input's size, frame count, duration and audio; and in every frame,
every face that an independent detector (YuNet, ../shared/models) finds in the input is hidden by the
regions styleface recorded for that frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.config import ObfuscateConfig
from styleface_cli.face.obfuscate import covered_mask
from styleface_cli.tracks_file import read_tracks
from tests import media
from tests.yunet import FIXTURES, MODEL, uncovered, yunet_faces

VIDEOS = FIXTURES / "videos"
pytestmark = [
    pytest.mark.fixtures,
    pytest.mark.skipif(not VIDEOS.is_dir() or not MODEL.is_file(), reason="../shared/fixtures not present"),
]
CLIPS = sorted(p.name for p in VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []
MASK_SCALE = ObfuscateConfig.mask_scale  # the default the user gets


def anonymize(clip: Path, out: Path, tracks: Path, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["anonymize", str(clip), "-o", str(out), "--export-tracks", str(tracks), "--json",
                                      "--quiet", "--method", "blur", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def leaks(frames, tracks: Path) -> list[str]:
    """Every YuNet face in ``frames`` (input frames) that the recorded regions leave visible."""
    listed = read_tracks(tracks)
    found = []
    for frame in frames:
        faces = yunet_faces(frame.image)
        if not faces:
            continue
        covered = covered_mask(*frame.image.shape[:2], listed.faces(frame.index).regions, MASK_SCALE)
        for box, landmarks, score in faces:
            why = uncovered(box, landmarks, covered)
            if why:
                found.append(f"frame {frame.index}: face at {np.round(box).tolist()} (score {score:.2f}): {why}")
    return found


@pytest.mark.parametrize("name", CLIPS)
def test_every_face_in_every_frame_is_hidden(name, tmp_path):
    clip = VIDEOS / name
    out, tracks = tmp_path / name, tmp_path / "tracks.json"
    report = anonymize(clip, out, tracks)
    in_info, in_frames = media.read_all(clip)
    out_info, out_frames = media.read_all(out)
    assert (out_info.width, out_info.height) == (in_info.width, in_info.height)
    assert len(out_frames) == len(in_frames) == report["frames"]
    assert out_frames[-1].time_s == pytest.approx(in_frames[-1].time_s, abs=1e-3)
    assert len(media.read_audio_streams(out)) == len(media.read_audio_streams(clip))
    problems = leaks(in_frames, tracks)
    assert not problems, f"{len(problems)} visible faces, e.g. " + "; ".join(problems[:5])


def test_faces_in_rotated_footage_are_found_by_rotation_passes(tmp_path):
    """People lying down: the two-person clip turned a quarter, with --rotations 90,-90."""
    info, frames = media.read_all(VIDEOS / "head_pose_two_people.mp4")
    clip = tmp_path / "lying.mp4"
    media.make_video(clip, width=info.height, height=info.width, frames=len(frames), fps=12,
                     draw=lambda i: np.ascontiguousarray(np.rot90(frames[i].image, 1)))
    tracks = tmp_path / "tracks.json"
    anonymize(clip, tmp_path / "out.mp4", tracks, "--rotations", "90,-90")
    listed = read_tracks(tracks)
    missing = []
    for frame in frames:
        # YuNet on the upright frame; its face mapped into the turned frame: (x, y) -> (y, W - x)
        for box, landmarks, _ in yunet_faces(frame.image):
            turned_lm = np.stack([landmarks[:, 1], info.width - landmarks[:, 0]], axis=1)
            xs, ys = turned_lm[:, 0], turned_lm[:, 1]
            turned_box = np.array([box[1], info.width - box[2], box[3], info.width - box[0]])
            covered = covered_mask(info.width, info.height, listed.faces(frame.index).regions, MASK_SCALE)
            why = uncovered(turned_box, np.stack([xs, ys], 1), covered)
            if why:
                missing.append(f"frame {frame.index}: {why}")
    assert not missing, missing[:5]


def test_phone_video_with_rotation_metadata(tmp_path):
    """Stored sideways with a display rotation (as phones record): faces are found upright."""
    info, frames = media.read_all(VIDEOS / "head_pose_two_people.mp4")
    clip = tmp_path / "phone.mp4"
    # the player turns the stored picture by the display rotation (counter-clockwise) to show it upright
    media.make_video(clip, width=info.height, height=info.width, frames=len(frames), fps=12, rotation=90,
                     draw=lambda i: np.ascontiguousarray(np.rot90(frames[i].image, -1)))
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.json"
    report = anonymize(clip, out, tracks, "--rotations", "none")
    assert media.read_all(out)[0].rotation == 90
    stored = media.read_all(clip)[1]
    upright_faces = sum(len(yunet_faces(f.image)) for f in frames)
    assert report["faces"] >= upright_faces * 0.9
    # in stored coordinates each upright face lands where np.rot90(-1) puts it
    listed = read_tracks(tracks)
    missing = []
    for frame, stored_frame in zip(frames, stored):
        height = info.height
        covered = covered_mask(*stored_frame.image.shape[:2], listed.faces(frame.index).regions, MASK_SCALE)
        for box, landmarks, _ in yunet_faces(frame.image):
            # rot90(k=-1) (clockwise): (x, y) -> (H - 1 - y, x)
            lm = np.stack([height - landmarks[:, 1], landmarks[:, 0]], axis=1)
            turned_box = np.array([height - box[3], box[0], height - box[1], box[2]])
            why = uncovered(turned_box, lm, covered)
            if why:
                missing.append(f"frame {frame.index}: {why}")
    assert not missing, missing[:5]
