"""The checkpoint format: round trip, strict loading, frozen key names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from styleface_cli.errors import WeightsError
from styleface_cli.model import (
    StyleFace,
    StyleFaceConfig,
    init_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from styleface_cli.model.weights import CONFIG_KEY, FORMAT_VERSION_KEY
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)

KEYS_SNAPSHOT = Path(__file__).parent / "data" / "checkpoint_keys_tiny.txt"


def key_lines(model: StyleFace) -> list[str]:
    """``name shape dtype`` per tensor (shape like ``64x4x4``, ``scalar``), sorted by name (as safetensors stores them)."""
    return sorted(f"{name} {'x'.join(map(str, t.shape)) or 'scalar'} {str(t.dtype).removeprefix('torch.')}"
                  for name, t in model.state_dict().items())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    init_checkpoint(StyleFaceConfig.tiny(32), path, seed=0)
    return path


def metadata_of(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = StyleFace(StyleFaceConfig.tiny(32)).eval()
    with torch.no_grad():  # non-default buffers must survive too
        model.projector.mapping.w_avg.normal_()
        model.synthesis.b32.conv1.noise_strength.fill_(0.3)
    path = save_checkpoint(tmp_path / "model.safetensors", model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    crops, target = torch.rand(2, 3, 112, 112) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for m in (model, loaded):
            m.out = m(target, m.encode_identity(crops).w_plus)
            m.deid = m(target, m.sample_identity(2, generator=torch.Generator().manual_seed(0), truncation_psi=0.7).w_plus)
    assert torch.equal(model.out, loaded.out) and torch.equal(model.deid, loaded.deid)
    metadata = metadata_of(path)
    assert metadata[FORMAT_VERSION_KEY] == "1"
    assert json.loads(metadata[CONFIG_KEY]) == model.config.to_dict()


def test_init_is_reproducible_by_seed(tmp_path, checkpoint):
    init_checkpoint(StyleFaceConfig.tiny(32), tmp_path / "same.safetensors", seed=0)
    init_checkpoint(StyleFaceConfig.tiny(32), tmp_path / "other.safetensors", seed=1)
    a, b, c = (load_file(str(p)) for p in (checkpoint, tmp_path / "same.safetensors", tmp_path / "other.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["synthesis.b4.const"], c["synthesis.b4.const"])
    assert read_checkpoint_config(checkpoint) == StyleFaceConfig.tiny(32)


def test_key_names_are_frozen(checkpoint):
    """The checkpoint format of the tiny config; after a deliberate change, regenerate the file with
    ``python -c "from tests.test_model_weights import write_snapshot; write_snapshot()"`` and bump
    FORMAT_VERSION / CONFIG_VERSION when old checkpoints no longer load."""
    assert key_lines(load_checkpoint(checkpoint)) == KEYS_SNAPSHOT.read_text().splitlines()


def write_snapshot() -> None:
    KEYS_SNAPSHOT.parent.mkdir(exist_ok=True)
    KEYS_SNAPSHOT.write_text("\n".join(key_lines(StyleFace(StyleFaceConfig.tiny(32)))) + "\n")


def rewrite(path: Path, tensors: dict, metadata: dict | None) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path, checkpoint):
    tensors, metadata = load_file(str(checkpoint)), metadata_of(checkpoint)
    missing = dict(tensors)
    for key in ("synthesis.b4.const", "synthesis.b8.conv0.weight", "attributes.fromrgb.weight",
                "projector.fc.weight", "recognizer.fc.bias", "synthesis.b32.torgb.bias"):
        del missing[key]
    with pytest.raises(WeightsError, match=r"6 missing keys \(recognizer\.fc\.bias, synthesis\.b4\.const, .*, \.\.\.\)"):
        load_checkpoint(rewrite(tmp_path / "missing.safetensors", missing, metadata))
    with pytest.raises(WeightsError, match=r"1 unexpected key \(extra\.weight\)"):
        load_checkpoint(rewrite(tmp_path / "unexpected.safetensors", {**tensors, "extra.weight": torch.zeros(1)}, metadata))
    wrong = {**tensors, "synthesis.b4.const": torch.zeros(3, 4, 4)}
    with pytest.raises(WeightsError, match=r"wrong shape key \(synthesis\.b4\.const \[3, 4, 4\] != \[64, 4, 4\]\)"):
        load_checkpoint(rewrite(tmp_path / "shape.safetensors", wrong, metadata))
    ints = {**tensors, "synthesis.b4.const": torch.zeros(64, 4, 4, dtype=torch.int32)}
    with pytest.raises(WeightsError, match="wrong dtype"):
        load_checkpoint(rewrite(tmp_path / "dtype.safetensors", ints, metadata))


def test_half_precision_tensors_load_as_float32(tmp_path, checkpoint):
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(checkpoint)).items()}
    model = load_checkpoint(rewrite(tmp_path / "fp16.safetensors", tensors, metadata_of(checkpoint)))
    assert model.synthesis.b4.const.dtype == torch.float32


def test_not_a_checkpoint(tmp_path, checkpoint):
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "text.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(WeightsError):
        load_checkpoint(truncated)
    pickle = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pickle)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_checkpoint(pickle)  # never unpickled


def test_bad_metadata(tmp_path, checkpoint):
    tensors, metadata = load_file(str(checkpoint)), metadata_of(checkpoint)
    with pytest.raises(WeightsError, match="not a StyleFace checkpoint"):
        load_checkpoint(rewrite(tmp_path / "plain.safetensors", tensors, None))
    with pytest.raises(WeightsError, match="format version 2"):
        load_checkpoint(rewrite(tmp_path / "v2.safetensors", tensors, {**metadata, FORMAT_VERSION_KEY: "2"}))
    with pytest.raises(WeightsError, match="invalid StyleFace config"):
        load_checkpoint(rewrite(tmp_path / "json.safetensors", tensors, {**metadata, CONFIG_KEY: "{not json"}))
    config = {**json.loads(metadata[CONFIG_KEY]), "resolution": 48}
    with pytest.raises(WeightsError, match="resolution must be a power of two"):
        load_checkpoint(rewrite(tmp_path / "res.safetensors", tensors, {**metadata, CONFIG_KEY: json.dumps(config)}))
    config = {**json.loads(metadata[CONFIG_KEY]), "colour": "blue"}
    with pytest.raises(WeightsError, match="unknown \\['colour'\\]"):
        load_checkpoint(rewrite(tmp_path / "field.safetensors", tensors, {**metadata, CONFIG_KEY: json.dumps(config)}))
