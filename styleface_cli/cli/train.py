"""``styleface prepare-data``, ``styleface train`` and ``styleface train-export``.

Each command parses options, builds its frozen config once (``build_prepare_config`` /
``build_train_config``) and calls a keyword-only core function. Training is exported either at the end of
a run (``train --export MODEL.safetensors``) or later from any training state (``train-export RUN_DIR
MODEL.safetensors``, which takes the newest state of the run, or a given ``state-*.pt`` file): a separate
command because a run is often stopped by hand or by a cluster's time limit, and the model is wanted
from whatever state it reached.

Multi-GPU: launch the same command through torchrun, e.g.
``torchrun --nproc_per_node 8 -m styleface_cli.train.loop DATA --out RUN`` (same options as ``train``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from styleface_cli.cli.anonymize import RayAddress, RayCpus, RayGpus, RayRetries, Shard
from styleface_cli.cli.model import new_model_config
from styleface_cli.config import DetectConfig
from styleface_cli.console import Reporter, stderr
from styleface_cli.errors import ConfigError
from styleface_cli.inputs import parse_shard
from styleface_cli.train import LossWeights, TrainConfig
from styleface_cli.train.prepare import PrepareConfig, prepare_data

if TYPE_CHECKING:
    from styleface_cli.cluster import RayConfig
    from styleface_cli.model import StyleFaceConfig

_DATA = "Data"
_MODEL = "Model"
_OPT = "Optimisation"
_LOSS = "Loss weights"
_RUN = "Run"
_OUT = "Output"


def build_prepare_config(*, src_dir: Path, out_dir: Path, resolution: int, workers: int, identity_from_name: str | None,
                         video_every: int, min_face: int, similar_face_ratio: float, detector: str,
                         detector_model: Path | None, threshold: float, shard: str | None = None,
                         ray: RayConfig | None = None) -> PrepareConfig:
    """The one place where prepare-data's command-line values become its frozen config."""
    if not 0.0 < similar_face_ratio <= 1.0:
        raise ConfigError(f"--similar-face-ratio must be in (0, 1], got {similar_face_ratio}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1; got {threshold}")
    return PrepareConfig(src_dir=src_dir, out_dir=out_dir, resolution=resolution, workers=workers,
                         identity_from_name=identity_from_name, video_every=video_every, min_face=min_face,
                         similar_face_ratio=similar_face_ratio,
                         detect=DetectConfig(backend=detector, model_path=detector_model, threshold=threshold),
                         shard=parse_shard(shard), ray=ray)


def build_train_config(*, data_dir: Path, out: Path, model_config: StyleFaceConfig, **options) -> TrainConfig:
    """The one place where train's command-line values become the frozen ``TrainConfig``.

    ``options`` are exactly ``TrainConfig``'s remaining fields plus ``beta1``, ``beta2`` and the ``w_*`` loss
    weights, as the command passes them (no other keys are accepted).
    """
    weights = LossWeights(adversarial=options.pop("w_adv"), identity=options.pop("w_id"),
                          reconstruction=options.pop("w_rec"), feature_matching=options.pop("w_fm"),
                          contrastive=options.pop("w_contrastive"))
    betas = (options.pop("beta1"), options.pop("beta2"))
    config = TrainConfig(data_dir=data_dir, run_dir=out, model=model_config, weights=weights, betas=betas, **options)
    config.validate()
    return config


