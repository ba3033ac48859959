"""``--ray``: a dataset run on Ray actors gives the outputs and report of a local run; a worker killed
mid-run is retried; a corrupt input is reported once; a driver killed with SIGKILL is resumed; and
``prepare-data`` gets ``--shard`` and ``--ray``.

One local Ray instance (2 CPUs, no dashboard, its own short temporary folder) is started for the whole
module and shut down at the end; runs in this process reuse it (``cluster.connected``), the killed driver
is a real subprocess that joins it by address.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.errors import ConfigError, ExitCode
from tests import media
from tests.test_datasets import face_photo, hidden_files, records_of

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("key", "status", "exit_code", "method", "frames", "faces", "tracks", "regions_by_source", "members",
            "input_size", "input_mtime", "options", "version", "detector_hash")


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for this module: its GCS address (for drivers in other processes)."""
    temp = tempfile.mkdtemp(prefix="sfray")  # short: Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def pixels(path: Path) -> list[np.ndarray]:
    if path.suffix == ".mp4":
        return [frame.image for frame in media.read_all(path)[1]]
    return [np.asarray(Image.open(path))]


# -------------------------------------------------------------------------------------------------
# anonymize --ray


def test_ray_run_gives_the_outputs_and_report_of_a_local_run(tmp_path, ray_address):
    data = tmp_path / "data"
    for i in range(3):
        face_photo(data / f"face{i}.png", which=i % 2, seed=i)
    (data / "clips").mkdir()
    media.make_video(data / "clips" / "clip.mp4", width=64, height=48, frames=6)
    (data / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    face_photo(tmp_path / "member.png", which=1, seed=7)
    with tarfile.open(data / "shard-000000.tar", "w") as tar:  # a WebDataset shard: a photo and its label
        tar.add(tmp_path / "member.png", arcname="sample0.png")
        label = json.dumps({"id": 0}).encode()
        info = tarfile.TarInfo("sample0.json")
        info.size = len(label)
        tar.addfile(info, io.BytesIO(label))
    runs = {}
    for name, extra in (("local", ("--jobs", "1")), ("ray", ("--ray", "local", "--ray-cpus", "1"))):
        out, report = tmp_path / f"out-{name}", tmp_path / f"{name}.jsonl"
        result = cli("anonymize", str(data), "--output-dir", str(out), "--report", str(report), "--method", "blur",
                     "--json", "--quiet", *extra)
        assert result.exit_code == ExitCode.PARTIAL, result.output
        printed = records_of(result.stdout)
        assert sorted(map(json.dumps, printed)) == sorted(map(json.dumps, records_of(report.read_text())))
        runs[name] = {r["key"]: r for r in printed}
        assert not hidden_files(out)
    local, remote = runs["local"], runs["ray"]
    assert sorted(remote) == sorted(local) == ["clips/clip.mp4", "corrupt.png", "face0.png", "face1.png", "face2.png",
                                               "shard-000000.tar"]
    for key in local:
        assert {f: remote[key][f] for f in COMPARED} == {f: local[key][f] for f in COMPARED}, key
    assert remote["corrupt.png"]["status"] == "error" and remote["corrupt.png"]["exit_code"] == ExitCode.INPUT
    assert all(remote[f"face{i}.png"]["faces"] >= 1 for i in range(3))
    for key in ("face0.png", "face1.png", "face2.png", "clips/clip.mp4"):
        name = Path(remote[key]["output"]).relative_to(tmp_path / "out-ray")
        ours, theirs = pixels(tmp_path / "out-ray" / name), pixels(tmp_path / "out-local" / name)
        assert len(ours) == len(theirs) >= 1
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))  # pixel-identical blur
    shard = "shard-000000.tar"  # same members, same bytes (PNG is deterministic, headers are copied)
    assert remote[shard]["members"] == 2 and remote[shard]["faces"] >= 1
    assert (tmp_path / "out-ray" / shard).read_bytes() == (tmp_path / "out-local" / shard).read_bytes()


