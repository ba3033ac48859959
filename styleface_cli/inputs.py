"""Inputs and outputs of a run: expand files, folders, globs and path lists; name the outputs; pick a shard;
refuse every plan that would write over one of the run's own inputs.

Output names default to ``<stem>_anonymized.<ext>`` beside the input, or under ``--output-dir``
(mirroring the folder structure below a folder input, or below ``--root`` for path lists, so two
``a.mp4`` in different folders do not collide). A WebDataset shard (``.tar``) keeps its own name under
``--output-dir``. Every job has a ``key``: its path relative to its root, in POSIX form; shards and
run reports are keyed by it, so they are the same on every machine that sees the same dataset.

Files that the tool itself wrote are never taken as inputs when they are found by searching (folders,
globs, path lists): anything under ``--output-dir``, hidden temporaries, and ``x_anonymized.jpg`` /
``x_swapped.jpg`` beside an ``x.jpg``. A second run over the same folder therefore does the same work,
not ``x_anonymized_anonymized.jpg``. A file named on the command line is always taken as given.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from styleface_cli.atomic import is_partial
from styleface_cli.errors import ConfigError, InputError, OutputError
from styleface_cli.video.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES
TAR_SUFFIXES = (".tar",)  # WebDataset shards
INPUT_SUFFIXES = MEDIA_SUFFIXES + TAR_SUFFIXES  # what folder and glob searches pick up
OUTPUT_SUFFIXES = ("_anonymized", "_swapped")  # the name endings our commands give their outputs


@dataclasses.dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    key: str = ""  # the source's path relative to its root (POSIX); shards and reports use it
    make_folder: bool = False  # the output's folder is created (under --output-dir) when missing


def is_tar_path(path: Path) -> bool:
    return Path(path).suffix.lower() in TAR_SUFFIXES


def read_path_list(stream: BinaryIO, *, null: bool = False) -> list[str]:
    """Paths from a list, one per line (or NUL-separated, as ``find -print0`` writes).

    Bytes are decoded the way the OS decodes file names (``os.fsdecode``), so any name that exists on
    disk, in any encoding, round-trips. Empty entries are skipped; with newlines a trailing ``\\r`` is too.
    """
    data = stream.read()
    parts = data.split(b"\0") if null else data.split(b"\n")
    paths = []
    for part in parts:
        if not null:
            part = part.rstrip(b"\r")
        if part:
            paths.append(os.fsdecode(part))
    return paths


def is_own_output(path: Path, output_dir: Path | None = None) -> bool:
    """Whether a file found by searching was written by this tool (and must not be taken as an input)."""
    path = Path(path)
    if is_partial(path):
        return True
    if output_dir is not None and _is_under(path, output_dir):
        return True
    for ending in OUTPUT_SUFFIXES:
        if path.stem.endswith(ending) and len(path.stem) > len(ending):
            if path.with_name(path.stem[: -len(ending)] + path.suffix).exists():
                return True
    return False


def _is_under(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def expand_inputs(specs: list[str], *, output_dir: Path | None = None, literal: bool = False) -> list[tuple[Path, Path | None]]:
    """Each input spec -> media files, with the folder they were found under (None for a plain file).

    A plain file is taken whatever its suffix (a bad one fails clearly later); folders are searched
    recursively for media suffixes (and ``.tar`` shards); globs are expanded (recursive ``**`` allowed).
    Searched files that this tool wrote are left out (see the module docstring). A spec that matches
    nothing is an ``InputError``. With ``literal`` (path lists) nothing is globbed: ``a[1].jpg`` is a name.
    """
    found: list[tuple[Path, Path | None]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES
                           and not p.name.startswith(".") and not is_own_output(p, output_dir))
            found.extend((p, path) for p in files)
        elif literal or path.exists() or not glob.has_magic(spec):
            found.append((path, None))
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in INPUT_SUFFIXES
                     and not is_own_output(m, output_dir)]
            if not files:
                raise InputError(f"no media files match {spec!r}")
            found.extend((m, None) for m in files)
    return _unique(found)


def _unique(found: list[tuple[Path, Path | None]]) -> list[tuple[Path, Path | None]]:
    seen: set[Path] = set()
    unique = []
    for source, root in found:
        key = source.resolve() if source.exists() else source
        if key not in seen:
            seen.add(key)
            unique.append((source, root))
    return unique


def common_root(paths: list[Path]) -> Path:
    """The deepest folder that holds every path (the default ``--root`` of a path list)."""
    if not paths:
        return Path.cwd()
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; None -> None."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard takes K/N, e.g. 0/4; got {text!r}") from None
    if not sep or n < 1 or not 0 <= k < n:
        raise ConfigError(f"--shard K/N needs 0 <= K < N; got {text!r}")
    return k, n


def shard_of(key: str, count: int) -> int:
    """Which of ``count`` shards a job belongs to: a hash of its key (the same on every machine and run)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def plan_jobs(specs: list[str], *, output: Path | None, output_dir: Path | None, suffix: str = "_anonymized",
              listed: list[str] = (), root: Path | None = None, shard: tuple[int, int] | None = None) -> list[Job]:
    """Pair every input with its output path and key, then keep the jobs of ``shard`` (K, N).

    ``specs`` are command-line inputs (files, folders, globs); ``listed`` are paths read from stdin or
    ``--files-from`` (searched inputs: the tool's own outputs among them are dropped). Keys are relative
    to ``root`` when given; else to the folder for folder inputs, to the common parent for listed paths,
    and the bare name for files named on the command line.

    Refused before anything is written: two jobs with one output, and any output that is one of the
    run's inputs (``OutputError``, whatever ``--overwrite`` says). Existence of outputs is checked
    later, per job (``atomic.check_output_path``).
    """
    if output is not None and output_dir is not None:
        raise ConfigError("give either -o/--output or --output-dir, not both")
    sources = expand_inputs(list(specs), output_dir=output_dir)
    listed_sources = [p for p, _ in expand_inputs(list(listed), output_dir=output_dir, literal=True)
                      if not is_own_output(p, output_dir)] if listed else []
    list_root = root if root is not None else common_root(listed_sources)
    sources = _unique(sources + [(p, list_root) for p in listed_sources])
    if not sources:
        raise InputError("no inputs given")
    if output is not None:
        if len(sources) > 1:
            raise ConfigError(f"-o/--output names one file but {len(sources)} inputs were given; use --output-dir")
        jobs = [Job(sources[0][0], output, key=sources[0][0].name)]
    else:
        jobs = []
        for source, found_under in sources:
            base = root if root is not None else found_under
            key = _relative_key(source, base) if base is not None else source.name
            jobs.append(Job(source, _output_path(source, key, output_dir, suffix), key=key,
                            make_folder=output_dir is not None))
    check_plan(jobs)
    if shard is not None:
        jobs = [job for job in jobs if shard_of(job.key, shard[1]) == shard[0]]
    return jobs


