"""Where a StyleFace checkpoint comes from, and which hiding method runs because of it.

Order: ``--checkpoint PATH``, else ``$STYLEFACE_CHECKPOINT``, else the newest ``*.safetensors`` in the
user cache folder (``$STYLEFACE_CACHE/checkpoints``, default ``~/.cache/styleface/checkpoints``). No
StyleFace weights exist publicly: train one (``styleface train``, docs/training.md) or bring one.

``--method auto`` (the default) runs the generator when a checkpoint is found and blur otherwise; the
reason is reported on stderr and in the JSON record. An explicit ``--method styleface`` without a
checkpoint is an error that says how to get one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

from styleface_cli.errors import ConfigError, WeightsError

ENV_VAR = "STYLEFACE_CHECKPOINT"
CACHE_ENV_VAR = "STYLEFACE_CACHE"
GENERATIVE = "styleface"
FALLBACK = "blur"

HOW_TO_GET_ONE = (
    "no public StyleFace weights exist: train one with 'styleface train' (docs/training.md), or for a quick "
    "smoke test make a random one with 'styleface model init ckpt.safetensors', then pass --checkpoint PATH "
    f"or set {ENV_VAR}"
)


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    path: Path | None
    origin: str  # "--checkpoint", "$STYLEFACE_CHECKPOINT", "cache", or "none"


def cache_folder(env: Mapping[str, str]) -> Path:
    root = env.get(CACHE_ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "styleface"
    return base / "checkpoints"


def find_checkpoint(explicit: Path | None, env: Mapping[str, str]) -> CheckpointChoice:
    """The checkpoint to use (see the module docstring for the order). A path given explicitly or by
    the environment variable must exist; the cache folder is only looked in."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise WeightsError(f"checkpoint not found: {explicit}")
        return CheckpointChoice(Path(explicit), "--checkpoint")
    if env.get(ENV_VAR):
        path = Path(env[ENV_VAR]).expanduser()
        if not path.is_file():
            raise WeightsError(f"{ENV_VAR} names {path}, which does not exist")
        return CheckpointChoice(path, f"${ENV_VAR}")
    folder = cache_folder(env)
    found = sorted(folder.glob("*.safetensors"), key=lambda p: (p.stat().st_mtime, p.name)) if folder.is_dir() else []
    if found:
        return CheckpointChoice(found[-1], "cache")
    return CheckpointChoice(None, "none")


def resolve_method(method: str, choice: CheckpointChoice) -> tuple[str, str]:
    """``(method that runs, why)`` for the requested ``method`` ('auto', 'styleface', 'blur', ...)."""
    if method == "auto":
        if choice.path is not None:
            return GENERATIVE, f"auto: StyleFace checkpoint {choice.path} (from {choice.origin})"
        return FALLBACK, f"auto: no StyleFace checkpoint found, so faces are blurred ({HOW_TO_GET_ONE})"
    if method == GENERATIVE:
        if choice.path is None:
            raise ConfigError(f"--method styleface needs a checkpoint; {HOW_TO_GET_ONE}")
        return GENERATIVE, f"styleface: checkpoint {choice.path} (from {choice.origin})"
    return method, f"{method}: requested"
