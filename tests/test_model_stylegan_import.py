"""Pretrained StyleGAN2 files as StyleFace's starting point (``model/stylegan_import.py``).

The fixtures in ../shared/fixtures/stylegan2 (skipped when absent) are tiny random networks written by the
original NVlabs and rosinality code, with the outputs that code computes for fixed latents: our plain
``Generator`` / ``Discriminator`` fed the mapped weights must reproduce them. The malicious-pickle test
needs no fixture.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.errors import ConfigError, WeightsError
from styleface_cli.model import StyleFaceConfig, load_checkpoint
from styleface_cli.model.stylegan_import import (
    build_discriminator,
    build_generator,
    crop_to,
    load_restricted_pickle,
    read_stylegan,
    styleface_config_for,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
STYLEGAN = FIXTURES / "stylegan2"
needs_fixtures = pytest.mark.skipif(not STYLEGAN.is_dir(), reason="../shared/fixtures/stylegan2 not present")

# file, reference, key of the discriminator outputs, key of the average w
FORMATS = {
    "nvlabs": ("nvlabs_tiny32.pkl", "nvlabs_tiny32_reference.npz", "d_logits", "w_avg"),
    "rosinality": ("rosinality_tiny32.pt", "rosinality_tiny32_reference.npz", "d_out", "latent_avg"),
}
TOL = dict(atol=1e-4, rtol=1e-4)  # the fixture README's bound for an independent float32 implementation


@pytest.fixture(scope="module", params=sorted(FORMATS))
def imported(request):
    if not STYLEGAN.is_dir():
        pytest.skip("../shared/fixtures/stylegan2 not present")
    name, ref, d_key, avg_key = FORMATS[request.param]
    weights = read_stylegan(STYLEGAN / name)
    return request.param, weights, dict(np.load(STYLEGAN / ref)), d_key, avg_key


@needs_fixtures
@torch.no_grad()
def test_plain_networks_reproduce_the_original_code(imported):
    source, weights, ref, d_key, avg_key = imported
    assert weights.arch.source == source and weights.arch.resolution == 32 and weights.arch.z_dim == 32
    torch.set_num_threads(2)
    g, d = build_generator(weights), build_discriminator(weights)
    z = torch.from_numpy(ref["z"])
    torch.testing.assert_close(g.mapping.w_avg, torch.from_numpy(ref[avg_key]).reshape(-1), atol=0, rtol=0)
    for tag, psi in (("psi1", 1.0), ("psi0p7", 0.7)):
        ws = g.mapping(z, truncation_psi=psi)
        torch.testing.assert_close(ws, torch.from_numpy(ref[f"ws_{tag}"]), **TOL)
        img = g.synthesis(ws, noise_mode="const")
        torch.testing.assert_close(img, torch.from_numpy(ref[f"img_{tag}"]), **TOL)
        for fused in (True, False):  # both modulated-convolution paths
            torch.testing.assert_close(g.synthesis(ws, noise_mode="const", fused_modconv=fused), img, **TOL)
        torch.testing.assert_close(d(img), torch.from_numpy(ref[f"{d_key}_{tag}"]), **TOL)
    if "img_psi1_noise_none" in ref:
        img = g.synthesis(g.mapping(z), noise_mode="none")
        torch.testing.assert_close(img, torch.from_numpy(ref["img_psi1_noise_none"]), **TOL)
    if "w" in ref:  # rosinality's get_latent
        torch.testing.assert_close(g.mapping(z)[:, 0], torch.from_numpy(ref["w"]), **TOL)


@needs_fixtures
def test_rosinality_table_that_follows_no_base_max_rule_is_stored_explicitly():
    weights = read_stylegan(STYLEGAN / "rosinality_tiny32.pt")
    config = styleface_config_for(weights.arch, StyleFaceConfig.tiny(32))
    assert config.channels == (64, 48, 32, 32) and config.conv_clamp is None
    nv = styleface_config_for(read_stylegan(STYLEGAN / "nvlabs_tiny32.pkl").arch, StyleFaceConfig.tiny(32))
    assert nv.channels is None and (nv.channel_base, nv.channel_max) == (512, 64)
    assert StyleFaceConfig.from_dict(config.to_dict()) == config  # JSON round trip (tuple <-> list)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w').close()",)

    for payload in (System(), Eval(), {"G_ema": System()}):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(WeightsError, match="refused to load (posix|builtins)"):
            read_stylegan(path)
        with pytest.raises(WeightsError, match="nothing was run"):
            load_restricted_pickle(path)
        assert not marker.exists()


def test_pickle_of_plain_data_still_loads(tmp_path):
    path = tmp_path / "plain.pkl"
    gain = np.float64(0.5)  # module attributes such as weight_gain are numpy scalars (numpy._core under numpy 2)
    path.write_bytes(pickle.dumps({"G_ema": None, "numbers": [1, 2.5], "gain": gain, "w": torch.arange(3.0)}))
    data = load_restricted_pickle(path)
    assert data["numbers"] == [1, 2.5] and data["gain"] == gain and torch.equal(data["w"], torch.arange(3.0))
    path.write_bytes(pickle.dumps(np.zeros(2)))  # numpy arrays are not tensors: refused
    with pytest.raises(WeightsError, match="refused"):
        load_restricted_pickle(path)
    path.write_bytes(pickle.dumps({"G_ema": None}))
    with pytest.raises(WeightsError, match="not an NVlabs network pickle"):
        read_stylegan(path)


@needs_fixtures
def test_missing_or_misshapen_tensor_is_named(tmp_path):
    data = torch.load(STYLEGAN / "rosinality_tiny32.pt", weights_only=True)
    broken = dict(data, g_ema={k: v for k, v in data["g_ema"].items() if k != "convs.3.noise.weight"})
    torch.save(broken, tmp_path / "missing.pt")
    with pytest.raises(WeightsError, match=r"1 missing tensor \(convs\.3\.noise\.weight\)"):
        read_stylegan(tmp_path / "missing.pt")
    g = dict(data["g_ema"])
    g["to_rgbs.1.bias"] = torch.zeros(1, 3, 2, 1)
    torch.save(dict(data, g_ema=g), tmp_path / "shape.pt")
    with pytest.raises(WeightsError, match=r"to_rgbs\.1\.bias \[1, 3, 2, 1\] != \[1, 3, 1, 1\]"):
        read_stylegan(tmp_path / "shape.pt")
    d = dict(data["d"], **{"extra.weight": torch.zeros(3)})
    torch.save(dict(data, d=d), tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match=r"unexpected tensor \(extra\.weight\)"):
        read_stylegan(tmp_path / "extra.pt")


@needs_fixtures
@torch.no_grad()
def test_crop_keeps_the_first_blocks_and_gives_d_a_new_fromrgb():
    full = read_stylegan(STYLEGAN / "nvlabs_tiny32.pkl")
    cropped = crop_to(full, 16)
    assert cropped.arch.resolution == 16 and cropped.arch.channels == full.arch.channels[:3]
    g = build_generator(cropped)
    assert g.num_ws == 6
    full_g = build_generator(full)
    for key, value in g.state_dict().items():
        torch.testing.assert_close(value, full_g.state_dict()[key], atol=0, rtol=0)
    d = build_discriminator(cropped)
    assert cropped.new_keys == ("b16.fromrgb.weight", "b16.fromrgb.bias")
    torch.testing.assert_close(d.b16.conv0.weight, full.discriminator["b16.conv0.weight"], atol=0, rtol=0)
    assert d(g.synthesis(g.mapping(torch.randn(4, 32)), noise_mode="const")).shape == (4, 1)
    with pytest.raises(WeightsError, match="not 64 px"):
        crop_to(full, 64)


@needs_fixtures
@pytest.mark.parametrize("name", ["nvlabs_tiny32.pkl", "rosinality_tiny32.pt"])
def test_model_init_from_stylegan_carries_its_weights(name, tmp_path):
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(app, ["model", "init", str(out), "--preset", "tiny", "--init-stylegan",
                                      str(STYLEGAN / name), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = load_checkpoint(out)
    weights = read_stylegan(STYLEGAN / name)
    assert model.resolution == 32 and model.config.recognizer == "tiny"
    state = model.state_dict()
    for key, value in weights.generator.items():
        ours = "projector." + key if key.startswith("mapping.") else key
        torch.testing.assert_close(state[ours], value, atol=0, rtol=0)
    # without attribute hooks the StyleFace synthesis network is the imported one
    ref = dict(np.load(STYLEGAN / FORMATS["nvlabs" if name.endswith(".pkl") else "rosinality"][1]))
    with torch.no_grad():
        img = model.synthesis(torch.from_numpy(ref["ws_psi1"]), noise_mode="const")
    torch.testing.assert_close(img, torch.from_numpy(ref["img_psi1"]), **TOL)

    low = tmp_path / "low.safetensors"
    result = CliRunner().invoke(app, ["model", "init", str(low), "--preset", "tiny", "--resolution", "16",
                                      "--init-stylegan", str(STYLEGAN / name)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(low).resolution == 16
    result = CliRunner().invoke(app, ["model", "init", str(tmp_path / "x.safetensors"), "--preset", "tiny",
                                      "--z-dim", "8", "--init-stylegan", str(STYLEGAN / name)])
    assert isinstance(result.exception, ConfigError)
    assert "--z-dim cannot be combined with --init-stylegan" in str(result.exception)


@needs_fixtures
def test_a_training_step_runs_from_the_stylegan_initialisation(tmp_path):
    from tests.test_train_step import _batch, make_synthetic_dataset, single_process, tiny_config
    from styleface_cli.train import data, loop

    torch.set_num_threads(2)
    root = make_synthetic_dataset(tmp_path / "data", resolution=32)
    path = STYLEGAN / "rosinality_tiny32.pt"
    weights = read_stylegan(path)
    config = tiny_config(root, tmp_path / "run", init_stylegan=path, deid_prob=0.0,
                         model=styleface_config_for(weights.arch, StyleFaceConfig.tiny(32)))
    index = data.load_index(root)
    trainer = loop.Trainer(config, num_identities=index.num_identities, dist=single_process())
    for key, value in weights.discriminator.items():
        torch.testing.assert_close(trainer.D.state_dict()[key], value, atol=0, rtol=0)
    torch.testing.assert_close(trainer.G.synthesis.b8.conv0.weight, weights.generator["synthesis.b8.conv0.weight"],
                               atol=0, rtol=0)
    dataset = data.PairDataset(index, resolution=32, same_identity_prob=0.5, seed=0)
    batch = _batch(dataset, [(0, 0), (0, 3)])
    batch["same"] = torch.tensor([True, False])
    values = trainer.step_batch(batch)
    assert all(np.isfinite(v) for v in values.values())
    assert not torch.equal(trainer.G.synthesis.b8.conv0.weight, weights.generator["synthesis.b8.conv0.weight"])

    mismatched = tiny_config(root, tmp_path / "run2", init_stylegan=path, model=StyleFaceConfig.tiny(32))
    with pytest.raises(ConfigError, match="does not match"):
        loop.Trainer(mismatched, num_identities=index.num_identities, dist=single_process())


@needs_fixtures
def test_train_command_from_a_cropped_stylegan_then_resume(tmp_path):
    import json

    from tests.test_train_step import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", resolution=16)
    run_dir = tmp_path / "run"
    args = ["train", str(root), "--out", str(run_dir), "--preset", "tiny", "--init-stylegan",
            str(STYLEGAN / "nvlabs_tiny32.pkl"), "--resolution", "16", "--batch-size", "2", "--workers", "0",
            "--kernels", "ref", "--device", "cpu", "--sample-every", "0", "--log-every", "1", "--json"]
    result = CliRunner().invoke(app, [*args, "--steps", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["resolution"] == 16 and saved["model"]["conv_clamp"] is None
    assert saved["train"]["init_stylegan"].endswith("nvlabs_tiny32.pkl")
    result = CliRunner().invoke(app, [*args, "--steps", "2", "--resume", "--export", str(tmp_path / "m.safetensors")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = load_checkpoint(tmp_path / "m.safetensors")
    assert model.resolution == 16 and model.config.conv_clamp is None and model.config.channels is None
