"""The training loss terms as pure functions, checked against hand computation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from styleface_cli.face import align
from styleface_cli.train import losses


def test_contrastive_loss_matches_a_hand_computed_example():
    # dynamic list of 3 identities in C = 2, one query of identity 1, tau = 0.5
    keys_list = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    new_key = torch.tensor([[3.0, 4.0]])  # becomes (0.6, 0.8) after normalisation
    losses.update_dynamic_list(keys_list, new_key, torch.tensor([1]))
    assert torch.allclose(keys_list[1], torch.tensor([0.6, 0.8]))
    query = torch.tensor([[2.0, 0.0]])  # normalised to (1, 0)
    tau = 0.5
    got = losses.contrastive_loss(query, keys_list, torch.tensor([1]), tau)
    logits = [1.0 / tau, 0.6 / tau, -1.0 / tau]
    expected = -(logits[1] - math.log(sum(math.exp(v) for v in logits)))
    assert abs(float(got) - expected) < 1e-6


def test_contrastive_loss_batch_equals_numpy_and_gradient_reaches_query_only():
    rng = np.random.default_rng(0)
    keys_list = torch.from_numpy(rng.normal(size=(5, 4))).float()
    keys_list = F.normalize(keys_list, dim=1)
    query = torch.from_numpy(rng.normal(size=(2, 4))).float().requires_grad_()
    ids = torch.tensor([3, 0])
    loss = losses.contrastive_loss(query, keys_list, ids, 0.07)
    q = query.detach().numpy() / np.linalg.norm(query.detach().numpy(), axis=1, keepdims=True)
    logits = q @ keys_list.numpy().T / 0.07
    peak = logits.max(1, keepdims=True)
    log_softmax = logits - peak - np.log(np.exp(logits - peak).sum(1, keepdims=True))
    expected = -np.mean([log_softmax[0, 3], log_softmax[1, 0]])
    assert abs(loss.item() - expected) < 1e-4
    loss.backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


def test_dynamic_list_update_later_duplicate_wins_and_is_detached():
    keys_list = torch.zeros(3, 2)
    keys = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    losses.update_dynamic_list(keys_list, keys, torch.tensor([2, 2]))
    assert torch.equal(keys_list[2], torch.tensor([0.0, 1.0]))
    assert not keys_list.requires_grad


def test_momentum_update_formula():
    online = [torch.tensor([3.0, 5.0]), torch.tensor([[-1.0]])]
    momentum_copy = [torch.tensor([1.0, 2.0]), torch.tensor([[1.0]])]
    losses.momentum_update(momentum_copy, online, 0.9)
    assert torch.allclose(momentum_copy[0], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 5]))
    assert torch.allclose(momentum_copy[1], torch.tensor([[0.9 - 0.1]]))


def test_adversarial_terms_match_their_formulas():
    real = torch.tensor([0.5, -1.0])
    fake = torch.tensor([2.0, 0.0])
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert abs(float(losses.g_nonsaturating_loss(fake)) - (sp(-2.0) + sp(0.0)) / 2) < 1e-6
    expected_d = (sp(2.0) + sp(0.0)) / 2 + (sp(-0.5) + sp(1.0)) / 2
    assert abs(float(losses.d_logistic_loss(real, fake)) - expected_d) < 1e-6


def test_r1_penalty_of_a_linear_critic_is_its_weight_norm():
    weight = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]])  # D(x) = <w, x>: gradient is w everywhere
    images = torch.randn(3, 1, 2, 2, requires_grad=True)
    logits = (images * weight).flatten(1).sum(1)
    penalty = losses.r1_penalty(logits, images)
    assert abs(float(penalty) - float(weight.square().sum())) < 1e-6


def test_identity_and_reconstruction_losses():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert abs(float(losses.identity_loss(a, b)) - 0.5) < 1e-6
    assert abs(float(losses.identity_loss(a, b, weight=torch.tensor([0.0, 1.0]))) - 1.0) < 1e-6
    assert float(losses.identity_loss(a, b, weight=torch.zeros(2))) == 0.0
    out = torch.zeros(2, 3, 4, 4)
    tgt = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), 1.0)])
    assert abs(float(losses.reconstruction_loss(out, tgt, torch.tensor([False, True]))) - 1.0) < 1e-6
    assert float(losses.reconstruction_loss(out, tgt, torch.tensor([False, False]))) == 0.0


def _pooling_features(images: torch.Tensor) -> list[torch.Tensor]:
    """A stand-in discriminator with exactly local features: averages over 1, 2, 4, 8 and 16 px cells."""
    return [F.avg_pool2d(images, k) if k > 1 else images for k in (1, 2, 4, 8, 16)]


def test_feature_matching_background_terms_ignore_face_pixels():
    size = 64
    landmarks = torch.from_numpy(align.ffhq_template(size)).float()[None].repeat(2, 1, 1)
    face = losses.face_ellipse_mask(landmarks, size)  # [2, 1, 64, 64]
    assert 0.1 < float(face.mean()) < 0.5  # a face-sized region, not the whole picture
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, size, size, generator=generator)
    output = torch.rand(2, 3, size, size, generator=generator)
    changed = output + face * torch.rand(2, 3, size, size, generator=generator)  # only face pixels differ
    same = torch.tensor([False, True])
    bg1, whole1, layers1 = losses.feature_matching_loss(_pooling_features(output), _pooling_features(target), face, same)
    bg2, whole2, layers2 = losses.feature_matching_loss(_pooling_features(changed), _pooling_features(target), face, same)
    assert len(layers1) == 4
    for first, second in zip(layers1, layers2):
        assert float(first) > 0 and abs(float(first) - float(second)) < 1e-7
    assert abs(float(bg1) - float(bg2)) < 1e-7
    assert abs(float(whole1) - float(whole2)) > 1e-4  # the whole-image term sees the face (same-identity pair)
    # the whole-image term ignores different-identity pairs altogether
    _, whole_none, _ = losses.feature_matching_loss(_pooling_features(changed), _pooling_features(target), face,
                                                    torch.tensor([False, False]))
    assert float(whole_none) == 0.0
    # changing a background pixel moves the background term
    moved = output.clone()
    moved[:, :, 0, 0] += 1.0
    bg3, _, _ = losses.feature_matching_loss(_pooling_features(moved), _pooling_features(target), face, same)
    assert abs(float(bg3) - float(bg1)) > 1e-6


def test_face_ellipse_follows_the_face_roll():
    size = 64
    template = align.ffhq_template(size)
    turn = np.array([[0.0, -1.0, size - 1.0], [1.0, 0.0, 0.0]])  # a quarter turn: (x, y) -> (size-1-y, x)
    upright = losses.face_ellipse_mask(torch.from_numpy(template).float()[None], size)[0, 0]
    turned = losses.face_ellipse_mask(torch.from_numpy(align.transform_points(template, turn)).float()[None], size)[0, 0]
    # the same quarter turn applied to the upright mask: new[y', x'] = old[size-1-x', y']
    expected = upright.flip(0).t()
    assert float((expected != turned).float().mean()) < 0.01


def test_ema_beta_and_lazy_ratio():
    assert abs(losses.ema_beta(32, 10.0, 10**9, 0.05) - 0.5 ** (32 / 10000)) < 1e-12
    assert losses.ema_beta(32, 10.0, 0, 0.05) == 0.0  # first steps: the EMA follows the generator
    assert abs(losses.lazy_regularization_ratio(16) - 16 / 17) < 1e-12
