"""The StyleFace training loop: one process, or one per GPU (or several CPU processes) under torchrun.

``run_training(config=...)`` composes: process group -> data -> ``Trainer`` (networks, optimisers, the
contrastive state) -> resume -> steps (logs, sample grids, checkpoints) -> export of the EMA generator.
``Trainer.step(batch)`` is one optimisation step of the whole objective and is what the tests drive.

One step, in order (appendix of Luo et al. 2022 where it speaks; stylegan2-ada-pytorch and MoCo where
it does not):

1. **Generator phase** (``G`` = everything of ``StyleFace`` but the frozen recogniser: projector with its
   mapping network, attribute extractor with the AttrInjection gates, synthesis). The source crop is
   encoded with a reparameterised draw from the projector's posterior (``use_mean=False``): the paper
   samples its three latent codes from the predicted means and covariances, and drawing in training is
   what gives the covariance a gradient. With probability ``deid_prob`` a sample is rendered from a random
   identity (``sample_identity``) instead, so de-identification codes are in the adversarial mix. Losses:

   - adversarial: non-saturating logistic ``softplus(-D(Y))`` (StyleGAN2);
   - identity: ``1 - cos(E(crop112(Y)), E(X_s))`` with the frozen recogniser ``E``; ``crop112`` is the fixed
     similarity from the FFHQ template to the arcface template (``align.ffhq_to_arcface``) applied with
     ``grid_sample`` (after an anti-aliasing box downsample when the generator frame is much larger);
     not applied to de-identification samples (they have no source);
   - reconstruction: L1(Y, X_t) on same-identity pairs;
   - feature matching: L2 between discriminator features of Y and X_t, background-only for the first
     ``fm_background_layers`` (m = 4) layers on every pair, the whole image on every layer for
     same-identity pairs (``losses.feature_matching_loss``);
   - contrastive (Algorithm 1): query ``q = W(z)`` of the source, one ``w`` per level (low, mid, high) from
     the projector's own mapping network, flattened to ``C = 3 * w_dim``; key ``k`` = the same from the
     *momentum* projector on another picture of the same person (posterior mean: keys should not be
     noisy); ``K[j] = k`` for every key of the batch, gathered from all ranks so ``K`` stays identical
     everywhere (as MoCo's ``concat_all_gather``); ``CE(q K^T / tau, j)``. ``K`` starts as random unit
     vectors (MoCo initialises its queue the same way): identities not yet visited are random negatives.

   The weights default to FaceShifter's (adversarial 1, identity 5, reconstruction 10) for the terms it
   shares with StyleFace, 10 for feature matching (the attribute-preservation role FaceShifter's
   attribute loss plays), 1 for the contrastive term (MoCo's loss at unit weight).
2. **Discriminator phase**: logistic loss on reals (the targets) and on the detached outputs, run as two
   passes, as stylegan2-ada does (the minibatch-std layer must not mix reals and fakes); every
   ``r1_interval`` (16) steps a separate R1 step with ``gamma / 2 * interval`` (lazy regularisation; Adam's
   lr and betas are scaled by ``interval / (interval + 1)``).
3. **Averages**: the generator EMA (half-life ``ema_kimg`` thousand images, ramp-up 0.05, stylegan2-ada);
   the momentum projector ``theta' = m theta' + (1 - m) theta`` (after the optimiser step, Algorithm 1);
   the mapping network's ``w_avg`` from the random codes of the step (StyleGAN's truncation centre).

No path-length regularisation: it regularises the z -> image map of an unconditional generator, whose
role the identity and reconstruction terms take here; StyleFace does not mention it.

R1 gamma defaults to stylegan2-ada's heuristic ``0.0002 * R^2 / global batch`` (10 for 1024 px at batch 32
would be StyleGAN2's FFHQ value; the heuristic gives 6.6 there and 0.4 at 256 px, batch 32).

Distributed: ``torch.distributed`` from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
NCCL on GPUs and gloo on CPUs; generator and discriminator are wrapped in ``DistributedDataParallel``
(the generator phase runs through a small module whose ``forward`` is the whole identity-encode ->
render path, so DDP sees every trainable generator parameter in one forward), batches come from a
``DistributedSampler``. ``batch_size`` is per process.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from styleface_cli.atomic import atomic_output
from styleface_cli.errors import ConfigError, InputError, OutputError, WeightsError
from styleface_cli.face import align
from styleface_cli.model import (Discriminator, StyleFace, StyleFaceConfig, load_checkpoint, load_recognizer_weights,
                                 load_state_dict_strict, save_checkpoint, set_kernel_policy)
from styleface_cli.model.stylegan_import import crop_to, load_stylegan_into, read_stylegan, styleface_config_for
from styleface_cli.ops.build import resolve_policy
from styleface_cli.train import TrainConfig, data, losses

STATE_FORMAT = "styleface-training-state"
STATE_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
CROP_SIZE = align.ARCFACE_SIZE  # the recogniser crops


# --------------------------------------------------------------------------------------------------
# Process group


@dataclasses.dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launched: bool = False  # started by torchrun (a process group exists, even of one process)

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join torchrun's process group when launched by it, else a single process.

    A torchrun launch of one process (``--nproc_per_node 1``) joins a process group too, so the DDP
    wrappers and NCCL collectives of a multi-GPU run are exercised on a single GPU (the GPU check does
    exactly that); a plain ``styleface train`` has no ``WORLD_SIZE`` and runs without them.
    """
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if launched and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, launched=launched)