def test_a_killed_worker_is_retried_and_the_input_completes(tmp_path, ray_address, monkeypatch):
    data = tmp_path / "data"
    for i in range(3):
        face_photo(data / f"face{i}.png", which=i % 2, seed=i)
    marker = tmp_path / "killed"
    monkeypatch.setenv("STYLEFACE_TEST_RAY_KILL_ONCE", f"face1.png:{marker}")
    out, report = tmp_path / "out", tmp_path / "run.jsonl"
    result = cli("anonymize", str(data), "--output-dir", str(out), "--report", str(report), "--method", "blur",
                 "--json", "--quiet", "--ray", "local")
    assert result.exit_code == 0, result.output
    assert marker.exists(), "the test hook did not kill the worker"
    records = records_of(report.read_text())
    assert sorted(r["key"] for r in records) == ["face0.png", "face1.png", "face2.png"]  # one line each
    assert all(r["status"] == "ok" and r["faces"] >= 1 for r in records)
    assert sorted(p.name for p in out.iterdir()) == [f"face{i}_anonymized.png" for i in range(3)]

    # with no retries the same death is an error record of that input only (relative paths: the actors
    # work in the driver's folder)
    marker2 = tmp_path / "killed2"
    monkeypatch.setenv("STYLEFACE_TEST_RAY_KILL_ONCE", f"face1.png:{marker2}")
    monkeypatch.chdir(tmp_path)
    result = cli("anonymize", "data", "--output-dir", "out2", "--method", "blur", "--json", "--quiet",
                 "--ray", "local", "--ray-retries", "0")
    assert result.exit_code == ExitCode.PARTIAL, result.output
    records = {r["key"]: r for r in records_of(result.stdout)}
    assert marker2.exists() and len(records) == 3
    assert records["face1.png"]["status"] == "error" and "died 1 times" in records["face1.png"]["error"]
    assert records["face0.png"]["status"] == records["face2.png"]["status"] == "ok"
    assert records["face0.png"]["output"] == "out2/face0_anonymized.png" and (tmp_path / "out2/face0_anonymized.png").is_file()
    assert not hidden_files(tmp_path / "out2")


def test_driver_killed_mid_run_then_resume_completes_the_rest(tmp_path, ray_address):
    data = tmp_path / "data"
    keys = [f"clip{i}.mp4" for i in range(6)]
    data.mkdir()
    for key in keys:
        media.make_video(data / key, width=96, height=64, frames=60)
    out, report = tmp_path / "out", tmp_path / "run.jsonl"
    args = ["anonymize", str(data), "--output-dir", str(out), "--report", str(report), "--method", "blur", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen([sys.executable, "-m", "styleface_cli.cli.app", *args, "--ray", ray_address], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not report.exists() or len(report.read_text().splitlines()) < 2):
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    done_first = [r["key"] for r in records_of(report.read_text())]
    assert 2 <= len(done_first) < len(keys), "the driver was not killed part-way"
    for path in out.iterdir():  # outputs are whole or absent
        if not path.name.startswith("."):
            assert len(media.read_all(path)[1]) == 60
    result = cli(*args, "--resume", "--json", "--ray", "local")
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    assert sorted(r["key"] for r in records if r["status"] == "skipped") == sorted(done_first)
    assert sorted(r["key"] for r in records if r["status"] == "ok") == sorted(set(keys) - set(done_first))
    assert sorted(p.name for p in out.iterdir()) == sorted(k.replace(".mp4", "_anonymized.mp4") for k in keys)
    assert sorted(r["key"] for r in records_of(report.read_text())) == sorted(keys)


def test_ctrl_c_on_the_driver_cancels_the_tasks_and_leaves_nothing_partial(tmp_path, ray_address):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        media.make_video(data / f"clip{i}.mp4", width=160, height=120, frames=150)
    out, report = tmp_path / "out", tmp_path / "run.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen([sys.executable, "-m", "styleface_cli.cli.app", "anonymize", str(data), "--output-dir",
                               str(out), "--report", str(report), "--method", "blur", "--quiet", "--ray", ray_address],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out.is_dir() and hidden_files(out)):  # an input in flight
        assert driver.poll() is None, driver.stderr.read().decode()
        time.sleep(0.01)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == ExitCode.INTERRUPTED, stderr.decode()
    assert not hidden_files(out)  # the cancelled inputs left no temporaries
    finished = sorted(r["key"] for r in records_of(report.read_text())) if report.exists() else []
    visible = sorted(p.name for p in out.iterdir())
    assert len(finished) < 4 and visible == [k.replace(".mp4", "_anonymized.mp4") for k in finished]


