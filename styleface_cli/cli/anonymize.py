"""``styleface anonymize`` and ``styleface render``: parse options, build the config once, run each input.

With several inputs a failed one does not stop the others; the exit code is that input's own code
when there was one input, ``PARTIAL`` (7) when some of several failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from styleface_cli import pipeline
from styleface_cli.config import AnonymizeConfig, DetectConfig, EncodeConfig, ObfuscateConfig, TrackConfig
from styleface_cli.console import Reporter
from styleface_cli.errors import ConfigError, ExitCode, OutputError, StylefaceError
from styleface_cli.face.obfuscate import METHODS
from styleface_cli.inputs import Job, plan_jobs
from styleface_cli.video.atomic import check_output_path

_OUT = "Output"
_DET = "Detection"
_TRK = "Tracking"
_HIDE = "Hiding"
_ENC = "Encoding"


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


def parse_encoder_options(items: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--encoder-option takes KEY=VALUE; got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def build_config(
    *,
    method: str,
    mask_scale: float,
    feather: float,
    strength: float,
    detector: str,
    detector_model: Path | None,
    threshold: float,
    det_size: int,
    rotations: str,
    max_age: int,
    min_hits: int,
    backfill: int,
    scene_cut: float,
    codec: str,
    crf: int,
    preset: str,
    encoder_option: list[str],
    no_audio: bool,
    export_tracks: Path | None,
) -> AnonymizeConfig:
    """The one place where command-line values become the frozen config."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if mask_scale < 1.0:
        raise ConfigError(f"--mask-scale below 1.0 would leave parts of faces visible; got {mask_scale}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1; got {threshold}")
    if det_size < 0 or (0 < det_size < 64):
        raise ConfigError(f"--det-size must be 0 (full resolution) or at least 64; got {det_size}")
    return AnonymizeConfig(
        detect=DetectConfig(backend=detector, model_path=detector_model, threshold=threshold, max_size=det_size,
                            rotations=parse_rotations(rotations)),
        track=TrackConfig(max_age=max_age, min_hits=min_hits, backfill=backfill, scene_cut_threshold=scene_cut),
        encode=EncodeConfig(codec=codec, crf=crf, preset=preset,
                            encoder_options=parse_encoder_options(encoder_option), keep_audio=not no_audio),
        obfuscate=ObfuscateConfig(method=method, mask_scale=mask_scale, feather=feather, strength=strength),
        export_tracks=export_tracks,
    )


