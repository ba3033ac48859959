"""Outputs appear whole or not at all: written under a hidden temporary name, renamed on success."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from styleface_cli.errors import InputError, OutputError


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name is hidden (leading dot) and keeps ``path``'s suffix, so muxers and image
    writers that pick the format from the name still do. On any exception (Ctrl-C included) the
    temporary file is removed and ``path`` is left as it was. Nothing is created here: the block
    writes the file itself, with the permissions its writer gives it.
    """
    path = Path(path)
    temp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        yield temp
        if not temp.is_file():
            raise OutputError(f"{path}: nothing was written")
        # Flush the data to disk before the rename, so a crash cannot leave an empty file at `path`.
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


def check_output_path(input: Path, output: Path, overwrite: bool) -> None:
    """Raise ``OutputError`` unless ``output`` can be written without harming ``input``.

    Refused: ``output`` is ``input`` (also through symlinks or hard links), ``output`` is a folder,
    ``output`` exists and ``overwrite`` is false, ``output``'s folder is missing or not writable.
    """
    input, output = Path(input), Path(output)
    if output.resolve() == input.resolve() or (output.exists() and input.exists() and os.path.samefile(input, output)):
        raise OutputError(f"{output}: the output is the input file; choose another output path")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give a file name for the output")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")
    folder = output.parent
    if not folder.exists():
        raise OutputError(f"{output}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{output}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: the folder {folder} is not writable")


def check_input_file(path: Path) -> None:
    """InputError unless ``path`` is an existing, non-empty regular file (videos and images alike)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
