"""Lazy, content-cached builds of the compiled kernels, and the policy that decides when to use them.

After NVlabs stylegan3 ``torch_utils/custom_ops.py``:

* Nothing compiles at import time. A kernel is built the first time an op asks for it with policy
  ``'auto'`` or ``'compiled'`` (or by ``styleface kernels build``), with ``torch.utils.cpp_extension.load``
  (ninja).
* The cache key is a hash of every source file's bytes, the device kind (``cpu`` or ``cuda-sm86``...),
  the torch version and the Python version. A build lives in ``<cache>/<kernel>-<device kind>-<key>/``
  where ``<cache>`` is ``$STYLEFACE_CACHE/kernels`` or ``~/.cache/styleface/kernels``.
* A build happens in a private temporary folder and is published with one atomic ``rename``; when two
  processes build the same key at once, one rename wins, the other process keeps its own (identical)
  module and deletes its folder. A published folder is never written again.
* Every build writes a log (the compiler commands and output): ``build.log`` in the published folder,
  or ``<kernel>-<device kind>-<key>.failed.log`` next to it. Policy ``'compiled'`` raises
  :class:`KernelBuildError` naming that log; ``'auto'`` warns once per kernel and device kind and falls
  back to the reference; ``'ref'`` never builds. The ops take the policy as their ``impl`` argument
  and read no environment: the CLI resolves it once with :func:`resolve_policy`.
* A CPU tensor uses the C++ CPU build (``kernels/<name>.cpp``), a CUDA tensor the CUDA build (the same
  file plus ``kernels/<name>.cu``, compiled with ``-DSTYLEFACE_WITH_CUDA``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

import torch

from styleface_cli.errors import ConfigError, KernelBuildError

__all__ = [
    "CACHE_ENV_VAR",
    "ENV_VAR",
    "KERNEL_NAMES",
    "KERNEL_POLICIES",
    "KERNEL_SOURCE_DIR",
    "BuiltKernel",
    "KernelFallbackWarning",
    "build_kernel",
    "cache_key",
    "default_cache_dir",
    "device_kind",
    "find_cached",
    "plugin_for",
    "resolve_policy",
    "source_files",
]

KERNEL_POLICIES = ("auto", "compiled", "ref")
ENV_VAR = "STYLEFACE_KERNELS"  # the kernel policy when the command line does not give one
CACHE_ENV_VAR = "STYLEFACE_CACHE"  # root of styleface's caches; kernels go to its kernels/ folder
KERNEL_NAMES = ("bias_act", "upfirdn2d")
# The sources sit next to the package in a source checkout (kernels/ has no __init__.py on purpose).
KERNEL_SOURCE_DIR = Path(__file__).resolve().parents[2] / "kernels"

_MANIFEST = "build.json"
_LOG = "build.log"

log = logging.getLogger(__name__)


class KernelFallbackWarning(RuntimeWarning):
    """Policy 'auto' could not build or load a kernel and uses the reference implementation instead."""


def resolve_policy(policy: str | None) -> str:
    """The kernel policy: the command-line value, else ``$STYLEFACE_KERNELS``, else ``'auto'``.

    Raises:
        ConfigError: the chosen value is not one of :data:`KERNEL_POLICIES`.
    """
    source = "--kernels"
    if policy is None:
        policy, source = os.environ.get(ENV_VAR) or "auto", ENV_VAR
    value = policy.strip().lower()
    if value not in KERNEL_POLICIES:
        raise ConfigError(f"{source}={policy!r} is not a kernel policy; expected one of {', '.join(KERNEL_POLICIES)}")
    return value


def default_cache_dir() -> Path:
    """``$STYLEFACE_CACHE/kernels``, else ``~/.cache/styleface/kernels``."""
    root = os.environ.get(CACHE_ENV_VAR)
    return (Path(root) if root else Path.home() / ".cache" / "styleface") / "kernels"


def device_kind(device: torch.device | str) -> str:
    """``'cpu'`` or ``'cuda-sm<major><minor>'`` (the architecture the CUDA build is compiled for)."""
    device = torch.device(device)
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return _cuda_kind(index)
    raise KernelBuildError(f"no compiled kernels for device type {device.type!r} (only cpu and cuda)")


@functools.lru_cache(maxsize=None)
def _cuda_kind(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"cuda-sm{major}{minor}"


def source_files(name: str, kind: str, source_dir: Path | None = None) -> list[Path]:
    """The files one build of kernel ``name`` compiles: headers, the C++ file, and the .cu for CUDA."""
    if name not in KERNEL_NAMES:
        raise KernelBuildError(f"unknown kernel {name!r}; expected one of {', '.join(KERNEL_NAMES)}")
    source_dir = Path(source_dir) if source_dir is not None else KERNEL_SOURCE_DIR
    names = ["common.h", f"{name}.h", f"{name}.cpp"] + ([f"{name}.cu"] if kind != "cpu" else [])
    files = [source_dir / n for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise KernelBuildError(f"kernel sources not found: {', '.join(missing)} (is this a source checkout?)")
    return files


def cache_key(files: list[Path], kind: str) -> str:
    """Hash of the sources' names and bytes, the device kind, and the torch and Python versions."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{kind}\0torch {torch.__version__}\0python {platform.python_version()}".encode())
    return digest.hexdigest()[:20]


