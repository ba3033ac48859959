"""WebDataset tar shards: every image and video member anonymized, every other member copied byte for byte,
same names, same order.

Both tars are streamed (``tarfile`` stream mode: one member at a time, never the whole shard in memory)
and the output appears whole or not at all (``atomic_output``). A media member is written to a private
scratch folder, run through the same per-file pipeline as any other input, and added back with its own
header (name, mode, owner, mtime) and the new size. A member that cannot be processed fails the whole
shard: an unprocessed image must never be copied through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from styleface_cli.atomic import atomic_output
from styleface_cli.errors import InputError, StylefaceError
from styleface_cli.inputs import MEDIA_SUFFIXES


@dataclasses.dataclass
class ShardStats:
    members: int = 0
    media: int = 0  # members that went through the pipeline
    frames: int = 0
    faces: int = 0
    tracks: int = 0
    sources: dict[str, int] = dataclasses.field(default_factory=dict)
    generator_batches: list[int] = dataclasses.field(default_factory=list)


ProcessFile = Callable[[Path, Path], object]  # (source, output) -> pipeline.RunStats


def anonymize_tar(source: Path, output: Path, process_file: ProcessFile) -> ShardStats:
    """Write ``output``: ``source``'s members in order, media members through ``process_file``."""
    stats = ShardStats()
    try:
        reader = tarfile.open(source, mode="r|*")
    except (tarfile.TarError, OSError) as error:
        raise InputError(f"{source}: not a readable tar file ({error})") from error
    with contextlib.ExitStack() as stack:
        stack.enter_context(reader)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="styleface-shard-")))
        temp = stack.enter_context(atomic_output(output))
        writer = stack.enter_context(tarfile.open(temp, mode="w", format=tarfile.PAX_FORMAT))
        try:
            for member in reader:
                stats.members += 1
                if member.isfile() and Path(member.name).suffix.lower() in MEDIA_SUFFIXES:
                    _add_processed(reader, writer, member, scratch, process_file, stats, source)
                else:
                    writer.addfile(member, reader.extractfile(member) if member.isfile() else None)
        except tarfile.TarError as error:
            raise InputError(f"{source}: the tar file is damaged or truncated ({error})") from error
    return stats


def _add_processed(reader: tarfile.TarFile, writer: tarfile.TarFile, member: tarfile.TarInfo, scratch: Path,
                   process_file: ProcessFile, stats: ShardStats, source: Path) -> None:
    suffix = Path(member.name).suffix
    member_in, member_out = scratch / f"member{suffix}", scratch / f"member_anonymized{suffix}"
    with open(member_in, "wb") as file:
        shutil.copyfileobj(reader.extractfile(member), file)
    try:
        run = process_file(member_in, member_out)
    except StylefaceError as error:
        raise type(error)(f"{source}: member {member.name}: {error}") from error
    header = tarfile.TarInfo(member.name)
    for name in ("mode", "uid", "gid", "uname", "gname", "mtime"):
        setattr(header, name, getattr(member, name))
    header.pax_headers = {key: value for key, value in member.pax_headers.items() if key != "size"}
    header.size = member_out.stat().st_size
    with open(member_out, "rb") as file:
        writer.addfile(header, file)
    member_in.unlink()
    member_out.unlink()
    stats.media += 1
    stats.frames += run.frames
    stats.faces += run.faces
    stats.tracks += run.tracks
    for origin, count in run.sources.items():
        stats.sources[origin] = stats.sources.get(origin, 0) + count
    stats.generator_batches.extend(run.generator_batches)
