"""The StyleFace checkpoint format, and strict loading of third-party recognizer weights.

Format (``FORMAT_VERSION`` 1): one ``.safetensors`` file.

* tensors: ``StyleFace.state_dict()`` exactly -- parameters and persistent buffers (BatchNorm running
  statistics, ``noise_const``, the mapping network's ``w_avg``), float32 (int64 for
  ``num_batches_tracked``); key names are the module attribute paths (``tests/data/
  checkpoint_keys_tiny.txt`` freezes them for the tiny config);
* metadata (string -> string): ``"format_version"``: ``"1"``; ``"styleface_config"``: the JSON of
  ``StyleFaceConfig.to_dict()``, from which ``load_checkpoint`` rebuilds the network.

Loading is strict: a missing file, a file that is not safetensors, missing metadata, an invalid config,
missing or unexpected keys, wrong shapes or non-float tensors where floats belong raise ``WeightsError``
naming the problem (the first few keys and the count). Floating tensors are cast to float32, so an fp16
export loads. Nothing is ever unpickled; third-party ``.pth`` recognizer files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from styleface_cli.errors import ConfigError, OutputError, WeightsError
from styleface_cli.model.recognizer import IResNet, convert_ir_backbone_state_dict
from styleface_cli.model.styleface import StyleFace, StyleFaceConfig
from styleface_cli.atomic import atomic_output

if TYPE_CHECKING:
    from styleface_cli.model.stylegan_import import StyleGANWeights

__all__ = [
    "CONFIG_KEY",
    "FORMAT_VERSION",
    "FORMAT_VERSION_KEY",
    "init_checkpoint",
    "load_checkpoint",
    "load_recognizer_weights",
    "load_state_dict_strict",
    "read_checkpoint_config",
    "read_third_party_state_dict",
    "save_checkpoint",
]

FORMAT_VERSION = 1
FORMAT_VERSION_KEY = "format_version"
CONFIG_KEY = "styleface_config"
_SHOWN = 5  # keys named in an error message before "..."


def save_checkpoint(path: str | Path, model: StyleFace) -> Path:
    """Write ``model`` to ``path`` (a ``.safetensors`` file), atomically: a temporary file, then a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    metadata = {FORMAT_VERSION_KEY: str(FORMAT_VERSION), CONFIG_KEY: json.dumps(model.config.to_dict(), sort_keys=True)}
    try:
        with atomic_output(path) as tmp:  # hidden temporary file beside path, fsync, rename
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error}") from error
    return path


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as error:  # safetensors raises its own error types for truncated / foreign files
        raise WeightsError(f"{path} is not a readable safetensors checkpoint ({type(error).__name__}: {error})") from error


