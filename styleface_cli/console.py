"""The one place that prints: a stderr console for messages and progress; results go to stdout.

Progress bars show only when stderr is a terminal and ``--quiet`` is off, so pipelines and CI logs
stay clean. ``emit_result`` writes one JSON object per line on stdout for ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclasses.dataclass
class Reporter:
    """Messages and progress for one command run."""

    quiet: bool = False
    json_output: bool = False

    def info(self, message: str) -> None:
        if not self.quiet:
            stderr.print(message, markup=False)

    def warn(self, message: str) -> None:
        stderr.print(f"styleface: warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        stderr.print(f"styleface: error: {message}", markup=False, style="red")

    @property
    def shows_progress(self) -> bool:
        """Progress bars only for a person watching: stderr is a terminal and --quiet is off."""
        return not self.quiet and stderr.is_terminal

    def plan(self, record: dict[str, Any]) -> None:
        """One line of a --dry-run listing on stdout: what would run, or why it is skipped."""
        if record["status"] == "skipped":
            line = f"skip {record['input']}: {record['reason']}"
        else:
            line = f"run  {record['input']} -> {record['output']}" + (f" ({record['reason']})" if record["reason"] else "")
        sys.stdout.flush()  # file names as the bytes they are on disk, even when they are not UTF-8
        sys.stdout.buffer.write((line + "\n").encode(sys.stdout.encoding or "utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()

    def summary(self, text: str) -> None:
        """A human-readable result (a command's report, not a message): on stdout, unless --json."""
        if not self.json_output:
            sys.stdout.write(text.rstrip("\n") + "\n")
            sys.stdout.flush()

    def result(self, record: dict[str, Any]) -> None:
        """One result: a JSON line on stdout with --json, else a short human line on stderr."""
        if self.json_output:
            sys.stdout.write(json.dumps(record, default=str) + "\n")
            sys.stdout.flush()
        elif not self.quiet:
            status = record.get("status")
            if status == "ok":
                stderr.print(
                    f"{record['input']} -> {record['output']}: {record.get('frames', 0)} frames, "
                    f"{record.get('faces', 0)} face regions in {record.get('tracks', 0)} tracks, "
                    f"{record.get('method', '')}, {record.get('fps', 0):.1f} fps",
                    markup=False,
                )
            else:
                stderr.print(f"{record['input']}: {status}: {record.get('error') or record.get('reason') or ''}", markup=False)


class DatasetProgress:
    """One display for a run over many inputs: files done/total, faces, files/s and ETA on the first row,
    then a frame bar for each input in flight (in this process or in ``--jobs`` workers)."""

    def __init__(self, total: int, enabled: bool, frames_of: Callable[[Any], int | None] | None = None) -> None:
        self.enabled = enabled
        self.frames_of = frames_of  # job -> its frame count (for a file bar's ETA), None when unknown
        self.started_at = time.perf_counter()
        self.done = 0
        self.faces = 0
        self._files: dict[object, Any] = {}
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}, {task.fields[faces]} faces"),
                TimeRemainingColumn(),
                console=stderr,
                transient=True,
            )
            self._overall = self._progress.add_task("files", total=total, rate="", faces=0, visible=total > 1)

    def __enter__(self) -> "DatasetProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def started(self, job) -> None:
        if self._progress is not None:
            total = self.frames_of(job) if self.frames_of is not None else None
            self._files[job] = (self._progress.add_task(job.source.name, total=total or None, rate="", faces=0),
                                time.perf_counter(), [0, 0])

    def advanced(self, job, frames: int, faces: int) -> None:
        entry = self._files.get(job)
        if self._progress is not None and entry is not None:
            task, since, counts = entry
            counts[0] += frames
            counts[1] += faces
            rate = f"{counts[0] / max(time.perf_counter() - since, 1e-6):.1f} fps"
            self._progress.update(task, advance=frames, rate=rate, faces=counts[1])

    def finished(self, job, record: dict[str, Any]) -> None:
        self.done += 1
        self.faces += record.get("faces") or 0
        if self._progress is not None:
            entry = self._files.pop(job, None)
            if entry is not None:
                self._progress.remove_task(entry[0])
            rate = f"{self.done / max(time.perf_counter() - self.started_at, 1e-6):.2f} files/s"
            self._progress.update(self._overall, advance=1, rate=rate, faces=self.faces)