def find_cached(name: str, kind: str, *, source_dir: Path | None = None, cache_dir: Path | None = None) -> Path | None:
    """The published build of kernel ``name`` for device kind ``kind`` that the current sources would load,
    or None; reads only (``styleface doctor``). Raises :class:`KernelBuildError` when the sources are missing."""
    files = source_files(name, kind, source_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    published = cache_dir / f"{name}-{kind}-{cache_key(files, kind)}"
    return published if (published / _MANIFEST).is_file() else None


@dataclasses.dataclass(frozen=True)
class BuiltKernel:
    """One loaded build of one kernel (what ``styleface kernels build`` reports)."""

    name: str  # "bias_act" or "upfirdn2d"
    device_kind: str  # "cpu" or "cuda-sm<arch>"
    key: str  # the cache key (hash of sources, device kind, torch and Python versions)
    path: Path  # the published build folder
    library: Path  # the loaded shared library
    compiled: bool  # False when it came from the cache
    seconds: float  # time to compile (or to load, from the cache)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "device_kind": self.device_kind,
            "key": self.key,
            "path": str(self.path),
            "library": str(self.library),
            "compiled": self.compiled,
            "seconds": round(self.seconds, 3),
        }


# Per-process memo: (name, kind, source_dir, cache_dir) -> (BuiltKernel, module) or the build error,
# so that an op call costs one dict lookup and 'auto' warns once instead of on every call.
_LOADED: dict[tuple[str, str, str, str], tuple[BuiltKernel, ModuleType] | KernelBuildError] = {}
_LOCK = threading.Lock()


def build_kernel(
    name: str,
    device: torch.device | str = "cpu",
    *,
    source_dir: Path | None = None,
    cache_dir: Path | None = None,
    verbose: bool = False,
) -> tuple[BuiltKernel, ModuleType]:
    """Load kernel ``name`` for ``device`` from the cache, building and publishing it first if needed.

    Args:
        name: one of :data:`KERNEL_NAMES`.
        device: a CPU device gets the C++ CPU build, a CUDA device the CUDA build for its architecture.
        source_dir: folder with the kernel sources (tests point this at a broken copy); default
            :data:`KERNEL_SOURCE_DIR`.
        cache_dir: where builds are published; default :func:`default_cache_dir`.
        verbose: also copy the build log (compiler commands and output) to stderr.

    Raises:
        KernelBuildError: the sources are missing, the compiler failed, or the library did not load;
            the message names the build log.
    """
    kind = device_kind(device)
    memo_key = _memo_key(name, kind, source_dir, cache_dir)
    with _LOCK:  # one build per kernel at a time in this process; torch's JIT loader is not thread-safe
        found = _LOADED.get(memo_key)
        if found is None:
            try:
                found = _build_or_load(name, kind, source_dir, cache_dir, verbose)
            except KernelBuildError as error:
                found = error
            _LOADED[memo_key] = found
    if isinstance(found, KernelBuildError):
        raise KernelBuildError(str(found))  # a fresh exception: re-raising one object grows its traceback
    return found


