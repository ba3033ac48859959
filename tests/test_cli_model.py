"""``styleface model init`` and ``styleface model info`` through the real Typer app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.cli.model import build_config
from styleface_cli.errors import ConfigError, OutputError, WeightsError
from styleface_cli.model import StyleFaceConfig, load_checkpoint
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_init_then_info(tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = run("model", "init", str(out), "--preset", "tiny", "--resolution", "32", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "32 px" in result.stdout
    assert load_checkpoint(out).config == StyleFaceConfig.tiny(32)

    result = run("model", "info", str(out), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["config"] == StyleFaceConfig.tiny(32).to_dict() and record["num_ws"] == 8
    parts = record["parameters"]
    assert set(parts) == {"recognizer", "projector", "mapping", "attributes", "injection", "synthesis", "total"}
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total") > 0

    result = run("model", "info", str(out))
    assert result.exit_code == 0 and "synthesis" in result.stdout and f"{parts['total']:,}" in result.stdout


def test_init_options_override_the_preset(tmp_path):
    out = tmp_path / "custom.safetensors"
    result = run("model", "init", str(out), "--resolution", "64", "--channel-base", "512", "--channel-max", "32",
                 "--z-dim", "16", "--w-dim", "24", "--mapping-layers", "1", "--attr-resolution", "32",
                 "--recognizer", "tiny", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["config"]
    assert config == {"resolution": 64, "channel_base": 512, "channel_max": 32, "z_dim": 16, "w_dim": 24,
                      "mapping_layers": 1, "attr_resolution": 32, "recognizer": "tiny", "version": 1}


def test_precedence_function():
    assert build_config(preset="paper", resolution=512) == StyleFaceConfig.preset(512)
    assert build_config(preset="tiny", resolution=64, z_dim=8).z_dim == 8
    with pytest.raises(ConfigError, match="preset"):
        build_config(preset="huge", resolution=64)


def test_init_refuses_to_overwrite(tmp_path):
    out = tmp_path / "a.safetensors"
    out.write_text("keep me")
    result = run("model", "init", str(out), "--preset", "tiny")
    assert isinstance(result.exception, OutputError) and out.read_text() == "keep me"
    assert run("model", "init", str(out), "--preset", "tiny", "--resolution", "32", "--overwrite").exit_code == 0
    assert isinstance(run("model", "init", str(tmp_path / "no" / "b.safetensors"), "--preset", "tiny").exception,
                      OutputError)


@pytest.mark.parametrize("options, message", [
    (["--resolution", "48"], "resolution must be a power of two"),
    (["--recognizer", "vgg"], "unknown recognizer"),
    (["--attr-resolution", "128", "--resolution", "64"], "attr_resolution"),
    (["--z-dim", "0"], "z_dim must be a positive integer"),
])
def test_init_rejects_bad_options(tmp_path, options, message):
    result = run("model", "init", str(tmp_path / "x.safetensors"), "--preset", "tiny", *options)
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)
    assert not (tmp_path / "x.safetensors").exists()


def test_info_on_bad_files(tmp_path):
    result = run("model", "info", str(tmp_path / "missing.safetensors"))
    assert isinstance(result.exception, WeightsError) and "not found" in str(result.exception)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    assert isinstance(run("model", "info", str(junk)).exception, WeightsError)
