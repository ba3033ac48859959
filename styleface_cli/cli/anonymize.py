"""``styleface anonymize``, ``styleface swap`` and ``styleface render``: parse options, build the config
once, plan the inputs, then run them through ``styleface_cli.api`` (in this process, or in ``--jobs``
worker processes that each load the tools once).

With several inputs a failed one does not stop the others; the exit code is that input's own code
when there was one input, ``PARTIAL`` (7) when some of several failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Iterable, Optional

import typer

from styleface_cli import api
from styleface_cli.checkpoints import find_checkpoint, resolve_method
from styleface_cli.config import (
    AnonymizeConfig,
    DetectConfig,
    EncodeConfig,
    GenerateConfig,
    IdentityConfig,
    ObfuscateConfig,
    ReadConfig,
    SelectConfig,
    TrackConfig,
)
from styleface_cli.console import DatasetProgress, Reporter
from styleface_cli.errors import ConfigError, ExitCode, StylefaceError
from styleface_cli.face.obfuscate import METHODS as OBFUSCATIONS
from styleface_cli.inputs import Job, is_tar_path, parse_shard, plan_jobs, read_path_list
from styleface_cli.video.decode import probe
from styleface_cli.video.images import is_image_path

METHODS = ("auto", "styleface") + OBFUSCATIONS
_OUT, _DET, _TRK, _HIDE, _GEN, _ENC = "Output", "Detection", "Tracking", "Hiding", "Generator", "Encoding"
_DATA = "Datasets"

# Options shared by the commands (one definition each).
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (one input only).", rich_help_panel=_OUT)]
OutputDir = Annotated[Optional[Path], typer.Option("--output-dir", help="Folder for outputs (default: beside each input).", rich_help_panel=_OUT)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).", rich_help_panel=_OUT)]
ExportTracks = Annotated[Optional[Path], typer.Option("--export-tracks", help="Write per-frame boxes, landmarks and track ids to this JSON file (one input only).", rich_help_panel=_OUT)]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.", rich_help_panel=_OUT)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.", rich_help_panel=_OUT)]
Method = Annotated[str, typer.Option("--method", help="auto (styleface with a checkpoint, else blur) | styleface | blur | pixelate | mask.", rich_help_panel=_HIDE)]
MaskScale = Annotated[float, typer.Option("--mask-scale", help="Obfuscation ellipse size relative to the face box (safety margin).", rich_help_panel=_HIDE)]
Feather = Annotated[float, typer.Option("--feather", help="Soft edge outside the ellipse, relative to its size.", rich_help_panel=_HIDE)]
Strength = Annotated[float, typer.Option("--strength", help="Above 1 blurs/pixelates more.", rich_help_panel=_HIDE)]
Detector = Annotated[str, typer.Option("--detector", help="centerface (bundled) | scrfd (needs --detector-model).", rich_help_panel=_DET)]
DetectorModel = Annotated[Optional[Path], typer.Option("--detector-model", help="Local ONNX file for the detector.", rich_help_panel=_DET)]
Threshold = Annotated[float, typer.Option("--threshold", help="Detection score threshold; lower finds more.", rich_help_panel=_DET)]
DetSize = Annotated[int, typer.Option("--det-size", help="Longest side the detector sees, px (0 = as the frame is).", rich_help_panel=_DET)]
Rotations = Annotated[str, typer.Option("--rotations", help="Extra detection passes for sideways faces, e.g. 90,-90.", rich_help_panel=_DET)]
MaxAge = Annotated[int, typer.Option("--max-age", help="Frames a lost face stays covered.", rich_help_panel=_TRK)]
MinHits = Annotated[int, typer.Option("--min-hits", help="Detections before a track is confirmed.", rich_help_panel=_TRK)]
Backfill = Annotated[int, typer.Option("--backfill", help="Frames before a face's first detection that are covered too.", rich_help_panel=_TRK)]
SceneCut = Annotated[float, typer.Option("--scene-cut", help="Scene-cut sensitivity (0 = off).", rich_help_panel=_TRK)]
Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", help="StyleFace checkpoint (.safetensors); else $STYLEFACE_CHECKPOINT, else the user cache.", rich_help_panel=_GEN)]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the random identities (same seed, same people).", rich_help_panel=_GEN)]
MinDistance = Annotated[float, typer.Option("--min-identity-distance", help="Reject random identities closer than this to the original (cosine distance).", rich_help_panel=_GEN)]
IdentityStrength = Annotated[float, typer.Option("--identity-strength", help="Proportion of the new identity in W+ (1 = fully new).", rich_help_panel=_GEN)]
Mix = Annotated[str, typer.Option("--mix", help="Per-level identity mixing, e.g. low=a.jpg,mid=b.jpg.", rich_help_panel=_GEN)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Face crops per generator call.", rich_help_panel=_GEN)]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.", rich_help_panel=_GEN)]
Kernels = Annotated[Optional[str], typer.Option("--kernels", help="auto | compiled | ref (custom ops; default $STYLEFACE_KERNELS or auto).", rich_help_panel=_GEN)]
Codec = Annotated[str, typer.Option("--codec", help="Video encoder: auto (H.264; VP9 for .webm), libx264, libx265, libvpx-vp9, ...", rich_help_panel=_ENC)]
Crf = Annotated[int, typer.Option("--crf", help="Quality (lower is better).", rich_help_panel=_ENC)]
Preset = Annotated[str, typer.Option("--preset", help="Encoder speed preset.", rich_help_panel=_ENC)]
EncoderOption = Annotated[list[str], typer.Option("--encoder-option", help="KEY=VALUE passed to the encoder (repeatable).", rich_help_panel=_ENC)]
NoAudio = Annotated[bool, typer.Option("--no-audio", help="Drop the audio streams.", rich_help_panel=_ENC)]
FilesFrom = Annotated[Optional[Path], typer.Option("--files-from", help="Read input paths from this file, one per line ('-': stdin).", rich_help_panel=_DATA)]
Null = Annotated[bool, typer.Option("--null", "-0", help="Input lists are NUL-separated (find -print0).", rich_help_panel=_DATA)]
Root = Annotated[Optional[Path], typer.Option("--root", help="Keys and --output-dir structure are relative to this folder (default: the list's common parent).", rich_help_panel=_DATA)]
Report = Annotated[Optional[Path], typer.Option("--report", help="Append one JSON line per finished input to this file (flushed line by line).", rich_help_panel=_DATA)]
Resume = Annotated[bool, typer.Option("--resume", help="Skip inputs already done (per --report, else an existing output); redo stale ones.", rich_help_panel=_DATA)]
Shard = Annotated[Optional[str], typer.Option("--shard", help="K/N: only the inputs whose key hashes to shard K (0-based) of N.", rich_help_panel=_DATA)]
Jobs = Annotated[int, typer.Option("--jobs", "-j", help="Inputs processed at once, in worker processes.", rich_help_panel=_DATA)]
DryRun = Annotated[bool, typer.Option("--dry-run", help="List each input, its output or why it is skipped; process nothing.", rich_help_panel=_DATA)]
MaxPixels = Annotated[int, typer.Option("--max-pixels", help="Refuse pictures and video frames above this many pixels (decompression bombs); 0 = no limit.", rich_help_panel=_OUT)]
_RAY = "Ray cluster"
RayAddress = Annotated[Optional[str], typer.Option("--ray", metavar="ADDRESS", help="Run the inputs on a Ray cluster: local (a Ray started here), auto (the cluster this machine belongs to), ray://HOST:PORT or HOST:PORT (needs the ray extra).", rich_help_panel=_RAY)]
RayCpus = Annotated[float, typer.Option("--ray-cpus", help="CPUs each Ray actor reserves (fractions allowed).", rich_help_panel=_RAY)]
RayGpus = Annotated[float, typer.Option("--ray-gpus", help="GPUs each Ray actor reserves (0.25: four actors share a GPU).", rich_help_panel=_RAY)]
RayRetries = Annotated[int, typer.Option("--ray-retries", help="Retries of an input whose worker process or node died.", rich_help_panel=_RAY)]


def parse_rotations(text: str) -> tuple[int, ...]:
    """``"90,-90"`` -> ``(90, -90)``; each a multiple of 90; ``""`` or ``"none"`` -> ``()``."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ConfigError(f"--rotations takes degrees like 90,-90; got {part!r}") from None
        if value % 90:
            raise ConfigError(f"--rotations must be multiples of 90 degrees; got {value}")
        if value % 360:
            values.append(value)
    return tuple(values)