def _all_reduce_mean(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    if dist.enabled:
        torch.distributed.all_reduce(tensor)
        tensor /= dist.world_size
    return tensor


def _all_gather(tensor: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, in rank order (same shape on every rank)."""
    if not dist.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.world_size)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------
# The networks and one step


class _GeneratorStep(nn.Module):
    """The generator phase's forward: source crops -> identity code (or a random one) -> output image, plus
    the contrastive query. A module of its own so that DDP sees one forward per backward."""

    def __init__(self, model: StyleFace) -> None:
        super().__init__()
        self.model = model

    def forward(self, target: torch.Tensor, source112: torch.Tensor, deid: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(output [N,3,R,R], query [N, 3*w_dim], random_w_plus [N, num_ws, w_dim] detached)``."""
        code = self.model.encode_identity(source112, generator=generator, use_mean=False)
        random_code = self.model.sample_identity(target.shape[0], generator=generator)
        w_plus = torch.where(deid[:, None, None], random_code.w_plus, code.w_plus)
        output = self.model(target, w_plus, noise_mode="random")
        query = level_ws(self.model.projector, code.z).flatten(1)
        return output, query, random_code.w_plus.detach()


def level_ws(projector: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``z [N, 3, z_dim]`` -> one ``w`` per level ``[N, 3, w_dim]`` through the projector's mapping network.

    The contrastive constraint lives on W+; its distinct rows are these three vectors (W+ repeats each over
    its level's layers), and all three are used even below 256 px, where the high level reaches no layer.
    """
    n, levels, z_dim = z.shape
    return projector.mapping(z.reshape(n * levels, z_dim)).reshape(n, levels, -1)


def _to_arcface_grid_theta(resolution: int) -> tuple[int, torch.Tensor]:
    """``(box, theta [1, 2, 3])``: box-downsample the output by ``box`` (anti-aliasing), then ``affine_grid``
    with ``theta`` cuts the 112x112 arcface crop from it."""
    matrix = align.ffhq_to_arcface(resolution, CROP_SIZE)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    box = 2 ** max(0, int(math.floor(math.log2(1.0 / scale)))) if scale < 1 else 1
    small = resolution // box
    # pixel x of the downsampled image covers pixels box*x ... box*x + box-1: its centre is box*x + (box-1)/2
    from_small = np.array([[box, 0.0, (box - 1) / 2], [0.0, box, (box - 1) / 2]])
    theta = align.affine_grid_theta(align.compose_affine(matrix, from_small), (small, small), (CROP_SIZE, CROP_SIZE))
    return box, torch.from_numpy(theta).float()[None]


def _lazy_adam(params, lr: float, betas: tuple[float, float], interval: int) -> torch.optim.Adam:
    ratio = losses.lazy_regularization_ratio(interval)
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=1e-8)


class Trainer:
    """The networks, optimisers and contrastive state of a run, and one training step over them.

    Attributes: ``G`` (StyleFace, training mode), ``D`` (Discriminator), ``G_ema``, ``momentum_projector``
    (a copy of ``G.projector``), ``keys_list`` (the dynamic list K, ``[num_identities, 3 * w_dim]``, rows
    unit-norm), ``opt_g``, ``opt_d``, ``step``, ``images_seen``.
    """

    def __init__(self, config: TrainConfig, *, num_identities: int, dist: Distributed,
                 model_config: StyleFaceConfig | None = None) -> None:
        self.config = config
        self.dist = dist
        device = dist.device
        torch.manual_seed(config.seed)  # identical initialisation on every rank (DDP also broadcasts rank 0's)
        stylegan = None
        if config.init is not None:
            self.G = load_checkpoint(config.init, device)
        else:
            self.G = StyleFace(model_config or config.model or StyleFaceConfig.preset(256))
            if config.init_stylegan is not None and model_config is None:  # not on resume: the state wins
                stylegan = _read_stylegan_for(config.init_stylegan, self.G.config)
                load_stylegan_into(self.G, stylegan)
            self.G = self.G.to(device)
        if config.recognizer_weights is not None:
            load_recognizer_weights(self.G.recognizer, config.recognizer_weights)
        self.G.train()
        mc = self.G.config
        policy = resolve_policy(config.kernels)
        # D has the generator's channel table (one table in the config; an imported D must agree with its G)
        self.D = Discriminator(mc.resolution, channels=mc.block_channels, conv_clamp=mc.conv_clamp)
        self.stylegan_discriminator = stylegan is not None and stylegan.discriminator is not None
        if self.stylegan_discriminator:
            state = self.D.state_dict()
            state.update(stylegan.discriminator)  # a cropped file leaves the new fromrgb at its initialisation
            load_state_dict_strict(self.D, state, what=f"discriminator of {config.init_stylegan}")
        self.D = self.D.to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.G.projector).eval().requires_grad_(False)
        for module in (self.G, self.D, self.G_ema, self.momentum_projector):
            set_kernel_policy(module, policy)
        init = torch.Generator().manual_seed(config.seed)
        self.keys_list = F.normalize(torch.randn(num_identities, 3 * mc.w_dim, generator=init), dim=1).to(device)
        self.opt_g = torch.optim.Adam([p for p in self.G.parameters() if p.requires_grad], lr=config.lr_g,
                                      betas=config.betas, eps=1e-8)
        self.opt_d = _lazy_adam(self.D.parameters(), config.lr_d, config.betas, config.r1_interval)
        # the per-rank stream for posterior draws, de-identification choices and codes
        self.generator = torch.Generator(device=device).manual_seed(config.seed * 7919 + dist.rank + 1)
        self.step = 0
        self.images_seen = 0
        global_batch = config.batch_size * dist.world_size
        self.r1_gamma = config.r1_gamma if config.r1_gamma is not None else 0.0002 * mc.resolution**2 / global_batch
        self.box, theta = _to_arcface_grid_theta(mc.resolution)
        self.arcface_theta = theta.to(device)
        self.amp_dtype = torch.bfloat16 if device.type == "cuda" and config.amp in ("auto", "bf16") else None
        self.g_step: nn.Module = _GeneratorStep(self.G)
        self.d_step: nn.Module = self.D
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            # buffers (w_avg, noise constants, filters) are kept equal explicitly; no per-forward broadcast
            self.g_step = DDP(self.g_step, device_ids=ids, broadcast_buffers=False)
            self.d_step = DDP(self.D, device_ids=ids, broadcast_buffers=False)

    # -- one step ---------------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def crop_for_recognizer(self, images: torch.Tensor) -> torch.Tensor:
        """FFHQ-aligned ``[N, 3, R, R]`` -> arcface-aligned ``[N, 3, 112, 112]``, differentiable."""
        if self.box > 1:
            images = F.avg_pool2d(images, self.box)
        grid = F.affine_grid(self.arcface_theta.expand(images.shape[0], 2, 3).to(images.dtype),
                             [images.shape[0], 3, CROP_SIZE, CROP_SIZE], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def step_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step of G and D (and the averages) on a batch from ``PairDataset``; returns the
        loss terms as floats (this rank's values)."""
        cfg, weights = self.config, self.config.weights
        device = self.dist.device
        target = batch["target"].to(device, non_blocking=True)
        source112 = batch["source112"].to(device, non_blocking=True)
        key112 = batch["key112"].to(device, non_blocking=True)
        identities = batch["identity"].to(device, non_blocking=True)
        n = target.shape[0]
        deid = torch.rand(n, generator=self.generator, device=device) < cfg.deid_prob
        same = batch["same"].to(device) & ~deid
        face_mask = losses.face_ellipse_mask(batch["target_landmarks"].to(device), target.shape[-1])
        scalars: dict[str, torch.Tensor] = {}

        # -- generator phase
        self.D.requires_grad_(False)
        with self._autocast():
            output, query, random_w_plus = self.g_step(target, source112, deid, self.generator)
            fake_logits, fake_features = self.D(output, return_features=True)
            with torch.no_grad():
                _, real_features = self.D(target, return_features=True)
                source_embedding = self.G.embed(source112)
            output_embedding = self.G.embed(self.crop_for_recognizer(output))
        with torch.no_grad():
            key_map, _ = self.G.recognizer(key112)
            mean, _ = self.momentum_projector.posterior(key_map)
            keys = level_ws(self.momentum_projector, mean).flatten(1)
            losses.update_dynamic_list(self.keys_list, _all_gather(keys, self.dist), _all_gather(identities, self.dist))
        adversarial = losses.g_nonsaturating_loss(fake_logits.float())
        identity = losses.identity_loss(output_embedding, source_embedding, weight=(~deid).float())
        reconstruction = losses.reconstruction_loss(output, target, same)
        fm_background, fm_whole, _ = losses.feature_matching_loss(
            fake_features, real_features, face_mask, same, background_layers=cfg.fm_background_layers)
        contrastive = losses.contrastive_loss(query, self.keys_list, identities, cfg.temperature)
        total = (weights.adversarial * adversarial + weights.identity * identity
                 + weights.reconstruction * reconstruction + weights.feature_matching * (fm_background + fm_whole)
                 + weights.contrastive * contrastive)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        _nan_to_num_grads(self.G)
        self.opt_g.step()
        self.D.requires_grad_(True)
        scalars.update(g_adversarial=adversarial, identity=identity, reconstruction=reconstruction,
                       fm_background=fm_background, fm_whole=fm_whole, contrastive=contrastive, g_total=total)

        # -- discriminator phase: fakes, then reals (two passes, as stylegan2-ada)
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            fake_logits = self.d_step(output.detach())
        d_fake = F.softplus(fake_logits.float()).mean()
        d_fake.backward()
        with self._autocast():
            real_logits = self.d_step(target)
        d_real = F.softplus(-real_logits.float()).mean()
        d_real.backward()
        _nan_to_num_grads(self.D)
        self.opt_d.step()
        scalars.update(d_fake=d_fake, d_real=d_real, d_total=d_fake + d_real,
                       logits_real=real_logits.float().mean(), logits_fake=fake_logits.float().mean())
        if cfg.r1_interval > 0 and self.r1_gamma > 0 and self.step % cfg.r1_interval == 0:
            self.opt_d.zero_grad(set_to_none=True)
            reals = target.detach().requires_grad_(True)
            logits = self.d_step(reals)  # float32: the penalty's double backward wants full precision
            r1 = losses.r1_penalty(logits, reals)
            # ``logits * 0`` gives the last layer's bias a (zero) gradient, so DDP sees every parameter used
            ((r1 * (self.r1_gamma / 2) * cfg.r1_interval) + logits.sum() * 0).backward()
            _nan_to_num_grads(self.D)
            self.opt_d.step()
            scalars["r1"] = r1

        # -- averages
        global_batch = n * self.dist.world_size
        self.images_seen += global_batch
        self.step += 1
        with torch.no_grad():
            beta = losses.ema_beta(global_batch, cfg.ema_kimg, self.images_seen, cfg.ema_rampup)
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            losses.momentum_update(list(self.momentum_projector.parameters()), list(self.G.projector.parameters()),
                                   cfg.momentum)
            mapping = self.G.projector.mapping
            if mapping.w_avg_beta is not None:
                batch_mean = _all_reduce_mean(random_w_plus.float().mean(dim=(0, 1)), self.dist)
                mapping.w_avg.copy_(batch_mean.lerp(mapping.w_avg, mapping.w_avg_beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)
            self.momentum_projector.mapping.w_avg.copy_(mapping.w_avg)
        return {name: float(value.detach()) for name, value in scalars.items()}

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, K and counters (``save_training_state`` adds every rank's RNG streams)."""
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "model_config": self.G.config.to_dict(),
            "train_config": self.config.to_dict(), "step": self.step, "images_seen": self.images_seen,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "momentum_projector": self.momentum_projector.state_dict(), "keys_list": self.keys_list.cpu(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.momentum_projector.load_state_dict(state["momentum_projector"])
        if state["keys_list"].shape != self.keys_list.shape:
            raise InputError(f"the training set has {self.keys_list.shape[0]} identities but the training state "
                             f"was made with {state['keys_list'].shape[0]}; resume with the same data")
        self.keys_list.copy_(state["keys_list"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        self.images_seen = int(state["images_seen"])

    def rng_state(self) -> dict[str, Any]:
        out = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.dist.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.dist.device)
        return out

    def set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self.generator.set_state(state["generator"])
        if "cuda" in state and self.dist.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.dist.device)

    def checksums(self) -> dict[str, float]:
        """float64 sums of every network's parameters and of K: equal on every rank when in sync."""
        def total(tensors) -> float:
            return float(sum(t.detach().double().sum() for t in tensors))

        return {"G": total(self.G.parameters()), "D": total(self.D.parameters()),
                "G_ema": total(self.G_ema.parameters()),
                "momentum_projector": total(self.momentum_projector.parameters()),
                "keys_list": total([self.keys_list]), "w_avg": total([self.G.projector.mapping.w_avg])}


def _read_stylegan_for(path: Path, model_config: StyleFaceConfig):
    """The StyleGAN2 file cropped to the model's resolution; ``ConfigError`` when ``model_config`` is not
    the config that file gives (``styleface train`` builds it with ``styleface_config_for``)."""
    stylegan = crop_to(read_stylegan(path), model_config.resolution)
    expected = styleface_config_for(stylegan.arch, model_config)
    if expected != model_config:
        raise ConfigError(f"the model config does not match {path}: expected {expected}, got {model_config}")
    return stylegan


def _nan_to_num_grads(module: nn.Module) -> None:
    """As stylegan2-ada: a non-finite gradient (rare; AMP overflow) becomes finite instead of poisoning Adam."""
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Training-state files of a run, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("state-*.pt"))


def save_training_state(path: Path, trainer: Trainer) -> None:
    """Write the whole training state (with every rank's RNG streams) to ``path`` atomically (rank 0 writes).

    A collective: every rank must call it.
    """
    rng = trainer.rng_state()
    if trainer.dist.enabled:
        gathered: list[Any] = [None] * trainer.dist.world_size
        torch.distributed.all_gather_object(gathered, rng)
    else:
        gathered = [rng]
    if trainer.dist.is_main:
        state = trainer.state_dict()
        state["rng"] = gathered
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_output(path) as tmp:
                torch.save(state, tmp)
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error}") from error
    if trainer.dist.enabled:
        torch.distributed.barrier()


def read_training_state(path: Path) -> dict[str, Any]:
    """A training-state file (``torch.load(weights_only=True)``: tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and format errors of every kind
        raise WeightsError(f"cannot read training state {path} ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise WeightsError(f"{path} is not a StyleFace training state")
    if state.get("version") != STATE_VERSION:
        raise WeightsError(f"{path} has training-state version {state.get('version')}; "
                           f"this build reads {STATE_VERSION}")
    return state


def export_model(*, state_path: Path, out: Path) -> Path:
    """Write the EMA generator of a training state as a StyleFace checkpoint (``weights.py`` format)."""
    state = read_training_state(state_path)
    model = StyleFace(StyleFaceConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["G_ema"])
    return save_checkpoint(out, model)


def latest_state(run_dir: Path) -> Path:
    """The newest training-state file of a run folder, or the file itself when given one."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    paths = checkpoint_paths(run_dir)
    if not paths:
        raise InputError(f"no training state found in {run_dir / CHECKPOINT_DIR}")
    return paths[-1]


# --------------------------------------------------------------------------------------------------
# Logs and sample grids


class _Logger:
    """JSON lines in ``run_dir/log.jsonl`` (and TensorBoard scalars when it is installed); rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **{k: round(v, 6) for k, v in values.items()}}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _sample_batch(dataset: data.PairDataset, count: int) -> dict[str, torch.Tensor]:
    """Fixed pairs for the sample grids: the first targets, each with a source of another person."""
    swaps = data.PairDataset(dataset.index, resolution=dataset.resolution, same_identity_prob=0.0, seed=dataset.seed)
    items = [swaps[(0, i)] for i in range(min(count, len(swaps)))]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@torch.no_grad()
def write_sample_grid(path: Path, model: StyleFace, batch: dict[str, torch.Tensor], seed: int) -> None:
    """PNG with one column per pair and four rows: target, source, swap (EMA), random identity (EMA)."""
    import cv2

    device = next(model.parameters()).device
    target = batch["target"].to(device)
    source = batch["source112"].to(device)
    resolution = target.shape[-1]
    swap = model(target, model.encode_identity(source).w_plus, noise_mode="const")
    generator = torch.Generator(device=device).manual_seed(seed)
    random_identity = model(target, model.sample_identity(target.shape[0], generator=generator).w_plus,
                            noise_mode="const")
    source_big = F.interpolate(source, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=True)
    rows = [torch.cat(list(images), dim=-1) for images in (target, source_big, swap, random_identity)]
    grid = torch.cat(rows, dim=-2)  # [3, 4R, N*R]
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(pixels[:, :, ::-1])):
        raise OutputError(f"cannot write {path}")


# --------------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    steps: int  # the step the run ended at
    start_step: int  # where it started (0, or the resumed step)
    images_seen: int
    last_state: Path
    exported: Path | None
    final: dict[str, float]  # the last logged values
    rank: int = 0  # of the process that returns it (under torchrun every rank returns one)


StepCallback = Callable[[int, int, dict[str, float]], None]


def run_training(*, config: TrainConfig, on_step: StepCallback | None = None,
                 on_message: Callable[[str], None] | None = None) -> TrainSummary:
    """Train (or continue training) StyleFace as ``config`` says; see the module docstring.

    ``on_step(step, total_steps, values)`` and ``on_message(text)`` are called on rank 0 only.
    """
    config.validate()
    dist = init_distributed(config.device)
    say = on_message if (on_message is not None and dist.is_main) else (lambda text: None)
    try:
        return _run(config, dist, on_step if dist.is_main else None, say)
    finally:
        if dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(config: TrainConfig, dist: Distributed, on_step: StepCallback | None,
         say: Callable[[str], None]) -> TrainSummary:
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    run_dir = Path(config.run_dir)
    index = data.load_index(config.data_dir)
    states = checkpoint_paths(run_dir)
    if states and not config.resume:
        raise OutputError(f"{run_dir} already holds a training run; pass --resume to continue it "
                          "or choose another --out")
    state = read_training_state(states[-1]) if (config.resume and states) else None
    model_config = StyleFaceConfig.from_dict(state["model_config"]) if state is not None else None
    trainer = Trainer(config, num_identities=index.num_identities, dist=dist, model_config=model_config)
    resolution = trainer.G.resolution
    dataset = data.PairDataset(index, resolution=resolution, same_identity_prob=config.same_identity_prob,
                               seed=config.seed)
    if state is not None:
        trainer.load_state_dict(state)
        rng = state["rng"]
        if len(rng) != dist.world_size:
            say(f"the state was saved by {len(rng)} processes, this run has {dist.world_size}: "
                "random streams restart from the saved rank-0 stream")
        trainer.set_rng_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
        say(f"resumed from {states[-1]} at step {trainer.step}")
    elif not trainer.stylegan_discriminator and config.init_stylegan is not None:
        say(f"warning: {config.init_stylegan} has no discriminator: D starts from random weights")
    if state is None and config.recognizer_weights is None and config.init is None:
        say("warning: no --recognizer-weights: the identity loss and projector use a randomly initialised "
            "recognizer (fine for smoke tests, useless for a real model)")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"train": config.to_dict(), "model": trainer.G.config.to_dict(), "world_size": dist.world_size,
             "identities": index.num_identities, "samples": len(index.samples)}, indent=1))
    start_step = trainer.step
    sampler = data.ResumableBatchSampler(len(dataset), batch_size=config.batch_size, rank=dist.rank,
                                         world_size=dist.world_size, seed=config.seed, start_step=start_step)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.data_workers, pin_memory=dist.device.type == "cuda",
        persistent_workers=config.data_workers > 0, generator=torch.Generator().manual_seed(config.seed),
    )
    logger = _Logger(run_dir, dist.is_main)
    samples = _sample_batch(dataset, 8) if (dist.is_main and config.sample_every > 0) else None
    running: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    started = time.perf_counter()
    last_state = states[-1] if states else run_dir / CHECKPOINT_DIR / "none"
    batches = iter(loader)
    try:
        while trainer.step < config.steps:
            values = trainer.step_batch(next(batches))
            step = trainer.step
            for key, value in values.items():
                running.setdefault(key, []).append(value)
            if step % config.log_every == 0 or step == config.steps:
                last = _reduce_logs(running, dist)
                last.update(kimg=trainer.images_seen / 1000, seconds=time.perf_counter() - started)
                logger.log(step, last)
                running = {}
            if on_step is not None:
                on_step(step, config.steps, values)
            if samples is not None and (step % config.sample_every == 0 or step == config.steps):
                write_sample_grid(run_dir / "samples" / f"step-{step:08d}.png", trainer.G_ema, samples, config.seed)
            if step % config.checkpoint_every == 0 or step == config.steps:
                last_state = run_dir / CHECKPOINT_DIR / f"state-{step:08d}.pt"
                save_training_state(last_state, trainer)
                if dist.is_main and config.keep_checkpoints > 0:
                    for old in checkpoint_paths(run_dir)[: -config.keep_checkpoints]:
                        old.unlink(missing_ok=True)
    finally:
        logger.close()
    if dist.enabled:
        _write_checksums(run_dir, trainer)
    exported = None
    if config.export is not None and dist.is_main:
        exported = save_checkpoint(config.export, trainer.G_ema)
        say(f"exported the EMA generator to {exported}")
    return TrainSummary(steps=trainer.step, start_step=start_step, images_seen=trainer.images_seen,
                        last_state=last_state, exported=exported, final=last, rank=dist.rank)


def _reduce_logs(running: dict[str, list[float]], dist: Distributed) -> dict[str, float]:
    """Means over the interval and over the ranks (one all-reduce). Every rank logs the same keys, except
    ``r1``, which is averaged over the steps that computed it."""
    keys = sorted(running)
    means = torch.tensor([float(np.mean(running[k])) for k in keys], dtype=torch.float64)
    if dist.enabled:
        means = _all_reduce_mean(means.to(dist.device), dist).cpu()
    return dict(zip(keys, means.tolist()))


def _write_checksums(run_dir: Path, trainer: Trainer) -> None:
    """Each rank writes its parameter checksums to ``run_dir/sync/rank{r}.json``: equal when the ranks agree."""
    folder = run_dir / "sync"
    folder.mkdir(parents=True, exist_ok=True)
    values = trainer.checksums()
    (folder / f"rank{trainer.dist.rank}.json").write_text(json.dumps({k: float.hex(v) for k, v in values.items()}))


if __name__ == "__main__":  # torchrun --nproc_per_node N -m styleface_cli.train.loop DATA_DIR --out RUN_DIR ...
    from styleface_cli.cli.app import main

    sys.argv = [sys.argv[0], "train", *sys.argv[1:]]
    main()
