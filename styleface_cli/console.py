"""The one place that prints: a stderr console for messages and progress; results go to stdout.

Progress bars show only when stderr is a terminal and ``--quiet`` is off, so pipelines and CI logs
stay clean. ``emit_result`` writes one JSON object per line on stdout for ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

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

    def progress(self, label: str, total: int | None) -> "FrameProgress":
        return FrameProgress(label, total, self.shows_progress)

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
                stderr.print(f"{record['input']}: {status}: {record.get('error', '')}", markup=False)


class FrameProgress:
    """A rich progress bar counting frames, with fps and faces; silent when disabled."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        self.frames = 0
        self.faces = 0
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:.1f} fps, {task.fields[faces]} faces"),
                TimeRemainingColumn(),
                console=stderr,
                transient=True,
            )
            self._task = self._progress.add_task(label, total=total or None, fps=0.0, faces=0)

    def __enter__(self) -> "FrameProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, frames: int = 1, faces: int = 0) -> None:
        self.frames += frames
        self.faces += faces
        if self._progress is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-6)
            self._progress.update(self._task, advance=frames, fps=self.frames / elapsed, faces=self.faces)