def _relative_key(source: Path, root: Path) -> str:
    try:
        return Path(os.path.abspath(source)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        raise ConfigError(f"{source} is not under --root {root}") from None


def _output_path(source: Path, key: str, output_dir: Path | None, suffix: str) -> Path:
    if output_dir is not None and is_tar_path(source):
        return output_dir / key  # a shard keeps its name: out/shard-000123.tar
    name = f"{source.stem}{suffix}{source.suffix}"
    if output_dir is None:
        return source.with_name(name)
    return output_dir / Path(key).with_name(name)


def check_plan(jobs: list[Job]) -> None:
    """``OutputError`` when two jobs write one output, or a job would write over any input of the run."""
    outputs: dict[Path, Job] = {}
    for job in jobs:
        target = job.output.resolve()
        if target in outputs:
            raise OutputError(f"{outputs[target].source} and {job.source} would write the same output {job.output}; "
                              "give them separate --output-dir runs")
        outputs[target] = job
    inputs = {job.source.resolve(): job for job in jobs}
    inodes = {}
    for job in jobs:
        try:
            status = job.source.stat()
            inodes[(status.st_dev, status.st_ino)] = job
        except OSError:
            pass
    for job in jobs:
        clash = inputs.get(job.output.resolve())
        if clash is None:
            try:
                status = job.output.stat()
                clash = inodes.get((status.st_dev, status.st_ino))
            except OSError:
                pass
        if clash is not None and clash is not job:  # output == own input: refused per job, as a single run is
            raise OutputError(f"{job.output}: the output of {job.source} would overwrite another input of this run "
                              f"({clash.source}); choose another output path or --output-dir")
