"""``styleface anonymize`` and ``styleface render`` end to end on clips synthesised with PyAV.

The clips carry real faces (cut from the photo that ships inside the insightface wheel) pasted onto a
moving background, so we know exactly where every face is in every frame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.errors import ExitCode
from styleface_cli.face.obfuscate import covered_mask
from styleface_cli.tracks_file import read_tracks
from tests import media
from tests.test_detect import insightface_photo

FACE_BOXES_T1 = [(62, 268, 165, 392), (465, 265, 571, 411)]  # two faces of t1.jpg (x0, y0, x1, y1)


def face_crop(which: int = 0, margin: int = 30) -> np.ndarray:
    x0, y0, x1, y1 = FACE_BOXES_T1[which]
    photo = insightface_photo()
    return photo[y0 - margin : y1 + margin, x0 - margin : x1 + margin].copy()


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    h, w = patch.shape[:2]
    canvas[y : y + h, x : x + w] = patch
    return x, y, x + w, y + h


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory):
    """24 frames of 321x241 (odd size), one face walking right; a cut at frame 12 to another background
    where a second face appears at once; a third face shows up in frame 18 only. Two audio streams."""
    path = tmp_path_factory.mktemp("clips") / "scene.mp4"
    face_a, face_b = face_crop(0), face_crop(1)
    truth: dict[int, list[tuple[int, int, int, int]]] = {}

    def draw(i: int) -> np.ndarray:
        if i < 12:
            canvas = media.gradient(321, 241, i)
            boxes = [paste(canvas, cv2.resize(face_a, (110, 130)), 10 + 4 * i, 40)]
        else:
            canvas = np.full((241, 321, 3), (30, 90, 40), np.uint8)
            boxes = [paste(canvas, cv2.resize(face_b, (100, 130)), 200, 60)]
            if i == 18:
                boxes.append(paste(canvas, cv2.resize(face_a, (80, 100)), 20, 20))
        truth[i] = boxes
        return canvas

    media.make_video(path, width=321, height=241, frames=24, fps=12, audio_streams=2, draw=draw)
    return path, truth


def inner(box):
    """The middle of a pasted face patch (the face itself, without the crop margin)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return x0 + w * 0.3, y0 + h * 0.3, x1 - w * 0.3, y1 - h * 0.3


def test_anonymize_video_keeps_everything_but_the_faces(scene_clip, tmp_path):
    clip, truth = scene_clip
    out = tmp_path / "out.mp4"
    tracks = tmp_path / "tracks.json"
    result = run("anonymize", str(clip), "-o", str(out), "--export-tracks", str(tracks), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip())
    assert report["status"] == "ok" and report["frames"] == 24 and report["faces"] >= 25
    in_info, in_frames = media.read_all(clip)
    out_info, out_frames = media.read_all(out)
    assert (out_info.width, out_info.height) == (321, 241)
    assert [f.pts for f in out_frames] == [f.pts for f in in_frames]
    assert [a["language"] for a in media.read_audio_streams(out)] == ["eng", "fra"]
    listed = read_tracks(tracks)
    for index, boxes in truth.items():
        covered = covered_mask(241, 321, listed.faces(index).regions, 1.3)
        for box in boxes:
            x0, y0, x1, y1 = (int(v) for v in inner(box))
            assert covered[y0:y1, x0:x1].all(), f"face {box} visible in frame {index}"
            before = in_frames[index].image[y0:y1, x0:x1].astype(int)
            after = out_frames[index].image[y0:y1, x0:x1].astype(int)
            assert np.abs(before - after).mean() > 10, f"face {box} not changed in frame {index}"
    # the first scene's track never reaches past the cut
    first_ids = {r.track_id for i in range(12) for r in listed.faces(i).regions}
    assert not first_ids & {r.track_id for i in range(12, 24) for r in listed.faces(i).regions}
    # background far from any face is kept (up to codec noise)
    corner_in = in_frames[20].image[200:, :100].astype(int)
    corner_out = out_frames[20].image[200:, :100].astype(int)
    assert np.abs(corner_in - corner_out).mean() < 4


