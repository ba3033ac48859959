"""The identity projector: Z+ posterior per level, seeded sampling, de-identification draws, identity
mixing per level and interpolation in Z+ and W+."""

from __future__ import annotations

import pytest
import torch

from styleface_cli.errors import ConfigError
from styleface_cli.model import (
    IdentityCode,
    StyleFace,
    StyleFaceConfig,
    interpolate_w,
    interpolate_z,
    mix_levels,
    ws_levels,
)
from tests.test_model_layers import single_threaded_torch  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def model() -> StyleFace:
    torch.manual_seed(0)
    return StyleFace(StyleFaceConfig.tiny(64)).eval()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_levels_follow_the_paper_resolution_bands():
    # low 4-16 px, mid 32-128 px, high 256-1024 px (rows of a 1024 px generator)
    assert ws_levels(18).tolist() == [0] * 5 + [1] * 6 + [2] * 7
    assert ws_levels(16).tolist() == [0] * 5 + [1] * 6 + [2] * 5
    assert ws_levels(10).tolist() == [0] * 5 + [1] * 5  # a 64 px generator has no high level


def test_posterior_and_mean_code(model, crops):
    with torch.no_grad():
        mean, logvar = model.identity_posterior(crops)
        assert mean.shape == logvar.shape == (3, 3, model.z_dim)
        code = model.encode_identity(crops)  # use_mean=True: deterministic, ignores any generator
        assert torch.equal(code.z, mean)
        assert torch.equal(model.encode_identity(crops, generator=seeded(5)).w_plus, code.w_plus)
        assert torch.equal(code.w_plus, model.projector.to_w_plus(mean))
    # each W+ row holds the w of its level's z
    levels = ws_levels(model.num_ws)
    for row, level in enumerate(levels.tolist()):
        assert torch.equal(code.w_plus[:, row], code.w_plus[:, levels.tolist().index(level)])
    assert not torch.equal(code.w_plus[:, 0], code.w_plus[:, -1])


def test_sampling_is_reproducible_by_seed_and_differs_across_seeds(model, crops):
    with torch.no_grad():
        a = model.encode_identity(crops, generator=seeded(7), use_mean=False)
        b = model.encode_identity(crops, generator=seeded(7), use_mean=False)
        c = model.encode_identity(crops, generator=seeded(8), use_mean=False)
        mean, _ = model.identity_posterior(crops)
    assert torch.equal(a.z, b.z) and torch.equal(a.w_plus, b.w_plus)
    assert not torch.equal(a.z, c.z) and not torch.equal(a.z, mean)


def test_random_identities_for_deidentification(model):
    with torch.no_grad():
        a = model.sample_identity(4, generator=seeded(3))
        b = model.sample_identity(4, generator=seeded(3))
        c = model.sample_identity(4, generator=seeded(4))
        mean_code = model.sample_identity(4, generator=seeded(3), truncation_psi=0.0)
    assert a.z.shape == (4, 3, model.z_dim) and a.w_plus.shape == (4, model.num_ws, model.w_dim)
    assert torch.equal(a.w_plus, b.w_plus) and not torch.equal(a.w_plus, c.w_plus)
    assert not torch.equal(a.z[0], a.z[1]) and not torch.equal(a.z[:, 0], a.z[:, 1])  # per row, per level
    torch.testing.assert_close(mean_code.w_plus, model.projector.mapping.w_avg.expand_as(mean_code.w_plus))
    with pytest.raises(ConfigError):
        model.sample_identity(0)


def test_mix_levels_takes_each_level_from_its_source(model):
    with torch.no_grad():
        a, b, c = (model.sample_identity(2, generator=seeded(s)) for s in (1, 2, 3))
    mixed = mix_levels(a, b, c)
    levels = ws_levels(model.num_ws).tolist()
    for row, level in enumerate(levels):
        assert torch.equal(mixed.w_plus[:, row], (a, b, c)[level].w_plus[:, row])
    assert torch.equal(mixed.z[:, 0], a.z[:, 0]) and torch.equal(mixed.z[:, 1], b.z[:, 1])
    assert torch.equal(mixed.z[:, 2], c.z[:, 2])
    only_mid = mix_levels(a, b, a)  # A with B's middle level (appendix Fig. 2)
    assert torch.equal(only_mid.w_plus[:, :5], a.w_plus[:, :5]) and torch.equal(only_mid.w_plus[:, 5:], b.w_plus[:, 5:])
    with pytest.raises(ValueError):
        mix_levels(a, b, c[0])


def test_interpolation_endpoints_are_exact(model, crops):
    with torch.no_grad():
        target = model.encode_identity(crops[:2])
        source = model.sample_identity(2, generator=seeded(9))
        for space in ("z", "w"):
            if space == "z":
                at = lambda lam: interpolate_z(target, source, lam, projector=model.projector)  # noqa: E731
            else:
                at = lambda lam: interpolate_w(target, source, lam)  # noqa: E731
            for lam, endpoint in ((0.0, target), (1.0, source)):
                code = at(lam)
                assert torch.equal(code.z, endpoint.z) and torch.equal(code.w_plus, endpoint.w_plus), (space, lam)
            half = at(0.5)
            assert not torch.equal(half.w_plus, target.w_plus) and not torch.equal(half.w_plus, source.w_plus)
        torch.testing.assert_close(interpolate_w(target, source, 0.25).w_plus,
                                   0.75 * target.w_plus + 0.25 * source.w_plus)
        torch.testing.assert_close(interpolate_z(target, source, 0.5, projector=model.projector).z,
                                   (target.z + source.z) / 2)
    with pytest.raises(ConfigError):
        interpolate_w(target, source, 1.5)


def test_identity_code_record():
    code = IdentityCode(torch.zeros(4, 3, 8), torch.zeros(4, 10, 6))
    assert len(code) == 4 and code[1].z.shape == (1, 3, 8) and code[-1].w_plus.shape == (1, 10, 6)
    assert code[1:3].batch_size == 2
    assert IdentityCode.cat([code, code[0]]).batch_size == 5
    with pytest.raises(ValueError):
        IdentityCode(torch.zeros(4, 2, 8), torch.zeros(4, 10, 6))
    with pytest.raises(ValueError):
        IdentityCode(torch.zeros(4, 3, 8), torch.zeros(3, 10, 6))


def test_swap_output_depends_on_the_identity(model, crops):
    target = torch.rand(1, 3, 64, 64, generator=seeded(2)) * 2 - 1
    with torch.no_grad():
        codes = model.encode_identity(crops)
        a = model(target, codes.w_plus[:1])
        b = model(target, codes.w_plus[1:2])
        assert torch.equal(a, model(target, codes.w_plus[:1]))  # noise_mode='const' by default
    assert (a - b).abs().mean() > 1e-3
