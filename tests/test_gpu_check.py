"""scripts/gpu/check.sh: the dry run (CPU, tiny sizes) runs every step, and the time boxes cut steps off."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = _load_check()


@pytest.mark.skipif(check.find_photo() is None, reason="no photo of faces (insightface's sample photo or .whl/photos)")
def test_dry_run_runs_every_step_and_reports_them(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    # A generous budget: this machine's CPUs may be shared, and the dry run is about the script, not speed.
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu" / "check.sh"), "--dry-run", "--budget-s", "500"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["ok"] is True and report["not_run"] == []
    steps = report["steps"]
    assert list(steps) == list(check.STEPS) and all(s["status"] == "ok" for s in steps.values())
    # The doctor's report comes first on the console, the table last.
    assert done.stdout.index("default path") < done.stdout.index("[check] kernels")
    assert done.stdout.rstrip().splitlines()[-1] == "all steps passed"
    assert steps["doctor"]["report"]["ok"] is True
    assert steps["kernels"]["tests"]["total"] > 0 and steps["kernels"]["tests"]["failed"] == 0  # cuda tests skip on a CPU
    rows = steps["generator"]["rows"]
    assert [(r["resolution"], r["kernels"], r["batch"]) for r in rows] == [(32, "ref", 1), (32, "ref", 2)]
    assert all(r["crops_per_s"] > 0 for r in rows)
    anonymize = steps["anonymize"]
    assert anonymize["record"]["method"] == "styleface" and anonymize["record"]["faces"] > 0
    assert anonymize["output"]["ok"] and anonymize["output"]["output"]["frames"] == anonymize["clip"]["frames"]
    assert anonymize["output"]["output"]["audio_streams"] == 1
    assert anonymize["stage_busy_seconds"]["generate"] > 0 and anonymize["stage_calls"]["encode"] == anonymize["clip"]["frames"]
    train = steps["train"]
    assert train["resume_continues"] is True and train["logged_steps"] == [1, 2]
    assert train["process_group_smoke"] == {"backend": "gloo", "ok": True}
    assert [r["summary"]["start_step"] for r in train["runs"]] == [0, 1]
    assert "===== train" in (out / "gpu_check.log").read_text()


def test_a_step_past_its_time_box_is_killed_and_reported(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    start = time.monotonic()
    assert check._wait(process, 0.5, None) == "timed out"
    assert time.monotonic() - start < 10 and process.poll() is not None


def test_steps_without_time_left_are_reported_as_not_run(tmp_path):
    report = check.orchestrate(out=tmp_path / "out", work=tmp_path / "work", dry_run=True, budget_s=5.0,
                               steps=["doctor", "train"])
    assert report["ok"] is False and report["not_run"] == ["doctor", "train"]
    assert report["steps"]["train"]["status"] == "not run" and "out of time" in report["steps"]["train"]["reason"]
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["not_run"] == ["doctor", "train"]
    lines = check.summary_lines(report)
    assert lines[-1] == "NOT ALL STEPS PASSED; not run or cut off: doctor, train"


def test_time_boxes_share_what_is_left_by_weight():
    boxes = [check.time_box(name, 450.0, list(check.STEPS[i:])) for i, name in enumerate(check.STEPS[:1])]
    assert boxes[0] == pytest.approx(450.0 * check.WEIGHTS["doctor"] / sum(check.WEIGHTS.values()))
    assert check.time_box("train", 100.0, ["train"]) == 100.0  # the last step gets all that is left


def test_the_summary_table_lists_each_step_and_generator_row():
    report = {"ok": False, "not_run": ["train"], "steps": {
        "kernels": {"status": "ok", "seconds": 80.2, "builds": [{"name": "bias_act", "device_kind": "cuda-sm90", "seconds": 41.0}],
                    "tests": {"passed": 300, "failed": 0, "skipped": 0}},
        "generator": {"status": "failed", "seconds": 12, "error": "RuntimeError: boom",
                      "rows": [{"resolution": 256, "kernels": "compiled", "batch": 8, "crops_per_s": 512.5,
                                "ms_per_batch": 15.6, "peak_gib": 1.25}]},
        "train": {"status": "timed out", "seconds": 90},
    }}
    text = "\n".join(check.summary_lines(report))
    assert "bias_act cuda-sm90 41.0 s" in text and "300 passed, 0 failed" in text
    assert "error: RuntimeError: boom" in text
    assert [line.split() for line in text.splitlines() if line.startswith("256")] == [
        ["256", "compiled", "8", "512.5", "15.6", "1.25"]]
    assert text.splitlines()[-1] == "NOT ALL STEPS PASSED; not run or cut off: train"
