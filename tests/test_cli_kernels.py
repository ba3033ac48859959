"""``styleface kernels build`` and ``styleface kernels check`` through the Typer app."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from styleface_cli.cli import kernels as kernels_cli
from styleface_cli.cli.app import app, main
from styleface_cli.errors import ExitCode, KernelBuildError
from styleface_cli.ops import build
from tests.test_ops_build import broken_sources, compiled, kernel_cache  # noqa: F401  (fixtures)

runner = CliRunner()


def test_build_json_reports_every_kernel_from_the_cache(compiled):
    result = runner.invoke(app, ["kernels", "build", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)["kernels"]
    assert sorted((r["name"], r["device_kind"]) for r in records if r["device_kind"] == "cpu") == [
        ("bias_act", "cpu"), ("upfirdn2d", "cpu")]
    for record in records:
        assert Path(record["path"]) == compiled.loaded[record["name"]].path  # the session's builds, reused
        assert Path(record["library"]).is_file()
        assert record["seconds"] >= 0
    assert len([p for p in compiled.kernels.iterdir() if p.is_dir()]) == len(records)  # nothing new built


def test_build_prints_a_table(compiled):
    result = runner.invoke(app, ["kernels", "build"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["kernel", "device", "status", "seconds", "path"]
    # "compiled" if this process built it (the session fixture did), "cached" if it came from the cache.
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["bias_act"][1:3] == ["cpu", "cached"]
    assert rows["upfirdn2d"][1] == "cpu" and rows["upfirdn2d"][2] in ("compiled", "cached")


def test_build_failure_is_a_kernel_build_error_with_its_exit_code(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "KERNEL_SOURCE_DIR", broken_sources(tmp_path, *build.KERNEL_NAMES))
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["kernels", "build", "--cache-dir", str(cache)])
    assert isinstance(result.exception, KernelBuildError)
    # Every kernel was tried, and the message names each build log.
    logs = [Path(part.rsplit("build log ", 1)[1]) for part in str(result.exception).split("; ")]
    assert len(logs) == len(build.KERNEL_NAMES) and all(log.is_file() for log in logs)
    # Through the console script, the error becomes one line and the documented exit code.
    monkeypatch.setattr(sys, "argv", ["styleface", "kernels", "build", "--cache-dir", str(cache)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == ExitCode.KERNEL


def test_check_passes_and_prints_a_table(compiled):
    result = runner.invoke(app, ["kernels", "check"])
    assert result.exit_code == 0, result.output
    assert "MISMATCH" not in result.stdout
    assert result.stdout.splitlines()[0].split()[:4] == ["op", "case", "device", "dtype"]
    assert "act=swish" in result.stdout and "up=4" in result.stdout
    agree, total = result.stdout.strip().splitlines()[-1].split()[0].split("/")
    assert agree == total and int(total) >= 60


def test_check_json(compiled):
    result = runner.invoke(app, ["kernels", "check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {r["op"] for r in report["results"]} == {"bias_act", "upfirdn2d"}
    assert all(r["value_error"] <= r["tolerance"] for r in report["results"])


def test_check_exits_non_zero_on_a_mismatch(monkeypatch):
    bad = kernels_cli.ParityResult("bias_act", "act=relu clamp=None", "cpu", "float32", 0.5, 0.0, 1e-5)
    good = kernels_cli.ParityResult("upfirdn2d", "up=2 down=1 f=4x4", "cpu", "float32", 0.0, 0.0, 1e-5)
    monkeypatch.setattr(kernels_cli, "check_parity", lambda devices: [good, bad])
    result = runner.invoke(app, ["kernels", "check"])
    assert result.exit_code == ExitCode.FAILURE
    assert "MISMATCH" in result.stdout and "1/2 cases agree" in result.stdout