def parse_pairs(items: list[str], option: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} takes KEY=VALUE; got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_mix(text: str) -> tuple[tuple[str, Path], ...]:
    """``"low=a.jpg,mid=b.jpg"`` -> ``(("low", Path("a.jpg")), ("mid", Path("b.jpg")))``."""
    if not text:
        return ()
    pairs = parse_pairs([part for part in text.split(",") if part.strip()], "--mix")
    for level, path in pairs:
        if level not in ("low", "mid", "high"):
            raise ConfigError(f"--mix levels are low, mid and high; got {level!r}")
        if not Path(path).is_file():
            raise ConfigError(f"--mix {level}: no such file {path}")
    return tuple((level, Path(path)) for level, path in pairs)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available here")
    return device


def build_config(
    *,
    method: str = "auto",
    mask_scale: float = ObfuscateConfig.mask_scale,
    feather: float = ObfuscateConfig.feather,
    strength: float = ObfuscateConfig.strength,
    detector: str = DetectConfig.backend,
    detector_model: Path | None = None,
    threshold: float = DetectConfig.threshold,
    det_size: int = DetectConfig.max_size,
    rotations: str = "",
    max_age: int = TrackConfig.max_age,
    min_hits: int = TrackConfig.min_hits,
    backfill: int = TrackConfig.backfill,
    scene_cut: float = TrackConfig.scene_cut_threshold,
    checkpoint: Path | None = None,
    seed: int = IdentityConfig.seed,
    min_identity_distance: float = IdentityConfig.min_distance,
    identity_strength: float = IdentityConfig.strength,
    sources: tuple[Path, ...] = (),
    mix: str = "",
    batch_size: int = GenerateConfig.batch_size,
    device: str = "auto",
    kernels: str | None = None,
    select: SelectConfig = SelectConfig(),
    codec: str = EncodeConfig.codec,
    crf: int = EncodeConfig.crf,
    preset: str = EncodeConfig.preset,
    encoder_option: list[str] = (),
    no_audio: bool = False,
    export_tracks: Path | None = None,
    max_pixels: int = ReadConfig.max_pixels,
    env: dict[str, str] | None = None,
) -> AnonymizeConfig:
    """The one place where command-line values (and the environment) become the frozen config."""
    env = dict(os.environ) if env is None else env
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if mask_scale < 1.0:
        raise ConfigError(f"--mask-scale below 1.0 would leave parts of faces visible; got {mask_scale}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1; got {threshold}")
    if det_size < 0 or (0 < det_size < 64):
        raise ConfigError(f"--det-size must be 0 (as the frame is) or at least 64; got {det_size}")
    if max_pixels < 0:
        raise ConfigError(f"--max-pixels must be 0 (no limit) or more; got {max_pixels}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1; got {batch_size}")
    if not 0.0 <= identity_strength <= 1.0:
        raise ConfigError(f"--identity-strength must be between 0 and 1; got {identity_strength}")
    choice = find_checkpoint(checkpoint, env) if method in ("auto", "styleface") else None
    ran, reason = resolve_method(method, choice) if choice is not None else (method, f"{method}: requested")
    generative = ran == "styleface"
    if (sources or mix) and not generative:
        raise ConfigError(f"a source identity needs the StyleFace generator; {reason}")
    kernel_policy = "auto"
    run_on = resolve_device(device) if generative else "cpu"
    if generative:
        from styleface_cli.ops import resolve_policy

        kernel_policy = resolve_policy(kernels if kernels is not None else env.get("STYLEFACE_KERNELS"))
        if kernel_policy == "auto" and run_on == "cpu":
            # measured (README, generator benchmark): on a CPU PyTorch's own ops beat the C++ kernels,
            # so auto neither compiles nor uses them there; --kernels compiled still forces them
            kernel_policy = "ref"
    return AnonymizeConfig(
        method=ran,
        method_reason=reason,
        detect=DetectConfig(backend=detector, model_path=detector_model, threshold=threshold, max_size=det_size,
                            rotations=parse_rotations(rotations)),
        track=TrackConfig(max_age=max_age, min_hits=min_hits, backfill=backfill, scene_cut_threshold=scene_cut),
        encode=EncodeConfig(codec=codec, crf=crf, preset=preset,
                            encoder_options=parse_pairs(list(encoder_option), "--encoder-option"), keep_audio=not no_audio),
        obfuscate=ObfuscateConfig(method=ran if ran in OBFUSCATIONS else "blur", mask_scale=mask_scale, feather=feather,
                                  strength=strength),
        generate=GenerateConfig(checkpoint=choice.path if generative else None, batch_size=batch_size,
                                device=run_on, kernels=kernel_policy),
        identity=IdentityConfig(seed=seed, min_distance=min_identity_distance, strength=identity_strength,
                                sources=tuple(sources), mix=parse_mix(mix)),
        select=select,
        export_tracks=export_tracks,
        read=ReadConfig(max_pixels=max_pixels),
    )


