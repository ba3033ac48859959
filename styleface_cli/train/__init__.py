"""Training StyleFace: data preparation (``prepare``), the dataset of pairs (``data``), the loss terms
(``losses``) and the distributed training loop (``loop``); ``TrainConfig`` lives here.

The loop runs on one process or under ``torchrun`` (one process per GPU, or several on a CPU with gloo)::

    torchrun --nproc_per_node 8 -m styleface_cli.train.loop DATA_DIR --out RUN_DIR [options]

which takes the same options as ``styleface train``. See docs/training.md for a full recipe.

This module imports neither torch nor the networks, so the command line starts fast; ``TrainConfig.model``
is a ``StyleFaceConfig`` (None = the paper network at 256 px).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from styleface_cli.errors import ConfigError

if TYPE_CHECKING:
    from styleface_cli.model import StyleFaceConfig

__all__ = ["LossWeights", "TrainConfig"]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (see ``loop`` for where each default comes from)."""

    adversarial: float = 1.0
    identity: float = 5.0
    reconstruction: float = 10.0
    feature_matching: float = 10.0
    contrastive: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; built once by ``styleface train`` (or a test)."""

    data_dir: Path  # made by ``styleface prepare-data``
    run_dir: Path  # checkpoints, logs, sample grids
    model: StyleFaceConfig | None = None  # network size; None = StyleFaceConfig.preset(256). Ignored with
    #                                       ``init`` and on resume (the file's own config wins)
    init: Path | None = None  # start from this StyleFace checkpoint (.safetensors) instead of random weights
    recognizer_weights: Path | None = None  # arcface_torch / CurricularFace weights for the frozen recogniser
    init_stylegan: Path | None = None  # start mapping, synthesis and discriminator from this StyleGAN2 file;
    #                                    ``model`` must then be ``stylegan_import.styleface_config_for`` of it
    steps: int = 200_000  # optimiser steps in total (a resumed run continues up to this number)
    batch_size: int = 8  # per process
    lr_g: float = 0.0025  # Adam learning rate of the generator (stylegan2-ada paper256/512)
    lr_d: float = 0.0025  # of the discriminator
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas of both (StyleGAN2)
    weights: LossWeights = LossWeights()
    r1_gamma: float | None = None  # None = 0.0002 * resolution^2 / global batch (stylegan2-ada's heuristic)
    r1_interval: int = 16  # lazy R1 every this many steps (0 = never)
    ema_kimg: float = 10.0  # EMA half-life in thousands of images
    ema_rampup: float | None = 0.05  # EMA half-life at most this fraction of the images seen so far
    momentum: float = 0.999  # m of the momentum projector (MoCo)
    temperature: float = 0.07  # tau of the contrastive loss (MoCo)
    same_identity_prob: float = 0.2  # share of pairs whose source is the target's person (FaceShifter: 0.2)
    deid_prob: float = 0.1  # share of samples rendered from a random identity code
    fm_background_layers: int = 4  # m of the appendix: background-only feature matching on the first m layers
    seed: int = 0
    log_every: int = 100  # steps between log lines
    sample_every: int = 2000  # steps between sample grids (0 = never)
    checkpoint_every: int = 5000  # steps between training-state files (one is also written at the end)
    keep_checkpoints: int = 3  # newest training-state files kept (0 = all)
    data_workers: int = 4  # DataLoader worker processes per training process
    amp: str = "auto"  # auto (bf16 autocast on CUDA) | bf16 | off
    device: str = "auto"  # auto | cpu | cuda
    resume: bool = False  # continue from the newest training state in run_dir (start fresh if there is none)
    export: Path | None = None  # write the EMA generator here (StyleFace .safetensors) when done
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower; for reproducibility checks)
    kernels: str | None = None  # custom-op policy auto | compiled | ref (None = $STYLEFACE_KERNELS or auto)

    def validate(self) -> None:
        """Raise ``ConfigError`` for values no run can use."""
        positive = {"steps": self.steps, "batch_size": self.batch_size, "lr_g": self.lr_g, "lr_d": self.lr_d,
                    "temperature": self.temperature, "log_every": self.log_every,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("momentum", "same_identity_prob", "deid_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"Adam betas must be in [0, 1), got {self.betas}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"--amp must be auto, bf16 or off, got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if (self.r1_gamma is not None and self.r1_gamma < 0) or self.r1_interval < 0:
            raise ConfigError("--r1-gamma and --r1-interval must not be negative")
        if self.sample_every < 0 or self.keep_checkpoints < 0 or self.data_workers < 0 or self.fm_background_layers < 0:
            raise ConfigError("--sample-every, --keep-checkpoints, --workers and --fm-layers must not be negative")
        if any(w < 0 for w in dataclasses.asdict(self.weights).values()):
            raise ConfigError("loss weights must not be negative")
        if self.init is not None and self.init_stylegan is not None:
            raise ConfigError("--init and --init-stylegan exclude each other: start from a StyleFace checkpoint "
                              "or from a StyleGAN2")
        if self.kernels is not None and self.kernels not in ("auto", "compiled", "ref"):
            raise ConfigError(f"--kernels must be auto, compiled or ref, got {self.kernels!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, the model config as its own dict."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))