def read_checkpoint_config(path: str | Path) -> StyleFaceConfig:
    """The ``StyleFaceConfig`` stored in a checkpoint (reads only the header)."""
    path = Path(path)
    metadata = _read_metadata(path)
    version = metadata.get(FORMAT_VERSION_KEY)
    if version is None or CONFIG_KEY not in metadata:
        raise WeightsError(f"{path} is a safetensors file but not a StyleFace checkpoint "
                           f"(no {FORMAT_VERSION_KEY!r} / {CONFIG_KEY!r} metadata)")
    if version != str(FORMAT_VERSION):
        raise WeightsError(f"{path} has checkpoint format version {version}; this build reads {FORMAT_VERSION}")
    try:
        return StyleFaceConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    except (json.JSONDecodeError, TypeError, ConfigError) as error:
        raise WeightsError(f"{path} has an invalid StyleFace config: {error}") from error


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> StyleFace:
    """Rebuild the network from the checkpoint's config and load its tensors strictly; returns it in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    config = read_checkpoint_config(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:
        raise WeightsError(f"cannot read the tensors of {path} ({type(error).__name__}: {error})") from error
    model = StyleFace(config)
    load_state_dict_strict(model, tensors, what=f"checkpoint {path}", fill_num_batches_tracked=False)
    return model.to(device).eval()


def init_checkpoint(
    config: StyleFaceConfig,
    path: str | Path,
    seed: int = 0,
    *,
    recognizer_weights: str | Path | None = None,
    stylegan: StyleGANWeights | None = None,
) -> StyleFace:
    """Write a randomly initialised network of ``config`` (reproducible by ``seed``) to ``path``; returns it.

    recognizer_weights: pretrained recognizer weights to load first (see ``load_recognizer_weights``).
    stylegan: an imported StyleGAN2 (``stylegan_import.read_stylegan``, cropped to ``config.resolution``)
        whose mapping and synthesis networks replace the random ones (``config`` must come from
        ``stylegan_import.styleface_config_for``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StyleFace(config)
    if stylegan is not None:
        from styleface_cli.model.stylegan_import import load_stylegan_into

        load_stylegan_into(model, stylegan)
    if recognizer_weights is not None:
        load_recognizer_weights(model.recognizer, recognizer_weights)
    save_checkpoint(path, model)
    return model.eval()


def load_state_dict_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str,
    fill_num_batches_tracked: bool = True,
) -> None:
    """``module.load_state_dict`` whose mismatches raise ``WeightsError`` naming the keys.

    Missing, unexpected and wrong-shape keys are reported together (first few of each and the counts);
    a floating tensor where an integer one belongs (or the reverse) is an error; floating tensors are
    cast to the module's dtype. ``fill_num_batches_tracked``: treat absent BatchNorm
    ``num_batches_tracked`` counters as 0 (old third-party checkpoints lack them).
    """
    expected = module.state_dict()
    state = dict(state)
    if fill_num_batches_tracked:
        for key, value in expected.items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {list(state[k].shape)} != {list(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    mistyped = [f"{k} {state[k].dtype} != {expected[k].dtype}"
                for k in expected if k in state and state[k].is_floating_point() != expected[k].is_floating_point()]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen),
                         ("wrong dtype", mistyped)):
        if items:
            shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
            problems.append(f"{len(items)} {label} key{'s' if len(items) > 1 else ''} ({shown})")
    if problems:
        raise WeightsError(f"{what} does not match the network: " + "; ".join(problems))
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


# ----------------------------------------------------------------------------------------------------
# Third-party recognizer weights.


def read_third_party_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a third-party checkpoint: ``.safetensors``, or ``.pth``/``.pt`` read with
    ``torch.load(weights_only=True)`` (a restricted unpickler: no code runs). Unwraps a
    ``{'state_dict': ...}`` wrapper and strips DataParallel's ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"recognizer weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and format errors of every kind
        raise WeightsError(f"cannot read recognizer weights {path} ({type(error).__name__}: {error})") from error
    for wrapper in ("state_dict", "model", "backbone"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_recognizer_weights(recognizer: IResNet, path: str | Path) -> None:
    """Load arcface_torch (``conv1.*``, ``layer1.*``), TFace / CurricularFace / face.evoLVe
    (``input_layer.*``, ``body.*``) weights, or an insightface ONNX recognizer (``w600k_r50.onnx``,
    ``glintr100.onnx``; ``recognizer_onnx``) into ``recognizer``, strictly (``WeightsError`` on mismatch).

    To put them into a StyleFace checkpoint: ``load_recognizer_weights(model.recognizer, path)``, then
    ``save_checkpoint(out, model)``.
    """
    if Path(path).suffix.lower() == ".onnx":  # an insightface model pack's recognizer (mapped by graph position)
        from styleface_cli.model.recognizer_onnx import iresnet_state_from_onnx

        state = iresnet_state_from_onnx(path, recognizer)
        load_state_dict_strict(recognizer, state, what=f"recognizer weights {path}")
        return
    state = read_third_party_state_dict(path)
    if "input_layer.0.weight" in state:
        state = convert_ir_backbone_state_dict(state, recognizer.layers)
    load_state_dict_strict(recognizer, state, what=f"recognizer weights {path}")