def test_without_export_tracks_no_per_frame_log_is_kept(scene_clip, tmp_path, monkeypatch):
    """The per-frame region log grows with the video, so it exists only for --export-tracks."""
    from styleface_cli.tracks_file import TrackLog

    def refuse(self, stream):
        raise AssertionError("a track log was kept without --export-tracks")

    monkeypatch.setattr(TrackLog, "record", refuse)
    clip, _ = scene_clip
    result = run("anonymize", str(clip), "-o", str(tmp_path / "out.mp4"), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip())["faces"] >= 25


def test_render_from_an_edited_tracks_file_covers_the_added_box(scene_clip, tmp_path):
    clip, _ = scene_clip
    tracks = tmp_path / "tracks.json"
    assert run("anonymize", str(clip), "-o", str(tmp_path / "a.mp4"), "--export-tracks", str(tracks), "--quiet").exit_code == 0
    document = json.loads(tracks.read_text())
    added = [150.0, 150.0, 200.0, 220.0]  # a "face" the reviewer saw and the detector did not
    entry = next(f for f in document["frames"] if f["frame"] == 5)
    entry["faces"].append({"track": -1, "box": added, "landmarks": None, "score": 1.0, "source": "manual"})
    tracks.write_text(json.dumps(document))
    out = tmp_path / "rendered.mp4"
    result = run("render", str(clip), "--tracks", str(tracks), "-o", str(out), "--method", "mask", "--quiet")
    assert result.exit_code == 0, result.output
    _, frames = media.read_all(out)
    assert frames[5].image[170:200, 160:190].max() < 20  # masked black (codec noise aside)
    assert frames[4].image[170:200, 160:190].max() > 40  # only in the frame it was added to


def test_vfr_rotation_and_no_audio(tmp_path):
    clip = tmp_path / "vfr_rot.mp4"
    media.make_video(clip, width=64, height=48, frames=15, vfr=True, rotation=90, audio_streams=1)
    out = tmp_path / "out.mp4"
    assert run("anonymize", str(clip), "-o", str(out), "--no-audio", "--quiet").exit_code == 0
    in_info, in_frames = media.read_all(clip)
    out_info, out_frames = media.read_all(out)
    assert out_info.rotation == in_info.rotation == 90
    assert [f.time_s for f in out_frames] == pytest.approx([f.time_s for f in in_frames], abs=1e-3)
    assert media.read_audio_streams(out) == []


def test_image_input_hides_faces_and_strips_metadata(tmp_path):
    photo = tmp_path / "group.jpg"
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    Image.fromarray(insightface_photo()).save(photo, exif=exif.tobytes(), quality=95)
    result = run("anonymize", str(photo), "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = Path(report["output"])
    assert out == tmp_path / "group_anonymized.jpg" and report["faces"] == 6
    with Image.open(out) as image:
        assert not image.getexif() and "exif" not in image.info
        pixels = np.asarray(image.convert("RGB"))
    x0, y0, x1, y1 = FACE_BOXES_T1[0]
    assert np.abs(pixels[y0 + 30 : y1 - 30, x0 + 30 : x1 - 30].astype(int) - insightface_photo()[y0 + 30 : y1 - 30, x0 + 30 : x1 - 30]).mean() > 10


def test_no_faces_is_fine(tmp_path):
    clip = tmp_path / "empty.mp4"
    media.make_video(clip, width=64, height=48, frames=5)
    result = run("anonymize", str(clip), "--json", "--quiet")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["faces"] == 0


# --------------------------------------------------------------------------------------------------
# Bad inputs: one clear line, a documented exit code, nothing left behind


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "audio_only", "truncated"])
def test_bad_inputs_fail_clearly_and_leave_nothing(tmp_path, kind):
    clip = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        clip.write_bytes(b"")
    elif kind == "text":
        clip.write_text("this is not a video\n")
    elif kind == "audio_only":
        media.make_audio_only(clip)
    elif kind == "truncated":
        whole = tmp_path / "whole.mp4"
        media.make_video(whole, width=64, height=48, frames=40)
        media.make_truncated(whole, clip, keep=0.5)
        whole.unlink()
    before = set(p.name for p in tmp_path.iterdir())
    snapshot = clip.read_bytes() if clip.exists() else None
    result = CliRunner().invoke(app, ["anonymize", str(clip), "--quiet"])
    assert result.exit_code == ExitCode.INPUT, result.output
    assert leftovers(tmp_path, before) == []
    if snapshot is not None:
        assert clip.read_bytes() == snapshot  # the input is never touched


