"""A 2-process gloo run through torchrun completes, and its ranks end with identical parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train_step import RESOLUTION, make_synthetic_dataset

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_two_process_gloo_run_stays_in_sync(tmp_path):
    root = make_synthetic_dataset(tmp_path / "data", identities=4, per_identity=(2, 2, 2, 2), resolution=RESOLUTION)
    run_dir = tmp_path / "run"
    command = [
        str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "styleface_cli.train.loop", str(root),
        "--out", str(run_dir), "--preset", "tiny", "--resolution", str(RESOLUTION), "--batch-size", "2",
        "--steps", "3", "--r1-interval", "2", "--workers", "0", "--kernels", "ref", "--device", "cpu",
        "--sample-every", "3", "--log-every", "1", "--same-identity-prob", "0.5", "--deid-prob", "0.5", "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["steps"] == 3  # rank 0 speaks for the run
    ranks = [json.loads((run_dir / "sync" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # float.hex of each sum: bit-identical networks, K and w_avg on both ranks
    assert (run_dir / "checkpoints" / "state-00000003.pt").is_file()
    assert (run_dir / "samples" / "step-00000003.png").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged] == [1, 2, 3] and "r1" in logged[0]
