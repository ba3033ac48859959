"""Run records: the one JSON object per input that ``--json`` prints, ``--report`` appends and the Python
API yields, and the ``--resume`` decision made from an earlier report.

The record (every key is always present; ``null`` where it does not apply)::

    input            str    the input path, as given
    output           str    the output path
    key              str    the input's path relative to its root (POSIX); shards and --resume use it
    status           str    "ok" | "error" | "skipped" (--resume: done before) | "planned" (--dry-run)
    reason           str?   why an input was skipped, or why --resume did it again (options changed, ...)
    error            str?   the one-line error message ("error" only)
    exit_code        int    0, or the documented exit code of this input's error
    method           str    blur | pixelate | mask | styleface
    method_reason    str    why that method ran ("auto: no checkpoint found, blur", ...)
    frames           int?   frames written (an image is one frame; a tar shard sums its members)
    faces            int?   face regions hidden, summed over frames
    tracks           int?   distinct face tracks
    regions_by_source dict? regions per origin: detected / predicted / backfilled / manual
    generator_batches list? crops per generator call (styleface), else []
    members          int?   tar shards: members in the shard (media and others), else null
    seconds          float  wall time of this input
    fps              float? frames per second of this input
    input_size       int?   bytes of the input when it was read
    input_mtime      float? its modification time (seconds since the epoch)
    output_size      int?   bytes of the output written (or found, when skipped)
    options          dict   every option that changes the output's pixels (method, detector, tracking,
                            hiding, encoder, identity settings), as used
    version          str    styleface's version
    detector_hash    str    sha256 (first 16 hex digits) of the detector model file

A report is JSON Lines, one record per finished input in completion order, each line flushed to disk
before the next input is reported (``atomic.append_line``): a crash or ``kill -9`` loses at most the
inputs in flight. Skipped inputs are not appended (the report says how each output was made); a
truncated last line is ignored when the report is read back.

``--resume`` skips an input when its output exists and, with a report, when the last "ok" record of its
key has the same options, input size and mtime and output size; otherwise it does it again and the
record's ``reason`` says why. Without a report an existing output counts as done (outputs are atomic).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from styleface_cli import __version__
from styleface_cli.atomic import append_line
from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import InputError, OutputError
from styleface_cli.inputs import Job

FIELDS = ("input", "output", "key", "status", "reason", "error", "exit_code", "method", "method_reason",
          "frames", "faces", "tracks", "regions_by_source", "generator_batches", "members", "seconds", "fps",
          "input_size", "input_mtime", "output_size", "options", "version", "detector_hash")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What every record of one run shares: how the outputs are made. Built once, sent to every worker."""

    method: str
    method_reason: str
    options: dict[str, Any]
    detector_hash: str
    version: str = __version__

    @classmethod
    def of(cls, cfg: AnonymizeConfig) -> "RunInfo":
        return cls(method=cfg.method, method_reason=cfg.method_reason, options=pixel_options(cfg),
                   detector_hash=detector_hash(cfg))


def pixel_options(cfg: AnonymizeConfig) -> dict[str, Any]:
    """The options that change an output's pixels (not threads, devices, batch sizes or paths of outputs)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value

    detect = plain(cfg.detect)
    for unused in ("threads", "workers", "batch_size"):  # concurrency only
        detect.pop(unused)
    generate = plain(cfg.generate) if cfg.method == "styleface" else None
    if generate is not None:
        for unused in ("batch_size", "device", "kernels"):
            generate.pop(unused)
    return {
        "method": cfg.method,
        "detect": detect,
        "track": plain(cfg.track),
        "obfuscate": plain(cfg.obfuscate) if cfg.method != "styleface" else None,
        "generate": generate,
        "identity": plain(cfg.identity) if cfg.method == "styleface" else None,
        "select": plain(cfg.select),
        "encode": plain(cfg.encode),
    }


def detector_hash(cfg: AnonymizeConfig) -> str:
    """sha256 (16 hex digits) of the detector model file the run uses."""
    from styleface_cli.face.detect import centerface_model_path

    path = cfg.detect.model_path or (centerface_model_path() if cfg.detect.backend == "centerface" else None)
    return _file_hash(str(path)) if path is not None and Path(path).is_file() else "unknown"


@functools.lru_cache(maxsize=8)
def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def new_record(job: Job, info: RunInfo, **values: Any) -> dict[str, Any]:
    """A record of ``job`` with every field present: the shared run facts, the input's size and mtime."""
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    record.update(input=str(job.source), output=str(job.output), key=job.key, exit_code=0,
                  method=info.method, method_reason=info.method_reason, generator_batches=[], seconds=0.0,
                  options=info.options, version=info.version, detector_hash=info.detector_hash)
    try:
        status = job.source.stat()
        record.update(input_size=status.st_size, input_mtime=status.st_mtime)
    except OSError:
        pass
    unknown = set(values) - set(FIELDS)
    assert not unknown, f"not record fields: {unknown}"
    record.update(values)
    return record


def output_size(path: Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


class ReportLog:
    """``--report FILE.jsonl``: earlier records read once; each new record appended and flushed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        folder = self.path.parent
        if self.path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"--report {self.path}: cannot write there (a folder, or its folder is missing or read-only)")
        self.previous = read_report(self.path)

    def append(self, record: dict[str, Any]) -> None:
        if record["status"] in ("ok", "error"):
            append_line(self.path, json.dumps(record, default=str))  # ASCII: any file name, even not UTF-8


def read_report(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of each key in a report (an absent report is empty; a torn last line is ignored)."""
    latest: dict[str, dict[str, Any]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except FileNotFoundError:
        return latest
    except OSError as error:
        raise InputError(f"cannot read the report {path}: {error.strerror}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # the line a crash cut short
            raise InputError(f"{path}:{number}: not a JSON line; is this a styleface report?") from None
        if isinstance(record, dict) and "key" in record:
            latest[record["key"]] = record
    return latest


def resume_decision(job: Job, info: RunInfo, previous: dict[str, dict[str, Any]] | None) -> tuple[bool, str | None]:
    """``(skip, reason)`` for ``job`` under ``--resume``: skip it when it is done; else the reason to redo it
    (None for an input that was never done). ``previous`` is the earlier report (None: the run has none).
    """
    earlier = previous.get(job.key) if previous is not None else None
    if not job.output.is_file():
        if earlier is not None and earlier.get("status") == "error":
            return False, f"failed in an earlier run ({earlier.get('error')}); tried again"
        return False, None
    if previous is None:
        return True, "the output exists (outputs are written whole or not at all)"
    record = earlier
    if record is None or record.get("status") != "ok":
        return False, "the output exists but the report does not record it complete"
    if record.get("options") != info.options:
        changes = _changed(record.get("options") or {}, info.options)
        return False, "options changed: " + ("; ".join(changes) if changes else "(format)")
    try:
        status = job.source.stat()
    except OSError:
        return False, "the input cannot be read"
    if record.get("input_size") != status.st_size or record.get("input_mtime") != status.st_mtime:
        return False, "the input changed since it was done (size or modification time)"
    if record.get("output_size") != output_size(job.output):
        return False, "the output changed since it was written"
    return True, "done in an earlier run (report)"


def _changed(before: dict, after: dict, prefix: str = "") -> list[str]:
    """Dotted names of the options that differ, with old and new values."""
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(_changed(old, new, f"{prefix}{name}."))
        elif old != new:
            changes.append(f"{prefix}{name} {old!r} -> {new!r}")
    return changes