def test_output_equal_to_input_is_refused(tmp_path):
    clip = tmp_path / "a.mp4"
    media.make_video(clip, width=64, height=48, frames=3)
    data = clip.read_bytes()
    result = CliRunner().invoke(app, ["anonymize", str(clip), "-o", str(clip), "--overwrite"])
    assert result.exit_code == ExitCode.OUTPUT
    assert clip.read_bytes() == data


def test_existing_output_needs_overwrite_and_unwritable_folder_fails(tmp_path):
    clip = tmp_path / "a.mp4"
    media.make_video(clip, width=64, height=48, frames=3)
    out = tmp_path / "a_anonymized.mp4"
    out.write_bytes(b"keep me")
    assert CliRunner().invoke(app, ["anonymize", str(clip)]).exit_code == ExitCode.OUTPUT
    assert out.read_bytes() == b"keep me"
    assert CliRunner().invoke(app, ["anonymize", str(clip), "--overwrite", "--quiet"]).exit_code == 0
    assert out.read_bytes() != b"keep me"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert CliRunner().invoke(app, ["anonymize", str(clip), "-o", str(blocker / "out.mp4")]).exit_code == ExitCode.OUTPUT
    # a folder nobody may write into, even root: /proc
    result = CliRunner().invoke(app, ["anonymize", str(clip), "-o", "/proc/styleface_out.mp4"])
    assert result.exit_code == ExitCode.OUTPUT
    assert not os.path.exists("/proc/styleface_out.mp4")


def test_several_inputs_one_failing(tmp_path):
    good = tmp_path / "in" / "good.mp4"
    good.parent.mkdir()
    media.make_video(good, width=64, height=48, frames=3)
    (tmp_path / "in" / "bad.mp4").write_text("not a video")
    result = CliRunner().invoke(app, ["anonymize", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--json", "--quiet"])
    assert result.exit_code == ExitCode.PARTIAL
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.strip().splitlines())}
    assert records["good.mp4"]["status"] == "ok" and records["bad.mp4"]["status"] == "error"
    assert (tmp_path / "out" / "good_anonymized.mp4").is_file()
    assert not (tmp_path / "out" / "bad_anonymized.mp4").exists()


def test_error_message_is_one_line_from_the_console_script(tmp_path):
    import subprocess
    import sys

    script = Path(sys.executable).parent / "styleface"
    result = subprocess.run([str(script), "anonymize", str(tmp_path / "nope.mp4")], capture_output=True, text=True)
    assert result.returncode == ExitCode.INPUT
    errors = [line for line in result.stderr.splitlines() if line.startswith("styleface: error:")]
    assert len(errors) == 1 and "nope.mp4" in errors[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_webm_output_gets_vp9_and_opus_without_asking(tmp_path):
    clip = tmp_path / "in.mp4"
    media.make_video(clip, width=64, height=48, frames=6, audio_streams=1)
    out = tmp_path / "out.webm"
    result = run("anonymize", str(clip), "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
        assert [s.codec_context.name for s in container.streams.audio] == ["opus"]
    assert len(media.read_all(out)[1]) == 6