def test_an_unexpected_error_in_a_task_is_that_items_result_not_retried(ray_address):
    from styleface_cli import cluster

    calls = []

    def factory():  # pickled by value (a closure), built in each actor
        def task(item, retry):
            if item == 2:
                raise ValueError("boom")
            return item * 10

        return task

    results = dict(cluster.run_items([1, 2, 3], factory=factory, cfg=cluster.RayConfig(address="local"),
                                     lost=lambda item, message: message, clean=calls.append))
    assert results == {1: 10, 2: "unexpected error in the Ray worker: ValueError: boom", 3: 30}
    assert calls == []  # nothing died: nothing to clean, nothing retried


def test_ray_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch):
    face_photo(tmp_path / "a.png", which=0, seed=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(ConfigError) as caught:
        cli("anonymize", str(tmp_path / "a.png"), "--method", "blur", "--ray", "local")
    assert caught.value.exit_code == ExitCode.USAGE and "pip install" in str(caught.value)
    assert not (tmp_path / "a_anonymized.png").exists()


# -------------------------------------------------------------------------------------------------
# prepare-data --shard, --ray


def _identities(src: Path) -> None:
    for person, which in (("anna", 0), ("bert", 1)):
        for i in range(3):
            face_photo(src / person / f"{i}.png", which=which, seed=10 * which + i)
    (src / "bert" / "broken.png").write_bytes(b"not a picture")


def _index(out: Path) -> dict:
    index = json.loads((out / "index.json").read_text())
    return {"samples": sorted((s["source"], s["image"]) for s in index["samples"]),
            "skipped": sorted((s["source"], s["reason"]) for s in index["skipped"])}


def test_prepare_data_shards_and_ray_give_the_index_of_one_local_run(tmp_path, ray_address):
    src = tmp_path / "src"
    _identities(src)
    options = ("--resolution", "64", "--min-face", "16", "--json", "--quiet")
    assert cli("prepare-data", str(src), str(tmp_path / "local"), *options).exit_code == 0
    local = _index(tmp_path / "local")
    assert len(local["samples"]) == 6 and [s for s, _ in local["skipped"]] == ["bert/broken.png"]

    sharded = tmp_path / "sharded"
    counts = []
    for k in range(2):
        result = cli("prepare-data", str(src), str(sharded), *options, "--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
        counts.append(json.loads(result.stdout)["processed"])
    assert sum(counts) == 7 and all(counts)  # each source in exactly one shard
    assert sorted(p.name for p in sharded.glob("records*.jsonl")) == ["records-0-of-2.jsonl", "records-1-of-2.jsonl"]
    assert _index(sharded) == local  # the last shard's index holds everything
    again = cli("prepare-data", str(src), str(sharded), *options)  # unsharded: everything is done already
    assert json.loads(again.stdout)["processed"] == 0

    result = cli("prepare-data", str(src), str(tmp_path / "ray"), *options, "--ray", "local")
    assert result.exit_code == 0, result.output
    assert _index(tmp_path / "ray") == local
    for image in sorted((tmp_path / "local" / "images").rglob("*.png")):  # the same crops
        twin = tmp_path / "ray" / image.relative_to(tmp_path / "local")
        assert np.array_equal(cv2.imread(str(image)), cv2.imread(str(twin)))
