"""StyleFace's loss terms as pure functions of tensors (no modules, no state, no globals).

Adversarial terms follow StyleGAN2 (Karras et al. 2020, stylegan2-ada-pytorch ``training/loss.py``): the
non-saturating logistic loss and the R1 penalty on reals. The contrastive term is Algorithm 1 of the
StyleFace appendix (MoCo, He et al. 2020). Feature matching follows the appendix's section 1.2.

Shapes: images ``[N, 3, H, W]`` in [-1, 1]; embeddings ``[N, 512]``; ``same`` is a ``[N]`` bool mask of
the pairs whose source and target show the same person.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's non-saturating logistic loss, ``softplus(-D(G(x)))``, averaged. Logits [N] or [N, 1]."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator's logistic loss, ``softplus(D(G(x))) + softplus(-D(x))``, averaged over each batch."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``E ||grad_x D(x)||^2`` over reals. ``real_images`` must require grad and
    ``real_logits`` come from them. Differentiable (``create_graph``), so its gradient reaches D.

    The caller scales it by ``gamma / 2`` and, with lazy regularisation, by the interval (StyleGAN2).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def identity_loss(output_embedding: torch.Tensor, source_embedding: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos(e_out, e_src)`` averaged over the samples with ``weight`` (``[N]``, 0/1 or soft).

    De-identification samples have no source and get weight 0; an all-zero weight gives 0 (with a graph).
    """
    cosine = F.cosine_similarity(output_embedding.float(), source_embedding.float(), dim=1)  # [N]
    return _weighted_mean(1.0 - cosine, weight)


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """L1 between output and target over the same-identity pairs only (0 when there are none)."""
    per_sample = (output.float() - target.float()).abs().flatten(1).mean(1)  # [N]
    return _weighted_mean(per_sample, same.to(per_sample.dtype))


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = weight.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------------
# Feature matching


def face_ellipse_mask(landmarks: torch.Tensor, size: int, *, width: float = 1.15, height: float = 1.6) -> torch.Tensor:
    """Hard mask of the face region, ``[N, 1, size, size]`` float (1 = face), from five landmarks [N, 5, 2].

    An ellipse centred between the eye midpoint and the mouth midpoint, turned with the face's roll;
    semi-axes ``width x`` the eye distance across and ``height x`` the eye-to-mouth distance along the
    face. With the defaults it covers brows, cheeks, jaw and chin of a frontal face (the region the
    identity changes), leaving hair, ears, neck and the background outside. Landmarks are in pixels of
    the ``size x size`` image (pixel-centre convention).
    """
    landmarks = landmarks.float()
    eyes = (landmarks[:, 0] + landmarks[:, 1]) / 2  # [N, 2]
    mouth = (landmarks[:, 3] + landmarks[:, 4]) / 2
    center = (eyes + mouth) / 2
    across = landmarks[:, 1] - landmarks[:, 0]  # [N, 2], the face's horizontal axis
    eye_distance = across.norm(dim=1).clamp(min=1e-3)
    axis_x = across / eye_distance[:, None]
    axis_y = torch.stack([-axis_x[:, 1], axis_x[:, 0]], dim=1)  # perpendicular, pointing down the face
    eye_mouth = (mouth - eyes).norm(dim=1).clamp(min=1e-3)
    coords = torch.arange(size, dtype=torch.float32, device=landmarks.device)
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    offset = torch.stack([grid_x, grid_y], dim=-1)[None] - center[:, None, None, :]  # [N, S, S, 2]
    u = (offset * axis_x[:, None, None, :]).sum(-1) / (width * eye_distance)[:, None, None]
    v = (offset * axis_y[:, None, None, :]).sum(-1) / (height * eye_mouth)[:, None, None]
    return ((u.square() + v.square()) <= 1.0).float()[:, None]


def background_weight(face_mask: torch.Tensor, size: int) -> torch.Tensor:
    """Background weight at a feature resolution: 1 where a feature cell covers no face pixel.

    face_mask [N, 1, H, W] -> [N, 1, size, size]. Max-pooling (not averaging) the face mask means a cell
    touching the face is excluded, so changing face pixels alone never changes a kept cell's input.
    """
    return 1.0 - F.adaptive_max_pool2d(face_mask, size)