def plugin_for(name: str, device: torch.device | str, impl: str) -> ModuleType | None:
    """Apply a kernel policy: the compiled module to use, or None for the reference implementation.

    ``'ref'`` -> None without building; ``'compiled'`` -> the module, or :class:`KernelBuildError`;
    ``'auto'`` -> the module, or None after one :class:`KernelFallbackWarning` per kernel and device
    kind (also for devices without compiled kernels, such as ``mps``).
    """
    if impl not in KERNEL_POLICIES:
        raise ValueError(f"impl must be one of {KERNEL_POLICIES}, got {impl!r}")
    if impl == "ref":
        return None
    device = torch.device(device)
    if impl == "auto" and device.type not in ("cpu", "cuda"):
        return None
    memo_key = _memo_key(name, device_kind(device), None, None)
    found = _LOADED.get(memo_key)  # fast path: no hashing once this process has loaded or failed it
    if found is None:
        try:
            build_kernel(name, device)
        except KernelBuildError as error:
            if impl == "compiled":
                raise
            warnings.warn(
                f"styleface: compiled kernel {name!r} is unavailable, using the slower reference "
                f"implementation ({error})",
                KernelFallbackWarning,
                stacklevel=3,
            )
            return None
        found = _LOADED[memo_key]
    if isinstance(found, KernelBuildError):
        if impl == "compiled":
            raise KernelBuildError(str(found))
        return None  # already warned
    return found[1]


def _memo_key(name: str, kind: str, source_dir: Path | None, cache_dir: Path | None) -> tuple[str, str, str, str]:
    # abspath, not resolve(): this runs on every op call and must not touch the file system.
    source_dir = source_dir if source_dir is not None else KERNEL_SOURCE_DIR
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    return name, kind, os.path.abspath(source_dir), os.path.abspath(cache_dir)


def _module_name(name: str, kind: str, key: str) -> str:
    return f"styleface_{name}_{kind.replace('-', '_')}_{key}"  # a valid identifier, unique per content


def _build_or_load(
    name: str, kind: str, source_dir: Path | None, cache_dir: Path | None, verbose: bool
) -> tuple[BuiltKernel, ModuleType]:
    files = source_files(name, kind, source_dir)
    key = cache_key(files, kind)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    published = cache_dir / f"{name}-{kind}-{key}"
    start = time.perf_counter()
    if (published / _MANIFEST).is_file():
        manifest = json.loads((published / _MANIFEST).read_text())
        library = published / manifest["library"]
        module = _import_library(manifest["module"], library, published / _LOG)
        return BuiltKernel(name, kind, key, published, library, False, time.perf_counter() - start), module

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KernelBuildError(f"cannot create the kernel cache {cache_dir}: {error}") from error
    _remove_stale_private_folders(cache_dir)
    private = cache_dir / f".tmp-{published.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log_path = private / _LOG
    try:
        # Compile copies, so the build is exactly what the key hashed even if the sources change meanwhile.
        (private / "src").mkdir(parents=True)
        copies = [Path(shutil.copy(path, private / "src" / path.name)) for path in files]
        module = _compile(name, kind, key, copies, private, log_path, verbose)
    except (KernelBuildError, OSError) as error:
        failed_log = cache_dir / f"{published.name}.failed.log"
        if log_path.is_file():
            os.replace(log_path, failed_log)  # keep the log where the user can read it, drop the rest
        else:
            failed_log.write_text(f"could not prepare the build of {name} for {kind} in {private}: {error}\n")
        shutil.rmtree(private, ignore_errors=True)
        raise KernelBuildError(f"could not build kernel {name!r} for {kind}: see the build log {failed_log}") from error

    seconds = time.perf_counter() - start
    library = Path(module.__file__).name
    (private / _MANIFEST).write_text(json.dumps({
        "name": name, "device_kind": kind, "key": key, "module": module.__name__, "library": library,
        "torch": torch.__version__, "python": platform.python_version(), "seconds": round(seconds, 3),
    }, indent=2))
    try:
        os.rename(private, published)  # atomic publish: readers see no folder or a complete one
    except OSError:
        # Another process published the same key first. Its build is identical, and our module is
        # already loaded (mapped in memory), so our folder can go.
        if not (published / _MANIFEST).is_file():
            raise KernelBuildError(f"could not publish kernel {name!r} to {published}: see the build log {log_path}")
        shutil.rmtree(private, ignore_errors=True)
    log.info("built kernel %s for %s in %.1f s: %s", name, kind, seconds, published)
    return BuiltKernel(name, kind, key, published, published / library, True, seconds), module


