"""The StyleGAN2 synthesis network, the plain generator, the discriminator and the composed StyleFace model:
shapes at tiny sizes and at 256 px, W+ layout, determinism, and gradients reaching every part."""

from __future__ import annotations

import pytest
import torch

from styleface_cli.errors import ConfigError
from styleface_cli.model import Discriminator, Generator, StyleFace, StyleFaceConfig, SynthesisNetwork
from styleface_cli.model.generator import block_channels, num_ws_for, ws_resolutions
from styleface_cli.model.styleface import PARTS, part_of
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)


def test_w_plus_layout_matches_stylegan2():
    assert [num_ws_for(r) for r in (32, 64, 256, 512, 1024)] == [8, 10, 14, 16, 18]
    # row -> resolution of the layer that reads it (the final row is the last ToRGB)
    assert ws_resolutions(18) == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024, 1024]
    assert block_channels(1024, 32768, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                                               512: 64, 1024: 32}


@pytest.mark.parametrize("resolution", [32, 64])
def test_synthesis_and_generator_shapes(resolution):
    torch.manual_seed(0)
    synthesis = SynthesisNetwork(w_dim=16, img_resolution=resolution, channel_base=512, channel_max=32)
    assert synthesis.num_ws == num_ws_for(resolution)
    assert [f"b{r}" for r in synthesis.block_resolutions] == [n for n, _ in synthesis.named_children()]
    img = synthesis(torch.randn(2, synthesis.num_ws, 16), noise_mode="const")
    assert img.shape == (2, 3, resolution, resolution) and img.dtype == torch.float32
    generator = Generator(z_dim=16, w_dim=16, img_resolution=resolution, mapping_layers=2, channel_base=512,
                          channel_max=32)
    assert generator(torch.randn(3, 16)).shape == (3, 3, resolution, resolution)
    with pytest.raises(ValueError, match="SynthesisNetwork ws"):
        synthesis(torch.randn(2, synthesis.num_ws + 1, 16))


def test_synthesis_is_deterministic_with_const_noise_and_fused_equals_unfused():
    torch.manual_seed(0)
    synthesis = SynthesisNetwork(w_dim=16, img_resolution=32, channel_base=512, channel_max=32)
    for name, buffer in synthesis.named_parameters():
        if name.endswith("noise_strength"):
            buffer.data.fill_(0.5)
    ws = torch.randn(2, synthesis.num_ws, 16)
    with torch.no_grad():
        fused = synthesis(ws, noise_mode="const", fused_modconv=True)
        assert torch.equal(fused, synthesis(ws, noise_mode="const", fused_modconv=True))
        torch.testing.assert_close(fused, synthesis(ws, noise_mode="const", fused_modconv=False), rtol=1e-4, atol=1e-4)
        assert not torch.equal(synthesis(ws, noise_mode="random"), synthesis(ws, noise_mode="random"))


def test_feature_hooks_see_each_block_and_replace_its_features():
    synthesis = SynthesisNetwork(w_dim=8, img_resolution=16, channel_base=256, channel_max=16)
    seen = {}

    def hook(res):
        def fn(x):
            seen[res] = x.shape
            return torch.zeros_like(x)
        return fn

    img = synthesis(torch.randn(1, synthesis.num_ws, 8), noise_mode="none", feature_hooks={r: hook(r) for r in (4, 8, 16)})
    assert seen == {4: (1, 16, 4, 4), 8: (1, 16, 8, 8), 16: (1, 16, 16, 16)}
    assert torch.allclose(img, torch.zeros_like(img) + img.mean())  # zero features -> only the ToRGB biases


def test_discriminator_logits_and_features_highest_resolution_first():
    torch.manual_seed(0)
    discriminator = Discriminator(img_resolution=32, channel_base=512, channel_max=32)
    img = torch.randn(4, 3, 32, 32)
    assert discriminator(img).shape == (4, 1)
    logits, features = discriminator(img, return_features=True)
    torch.testing.assert_close(logits, discriminator(img))
    assert discriminator.feature_resolutions == [32, 16, 8, 4]
    assert [tuple(f.shape[-2:]) for f in features] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert [f.shape[1] for f in features] == [16, 32, 32, 32]
    with pytest.raises(ConfigError):
        Discriminator(img_resolution=48)