def feature_matching_loss(output_features: Sequence[torch.Tensor], target_features: Sequence[torch.Tensor],
                          face_mask: torch.Tensor, same: torch.Tensor, *, background_layers: int = 4
                          ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Feature matching between discriminator features of the output and of the target.

    Features are lists of ``[N, C, h, w]``, highest resolution first (target ones detached by the caller).
    Returns ``(background, whole, per_layer_background)``:

    - ``background``: mean squared difference over background cells of the first ``background_layers``
      layers (the appendix's m = 4, i.e. 1024^2 to 128^2 at 1024 px), for every pair: the identity
      change must not touch hair, neck or scenery;
    - ``whole``: mean squared difference over all cells of every layer, for same-identity pairs only:
      there the output should equal the target everywhere;
    - ``per_layer_background``: the background term of each of the first layers (for tests and logs).
    """
    if len(output_features) != len(target_features):
        raise ValueError("output and target feature lists differ in length")
    same_weight = same.float()
    per_layer = []
    for out, tgt in list(zip(output_features, target_features))[:background_layers]:
        keep = background_weight(face_mask, out.shape[-1]).to(out.dtype)  # [N, 1, h, w]
        squared = (out.float() - tgt.float()).square() * keep
        per_layer.append(squared.sum() / (keep.sum() * out.shape[1]).clamp(min=1.0))
    background = torch.stack(per_layer).mean() if per_layer else face_mask.new_zeros(())
    whole_terms = []
    for out, tgt in zip(output_features, target_features):
        per_sample = (out.float() - tgt.float()).square().flatten(1).mean(1)  # [N]
        whole_terms.append(_weighted_mean(per_sample, same_weight))
    whole = torch.stack(whole_terms).mean() if whole_terms else face_mask.new_zeros(())
    return background, whole, per_layer


# --------------------------------------------------------------------------------------------------
# Contrastive constraint on W+ (appendix, Algorithm 1)


def update_dynamic_list(keys_list: torch.Tensor, keys: torch.Tensor, identities: torch.Tensor) -> torch.Tensor:
    """``K[j] = normalize(key_j)`` for each (key, j) of the batch, in place; returns ``keys_list``.

    keys_list: [N_ids, C]; keys: [B, C] (detached by this function); identities: [B] int64. When an
    identity appears twice in a batch the later row wins, as sequential updates would.
    """
    keys = F.normalize(keys.detach().float(), dim=1).to(keys_list.dtype)
    keys_list[identities] = keys  # advanced-index assignment: the last duplicate wins on CPU and CUDA alike
    return keys_list


def contrastive_loss(queries: torch.Tensor, keys_list: torch.Tensor, identities: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """InfoNCE: ``CrossEntropy(q @ K^T / tau, j)``, averaged over the batch.

    queries: [B, C] (normalised here, as MoCo does); keys_list: [N_ids, C], already updated with this
    batch's keys and normalised; identities: [B] int64, the row of each query's positive.
    """
    q = F.normalize(queries.float(), dim=1)
    logits = q @ keys_list.float().t()  # [B, N_ids]
    return F.cross_entropy(logits / temperature, identities)


@torch.no_grad()
def momentum_update(momentum_params: Sequence[torch.Tensor], params: Sequence[torch.Tensor], momentum: float) -> None:
    """``theta' = m * theta' + (1 - m) * theta`` in place (MoCo's key-encoder update)."""
    for target, source in zip(momentum_params, params, strict=True):
        target.mul_(momentum).add_(source.detach().to(target.dtype), alpha=1.0 - momentum)


def ema_beta(batch_size: int, ema_kimg: float, images_seen: int, rampup: float | None) -> float:
    """Per-step decay of the generator EMA, as stylegan2-ada-pytorch: half-life of ``ema_kimg`` thousand
    images, shortened to ``rampup * images_seen`` early in training so the EMA does not average in the
    random initialisation for long."""
    ema_nimg = ema_kimg * 1000.0
    if rampup is not None and rampup > 0:
        ema_nimg = min(ema_nimg, images_seen * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def lazy_regularization_ratio(interval: int) -> float:
    """StyleGAN2's lazy regularisation: with a penalty every ``interval`` steps the optimiser's learning rate
    and betas are scaled by ``interval / (interval + 1)`` so the effective dynamics match the non-lazy run."""
    return interval / (interval + 1) if interval > 0 else 1.0