_STALE_SECONDS = 24 * 3600  # no build takes a day: an older private folder is a crashed build's


def _remove_stale_private_folders(cache_dir: Path) -> None:
    now = time.time()
    for folder in cache_dir.glob(".tmp-*"):
        try:
            if now - folder.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # another process removed or published it meanwhile
            pass


def _compile(
    name: str, kind: str, key: str, sources: list[Path], build_dir: Path, log_path: Path, verbose: bool
) -> ModuleType:
    """Compile and import one extension in ``build_dir``; the compiler output goes to ``log_path``."""
    from torch.utils import cpp_extension

    with_cuda = kind != "cpu"
    defines = ["-DSTYLEFACE_WITH_CUDA"] if with_cuda else []
    log_path.write_text(
        f"kernel {name} for {kind}, key {key}\ntorch {torch.__version__}, python {sys.version.split()[0]}\n"
        f"sources: {', '.join(p.name for p in sources)}\n\n"
    )
    try:
        # torch's verbose mode runs ninja with its output on file descriptor 1: send that to the log,
        # so the log holds the compiler's commands, warnings and errors whether the build fails or not.
        with _stdout_into(log_path):
            module = cpp_extension.load(
                name=_module_name(name, kind, key),
                sources=[str(p) for p in sources if p.suffix in (".cpp", ".cu")],
                # -Wfatal-errors: stop at the first error (the one that matters in the log), and fail fast.
                extra_cflags=["-O3", "-Wfatal-errors", *defines],
                extra_cuda_cflags=["-O3", "--use_fast_math", *defines],
                build_directory=str(build_dir),
                with_cuda=with_cuda,
                is_python_module=True,
                verbose=True,
            )
    except Exception as error:
        with log_path.open("a") as log_file:
            log_file.write(f"\nbuild failed: {type(error).__name__}: {error}\n")
        raise KernelBuildError(str(error)) from error
    finally:
        if verbose:
            sys.stderr.write(log_path.read_text())
    with log_path.open("a") as log_file:
        log_file.write("\nbuild succeeded\n")
    return module


@contextlib.contextmanager
def _stdout_into(path: Path) -> Iterator[None]:
    """Point file descriptor 1 at ``path`` (appending) for the duration; process-wide, so keep it short."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with path.open("a") as log_file:
            os.dup2(log_file.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _import_library(module_name: str, library: Path, log_path: Path) -> ModuleType:
    """Import a published extension library (what torch's loader does, without a rebuild check)."""
    try:
        spec = importlib.util.spec_from_file_location(module_name, library)
        if spec is None or spec.loader is None:
            raise ImportError(f"not an extension module: {library}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:
        raise KernelBuildError(f"could not load the cached kernel {library} ({error}): see the build log {log_path}") from error
    return module