def report_records(records: Iterable[dict[str, Any]], reporter: Reporter, *, dry_run: bool = False) -> int:
    """Show every record as it comes (stdout with --json) and return the exit code of the whole command."""
    codes: list[int] = []
    for record in records:
        codes.append(int(record["exit_code"]))
        if dry_run and not reporter.json_output:
            reporter.plan(record)
        elif record["status"] == "error" and not reporter.json_output:
            reporter.error(record["error"])  # core messages name the file
        else:
            reporter.result(record)
    failed = [code for code in codes if code]
    if not failed:
        return int(ExitCode.OK)
    return failed[0] if len(codes) == 1 else int(ExitCode.PARTIAL)


def run_dataset(jobs: list[Job], *, cfg: AnonymizeConfig, reporter: Reporter, overwrite: bool, resume: bool = False,
                report: Path | None = None, workers: int = 1, dry_run: bool = False,
                runner: api.Runner | None = None) -> int:
    """Run (or list) every job through the API, with one progress display; the command's exit code."""
    if workers < 1:
        raise ConfigError(f"--jobs must be at least 1; got {workers}")
    if cfg.export_tracks is not None and len(jobs) > 1:
        raise ConfigError("--export-tracks names one file but several inputs were given")
    if not dry_run:
        reporter.info(f"method: {cfg.method_reason}")
    with DatasetProgress(len(jobs), reporter.shows_progress and not dry_run, frames_of=expected_frames) as progress:
        records = api.execute(jobs, cfg=cfg, overwrite=overwrite, resume=resume, report=report, workers=workers,
                              dry_run=dry_run, progress=progress, runner=runner)
        return report_records(records, reporter, dry_run=dry_run)