@contextlib.contextmanager
def _progress(enabled: bool, label: str, text: str = "", **fields: str) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr (only when ``enabled``); yields ``update(done, total, **fields)``.

    ``text`` is an extra column formatted from the task's ``fields`` (given here with their first values).
    """
    if not enabled:
        yield lambda done, total, **kw: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if text:
        columns.append(TextColumn(text))
    progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=stderr, transient=True)
    task = progress.add_task(label, total=None, **fields)
    with progress:
        yield lambda done, total, **kw: progress.update(task, completed=done, total=total, **kw)


def _emit(reporter: Reporter, record: dict, line: str) -> None:
    if reporter.json_output:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()
    else:
        reporter.info(line)


def register(app: typer.Typer) -> None:
    @app.command("prepare-data", no_args_is_help=True)
    def prepare_data_command(
        src_dir: Annotated[Path, typer.Argument(help="One folder per identity (or a flat folder with --identity-from-name), photos and videos.")],
        out_dir: Annotated[Path, typer.Argument(help="Where the aligned training set goes (resumable).")],
        resolution: Annotated[int, typer.Option("--resolution", help="Side of the FFHQ-aligned crops, px.")] = PrepareConfig.resolution,
        workers: Annotated[int, typer.Option("--workers", help="Processes for detection and alignment.")] = PrepareConfig.workers,
        identity_from_name: Annotated[Optional[str], typer.Option("--identity-from-name", help="Regex on the file name (no extension) whose group 1 is the identity, for a flat folder, e.g. '^(.+?)\\d+$'.")] = None,
        video_every: Annotated[int, typer.Option("--video-every", help="Keep every k-th frame of videos.")] = PrepareConfig.video_every,
        min_face: Annotated[int, typer.Option("--min-face", help="Skip faces smaller than this (shorter box side, px).")] = PrepareConfig.min_face,
        similar_face_ratio: Annotated[float, typer.Option("--similar-face-ratio", help="Skip a picture when a second face has this share of the largest face's area.")] = PrepareConfig.similar_face_ratio,
        detector: Annotated[str, typer.Option("--detector", help="centerface (bundled) | scrfd (needs --detector-model).")] = "centerface",
        detector_model: Annotated[Optional[Path], typer.Option("--detector-model", help="Local ONNX file for the detector.")] = None,
        threshold: Annotated[float, typer.Option("--threshold", help="Detection score threshold.")] = PrepareConfig.detect.threshold,
        json_output: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.")] = False,
        shard: Shard = None, ray: RayAddress = None, ray_cpus: RayCpus = 1.0, ray_gpus: RayGpus = 0.0,
        ray_retries: RayRetries = 2,
    ) -> None:
        """Detect, align (FFHQ-style at --resolution, arcface at 112) and index faces for training."""
        ray_config = None
        if ray is not None:
            from styleface_cli.cluster import build_ray_config

            if workers != 1:
                raise ConfigError("give either --workers or --ray (with --ray, --ray-cpus/--ray-gpus size the actors)")
            ray_config = build_ray_config(address=ray, cpus=ray_cpus, gpus=ray_gpus, retries=ray_retries)
        config = build_prepare_config(src_dir=src_dir, out_dir=out_dir, resolution=resolution, workers=workers,
                                      identity_from_name=identity_from_name, video_every=video_every,
                                      min_face=min_face, similar_face_ratio=similar_face_ratio, detector=detector,
                                      detector_model=detector_model, threshold=threshold, shard=shard,
                                      ray=ray_config)
        reporter = Reporter(quiet=quiet, json_output=json_output)
        with _progress(not quiet and stderr.is_terminal, "Preparing") as update:
            summary = prepare_data(config=config, on_progress=update)
        record = dataclasses.asdict(summary)
        _emit(reporter, record, f"{summary.index_path}: {summary.samples} faces of {summary.identities} identities, "
                                f"{summary.skipped} pictures skipped (reasons in the index); {summary.processed} "
                                f"files processed now, {summary.already_done} done before")

    @app.command("train", no_args_is_help=True)
    def train_command(
        data_dir: Annotated[Path, typer.Argument(help="A training set made by 'styleface prepare-data'.")],
        out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, log.jsonl, samples.", rich_help_panel=_RUN)],
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest training state in --out (start fresh when there is none).", rich_help_panel=_RUN)] = False,
        export: Annotated[Optional[Path], typer.Option("--export", help="Write the EMA generator here (.safetensors) at the end.", rich_help_panel=_RUN)] = None,
        steps: Annotated[int, typer.Option("--steps", help="Total optimiser steps.", rich_help_panel=_RUN)] = TrainConfig.steps,
        seed: Annotated[int, typer.Option("--seed", rich_help_panel=_RUN)] = TrainConfig.seed,
        log_every: Annotated[int, typer.Option("--log-every", help="Steps between log lines.", rich_help_panel=_RUN)] = TrainConfig.log_every,
        sample_every: Annotated[int, typer.Option("--sample-every", help="Steps between sample grids (0 = never).", rich_help_panel=_RUN)] = TrainConfig.sample_every,
        checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between training states.", rich_help_panel=_RUN)] = TrainConfig.checkpoint_every,
        keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="Newest training states kept (0 = all).", rich_help_panel=_RUN)] = TrainConfig.keep_checkpoints,
        workers: Annotated[int, typer.Option("--workers", help="Data-loading processes per training process.", rich_help_panel=_RUN)] = TrainConfig.data_workers,
        device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.", rich_help_panel=_RUN)] = TrainConfig.device,
        amp: Annotated[str, typer.Option("--amp", help="auto (bf16 on CUDA) | bf16 | off.", rich_help_panel=_RUN)] = TrainConfig.amp,
        deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms (slower).", rich_help_panel=_RUN)] = False,
        kernels: Annotated[Optional[str], typer.Option("--kernels", help="Custom ops: auto | compiled | ref (default $STYLEFACE_KERNELS or auto).", rich_help_panel=_RUN)] = None,
        json_output: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.", rich_help_panel=_OUT)] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.", rich_help_panel=_OUT)] = False,
        init: Annotated[Optional[Path], typer.Option("--init", help="Start from this StyleFace checkpoint (its size wins over the options below).", rich_help_panel=_MODEL)] = None,
        recognizer_weights: Annotated[Optional[Path], typer.Option("--recognizer-weights", help="arcface_torch or CurricularFace weights, or an insightface ONNX pack file, for the frozen recognizer.", rich_help_panel=_MODEL)] = None,
        init_stylegan: Annotated[Optional[Path], typer.Option("--init-stylegan", help="Start mapping, synthesis and discriminator from a StyleGAN2 config-F file (NVlabs .pkl or rosinality .pt); it decides the generator's size.", rich_help_panel=_MODEL)] = None,
        resolution: Annotated[Optional[int], typer.Option("--resolution", help="Generator resolution (the data may be larger); default 256, or the --init-stylegan file's.", rich_help_panel=_MODEL)] = None,
        preset: Annotated[str, typer.Option("--preset", help="paper (StyleGAN2 config F, IR-100) | tiny (tests).", rich_help_panel=_MODEL)] = "paper",
        recognizer: Annotated[Optional[str], typer.Option("--recognizer", help="tiny | iresnet50 | iresnet100 (default: the preset's).", rich_help_panel=_MODEL)] = None,
        channel_base: Annotated[Optional[int], typer.Option("--channel-base", rich_help_panel=_MODEL)] = None,
        channel_max: Annotated[Optional[int], typer.Option("--channel-max", rich_help_panel=_MODEL)] = None,
        z_dim: Annotated[Optional[int], typer.Option("--z-dim", rich_help_panel=_MODEL)] = None,
        w_dim: Annotated[Optional[int], typer.Option("--w-dim", rich_help_panel=_MODEL)] = None,
        mapping_layers: Annotated[Optional[int], typer.Option("--mapping-layers", rich_help_panel=_MODEL)] = None,
        attr_resolution: Annotated[Optional[int], typer.Option("--attr-resolution", rich_help_panel=_MODEL)] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Per process.", rich_help_panel=_OPT)] = TrainConfig.batch_size,
        lr_g: Annotated[float, typer.Option("--lr-g", rich_help_panel=_OPT)] = TrainConfig.lr_g,
        lr_d: Annotated[float, typer.Option("--lr-d", rich_help_panel=_OPT)] = TrainConfig.lr_d,
        beta1: Annotated[float, typer.Option("--beta1", rich_help_panel=_OPT)] = TrainConfig.betas[0],
        beta2: Annotated[float, typer.Option("--beta2", rich_help_panel=_OPT)] = TrainConfig.betas[1],
        r1_gamma: Annotated[Optional[float], typer.Option("--r1-gamma", help="Default: 0.0002 * R^2 / global batch.", rich_help_panel=_OPT)] = None,
        r1_interval: Annotated[int, typer.Option("--r1-interval", help="Lazy R1 every N steps (0 = off).", rich_help_panel=_OPT)] = TrainConfig.r1_interval,
        ema_kimg: Annotated[float, typer.Option("--ema-kimg", help="EMA half-life, thousands of images.", rich_help_panel=_OPT)] = TrainConfig.ema_kimg,
        ema_rampup: Annotated[float, typer.Option("--ema-rampup", help="0 = no ramp-up.", rich_help_panel=_OPT)] = TrainConfig.ema_rampup,
        momentum: Annotated[float, typer.Option("--momentum", help="Momentum projector's m.", rich_help_panel=_OPT)] = TrainConfig.momentum,
        temperature: Annotated[float, typer.Option("--temperature", help="Contrastive tau.", rich_help_panel=_OPT)] = TrainConfig.temperature,
        same_identity_prob: Annotated[float, typer.Option("--same-identity-prob", help="Share of same-person pairs.", rich_help_panel=_OPT)] = TrainConfig.same_identity_prob,
        deid_prob: Annotated[float, typer.Option("--deid-prob", help="Share of random-identity samples.", rich_help_panel=_OPT)] = TrainConfig.deid_prob,
        fm_layers: Annotated[int, typer.Option("--fm-layers", help="Background-only feature-matching layers (m).", rich_help_panel=_OPT)] = TrainConfig.fm_background_layers,
        w_adv: Annotated[float, typer.Option("--w-adv", rich_help_panel=_LOSS)] = LossWeights.adversarial,
        w_id: Annotated[float, typer.Option("--w-id", rich_help_panel=_LOSS)] = LossWeights.identity,
        w_rec: Annotated[float, typer.Option("--w-rec", rich_help_panel=_LOSS)] = LossWeights.reconstruction,
        w_fm: Annotated[float, typer.Option("--w-fm", rich_help_panel=_LOSS)] = LossWeights.feature_matching,
        w_contrastive: Annotated[float, typer.Option("--w-contrastive", rich_help_panel=_LOSS)] = LossWeights.contrastive,
    ) -> None:
        """Train StyleFace (adversarial + R1, identity, reconstruction, feature matching, contrastive W+)."""
        # with --init-stylegan the file decides the generator (the trainer reads its weights again)
        model_config, _ = new_model_config(
            init_stylegan=init_stylegan, preset=preset, resolution=resolution, attr_resolution=attr_resolution,
            recognizer=recognizer, channel_base=channel_base, channel_max=channel_max, z_dim=z_dim, w_dim=w_dim,
            mapping_layers=mapping_layers)
        config = build_train_config(
            data_dir=data_dir, out=out, model_config=model_config, init=init, recognizer_weights=recognizer_weights,
            init_stylegan=init_stylegan,
            steps=steps, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, beta1=beta1, beta2=beta2, r1_gamma=r1_gamma,
            r1_interval=r1_interval, ema_kimg=ema_kimg, ema_rampup=ema_rampup or None, momentum=momentum,
            temperature=temperature, same_identity_prob=same_identity_prob, deid_prob=deid_prob,
            fm_background_layers=fm_layers, seed=seed, log_every=log_every, sample_every=sample_every,
            checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, data_workers=workers, amp=amp,
            device=device, resume=resume, export=export, deterministic=deterministic, kernels=kernels,
            w_adv=w_adv, w_id=w_id, w_rec=w_rec, w_fm=w_fm, w_contrastive=w_contrastive,
        )
        reporter = Reporter(quiet=quiet, json_output=json_output)
        text = "G {task.fields[g]} D {task.fields[d]} id {task.fields[id]} rec {task.fields[rec]}"
        with _progress(not quiet and stderr.is_terminal, "Training", text, g="-", d="-", id="-", rec="-") as update:
            def on_step(step: int, total: int, values: dict[str, float]) -> None:
                update(step, total, g=f"{values['g_total']:.3f}", d=f"{values['d_total']:.3f}",
                       id=f"{values['identity']:.3f}", rec=f"{values['reconstruction']:.3f}")

            from styleface_cli.train.loop import run_training  # torch loads only when a command needs it

            summary = run_training(config=config, on_step=on_step, on_message=reporter.info)
        if summary.rank != 0:  # under torchrun, rank 0 speaks for the run
            return
        record = {"run_dir": str(out), **dataclasses.asdict(summary)}
        _emit(reporter, record, f"{out}: step {summary.steps} ({summary.images_seen / 1000:.1f} kimg), "
                                f"state {summary.last_state}" + (f", model {summary.exported}" if summary.exported else ""))

    @app.command("train-export", no_args_is_help=True)
    def train_export_command(
        run: Annotated[Path, typer.Argument(help="A run folder (its newest state) or a state-*.pt file.")],
        model_path: Annotated[Path, typer.Argument(help="The StyleFace checkpoint to write (.safetensors).")],
        json_output: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages on stderr.")] = False,
    ) -> None:
        """Export the EMA generator of a training run as a StyleFace checkpoint."""
        from styleface_cli.train.loop import export_model, latest_state

        state = latest_state(run)
        written = export_model(state_path=state, out=model_path)
        _emit(Reporter(quiet=quiet, json_output=json_output), {"state": str(state), "model": str(written)},
              f"{state} -> {written}")
