"""Files appear whole or not at all: outputs, tracks files, checkpoints, data indexes and run reports.

``atomic_output`` writes under a hidden temporary name beside the target and renames it on success;
``append_line`` adds one flushed, fsynced line to a log (the dataset report). The temporary names carry
the writer's process id, ``.<stem>.<pid>-<random>.partial<suffix>``: every stop short of SIGKILL removes
its own temporary (the CLI turns SIGTERM and SIGHUP into exceptions, as Ctrl-C already is), and after a
SIGKILL ``remove_stale_partials`` lets the next run delete the temporaries of processes that are gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from styleface_cli.errors import InputError, OutputError

_PARTIAL = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial(?P<suffix>(\.[^./]*)?)$")


def partial_path(path: Path) -> Path:
    """The hidden temporary name that ``atomic_output`` writes ``path`` under (this process's id in it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name is hidden (leading dot) and keeps ``path``'s suffix, so muxers and image
    writers that pick the format from the name still do. On any exception (Ctrl-C included) the
    temporary file is removed and ``path`` is left as it was. Nothing is created here: the block
    writes the file itself, with the permissions its writer gives it.
    """
    path = Path(path)
    temp = partial_path(path)
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with atomic_output(Path(path)) as temp:
        temp.write_text(text, encoding="utf-8")


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` and flush it to disk before returning.

    One ``write`` on an ``O_APPEND`` descriptor: a crash (even SIGKILL) loses at most the line being
    written, never an earlier one, and concurrent writers never interleave inside a line.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise OutputError(f"cannot append to {path}: {error.strerror}") from error


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


_PARTIALS_BY_FOLDER: dict[str, dict[tuple[str, str], list[str]]] = {}  # folder -> (stem, suffix) -> names


def _partials_in(folder: Path, refresh: bool) -> dict[tuple[str, str], list[str]]:
    """The temporaries in ``folder``, listed once per process (a dataset folder may hold 100,000 files:
    one listing, not one per output); ``refresh`` lists it again."""
    key = os.path.realpath(folder)
    if refresh or key not in _PARTIALS_BY_FOLDER:
        found: dict[tuple[str, str], list[str]] = {}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = _PARTIAL.match(entry.name)
                    if match:
                        found.setdefault((match["stem"], match["suffix"]), []).append(entry.name)
        except OSError:
            pass
        _PARTIALS_BY_FOLDER[key] = found
    return _PARTIALS_BY_FOLDER[key]


def forget_listings() -> None:
    """Start afresh: the next ``stale_partials`` lists each folder again (called at the start of a run)."""
    _PARTIALS_BY_FOLDER.clear()


def stale_partials(path: Path, refresh: bool = False) -> list[Path]:
    """Temporaries of ``path`` left by processes that no longer exist (killed with SIGKILL, or a crash).

    The folder is listed once per process: temporaries that appear later are those of live writers, which
    are never stale, except a worker that dies during the run (pass ``refresh``).
    """
    path = Path(path)
    names = _partials_in(path.parent, refresh).get((path.stem, path.suffix), [])
    return [path.with_name(name) for name in names
            if not _alive(int(_PARTIAL.match(name)["pid"])) and path.with_name(name).exists()]


def partials(path: Path) -> list[Path]:
    """Every temporary of ``path``, whichever process (on whichever machine) wrote it; the folder is listed
    afresh. For a caller that knows no live process writes ``path`` (``--ray``: after its writer died)."""
    path = Path(path)
    return [path.with_name(name) for name in _partials_in(path.parent, True).get((path.stem, path.suffix), [])]


def remove_stale_partials(path: Path, refresh: bool = False) -> int:
    """Delete ``stale_partials(path)``; how many were removed."""
    removed = 0
    for stale in stale_partials(path, refresh):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


def is_partial(path: Path) -> bool:
    """Whether ``path`` is named like one of ``atomic_output``'s temporaries."""
    return _PARTIAL.match(Path(path).name) is not None


def check_output_path(input: Path, output: Path, overwrite: bool) -> None:
    """Raise ``OutputError`` unless ``output`` can be written without harming ``input``.

    Refused: ``output`` is ``input`` (also through symlinks or hard links), ``output`` is a folder,
    ``output`` exists and ``overwrite`` is false, ``output``'s folder is missing or not writable.
    """
    input, output = Path(input), Path(output)
    if same_file(input, output):
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


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file: the same path once resolved, or the same inode (hard links)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_input_file(path: Path) -> None:
    """InputError unless ``path`` is an existing, non-empty regular file (videos and images alike)."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
