"""The StyleGAN2 building blocks: resampling convolution, modulated convolution, equalized-lr layers,
mapping network, and the custom-op policy switch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.nn import functional as F

from styleface_cli.errors import ConfigError
from styleface_cli.model.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MappingNetwork,
    SynthesisLayer,
    ToRGBLayer,
    conv2d_resample,
    modulated_conv2d,
    set_kernel_policy,
)
from styleface_cli.model.styleface import StyleFace, StyleFaceConfig
from styleface_cli.ops.upfirdn2d import setup_filter, upfirdn2d_ref

FILTER = setup_filter([1, 3, 3, 1])


@pytest.fixture(autouse=True)
def single_threaded_torch():
    """Run the model tests on one thread (the other test_model_* files import this fixture).

    Their tensors are tiny, so threads only add synchronisation; and when the CPU is shared, OpenMP's
    spin-waiting makes two threads tens of times slower than one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv2d_resample_naive(x, w, f, up=1, down=1, padding=0, groups=1):
    """Zero-insert upsampling, FIR filter and pad, correlate at full resolution, filter and decimate."""
    fw = f.shape[-1]
    p = [padding] * 4
    if up > 1:
        p = [p[0] + (fw + up - 1) // 2, p[1] + (fw - up) // 2] * 2
    if down > 1:
        p = [p[0] + (fw - down + 1) // 2, p[1] + (fw - down) // 2] * 2
    x = upfirdn2d_ref(x, f if up > 1 else None, up=up, padding=p, gain=up**2)
    x = F.conv2d(x, w, groups=groups)
    return upfirdn2d_ref(x, f, down=down) if down > 1 else x


@pytest.mark.parametrize(
    "kernel, up, down, groups",
    [(3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 1), (1, 2, 1, 1), (1, 1, 2, 1), (3, 2, 1, 2), (3, 2, 2, 1)],
)
def test_conv2d_resample_fast_paths_match_the_naive_definition(kernel, up, down, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, kernel, kernel, dtype=torch.float64)
    got = conv2d_resample(x, w, f=FILTER, up=up, down=down, padding=kernel // 2, groups=groups, impl="ref")
    want = conv2d_resample_naive(x, w, FILTER, up=up, down=down, padding=kernel // 2, groups=groups)
    assert got.shape == (2, 6, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(got, want)


def test_modulated_conv2d_fused_equals_unfused_equals_per_sample_loop():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    styles = torch.rand(3, 5, dtype=torch.float64) + 0.5
    noise = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    kwargs = dict(noise=noise, up=2, padding=1, resample_filter=FILTER, flip_weight=False, impl="ref")
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
    torch.testing.assert_close(fused, unfused)
    for n in range(3):  # the definition: modulate, demodulate, convolve one sample
        w = weight * styles[n].reshape(1, -1, 1, 1)
        w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        y = conv2d_resample(x[n : n + 1], w, f=FILTER, up=2, padding=1, flip_weight=False, impl="ref") + noise[n]
        torch.testing.assert_close(fused[n : n + 1], y)


def test_demodulation_makes_the_output_invariant_to_the_style_scale():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3), torch.randn(2, 4)
    a = modulated_conv2d(x, weight, styles, padding=1, impl="ref")
    b = modulated_conv2d(x, weight, 5.0 * styles, padding=1, impl="ref")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fully_connected_layer_uses_equalized_learning_rate():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(16, 8, lr_multiplier=0.01, bias_init=1.0)
    x = torch.randn(4, 16)
    want = x @ (layer.weight * 0.01 / math.sqrt(16)).t() + layer.bias * 0.01
    torch.testing.assert_close(layer(x), want)
    assert layer.weight.std().item() == pytest.approx(100.0, rel=0.2)  # stored at 1 / lr_multiplier scale
    with pytest.raises(ValueError, match=r"expected shape \[\*, 16\]"):
        layer(torch.randn(4, 15))


def test_conv2d_layer_shapes_and_gain():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 16, 16)
    assert Conv2dLayer(4, 6, 3, down=2)(x).shape == (2, 6, 8, 8)
    assert Conv2dLayer(4, 6, 3, up=2)(x).shape == (2, 6, 32, 32)
    linear = Conv2dLayer(4, 6, 1)
    torch.testing.assert_close(linear(x, gain=0.5), 0.5 * linear(x))


def test_mapping_network_broadcast_truncation_and_w_avg():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=8, w_dim=6, num_ws=5, num_layers=3)
    z = torch.randn(4, 8)
    w = mapping(z)
    assert w.shape == (4, 5, 6)
    assert torch.equal(w[:, 0], w[:, 4])  # every row is the same w
    mapping(z, update_emas=True)
    assert mapping.w_avg.abs().sum() > 0
    truncated = mapping(z, truncation_psi=0.0)
    torch.testing.assert_close(truncated, mapping.w_avg.expand(4, 5, 6))
    cut = mapping(z, truncation_psi=0.0, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], mapping.w_avg.expand(4, 2, 6))
    torch.testing.assert_close(cut[:, 2:], w[:, 2:])


def test_synthesis_layer_noise_modes():
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8)
    with torch.no_grad():
        layer.noise_strength.fill_(1.0)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    assert torch.equal(layer(x, w, noise_mode="const"), layer(x, w, noise_mode="const"))
    assert not torch.equal(layer(x, w, noise_mode="random"), layer(x, w, noise_mode="random"))
    assert not torch.equal(layer(x, w, noise_mode="none"), layer(x, w, noise_mode="const"))
    with pytest.raises(ConfigError, match="noise mode"):
        layer(x, w, noise_mode="loud")
    assert ToRGBLayer(4, 3, w_dim=8)(x, w).shape == (2, 3, 8, 8)


def test_set_kernel_policy_reaches_every_op_layer_and_rejects_unknown_policies():
    model = StyleFace(StyleFaceConfig.tiny(32))
    layers = [m for m in model.modules() if "impl" in vars(m)]
    assert len(layers) > 50 and all(m.impl == "auto" for m in layers)
    set_kernel_policy(model, "ref")
    assert all(m.impl == "ref" for m in layers)
    assert "impl" not in str(list(model.state_dict()))  # a plain attribute, never in checkpoints
    with pytest.raises(ConfigError, match="kernel policy"):
        set_kernel_policy(model, "fast")


def test_reference_kernels_give_the_default_output():
    torch.manual_seed(0)
    model = StyleFace(StyleFaceConfig.tiny(32)).eval()
    target, crops = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'auto' warns once when a compiled kernel cannot be built
        default = model(target, model.encode_identity(crops).w_plus)
        set_kernel_policy(model, "ref")
        reference = model(target, model.encode_identity(crops).w_plus)
    torch.testing.assert_close(default, reference, rtol=1e-4, atol=1e-5)
