"""``styleface prepare-data``, ``train`` and ``train-export`` through the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.errors import ConfigError, InputError
from styleface_cli.model import load_checkpoint
from tests.test_prepare_data import FAMILY, FAMILY_IDENTITIES, needs_family
from tests.test_train_step import RESOLUTION, make_synthetic_dataset

runner = CliRunner()


def test_commands_are_registered():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("prepare-data", "train", "train-export"):
        assert name in result.output


def test_train_then_export(tmp_path):
    root = make_synthetic_dataset(tmp_path / "data", resolution=RESOLUTION)
    run_dir = tmp_path / "run"
    args = ["train", str(root), "--out", str(run_dir), "--preset", "tiny", "--resolution", str(RESOLUTION),
            "--batch-size", "2", "--steps", "2", "--workers", "0", "--kernels", "ref", "--device", "cpu",
            "--sample-every", "2", "--log-every", "1", "--json", "--export", str(tmp_path / "end.safetensors")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["exported"].endswith("end.safetensors")
    assert load_checkpoint(tmp_path / "end.safetensors").config.resolution == RESOLUTION
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["batch_size"] == 2 and saved["model"]["recognizer"] == "tiny"
    assert (run_dir / "samples" / "step-00000002.png").is_file()

    result = runner.invoke(app, ["train-export", str(run_dir), str(tmp_path / "later.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"].endswith("state-00000002.pt")
    assert load_checkpoint(tmp_path / "later.safetensors").config.resolution == RESOLUTION


def test_bad_options_and_inputs_raise_typed_errors(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "tiny",
                                 "--resolution", "32", "--momentum", "1.5"])
    assert isinstance(result.exception, ConfigError)
    result = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                                 "--resolution", "32", "--kernels", "ref", "--device", "cpu"])
    assert isinstance(result.exception, InputError)
    result = runner.invoke(app, ["train-export", str(tmp_path), str(tmp_path / "x.safetensors")])
    assert isinstance(result.exception, InputError)
    result = runner.invoke(app, ["prepare-data", str(tmp_path), str(tmp_path / "out"), "--similar-face-ratio", "0"])
    assert isinstance(result.exception, ConfigError)


@needs_family
def test_prepare_data_on_the_family_photos(tmp_path):
    args = ["prepare-data", str(FAMILY), str(tmp_path / "out"), "--resolution", "64", "--workers", "2",
            "--identity-from-name", r"^(.+?)\d+$", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["identities"] == len(FAMILY_IDENTITIES) and summary["samples"] == 16 and summary["skipped"] == 1
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["processed"] == 0 and again["already_done"] == 17
