"""The Python API: what the ``styleface anonymize`` command does, for notebooks, Ray and other pipelines.

Three layers, each usable on its own (the CLI and the ``--jobs`` workers are built on them):

* **Planning** (``styleface_cli.inputs.plan_jobs``): inputs -> ``Job(source, output, key)``, sharded,
  with clashes refused before anything is written.
* **One loaded object** (``Anonymizer``): loads the detector (and generator) once; ``process(job)``
  runs one input and returns its record (the ``--json`` / ``--report`` object documented in
  ``styleface_cli.report``); ``file(path)`` does the same for a path; ``array(rgb)`` hides the faces
  of an in-memory ``[H, W, 3]`` uint8 RGB picture. A Ray actor or a Data-Juicer operator holds one.
* **A run** (``execute``, ``anonymize``): resume decisions, the report, one process or ``workers``
  worker processes, records yielded in completion order.

Example::

    from styleface_cli.api import Anonymizer, anonymize

    for record in anonymize(["photos/"], output_dir="clean/", method="blur", jobs=2, report="run.jsonl"):
        print(record["input"], record["status"], record["faces"])

    hider = Anonymizer.from_options(method="pixelate")   # models loaded once
    clean = hider.array(rgb)                              # [H, W, 3] uint8 in, same out
    record = hider.file("a.jpg", "a_clean.jpg")

Options are the CLI's long options with ``_`` for ``-`` (``mask_scale=1.6``, ``det_size=0``,
``encoder_option=["tune=film"]``); they are checked and frozen into ``AnonymizeConfig`` once.

Another executor (Ray, a cluster scheduler) reuses the same pieces as ``execute``::

    cfg = build_config(method="blur");  info = RunInfo.of(cfg)
    jobs = plan_jobs(inputs, output=None, output_dir=out, root=root, shard=None)
    log = ReportLog(report);  skipped, todo = triage(jobs, info, resume=True, previous=log.previous)
    # in each actor, once: hider = Anonymizer(cfg, info=info); per input: hider.process(job, reason=reason)
    # back in the driver, per record as it completes: log.append(record)
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from styleface_cli import pipeline
from styleface_cli.atomic import check_output_path, forget_listings, remove_stale_partials
from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import OutputError, StylefaceError
from styleface_cli.inputs import Job, is_tar_path, parse_shard, plan_jobs
from styleface_cli.records import Frame, FrameFaces
from styleface_cli.report import ReportLog, RunInfo, new_record, output_size, resume_decision
from styleface_cli.tools import Tools, prepare_tools
from styleface_cli.video.media import check_output_holds

OnFrame = Callable[[FrameFaces], None]
# Runs the inputs still to do somewhere else (``--ray``): (todo, *, cfg, info, overwrite, progress) -> records
Runner = Callable[..., Iterator[dict[str, Any]]]


class Progress(Protocol):
    """What a run tells a progress display (``console.DatasetProgress``); every method may be a no-op."""

    def started(self, job: Job) -> None: ...
    def advanced(self, job: Job, frames: int, faces: int) -> None: ...
    def finished(self, job: Job, record: dict[str, Any]) -> None: ...


def build_config(**options: Any) -> AnonymizeConfig:
    """The frozen config from CLI-style options (the same checks as the command line)."""
    from styleface_cli.cli.anonymize import build_config as build  # the CLI edge owns option parsing

    for name in ("detector_model", "checkpoint", "export_tracks"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    return build(**options)


class Anonymizer:
    """The models of one configuration, loaded once; hides faces in files, shards and arrays."""

    def __init__(self, cfg: AnonymizeConfig, *, info: RunInfo | None = None, tools: Tools | None = None) -> None:
        self.cfg = cfg
        self.info = info if info is not None else RunInfo.of(cfg)
        self.tools = tools if tools is not None else prepare_tools(cfg)

    @classmethod
    def from_options(cls, **options: Any) -> "Anonymizer":
        return cls(build_config(**options))

    # ---------------------------------------------------------------------------------------------

    def process(self, job: Job, *, overwrite: bool = False, on_frame: OnFrame | None = None,
                reason: str | None = None) -> dict[str, Any]:
        """Run one job; its record (status "ok" or "error"; input errors never raise, signals do)."""
        started = time.perf_counter()
        made: list[Path] = []  # output folders this job created, removed again if it fails
        try:
            if not is_tar_path(job.source):
                check_output_holds(job.source, job.output)  # before anything is created
            if job.make_folder:
                made = _make_folders(job.output.parent)
            check_output_path(job.source, job.output, overwrite)
            remove_stale_partials(job.output)  # temporaries of a run killed with SIGKILL
            if is_tar_path(job.source):
                from styleface_cli.shards import anonymize_tar

                shard = anonymize_tar(job.source, job.output, lambda source, output: self._run(source, output, on_frame))
                values = dict(frames=shard.frames, faces=shard.faces, tracks=shard.tracks,
                              regions_by_source=shard.sources, generator_batches=shard.generator_batches,
                              members=shard.members)
            else:
                stats = self._run(job.source, job.output, on_frame)
                values = dict(frames=stats.frames, faces=stats.faces, tracks=stats.tracks,
                              regions_by_source=stats.sources, generator_batches=stats.generator_batches)
        except StylefaceError as error:
            _remove_empty(made)
            return new_record(job, self.info, status="error", reason=reason, error=str(error),
                              exit_code=int(error.exit_code), seconds=round(time.perf_counter() - started, 3))
        seconds = time.perf_counter() - started
        return new_record(job, self.info, status="ok", reason=reason, seconds=round(seconds, 3),
                          fps=round(values["frames"] / seconds, 2) if seconds > 0 else 0.0,
                          output_size=output_size(job.output), **values)

    def file(self, source: str | Path, output: str | Path | None = None, *, overwrite: bool = False) -> dict[str, Any]:
        """Anonymize one file (to ``output``, default ``<stem>_anonymized.<ext>`` beside it); its record."""
        job = plan_jobs([str(source)], output=Path(output) if output is not None else None, output_dir=None)[0]
        return self.process(job, overwrite=overwrite)

    def array(self, rgb: np.ndarray) -> np.ndarray:
        """The faces of one ``[H, W, 3]`` uint8 RGB picture hidden; a new array of the same shape."""
        from styleface_cli.face.scenecut import SceneCutDetector
        from styleface_cli.face.track import Tracker

        image = np.asarray(rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"array() takes [H, W, 3] uint8 RGB; got {image.dtype} {image.shape}")
        frames = iter([Frame(index=0, pts=0, time_s=0.0, image=np.array(image))])
        detected = pipeline.detect(frames, self.tools.detector, batch_size=1, workers=1)
        with_cuts = pipeline.find_scene_cuts(detected, SceneCutDetector(self.cfg.track.scene_cut_threshold))
        tracked = pipeline.track(with_cuts, Tracker(self.cfg.track))
        chosen = pipeline.choose_faces(tracked, self.tools.chooser())
        for frame, _ in self.tools.hider()(chosen):
            return frame.image
        raise AssertionError("the pipeline returned no frame")

    def render(self, job: Job, tracks: Path, *, overwrite: bool = False, on_frame: OnFrame | None = None) -> dict[str, Any]:
        """``styleface render``: hide the faces listed in a tracks file (no detection); its record."""
        started = time.perf_counter()
        try:
            check_output_holds(job.source, job.output)
            check_output_path(job.source, job.output, overwrite)
            stats = pipeline.render(source=job.source, tracks=tracks, output=job.output, cfg=self.cfg,
                                    tools=self.tools, on_frame=on_frame)
        except StylefaceError as error:
            return new_record(job, self.info, status="error", error=str(error), exit_code=int(error.exit_code),
                              seconds=round(time.perf_counter() - started, 3))
        seconds = time.perf_counter() - started
        return new_record(job, self.info, status="ok", frames=stats.frames, faces=stats.faces, tracks=stats.tracks,
                          regions_by_source=stats.sources, generator_batches=stats.generator_batches,
                          seconds=round(seconds, 3), fps=round(stats.frames / seconds, 2) if seconds > 0 else 0.0,
                          output_size=output_size(job.output))

    def _run(self, source: Path, output: Path, on_frame: OnFrame | None) -> pipeline.RunStats:
        return pipeline.run(source=source, output=output, cfg=self.cfg, tools=self.tools, on_frame=on_frame)


# -------------------------------------------------------------------------------------------------
# A run over many inputs


def triage(jobs: Sequence[Job], info: RunInfo, *, resume: bool,
           previous: dict[str, dict] | None) -> tuple[list[dict[str, Any]], list[tuple[Job, str | None]]]:
    """Split ``jobs`` into records of the skipped ones and ``(job, reason)`` pairs still to do."""
    skipped, todo = [], []
    for job in jobs:
        if resume:
            skip, reason = resume_decision(job, info, previous)
            if skip:
                skipped.append(new_record(job, info, status="skipped", reason=reason,
                                          output_size=output_size(job.output)))
                continue
            todo.append((job, reason))
        else:
            todo.append((job, None))
    return skipped, todo


def execute(jobs: Sequence[Job], *, cfg: AnonymizeConfig, overwrite: bool = False, resume: bool = False,
            report: Path | None = None, workers: int = 1, dry_run: bool = False, progress: Progress | None = None,
            anonymizer: Anonymizer | None = None, runner: Runner | None = None) -> Iterator[dict[str, Any]]:
    """Run ``jobs``: skipped ones first (``--resume``), then the rest, records in completion order.

    Every finished record is appended to ``report`` before it is yielded. With ``workers`` > 1 the
    inputs run in that many worker processes, each holding one ``Anonymizer``; a ``runner`` (for example
    ``cluster.anonymize_runner``, ``--ray``) runs them elsewhere instead.
    """
    info = anonymizer.info if anonymizer is not None else RunInfo.of(cfg)
    log = ReportLog(report) if report is not None else None
    forget_listings()  # temporaries of processes killed since the last run in this process are found too
    skipped, todo = triage(jobs, info, resume=resume, previous=log.previous if log is not None else None)
    for record in skipped:
        if progress is not None:
            progress.finished(None, record)
        yield record
    if dry_run:
        for job, reason in todo:
            yield new_record(job, info, status="planned", reason=reason)
        return
    if not todo:
        return
    replace = overwrite or resume  # --resume redoes outputs it found incomplete or stale
    if runner is not None:
        records = runner(todo, cfg=cfg, info=info, overwrite=replace, progress=progress)
    elif workers > 1 and len(todo) > 1:
        from styleface_cli.workers import run_in_workers

        records = run_in_workers(todo, cfg=cfg, info=info, overwrite=replace, workers=workers, progress=progress)
    else:
        records = _run_here(todo, anonymizer or Anonymizer(cfg, info=info), overwrite=replace, progress=progress)
    for record in records:
        if log is not None:
            log.append(record)
        yield record


def _run_here(todo: list[tuple[Job, str | None]], anonymizer: Anonymizer, *, overwrite: bool,
              progress: Progress | None) -> Iterator[dict[str, Any]]:
    for job, reason in todo:
        on_frame = None
        if progress is not None:
            progress.started(job)
            on_frame = lambda faces, job=job: progress.advanced(job, 1, len(faces.regions))  # noqa: E731
        record = anonymizer.process(job, overwrite=overwrite, on_frame=on_frame, reason=reason)
        if progress is not None:
            progress.finished(job, record)
        yield record


def anonymize(inputs: Sequence[str | Path], *, output: str | Path | None = None, output_dir: str | Path | None = None,
              root: str | Path | None = None, shard: str | None = None, overwrite: bool = False, resume: bool = False,
              report: str | Path | None = None, jobs: int = 1, dry_run: bool = False,
              **options: Any) -> Iterator[dict[str, Any]]:
    """Anonymize files, folders, globs and tar shards; yield one record per input (see ``report``).

    ``options`` are the hiding, detection, tracking and encoding options of ``styleface anonymize``.
    Errors of single inputs are records (status "error"); errors of the whole run (bad options, clashing
    outputs, a missing model) raise ``StylefaceError``.
    """
    cfg = build_config(**options)
    planned = plan_jobs([str(path) for path in inputs], output=Path(output) if output is not None else None,
                        output_dir=Path(output_dir) if output_dir is not None else None,
                        root=Path(root) if root is not None else None, shard=parse_shard(shard))
    yield from execute(planned, cfg=cfg, overwrite=overwrite, resume=resume,
                       report=Path(report) if report is not None else None, workers=jobs, dry_run=dry_run)


def threads_per_worker(workers: int) -> int:
    """CPU threads each of ``workers`` processes may use so that together they fill the machine once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(workers, 1))


def for_worker(cfg: AnonymizeConfig, workers: int) -> AnonymizeConfig:
    """``cfg`` with the detector's concurrency sized for one of ``workers`` processes (pixels unchanged)."""
    threads = threads_per_worker(workers)
    return dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, workers=threads))


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create the output folder {folder}: {error.strerror}") from error
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Take back the output folders a failed job created (deepest first), where nothing else was put in them."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another job's output, or a file a user put there): keep it and its parents
