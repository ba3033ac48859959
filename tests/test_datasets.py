"""Datasets: path lists, the run report, --resume, --shard, --jobs, tar shards, stopping, the Python API.

Every input is a tiny picture or clip made here; photos with faces are cut from the insightface group
photo (``tests.test_cli_anonymize.face_crop``). Runs that must be stopped or killed are real subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.errors import ExitCode, OutputError
from styleface_cli.inputs import plan_jobs, read_path_list, shard_of
from styleface_cli.report import FIELDS
from tests import media
from tests.test_cli_anonymize import face_crop

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def cli(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)


def cli_process(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([PYTHON, "-m", "styleface_cli.cli.app", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def records_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def face_photo(path: Path, which: int = 0, size: tuple[int, int] = (160, 120), seed: int = 0) -> None:
    """A small photo with one real face on a noisy background."""
    rng = np.random.default_rng(seed)
    canvas = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
    face = cv2.resize(face_crop(which), (70, 84))
    canvas[18:102, 40 + seed % 40 : 110 + seed % 40] = face
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def small_photo(path: Path, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(media.gradient(48, 32, index)).save(path)


def make_clip(path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    media.make_video(path, **kwargs)


def hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


# -------------------------------------------------------------------------------------------------
# Input lists


def test_path_lists_read_newlines_and_nuls_with_any_name():
    names = ["a b.jpg", "dossier/é ü.png", "x\u4e2d.webp"]
    assert read_path_list(io.BytesIO("\n".join(names).encode() + b"\r\n\n")) == names
    assert read_path_list(io.BytesIO(b"\0".join(n.encode() for n in names) + b"\0"), null=True) == names
    # a name with a newline in it survives only NUL-separated lists
    assert read_path_list(io.BytesIO(b"odd\nname.jpg\0"), null=True) == ["odd\nname.jpg"]
    # bytes that are not UTF-8 still name the file on disk
    assert os.fsencode(read_path_list(io.BytesIO(b"caf\xe9.jpg\n"))[0]) == b"caf\xe9.jpg"


@pytest.mark.parametrize("how", ["stdin", "stdin-null", "files-from"])
def test_stdin_and_files_from_keep_the_folder_structure(tmp_path, how):
    data = tmp_path / "data"
    names = ["top level.png", "sub dir/é ü.png", "sub dir/deeper/x\u4e2d.jpg"]
    for i, name in enumerate(names):
        small_photo(data / name, i)
    paths = [str(data / name) for name in names]
    out = tmp_path / "out"
    if how == "files-from":
        listing = tmp_path / "list.txt"
        listing.write_bytes("\n".join(paths).encode())
        result = cli("anonymize", "--files-from", str(listing), "--output-dir", str(out), "--method", "blur", "--json", "--quiet")
    elif how == "stdin-null":
        result = cli("anonymize", "-", "--null", "--output-dir", str(out), "--method", "blur", "--json", "--quiet",
                     stdin=b"\0".join(p.encode() for p in paths) + b"\0")
    else:
        result = cli("anonymize", "-", "--output-dir", str(out), "--method", "blur", "--json", "--quiet",
                     stdin="\n".join(paths).encode() + b"\n")
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    assert sorted(r["key"] for r in records) == sorted(names)  # relative to the common parent, data/
    for name in names:
        stem, suffix = os.path.splitext(name)
        assert (out / f"{stem}_anonymized{suffix}").is_file()


def test_listed_paths_are_names_not_patterns_and_missing_ones_are_reported(tmp_path):
    small_photo(tmp_path / "shot[1].png")
    listing = f"{tmp_path / 'shot[1].png'}\n{tmp_path / 'gone*.png'}\n".encode()
    result = cli("anonymize", "-", "--method", "blur", "--json", "--quiet", stdin=listing)
    assert result.exit_code == ExitCode.PARTIAL
    records = {r["key"]: r for r in records_of(result.stdout)}
    assert records["shot[1].png"]["status"] == "ok" and (tmp_path / "shot[1]_anonymized.png").is_file()
    assert records["gone*.png"]["status"] == "error" and records["gone*.png"]["exit_code"] == ExitCode.INPUT


def test_a_name_that_is_not_utf8_goes_through_the_report_and_resume(tmp_path):
    folder = os.fsencode(tmp_path / "data")
    os.mkdir(folder)
    raw = os.path.join(folder, b"caf\xe9 \xff.png")
    Image.fromarray(media.gradient(48, 32, 0)).save(os.fsdecode(raw))
    args = ("anonymize", "-", "--output-dir", str(tmp_path / "out"), "--report", str(tmp_path / "r.jsonl"),
            "--method", "blur", "--json", "--quiet", "--resume")
    first = cli(*args, stdin=raw + b"\n")
    assert first.exit_code == 0, first.output
    assert [r["status"] for r in records_of(first.stdout)] == ["ok"]
    assert os.path.exists(os.path.join(os.fsencode(tmp_path / "out"), b"caf\xe9 \xff_anonymized.png"))
    again = cli(*args, stdin=raw + b"\n")
    assert [r["status"] for r in records_of(again.stdout)] == ["skipped"]


def test_root_sets_the_keys_and_the_output_structure(tmp_path):
    small_photo(tmp_path / "data" / "a" / "b" / "p.png")
    result = cli("anonymize", "-", "--root", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"),
                 "--method", "blur", "--json", "--quiet", stdin=str(tmp_path / "data" / "a" / "b" / "p.png").encode())
    assert result.exit_code == 0, result.output
    assert records_of(result.stdout)[0]["key"] == "a/b/p.png"
    assert (tmp_path / "out" / "a" / "b" / "p_anonymized.png").is_file()


# -------------------------------------------------------------------------------------------------
# The report and the record schema


def test_report_lines_match_what_was_written_and_json_has_one_schema(tmp_path):
    data = tmp_path / "data"
    small_photo(data / "a.png", 0)
    make_clip(data / "clip.mp4", width=64, height=48, frames=4)
    (data / "broken.jpg").write_bytes(b"not a picture")
    report = tmp_path / "run.jsonl"
    result = cli("anonymize", str(data), "--output-dir", str(tmp_path / "out"), "--report", str(report),
                 "--method", "blur", "--json", "--quiet")
    assert result.exit_code == ExitCode.PARTIAL
    printed = records_of(result.stdout)
    lines = records_of(report.read_text(encoding="utf-8"))
    assert {r["key"] for r in lines} == {"a.png", "clip.mp4", "broken.jpg"}
    for record in printed + lines:
        assert tuple(record) == FIELDS  # every key, in the documented order, ok and error alike
    by_key = {r["key"]: r for r in lines}
    for key in ("a.png", "clip.mp4"):
        record = by_key[key]
        assert record["status"] == "ok" and record["error"] is None and record["exit_code"] == 0
        output = Path(record["output"])
        assert output.stat().st_size == record["output_size"]
        assert (data / key).stat().st_size == record["input_size"]
        assert record["options"]["method"] == "blur" and record["options"]["encode"]["crf"] == 20
        assert len(record["detector_hash"]) == 16 and record["version"]
    assert by_key["clip.mp4"]["frames"] == 4
    broken = by_key["broken.jpg"]
    assert broken["status"] == "error" and broken["exit_code"] == ExitCode.INPUT and "broken.jpg" in broken["error"]
    assert not (tmp_path / "out" / "broken_anonymized.jpg").exists()
    retried = records_of(cli("anonymize", str(data), "--output-dir", str(tmp_path / "out"), "--report", str(report),
                             "--method", "blur", "--json", "--quiet", "--resume").stdout)
    assert {r["key"]: r["status"] for r in retried} == {"a.png": "skipped", "clip.mp4": "skipped", "broken.jpg": "error"}
    assert "failed in an earlier run" in next(r["reason"] for r in retried if r["key"] == "broken.jpg")
    with pytest.raises(OutputError, match="--report"):  # refused before any input is processed
        cli("anonymize", str(data / "a.png"), "-o", str(tmp_path / "b.png"), "--report", str(tmp_path / "no" / "r.jsonl"))
    assert not (tmp_path / "b.png").exists()


# -------------------------------------------------------------------------------------------------
# --resume


def test_resume_skips_done_inputs_and_redoes_changed_ones(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        small_photo(data / f"p{i}.png", i)
    report = tmp_path / "run.jsonl"
    base = ("anonymize", str(data), "--output-dir", str(tmp_path / "out"), "--report", str(report), "--method", "blur",
            "--json", "--quiet", "--resume")
    first = cli(*base)
    assert first.exit_code == 0 and {r["status"] for r in records_of(first.stdout)} == {"ok"}
    again = cli(*base)
    assert again.exit_code == 0
    assert {r["status"] for r in records_of(again.stdout)} == {"skipped"}
    # a changed option redoes everything, and says why
    changed = cli(*base, "--strength", "2")
    records = records_of(changed.stdout)
    assert {r["status"] for r in records} == {"ok"}
    assert all("obfuscate.strength 1.0 -> 2.0" in r["reason"] for r in records)
    # a changed input is redone; the others are skipped
    small_photo(data / "p1.png", 7)
    os.utime(data / "p1.png", (time.time() + 5, time.time() + 5))
    records = {r["key"]: r for r in records_of(cli(*base, "--strength", "2").stdout)}
    assert records["p1.png"]["status"] == "ok" and "input changed" in records["p1.png"]["reason"]
    assert records["p0.png"]["status"] == records["p2.png"]["status"] == "skipped"
    # without a report an existing output counts as done
    plain = cli("anonymize", str(data), "--output-dir", str(tmp_path / "out"), "--method", "blur", "--json", "--quiet", "--resume")
    assert {r["status"] for r in records_of(plain.stdout)} == {"skipped"}
    assert len(report.read_text().splitlines()) == 3 + 3 + 1  # skipped inputs are not appended


def test_resume_after_sigkill_finishes_exactly_the_rest(tmp_path):
    data = tmp_path / "data"
    keys = [f"clip{i}.mp4" for i in range(6)]
    for key in keys:
        make_clip(data / key, width=64, height=48, frames=40)
    out, report = tmp_path / "out", tmp_path / "run.jsonl"
    args = ("anonymize", str(data), "--output-dir", str(out), "--report", str(report), "--method", "blur", "--quiet")
    process = cli_process(*args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not report.exists() or len(report.read_text().splitlines()) < 2):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_first = [r["key"] for r in records_of(report.read_text())]
    assert 2 <= len(done_first) < len(keys), "the run was not killed part-way"
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    for name in visible:  # outputs are whole or absent: each one decodes completely
        assert len(media.read_all(out / name)[1]) == 40
    second = cli_process(*args, "--resume", "--json")
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr.decode()
    records = records_of(stdout.decode())
    assert sorted(r["key"] for r in records if r["status"] == "skipped") == sorted(done_first)
    assert sorted(r["key"] for r in records if r["status"] == "ok") == sorted(set(keys) - set(done_first))
    assert sorted(p.name for p in out.iterdir()) == sorted(k.replace(".mp4", "_anonymized.mp4") for k in keys)
    assert sorted(r["key"] for r in records_of(report.read_text())) == sorted(keys)


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    small_photo(tmp_path / "a.png")
    dead = subprocess.Popen([PYTHON, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a_anonymized.{dead.pid}-0123abcd.partial.png"
    stale.write_bytes(b"half")
    live = tmp_path / f".a_anonymized.{os.getpid()}-0123abcd.partial.png"  # a live process's: left alone
    live.write_bytes(b"busy")
    assert cli("anonymize", str(tmp_path / "a.png"), "--method", "blur", "--quiet").exit_code == 0
    assert not stale.exists() and live.exists()


# -------------------------------------------------------------------------------------------------
# --shard, --dry-run


def test_shards_partition_a_list_exactly(tmp_path):
    paths = []
    for i in range(50):
        path = tmp_path / "data" / f"d{i % 7}" / f"img {i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(str(path))
    every = plan_jobs([], output=None, output_dir=tmp_path / "out", listed=paths)
    assert len(every) == 50
    for count in (1, 3, 4):
        parts = [plan_jobs([], output=None, output_dir=tmp_path / "out", listed=paths, shard=(k, count))
                 for k in range(count)]
        keys = [job.key for part in parts for job in part]
        assert sorted(keys) == sorted(job.key for job in every)  # each input in exactly one shard
        assert len(keys) == len(set(keys))
        if count > 1:
            assert all(part for part in parts)  # 50 keys: no shard is empty
    # keys are relative, so the shard of a file does not depend on where the dataset is mounted
    assert shard_of("d1/img 8.jpg", 4) == shard_of("d1/img 8.jpg", 4)


def test_dry_run_lists_and_writes_nothing(tmp_path):
    small_photo(tmp_path / "in" / "a.png")
    small_photo(tmp_path / "in" / "b.png", 1)
    result = cli("anonymize", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0
    assert "a.png" in result.stdout and "a_anonymized.png" in result.stdout and "b.png" in result.stdout
    assert not (tmp_path / "out").exists()
    result = cli("anonymize", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--dry-run", "--json", "--shard", "0/1")
    assert {r["status"] for r in records_of(result.stdout)} == {"planned"}


# -------------------------------------------------------------------------------------------------
# --jobs


def test_jobs_2_gives_the_same_pixels_as_jobs_1_and_reports_a_corrupt_input(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        face_photo(data / f"face{i}.png", which=i % 2, seed=i)
    make_clip(data / "clip.mp4", width=64, height=48, frames=6)
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        result = cli("anonymize", str(data), "--output-dir", str(out), "--method", "blur", "--jobs", str(jobs),
                     "--json", "--quiet")
        assert result.exit_code == ExitCode.PARTIAL, result.output
        records = {r["key"]: r for r in records_of(result.stdout)}
        assert records["corrupt.png"]["status"] == "error" and records["corrupt.png"]["exit_code"] == ExitCode.INPUT
        assert all(r["status"] == "ok" for k, r in records.items() if k != "corrupt.png")
        assert all(records[f"face{i}.png"]["faces"] >= 1 for i in range(4))
        results[jobs] = records
    for i in range(4):
        one = np.asarray(Image.open(tmp_path / "out1" / f"face{i}_anonymized.png"))
        two = np.asarray(Image.open(tmp_path / "out2" / f"face{i}_anonymized.png"))
        assert np.array_equal(one, two)
        assert not np.array_equal(one, np.asarray(Image.open(data / f"face{i}.png")))  # a face was blurred
    # Videos: same frames and faces. Their pixels are not compared: two runs of one clip in one process can
    # already differ by a few levels today (a pre-existing nondeterminism in the video path, reported).
    for jobs in (1, 2):
        assert len(media.read_all(tmp_path / f"out{jobs}" / "clip_anonymized.mp4")[1]) == 6
    assert results[1]["clip.mp4"]["faces"] == results[2]["clip.mp4"]["faces"]


# -------------------------------------------------------------------------------------------------
# Tar shards


def test_tar_shard_round_trip_members_order_bytes_and_faces(tmp_path):
    from tests.yunet import MODEL, yunet_faces

    if not MODEL.is_file():
        pytest.skip("YuNet model not in ../shared/models")
    members: list[tuple[str, bytes]] = []
    for i in range(2):
        photo = tmp_path / f"p{i}.jpg"
        face_photo(photo, which=i, seed=i)
        members += [(f"sample{i:03d}.jpg", photo.read_bytes()),
                    (f"sample{i:03d}.json", json.dumps({"caption": f"person {i}", "é": True}).encode()),
                    (f"sample{i:03d}.txt", f"caption {i}\n".encode())]
    members.insert(2, ("sample000.cls", b"\x00\x01\x02 binary"))
    clip = tmp_path / "clip.mp4"
    media.make_video(clip, width=64, height=48, frames=4)
    members.append(("sample002.mp4", clip.read_bytes()))
    members.append(("sample002.json", b"{}"))
    shard = tmp_path / "shards" / "shard-000007.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    result = cli("anonymize", str(tmp_path / "shards"), "--output-dir", str(tmp_path / "out"), "--method", "blur",
                 "--json", "--quiet")
    assert result.exit_code == 0, result.output
    record = records_of(result.stdout)[0]
    assert record["members"] == len(members) and record["frames"] == 2 + 4 and record["faces"] >= 2
    out = tmp_path / "out" / "shard-000007.tar"
    with tarfile.open(out) as tar:
        written = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert [name for name, _ in written] == [name for name, _ in members]  # same names, same order
    for (name, before), (_, after) in zip(members, written):
        if name.endswith(".mp4"):  # re-encoded, every frame kept
            (tmp_path / "member.mp4").write_bytes(after)
            assert after != before and len(media.read_all(tmp_path / "member.mp4")[1]) == 4
            continue
        if not name.endswith(".jpg"):
            assert after == before  # byte for byte
            continue
        original = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"))
        hidden = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"))
        assert hidden.shape == original.shape
        faces = yunet_faces(original)
        assert faces, f"YuNet finds no face in {name}: the test photo is wrong"
        remaining = yunet_faces(hidden)
        for box, _, _ in faces:
            x0, y0, x1, y1 = box.astype(int)
            inner = (slice(y0 + 5, y1 - 5), slice(x0 + 5, x1 - 5))
            change = np.abs(hidden[inner].astype(int) - original[inner].astype(int)).mean()
            assert change > 10, f"{name}: the face at {box} is barely changed ({change:.1f})"
            for other, _, _ in remaining:
                overlap = max(0, min(x1, other[2]) - max(x0, other[0])) * max(0, min(y1, other[3]) - max(y0, other[1]))
                assert overlap < 0.3 * (x1 - x0) * (y1 - y0), f"{name}: YuNet still finds the face at {box}"
    assert hidden_files(tmp_path / "out") == []


# -------------------------------------------------------------------------------------------------
# Clashes and our own outputs (issue 9.1, 9.9)


def test_overwrite_never_writes_over_another_input(tmp_path):
    x, y = tmp_path / "x.png", tmp_path / "x_anonymized.png"
    small_photo(x, 0)
    small_photo(y, 1)
    before = {p.name: p.read_bytes() for p in (x, y)}
    with pytest.raises(OutputError, match="another input"):
        plan_jobs([str(x), str(y)], output=None, output_dir=None)
    process = cli_process("anonymize", str(x), str(y), "--overwrite", "--method", "blur")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == ExitCode.OUTPUT, stderr.decode()
    assert "another input" in stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x_anonymized.png"]  # nothing written
    assert {p.name: p.read_bytes() for p in (x, y)} == before


def test_a_second_run_never_takes_its_own_outputs_as_inputs(tmp_path):
    data = tmp_path / "data"
    small_photo(data / "a.png", 0)
    small_photo(data / "sub" / "b.png", 1)
    for _ in range(2):  # beside the inputs
        assert cli("anonymize", str(data), "--method", "blur", "--overwrite", "--quiet").exit_code == 0
    inside = data / "clean"  # an --output-dir inside the input folder
    for _ in range(2):
        result = cli("anonymize", str(data), "--output-dir", str(inside), "--method", "blur", "--overwrite", "--json", "--quiet")
        assert result.exit_code == 0
        assert sorted(r["key"] for r in records_of(result.stdout)) == ["a.png", "sub/b.png"]
    names = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert names == ["a.png", "a_anonymized.png", "clean/a_anonymized.png", "clean/sub/b_anonymized.png",
                     "sub/b.png", "sub/b_anonymized.png"]
    # the same through a path list (find data -name '*.png' | styleface anonymize - --output-dir data/clean)
    listing = "\n".join(str(p) for p in data.rglob("*.png")).encode()
    result = cli("anonymize", "-", "--root", str(data), "--output-dir", str(inside), "--method", "blur", "--overwrite",
                 "--json", "--quiet", stdin=listing)
    assert sorted(r["key"] for r in records_of(result.stdout)) == ["a.png", "sub/b.png"]


# -------------------------------------------------------------------------------------------------
# Stopping (issue 9.2, 9.13)


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory) -> Path:
    """Two clips long enough to be stopped in the middle (one for each of two workers)."""
    data = tmp_path_factory.mktemp("long")
    for i in range(2):
        make_clip(data / f"long{i}.mp4", width=128, height=96, frames=300)
    return data


@pytest.mark.parametrize("signum, code, jobs", [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1), (signal.SIGHUP, 129, 1),
                                                (signal.SIGTERM, 143, 2)])
def test_signals_leave_nothing_partial_and_exit_128_plus_signal(tmp_path, long_clips, signum, code, jobs):
    data = long_clips
    out = tmp_path / "out"
    process = cli_process("anonymize", str(data), "--output-dir", str(out), "--method", "blur", "--jobs", str(jobs),
                          "--report", str(tmp_path / "r.jsonl"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and hidden_files(out)):
        time.sleep(0.02)
    assert hidden_files(out), "no output was being written"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr.decode()
    message = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    assert f"styleface: {message}" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert hidden_files(out) == []
    assert not (tmp_path / "r.jsonl").exists() or all(r["status"] == "ok" for r in records_of((tmp_path / "r.jsonl").read_text()))


# -------------------------------------------------------------------------------------------------
# The Python API


def test_api_anonymizer_array_file_and_anonymize(tmp_path):
    from styleface_cli.api import Anonymizer, anonymize

    face_photo(tmp_path / "in" / "f.png")
    hider = Anonymizer.from_options(method="pixelate")
    rgb = np.asarray(Image.open(tmp_path / "in" / "f.png").convert("RGB"))
    hidden = hider.array(rgb)
    assert hidden.shape == rgb.shape and hidden.dtype == np.uint8
    assert np.abs(hidden[30:90, 55:95].astype(int) - rgb[30:90, 55:95].astype(int)).mean() > 10  # the face
    assert np.array_equal(hidden[:, 140:], rgb[:, 140:])  # far from it, untouched
    record = hider.file(tmp_path / "in" / "f.png", tmp_path / "f_out.png")
    assert tuple(record) == FIELDS and record["status"] == "ok" and record["faces"] >= 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "f_out.png").convert("RGB")), hidden)
    records = list(anonymize([tmp_path / "in"], output_dir=tmp_path / "out", method="blur", report=tmp_path / "r.jsonl"))
    assert [r["status"] for r in records] == ["ok"] and (tmp_path / "out" / "f_anonymized.png").is_file()
    assert [r["status"] for r in anonymize([tmp_path / "in"], output_dir=tmp_path / "out", method="blur",
                                           report=tmp_path / "r.jsonl", resume=True)] == ["skipped"]


def test_a_worker_killed_mid_input_is_reported_and_the_others_finish(tmp_path, long_clips):
    data = tmp_path / "data"
    data.mkdir()
    os.link(long_clips / "long0.mp4", data / "long0.mp4")
    small_photo(data / "small0.png")
    small_photo(data / "small1.png", 1)
    out = tmp_path / "out"
    process = cli_process("anonymize", str(data), "--output-dir", str(out), "--method", "blur", "--jobs", "2", "--json")
    deadline = time.monotonic() + 60
    writing = []
    while time.monotonic() < deadline and not writing:
        writing = [p for p in hidden_files(out)] if out.exists() else []
        writing = [p for p in writing if p.name.startswith(".long0_anonymized.")]
        time.sleep(0.02)
    worker = int(writing[0].name.split(".")[-3].split("-")[0])  # the pid in the temporary's name
    assert worker != process.pid
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == ExitCode.PARTIAL, stderr.decode()
    records = {r["key"]: r for r in records_of(stdout.decode())}
    assert sorted(records) == ["long0.mp4", "small0.png", "small1.png"]
    assert records["long0.mp4"]["status"] == "error" and "worker process died" in records["long0.mp4"]["error"]
    assert records["small0.png"]["status"] == records["small1.png"]["status"] == "ok"
    assert hidden_files(out) == []  # the dead worker's temporary is removed too


def test_a_failed_input_leaves_no_empty_output_folder(tmp_path):
    """--output-dir mirrors folders; the ones made for an input that then fails are taken back."""
    data = tmp_path / "data"
    (data / "deep" / "er").mkdir(parents=True)
    (data / "deep" / "er" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    small_photo(data / "good.png")
    out = tmp_path / "out"
    result = cli("anonymize", str(data), "--output-dir", str(out), "--method", "blur", "--json", "--quiet")
    assert result.exit_code == ExitCode.PARTIAL
    assert (out / "good_anonymized.png").is_file()
    assert not (out / "deep").exists()  # neither out/deep/er nor out/deep stays behind
