"""The adaptive attribute extractor (U-Net) and the AttrInjection gates."""

from __future__ import annotations

import pytest
import torch

from styleface_cli.errors import ConfigError
from styleface_cli.model import StyleFace, StyleFaceConfig
from styleface_cli.model.attributes import AdaptiveAttributeExtractor, AttrInjection, attribute_channels
from styleface_cli.model.generator import block_channels
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)


def test_channels_are_one_eighth_of_the_generator():
    gen = block_channels(1024, 32768, 512)
    assert attribute_channels(gen, 512) == {4: 64, 8: 64, 16: 64, 32: 64, 64: 64, 128: 32, 256: 16, 512: 8}


@pytest.mark.parametrize("resolution, attr_resolution", [(32, 32), (64, 32), (64, 16)])
def test_features_for_every_generator_block(resolution, attr_resolution):
    torch.manual_seed(0)
    gen = block_channels(resolution, 1024, 64)
    extractor = AdaptiveAttributeExtractor(resolution, attr_resolution, gen)
    features = extractor(torch.rand(2, 3, resolution, resolution) * 2 - 1)
    assert {res: tuple(f.shape) for res, f in features.items()} == {res: (2, c, res, res) for res, c in gen.items()}
    # the U-Net itself stops at attr_resolution; higher blocks get an upsampled feature
    assert not hasattr(extractor, f"fuse{2 * attr_resolution}") and hasattr(extractor, f"fuse{attr_resolution}")
    assert all(hasattr(extractor, f"inject{res}") and hasattr(extractor, f"to_gen{res}") for res in gen)


def test_bad_attribute_resolution():
    gen = block_channels(64, 1024, 64)
    for attr_resolution in (4, 48, 128):
        with pytest.raises(ConfigError, match="attr_resolution"):
            AdaptiveAttributeExtractor(64, attr_resolution, gen)


def test_attr_injection_is_a_gated_convex_mix():
    torch.manual_seed(0)
    gate = AttrInjection(channels=4, resolution=8)
    x, attr = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    out = gate(x, attr)
    assert ((out >= torch.minimum(x, attr) - 1e-6) & (out <= torch.maximum(x, attr) + 1e-6)).all()
    assert not torch.allclose(out, x) and not torch.allclose(out, attr)
    with torch.no_grad():
        gate.gate.bias.fill_(40.0)  # mask -> 1: the attribute passes
        torch.testing.assert_close(gate(x, attr), attr)
        gate.gate.bias.fill_(-40.0)  # mask -> 0: the generator feature passes
        torch.testing.assert_close(gate(x, attr), x)
    with pytest.raises(ValueError, match="AttrInjection attr"):
        gate(x, torch.randn(2, 4, 4, 4))


def test_output_follows_the_target_attributes():
    torch.manual_seed(0)
    model = StyleFace(StyleFaceConfig.tiny(32)).eval()
    code = model.sample_identity(1, generator=torch.Generator().manual_seed(0))
    a, b = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert (model(a, code.w_plus) - model(b, code.w_plus)).abs().mean() > 1e-3
