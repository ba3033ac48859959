"""Inputs and outputs of a run: expand files, folders and globs; name the outputs; refuse to clobber.

Output names default to ``<stem>_anonymized.<ext>`` beside the input, or under ``--output-dir``
(mirroring the folder structure below a folder input, so two ``a.mp4`` in different folders do not
collide).
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path

from styleface_cli.errors import ConfigError, InputError
from styleface_cli.video.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + IMAGE_SUFFIXES


@dataclasses.dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    make_folder: bool = False  # the output's folder is created (under --output-dir) when missing


def expand_inputs(specs: list[str]) -> list[tuple[Path, Path | None]]:
    """Each input spec -> media files, with the folder they were found under (None for a plain file).

    A plain file is taken whatever its suffix (a bad one fails clearly later); folders are searched
    recursively for media suffixes; globs are expanded (recursive ``**`` allowed). A spec that matches
    nothing is an ``InputError``.
    """
    found: list[tuple[Path, Path | None]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES
                           and not p.name.startswith("."))
            found.extend((p, path) for p in files)
        elif path.exists() or not glob.has_magic(spec):
            found.append((path, None))
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and m.suffix.lower() in MEDIA_SUFFIXES]
            if not files:
                raise InputError(f"no media files match {spec!r}")
            found.extend((m, None) for m in files)
    seen: set[Path] = set()
    unique = []
    for source, root in found:
        key = source.resolve() if source.exists() else source
        if key not in seen:
            seen.add(key)
            unique.append((source, root))
    return unique


def plan_jobs(specs: list[str], *, output: Path | None, output_dir: Path | None, suffix: str = "_anonymized") -> list[Job]:
    """Pair every input with its output path (not yet checked for existence; see ``check_output_path``)."""
    if output is not None and output_dir is not None:
        raise ConfigError("give either -o/--output or --output-dir, not both")
    sources = expand_inputs(specs)
    if not sources:
        raise InputError("no inputs given")
    if output is not None:
        if len(sources) > 1:
            raise ConfigError(f"-o/--output names one file but {len(sources)} inputs were given; use --output-dir")
        return [Job(sources[0][0], output)]
    jobs = []
    for source, root in sources:
        name = f"{source.stem}{suffix}{source.suffix}"
        if output_dir is None:
            target = source.with_name(name)
        elif root is not None:
            target = output_dir / source.relative_to(root).with_name(name)
        else:
            target = output_dir / name
        jobs.append(Job(source, target, make_folder=output_dir is not None))
    outputs = [job.output.resolve() for job in jobs]
    if len(set(outputs)) != len(outputs):
        raise ConfigError("two inputs would write the same output name; give them separate --output-dir runs")
    return jobs