def ray_runner(address: str | None, *, cpus: float, gpus: float, retries: int, jobs: int = 1) -> api.Runner | None:
    """``--ray ADDRESS`` and its options -> the runner that sends inputs to Ray actors (None without --ray)."""
    if address is None:
        return None
    if jobs != 1:
        raise ConfigError("give either --jobs or --ray (with --ray, --ray-cpus/--ray-gpus size the actors)")
    from styleface_cli import cluster

    return cluster.anonymize_runner(cluster.build_ray_config(address=address, cpus=cpus, gpus=gpus, retries=retries))


def input_specs(inputs: list[str], files_from: Path | None, null: bool) -> tuple[list[str], list[str]]:
    """Command-line inputs and the paths listed on stdin (``-``) or in ``--files-from``."""
    specs = [spec for spec in inputs if spec != "-"]
    listed: list[str] = []
    if "-" in inputs or files_from == Path("-"):
        listed += read_path_list(sys.stdin.buffer, null=null)
    if files_from is not None and files_from != Path("-"):
        try:
            with open(files_from, "rb") as stream:
                listed += read_path_list(stream, null=null)
        except OSError as error:
            raise ConfigError(f"--files-from {files_from}: {error.strerror}") from error
    if not specs and not listed and ("-" in inputs or files_from is not None):
        raise ConfigError("the input list is empty")
    return specs, listed