@pytest.mark.parametrize("resolution", [32, 64])
def test_styleface_forward_shapes(resolution):
    torch.manual_seed(0)
    model = StyleFace(StyleFaceConfig.tiny(resolution)).eval()
    crops = torch.rand(2, 3, 112, 112) * 2 - 1
    target = torch.rand(2, 3, resolution, resolution) * 2 - 1
    with torch.no_grad():
        code = model.encode_identity(crops)
        assert code.z.shape == (2, 3, model.z_dim) and code.w_plus.shape == (2, model.num_ws, model.w_dim)
        out = model(target, code.w_plus)
        assert out.shape == (2, 3, resolution, resolution) and out.isfinite().all()
        embedding = model.embed(crops)
    assert embedding.shape == (2, 512)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="StyleFace target"):
        model(torch.rand(2, 3, resolution // 2, resolution // 2), code.w_plus)
    with pytest.raises(ValueError, match="StyleFace crops112"):
        model.encode_identity(torch.rand(2, 3, 96, 96))


def test_256_px_forward_batch_of_one():
    """The W+ layout and shapes of a 256 px network (narrow channels keep it fast on a CPU)."""
    torch.manual_seed(0)
    config = StyleFaceConfig(resolution=256, channel_base=2048, channel_max=64, z_dim=32, w_dim=32, mapping_layers=2,
                             attr_resolution=256, recognizer="tiny")
    model = StyleFace(config).eval()
    assert model.num_ws == 14
    with torch.no_grad():
        code = model.sample_identity(1, generator=torch.Generator().manual_seed(0))
        out = model(torch.rand(1, 3, 256, 256) * 2 - 1, code.w_plus)
    assert out.shape == (1, 3, 256, 256) and out.isfinite().all()
    assert model.projector.ws_level.tolist() == [0] * 5 + [1] * 6 + [2] * 3


def test_preset_configs():
    for resolution in (256, 512, 1024):
        config = StyleFaceConfig.preset(resolution)
        assert (config.resolution, config.channel_base, config.channel_max) == (resolution, 32768, 512)
        assert config.attr_resolution == min(resolution, 512) and config.recognizer == "iresnet100"
    with pytest.raises(ConfigError, match="resolution"):
        StyleFaceConfig(resolution=300)
    with pytest.raises(ConfigError, match="attr_resolution"):
        StyleFaceConfig(resolution=64, attr_resolution=128)
    with pytest.raises(ConfigError, match="recognizer"):
        StyleFaceConfig.tiny(32).__class__(recognizer="vgg")


def test_gradients_reach_every_part_and_the_recognizer_stays_frozen():
    torch.manual_seed(0)
    model = StyleFace(StyleFaceConfig.tiny(32)).train()
    assert not model.recognizer.training  # a frozen recognizer keeps its BatchNorm statistics
    crops = torch.rand(2, 3, 112, 112) * 2 - 1
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, logvar = model.identity_posterior(crops)
    code = model.projector.sample(mean, logvar, generator=torch.Generator().manual_seed(0))
    out = model(target, code.w_plus, noise_mode="random")
    swapped = torch.nn.functional.interpolate(out, size=112, mode="bilinear", align_corners=False)
    identity = 1 - (model.embed(swapped) * model.embed(crops)).sum(dim=1).mean()
    kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()  # reaches the high level below 256 px
    (out.square().mean() + identity + kl).backward()

    missing = {part: [] for part in PARTS}
    for name, parameter in model.named_parameters():
        part = part_of(name)
        if part == "recognizer":
            assert not parameter.requires_grad and parameter.grad is None, name
        elif parameter.grad is None or not parameter.grad.abs().sum() > 0:
            missing[part].append(name)
    assert missing == {part: [] for part in PARTS}
    counts = model.parameter_counts()
    assert all(counts[part] > 0 for part in PARTS) and counts["total"] == sum(p.numel() for p in model.parameters())