def run_jobs(jobs: list[Job], *, overwrite: bool, reporter: Reporter, method: str,
             work: Callable[[Job, Callable], pipeline.RunStats]) -> int:
    """Run every job, report each, and return the exit code for the whole command."""
    codes: list[int] = []
    for job in jobs:
        record = {"input": str(job.source), "output": str(job.output), "method": method}
        started = time.perf_counter()
        try:
            if job.make_folder and not job.output.parent.exists():
                try:
                    job.output.parent.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise OutputError(f"cannot create the output folder {job.output.parent}: {error.strerror}") from error
            check_output_path(job.source, job.output, overwrite)
            with reporter.progress(job.source.name, None) as bar:
                stats = work(job, lambda faces: bar.advance(1, len(faces.regions)))
            record.update(status="ok", frames=stats.frames, faces=stats.faces, tracks=stats.tracks,
                          regions_by_source=stats.sources, seconds=round(stats.seconds, 3),
                          fps=round(stats.frames / stats.seconds, 2) if stats.seconds > 0 else 0.0)
            codes.append(0)
        except StylefaceError as error:
            record.update(status="error", error=str(error), exit_code=int(error.exit_code),
                          seconds=round(time.perf_counter() - started, 3))
            codes.append(int(error.exit_code))
            if not reporter.json_output:
                reporter.error(f"{job.source}: {error}")
                continue
        reporter.result(record)
    failed = [c for c in codes if c]
    if not failed:
        return int(ExitCode.OK)
    return failed[0] if len(codes) == 1 else int(ExitCode.PARTIAL)


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    def anonymize(
        inputs: Annotated[list[str], typer.Argument(help="Videos, images, folders (searched recursively) or globs.")],
        output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (one input only).", rich_help_panel=_OUT)] = None,
        output_dir: Annotated[Optional[Path], typer.Option("--output-dir", help="Folder for outputs (default: beside each input).", rich_help_panel=_OUT)] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs (never an input).", rich_help_panel=_OUT)] = False,
        export_tracks: Annotated[Optional[Path], typer.Option("--export-tracks", help="Write per-frame boxes, landmarks and track ids to this JSON file (one input only).", rich_help_panel=_OUT)] = None,
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object per input on stdout.", rich_help_panel=_OUT)] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.", rich_help_panel=_OUT)] = False,
        method: Annotated[str, typer.Option("--method", help="blur | pixelate | mask.", rich_help_panel=_HIDE)] = "blur",
        mask_scale: Annotated[float, typer.Option("--mask-scale", help="Ellipse size relative to the face box (safety margin).", rich_help_panel=_HIDE)] = 1.3,
        feather: Annotated[float, typer.Option("--feather", help="Soft edge outside the ellipse, relative to its size.", rich_help_panel=_HIDE)] = 0.1,
        strength: Annotated[float, typer.Option("--strength", help="Above 1 blurs/pixelates more.", rich_help_panel=_HIDE)] = 1.0,
        detector: Annotated[str, typer.Option("--detector", help="centerface (bundled) | scrfd (needs --detector-model).", rich_help_panel=_DET)] = "centerface",
        detector_model: Annotated[Optional[Path], typer.Option("--detector-model", help="Local ONNX file for the detector.", rich_help_panel=_DET)] = None,
        threshold: Annotated[float, typer.Option("--threshold", help="Detection score threshold; lower finds more.", rich_help_panel=_DET)] = 0.2,
        det_size: Annotated[int, typer.Option("--det-size", help="Longest side the detector sees, px (0 = full resolution).", rich_help_panel=_DET)] = DetectConfig.max_size,
        rotations: Annotated[str, typer.Option("--rotations", help="Extra detection passes for sideways faces, e.g. 90,-90.", rich_help_panel=_DET)] = "",
        max_age: Annotated[int, typer.Option("--max-age", help="Frames a lost face stays covered.", rich_help_panel=_TRK)] = TrackConfig.max_age,
        min_hits: Annotated[int, typer.Option("--min-hits", help="Detections before a track is confirmed.", rich_help_panel=_TRK)] = TrackConfig.min_hits,
        backfill: Annotated[int, typer.Option("--backfill", help="Frames before a face's first detection that are covered too.", rich_help_panel=_TRK)] = TrackConfig.backfill,
        scene_cut: Annotated[float, typer.Option("--scene-cut", help="Scene-cut sensitivity (0 = off).", rich_help_panel=_TRK)] = TrackConfig.scene_cut_threshold,
        codec: Annotated[str, typer.Option("--codec", help="Video encoder (libx264, libx265, libvpx-vp9, ...).", rich_help_panel=_ENC)] = EncodeConfig.codec,
        crf: Annotated[int, typer.Option("--crf", help="Quality (lower is better).", rich_help_panel=_ENC)] = EncodeConfig.crf,
        preset: Annotated[str, typer.Option("--preset", help="Encoder speed preset.", rich_help_panel=_ENC)] = EncodeConfig.preset,
        encoder_option: Annotated[list[str], typer.Option("--encoder-option", help="KEY=VALUE passed to the encoder (repeatable).", rich_help_panel=_ENC)] = [],
        no_audio: Annotated[bool, typer.Option("--no-audio", help="Drop the audio streams.", rich_help_panel=_ENC)] = False,
    ) -> None:
        """Hide every face in videos and photos (blur, pixelate or mask), keeping audio, timing and size."""
        cfg = build_config(method=method, mask_scale=mask_scale, feather=feather, strength=strength, detector=detector,
                           detector_model=detector_model, threshold=threshold, det_size=det_size, rotations=rotations,
                           max_age=max_age, min_hits=min_hits, backfill=backfill, scene_cut=scene_cut, codec=codec,
                           crf=crf, preset=preset, encoder_option=encoder_option, no_audio=no_audio,
                           export_tracks=export_tracks)
        jobs = plan_jobs(inputs, output=output, output_dir=output_dir)
        if export_tracks is not None and len(jobs) > 1:
            raise ConfigError("--export-tracks names one file but several inputs were given")
        reporter = Reporter(quiet=quiet, json_output=json_output)
        code = run_jobs(jobs, overwrite=overwrite, reporter=reporter, method=method,
                        work=lambda job, on_frame: pipeline.anonymize(source=job.source, output=job.output, cfg=cfg, on_frame=on_frame))
        raise typer.Exit(code)

    @app.command(no_args_is_help=True)
    def render(
        source: Annotated[Path, typer.Argument(help="The video or image the tracks file was made from.")],
        tracks: Annotated[Path, typer.Option("--tracks", help="Tracks JSON from --export-tracks, edited or not.")],
        output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file.")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
        json_output: Annotated[bool, typer.Option("--json", help="A JSON object on stdout.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or messages on stderr.")] = False,
        method: Annotated[str, typer.Option("--method", help="blur | pixelate | mask.")] = "blur",
        mask_scale: Annotated[float, typer.Option("--mask-scale")] = 1.3,
        feather: Annotated[float, typer.Option("--feather")] = 0.1,
        strength: Annotated[float, typer.Option("--strength")] = 1.0,
        codec: Annotated[str, typer.Option("--codec")] = EncodeConfig.codec,
        crf: Annotated[int, typer.Option("--crf")] = EncodeConfig.crf,
        preset: Annotated[str, typer.Option("--preset")] = EncodeConfig.preset,
        encoder_option: Annotated[list[str], typer.Option("--encoder-option")] = [],
        no_audio: Annotated[bool, typer.Option("--no-audio")] = False,
    ) -> None:
        """Re-render from a tracks file with no detection, so a reviewer can add or fix boxes and render again."""
        cfg = build_config(method=method, mask_scale=mask_scale, feather=feather, strength=strength, detector="centerface",
                           detector_model=None, threshold=0.5, det_size=0, rotations="", max_age=0, min_hits=1,
                           backfill=0, scene_cut=0.0, codec=codec, crf=crf, preset=preset,
                           encoder_option=encoder_option, no_audio=no_audio, export_tracks=None)
        jobs = plan_jobs([str(source)], output=output, output_dir=None)
        reporter = Reporter(quiet=quiet, json_output=json_output)
        code = run_jobs(jobs, overwrite=overwrite, reporter=reporter, method=method,
                        work=lambda job, on_frame: pipeline.render(source=job.source, tracks=tracks, output=job.output, cfg=cfg, on_frame=on_frame))
        raise typer.Exit(code)