def expected_frames(job: Job) -> int | None:
    """How many frames the progress bar counts to (for its ETA); None when the container does not say."""
    source = job.source
    if is_tar_path(source):
        return None
    if is_image_path(source):
        return 1
    try:
        return probe(source).frame_count or None
    except StylefaceError:
        return None  # the run itself reports the problem


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    def anonymize(
        inputs: Annotated[Optional[list[str]], typer.Argument(help="Videos, images, tar shards, folders (searched recursively), globs, or - to read a list of paths from stdin.")] = None,
        output: Output = None, output_dir: OutputDir = None, overwrite: Overwrite = False,
        export_tracks: ExportTracks = None, json_output: Json = False, quiet: Quiet = False,
        files_from: FilesFrom = None, null: Null = False, root: Root = None, report: Report = None,
        resume: Resume = False, shard: Shard = None, jobs: Jobs = 1, dry_run: DryRun = False,
        ray: RayAddress = None, ray_cpus: RayCpus = 1.0, ray_gpus: RayGpus = 0.0, ray_retries: RayRetries = 2,
        method: Method = "auto", mask_scale: MaskScale = ObfuscateConfig.mask_scale,
        feather: Feather = ObfuscateConfig.feather, strength: Strength = ObfuscateConfig.strength,
        keep_face: Annotated[list[Path], typer.Option("--keep-face", help="Leave the person in this photo untouched (repeatable).", rich_help_panel=_HIDE)] = [],
        detector: Detector = DetectConfig.backend, detector_model: DetectorModel = None,
        threshold: Threshold = DetectConfig.threshold, det_size: DetSize = DetectConfig.max_size, rotations: Rotations = "",
        max_age: MaxAge = TrackConfig.max_age, min_hits: MinHits = TrackConfig.min_hits,
        backfill: Backfill = TrackConfig.backfill, scene_cut: SceneCut = TrackConfig.scene_cut_threshold,
        checkpoint: Checkpoint = None, seed: Seed = IdentityConfig.seed,
        min_identity_distance: MinDistance = IdentityConfig.min_distance,
        identity_strength: IdentityStrength = IdentityConfig.strength, mix: Mix = "",
        batch_size: BatchSize = GenerateConfig.batch_size, device: Device = "auto", kernels: Kernels = None,
        codec: Codec = EncodeConfig.codec, crf: Crf = EncodeConfig.crf, preset: Preset = EncodeConfig.preset,
        encoder_option: EncoderOption = [], no_audio: NoAudio = False, max_pixels: MaxPixels = ReadConfig.max_pixels,
    ) -> None:
        """Hide every face in videos and photos: a new synthetic identity per person (with a StyleFace
        checkpoint) or blur / pixelate / mask; audio, timing and size are kept."""
        select = SelectConfig(mode="except", faces=tuple(keep_face)) if keep_face else SelectConfig()
        cfg = build_config(
            method=method, mask_scale=mask_scale, feather=feather, strength=strength, detector=detector,
            detector_model=detector_model, threshold=threshold, det_size=det_size, rotations=rotations,
            max_age=max_age, min_hits=min_hits, backfill=backfill, scene_cut=scene_cut, checkpoint=checkpoint,
            seed=seed, min_identity_distance=min_identity_distance, identity_strength=identity_strength, mix=mix,
            batch_size=batch_size, device=device, kernels=kernels, select=select, codec=codec, crf=crf,
            preset=preset, encoder_option=encoder_option, no_audio=no_audio, export_tracks=export_tracks, max_pixels=max_pixels)
        runner = ray_runner(ray, cpus=ray_cpus, gpus=ray_gpus, retries=ray_retries, jobs=jobs)
        specs, listed = input_specs(inputs or [], files_from, null)
        planned = plan_jobs(specs, output=output, output_dir=output_dir, listed=listed, root=root,
                            shard=parse_shard(shard))
        reporter = Reporter(quiet=quiet, json_output=json_output)
        code = run_dataset(planned, cfg=cfg, reporter=reporter, overwrite=overwrite, resume=resume, report=report,
                           workers=jobs, dry_run=dry_run, runner=runner)
        raise typer.Exit(code)

    @app.command(no_args_is_help=True)
    def swap(
        inputs: Annotated[list[str], typer.Argument(help="Target videos, images, folders or globs.")],
        source: Annotated[list[Path], typer.Option("--source", "-s", help="Photo of the person to put on the targets (repeat for several photos of them).")],
        target: Annotated[str, typer.Option("--target", help="all | largest | tracks:ID,ID (ids from --export-tracks).")] = "all",
        target_face: Annotated[list[Path], typer.Option("--target-face", help="Swap only the person in this photo (repeatable).")] = [],
        output: Output = None, output_dir: OutputDir = None, overwrite: Overwrite = False,
        export_tracks: ExportTracks = None, json_output: Json = False, quiet: Quiet = False,
        detector: Detector = DetectConfig.backend, detector_model: DetectorModel = None,
        threshold: Threshold = DetectConfig.threshold, det_size: DetSize = DetectConfig.max_size, rotations: Rotations = "",
        checkpoint: Checkpoint = None, identity_strength: IdentityStrength = IdentityConfig.strength, mix: Mix = "",
        batch_size: BatchSize = GenerateConfig.batch_size, device: Device = "auto", kernels: Kernels = None,
        codec: Codec = EncodeConfig.codec, crf: Crf = EncodeConfig.crf, preset: Preset = EncodeConfig.preset,
        encoder_option: EncoderOption = [], no_audio: NoAudio = False, max_pixels: MaxPixels = ReadConfig.max_pixels,
    ) -> None:
        """Put the source person's identity on the target's faces (needs a StyleFace checkpoint)."""
        for path in source:
            if not path.is_file():
                raise ConfigError(f"--source: no such file {path}")
        cfg = build_config(
            method="styleface", detector=detector, detector_model=detector_model, threshold=threshold,
            det_size=det_size, rotations=rotations, checkpoint=checkpoint, identity_strength=identity_strength,
            sources=tuple(source), mix=mix, batch_size=batch_size, device=device, kernels=kernels,
            select=parse_target(target, target_face), codec=codec, crf=crf, preset=preset,
            encoder_option=encoder_option, no_audio=no_audio, export_tracks=export_tracks, max_pixels=max_pixels)
        planned = plan_jobs(inputs, output=output, output_dir=output_dir, suffix="_swapped")
        reporter = Reporter(quiet=quiet, json_output=json_output)
        raise typer.Exit(run_dataset(planned, cfg=cfg, reporter=reporter, overwrite=overwrite))

    @app.command(no_args_is_help=True)
    def render(
        source: Annotated[Path, typer.Argument(help="The video or image the tracks file was made from.")],
        tracks: Annotated[Path, typer.Option("--tracks", help="Tracks JSON from --export-tracks, edited or not.")],
        output: Output = None, overwrite: Overwrite = False, json_output: Json = False, quiet: Quiet = False,
        method: Method = "auto", mask_scale: MaskScale = ObfuscateConfig.mask_scale,
        feather: Feather = ObfuscateConfig.feather, strength: Strength = ObfuscateConfig.strength,
        checkpoint: Checkpoint = None, seed: Seed = IdentityConfig.seed,
        batch_size: BatchSize = GenerateConfig.batch_size, device: Device = "auto", kernels: Kernels = None,
        codec: Codec = EncodeConfig.codec, crf: Crf = EncodeConfig.crf, preset: Preset = EncodeConfig.preset,
        encoder_option: EncoderOption = [], no_audio: NoAudio = False, max_pixels: MaxPixels = ReadConfig.max_pixels,
    ) -> None:
        """Re-render from a tracks file with no detection, so a reviewer can add or fix boxes and render again."""
        cfg = build_config(method=method, mask_scale=mask_scale, feather=feather, strength=strength,
                           checkpoint=checkpoint, seed=seed, batch_size=batch_size, device=device, kernels=kernels,
                           codec=codec, crf=crf, preset=preset, encoder_option=encoder_option, no_audio=no_audio, max_pixels=max_pixels)
        job = plan_jobs([str(source)], output=output, output_dir=None)[0]
        reporter = Reporter(quiet=quiet, json_output=json_output)
        reporter.info(f"method: {cfg.method_reason}")
        hider = api.Anonymizer(cfg)
        with DatasetProgress(1, reporter.shows_progress, frames_of=expected_frames) as progress:
            progress.started(job)
            record = hider.render(job, tracks, overwrite=overwrite,
                                  on_frame=lambda faces: progress.advanced(job, 1, len(faces.regions)))
            progress.finished(job, record)
        raise typer.Exit(report_records([record], reporter))


def parse_target(target: str, target_faces: list[Path]) -> SelectConfig:
    """``--target`` and ``--target-face`` -> the face selection of swap."""
    if target_faces:
        if target != "all":
            raise ConfigError("give either --target or --target-face, not both")
        for path in target_faces:
            if not path.is_file():
                raise ConfigError(f"--target-face: no such file {path}")
        return SelectConfig(mode="faces", faces=tuple(target_faces))
    if target in ("all", "largest"):
        return SelectConfig(mode=target)
    if target.startswith("tracks:"):
        try:
            ids = tuple(int(part) for part in target[len("tracks:"):].split(",") if part.strip())
        except ValueError:
            raise ConfigError(f"--target tracks: takes track ids like tracks:0,3; got {target!r}") from None
        if not ids:
            raise ConfigError("--target tracks: needs at least one track id")
        return SelectConfig(mode="tracks", track_ids=ids)
    raise ConfigError(f"--target must be all, largest or tracks:ID,...; got {target!r}")

