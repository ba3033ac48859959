"""Pretrained StyleGAN2 (config F) networks as StyleFace's starting point, read without running their code.

Two formats:

* **NVlabs** network pickles (stylegan2-ada-pytorch, stylegan3 with a StyleGAN2 config): a pickle of
  ``{'G', 'D', 'G_ema', ...}`` whose networks are ``torch_utils.persistence`` objects. Such a pickle names
  its own Python classes and embeds their source; a plain ``pickle.load`` would import and run it. Here a
  restricted unpickler (``_RestrictedUnpickler``) resolves only the globals in ``_ALLOWED`` -- tensor and
  storage reconstruction (storages are read by ``torch.load(weights_only=True)``), ``OrderedDict``, numpy
  dtypes and scalars -- and turns ``_reconstruct_persistent_obj`` into an inert ``PersistentHolder`` of
  the module's state (its ``_parameters``, ``_buffers``, ``_modules`` and plain attributes). The embedded
  source is never compiled. Any other global (``os.system``, ``builtins.eval``, ...) raises
  ``WeightsError`` before anything is called.
* **rosinality** ``.pt`` checkpoints (stylegan2-pytorch ``train.py`` / ``convert_weight.py``): state
  dicts under ``'g_ema'`` and ``'d'``, plus ``'latent_avg'``; read with ``torch.load(weights_only=True)``
  (``argparse.Namespace`` is allowed for ``train.py``'s ``'args'``).

The file decides the architecture: z and w dimensions, mapping depth, resolution, channels per block,
``conv_clamp``. Only config F is accepted: 'skip' generator, 'resnet' discriminator, unconditional,
the [1, 3, 3, 1] filter, mapping lr multiplier 0.01, 3 image channels; anything else is refused by name.

Key maps (written out once, in ``_generator_rows`` / ``_discriminator_rows``): each row is (their name,
their shape, our name, our shape) for one tensor of our ``Generator`` / ``Discriminator``; every
conversion is a reshape. Verification is strict: a missing tensor, a shape that differs from the row, or a
learned tensor of the file that no row consumes raises ``WeightsError`` naming it. Per block ``res``
(``b4``: ``const`` and ``conv1`` only; rosinality index ``k = log2(res) - 3``)::

    ours (NVlabs: the same name)      rosinality                              reshape
    mapping.fc{i}.weight / .bias      style.{i+1}.weight / .bias
    mapping.w_avg                     latent_avg (file top level)             [1, w] or [w] -> [w]
    synthesis.b4.const                input.input                             [1, C, 4, 4] -> [C, 4, 4]
    synthesis.b{res}.conv0.*          convs.{2k}.*                            (layer rows below)
    synthesis.b{res}.conv1.*          convs.{2k+1}.* (b4: conv1.*)
    synthesis.b{res}.torgb.*          to_rgbs.{k}.* (b4: to_rgb1.*)
      layer .weight                   .conv.weight                            [1, O, I, k, k] -> [O, I, k, k]
      layer .affine.weight / .bias    .conv.modulation.weight / .bias
      layer .bias                     .activate.bias (torgb: .bias)           torgb [1, 3, 1, 1] -> [3]
      layer .noise_strength           .noise.weight                           [1] -> []
      layer .noise_const              noises.noise_{j} (j: conv order)        [1, 1, H, W] -> [H, W]
    D b{R}.fromrgb.weight / .bias     convs.0.0.weight / convs.0.1.bias
    D b{res}.conv0.weight / .bias     convs.{i}.conv1.0.weight / .1.bias      (i = log2(R / res) + 1)
    D b{res}.conv1.weight / .bias     convs.{i}.conv2.1.weight / .2.bias
    D b{res}.skip.weight              convs.{i}.skip.1.weight
    D b4.conv / .fc / .out            final_conv.0 / .1, final_linear.0, final_linear.1

Both formats store the equalized-learning-rate weights unscaled with the same gains as ours (the mapping
layers divided by their lr multiplier 0.01), so no value changes. Filter buffers (``resample_filter``,
rosinality ``kernel``) are constants of the architecture: checked, not copied.

**Lower resolution** (``crop_to``): a 'skip' generator draws its image as a sum of per-block ToRGB
outputs, so its first blocks up to ``R`` already produce a coherent (lower-detail) ``R``-pixel image:
cropping keeps mapping and blocks ``b4 ... bR`` (and W+ rows ``0 .. 2 log2 R - 3``) and drops the blocks
above. The discriminator keeps its blocks ``bR ... b8`` and epilogue; ``bR`` read features from the
block above, not the image, so its ``fromrgb`` is new (freshly initialised, trained from there).
Larger resolutions than the file's are refused.

If a rosinality file has no ``latent_avg`` (``train.py`` checkpoints), ``w_avg`` is estimated as the mean
of the mapping over 10,000 latents from seed 0 (what its ``mean_latent`` does, with more samples).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from styleface_cli.errors import WeightsError
from styleface_cli.model.discriminator import Discriminator
from styleface_cli.model.generator import Generator, num_ws_for
from styleface_cli.model.layers import DEFAULT_RESAMPLE_FILTER
from styleface_cli.ops.upfirdn2d import setup_filter

if TYPE_CHECKING:
    from styleface_cli.model.styleface import StyleFace, StyleFaceConfig

__all__ = [
    "PersistentHolder",
    "StyleGANArch",
    "StyleGANWeights",
    "build_discriminator",
    "build_generator",
    "crop_to",
    "load_restricted_pickle",
    "load_stylegan_into",
    "read_stylegan",
    "styleface_config_for",
]

MAPPING_LR_MULTIPLIER = 0.01
W_AVG_SAMPLES = 10_000
_SHOWN = 5


# ----------------------------------------------------------------------------------------------------
# Reading NVlabs pickles without running them.


class PersistentHolder:
    """What a ``torch_utils.persistence`` object unpickles to here: its class name and its ``__dict__``."""

    def __init__(self, meta: Mapping[str, Any]):
        if not isinstance(meta, Mapping) or not isinstance(meta.get("state"), Mapping):
            raise WeightsError("a persistent object in the pickle has no state")
        self.class_name = str(meta.get("class_name"))
        self.state = dict(meta["state"])

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def child(self, name: str) -> PersistentHolder | None:
        child = (self.state.get("_modules") or {}).get(name)
        return child if isinstance(child, PersistentHolder) else None

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this module and its children, by dotted name (a state dict)."""
        out = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if isinstance(value, torch.Tensor):
                    out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentHolder):
                out.update(child.tensors(f"{prefix}{name}."))
        return out

    def __repr__(self) -> str:
        return f"PersistentHolder({self.class_name})"


class _InertDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict subclass): only the items are kept."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentHolder:
    return PersistentHolder(meta)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, state: Any = None) -> torch.Tensor:
    """``torch._utils._rebuild_parameter`` (and ``..._with_state``): the tensor, without hooks or state."""
    if not isinstance(data, torch.Tensor):
        raise WeightsError("a parameter in the pickle is not a tensor")
    return data


def _load_storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes``: a legacy ``torch.save`` of one storage, read with weights_only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype: Any, data: bytes | None = None) -> Any:
    """``numpy.core.multiarray.scalar``, for plain numeric dtypes only (no object arrays)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise WeightsError(f"refused numpy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype)[0]


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,  # pickles written under numpy 1.x
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # ... and under numpy 2
    ("dnnlib.util", "EasyDict"): _InertDict,
    ("dnnlib.easydict", "EasyDict"): _InertDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(f"refused to load {module}.{name}: the pickle asks for code beyond tensors "
                               "and network state (it may be malicious; nothing was run)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsError("refused a persistent id in the pickle")


def load_restricted_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only ``_ALLOWED`` globals; ``WeightsError`` on anything else."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f).load()
    except WeightsError:
        raise
    except Exception as error:  # truncated files, foreign formats
        raise WeightsError(f"cannot read the network pickle {path} ({type(error).__name__}: {error})") from error


# ----------------------------------------------------------------------------------------------------
# Architecture and weights.


@dataclasses.dataclass(frozen=True)
class StyleGANArch:
    """The sizes an imported StyleGAN2 fixes (``channels``: blocks 4, 8, ..., resolution)."""

    source: str  # 'nvlabs' | 'rosinality'
    z_dim: int
    w_dim: int
    mapping_layers: int
    resolution: int
    channels: tuple[int, ...]
    conv_clamp: float | None
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1

    @property
    def channel_table(self) -> dict[int, int]:
        return {2 ** (i + 2): c for i, c in enumerate(self.channels)}


@dataclasses.dataclass(frozen=True, eq=False)
class StyleGANWeights:
    """An imported StyleGAN2: its architecture and tensors under our names (keys of ``Generator`` and
    ``Discriminator`` state dicts; ``discriminator`` is None when the file has none)."""

    path: Path
    arch: StyleGANArch
    generator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor] | None
    new_keys: tuple[str, ...] = ()  # discriminator keys left at their initialisation (after crop_to)


def build_generator(weights: StyleGANWeights) -> Generator:
    """Our plain ``Generator`` with the imported weights (eval mode)."""
    a = weights.arch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = Generator(a.z_dim, a.w_dim, a.resolution, mapping_layers=a.mapping_layers, channels=a.channel_table,
                      conv_clamp=a.conv_clamp)
    _load_exact(g, weights.generator, what=f"generator of {weights.path}")
    return g.eval()


def build_discriminator(weights: StyleGANWeights, seed: int = 0) -> Discriminator:
    """Our ``Discriminator`` with the imported weights; keys in ``weights.new_keys`` keep their
    initialisation from ``seed``. ``WeightsError`` when the file has no discriminator."""
    if weights.discriminator is None:
        raise WeightsError(f"{weights.path} has no discriminator")
    a = weights.arch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = Discriminator(a.resolution, channels=a.channel_table, conv_clamp=a.conv_clamp,
                          mbstd_group_size=a.mbstd_group_size)
    state = d.state_dict()
    state.update(weights.discriminator)
    _load_exact(d, state, what=f"discriminator of {weights.path}")
    return d.eval()


def _load_exact(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    from styleface_cli.model.weights import load_state_dict_strict

    load_state_dict_strict(module, state, what=what, fill_num_batches_tracked=False)


def read_stylegan(path: str | Path) -> StyleGANWeights:
    """Read an NVlabs network pickle (``.pkl``) or a rosinality checkpoint (``.pt`` / ``.pth``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"StyleGAN2 file not found: {path}")
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # a zip: torch.save's format (rosinality)
        return _read_rosinality(path)
    if path.suffix == ".pkl":
        return _read_nvlabs(path)
    return _read_rosinality(path)  # legacy (non-zip) torch.save


def crop_to(weights: StyleGANWeights, resolution: int) -> StyleGANWeights:
    """The same network at a lower ``resolution`` (the module docstring's rule); unchanged when equal."""
    a = weights.arch
    if resolution == a.resolution:
        return weights
    if resolution > a.resolution or resolution < 8 or resolution & (resolution - 1):
        raise WeightsError(f"{weights.path} is a {a.resolution} px StyleGAN2: it can start a network of "
                           f"{a.resolution} px or a lower power of two >= 8, not {resolution} px")
    keep = {f"b{2**i}" for i in range(2, int(math.log2(resolution)) + 1)}
    generator = {k: v for k, v in weights.generator.items()
                 if not k.startswith("synthesis.") or k.split(".")[1] in keep}
    discriminator, new_keys = None, ()
    if weights.discriminator is not None:
        top = f"b{resolution}"
        discriminator = {k: v for k, v in weights.discriminator.items() if k.split(".")[0] in keep}
        new_keys = tuple(f"{top}.fromrgb.{p}" for p in ("weight", "bias"))
    arch = dataclasses.replace(a, resolution=resolution, channels=a.channels[: len(keep)])
    return StyleGANWeights(path=weights.path, arch=arch, generator=generator, discriminator=discriminator,
                           new_keys=new_keys)


# ----------------------------------------------------------------------------------------------------
# The key maps: one row per tensor of our networks.


@dataclasses.dataclass(frozen=True)
class KeyRow:
    theirs: str
    their_shape: tuple[int, ...]
    ours: str
    our_shape: tuple[int, ...]


def _generator_rows(arch: StyleGANArch, source: str) -> list[KeyRow]:
    """Rows for every tensor of our ``Generator`` of ``arch``, for 'nvlabs' or 'rosinality' names."""
    ros = source == "rosinality"
    rows: list[KeyRow] = []

    def row(ours: str, our_shape: tuple[int, ...], theirs: str, their_shape: tuple[int, ...] | None = None):
        if not ros:
            theirs, their_shape = ours, None
        rows.append(KeyRow(theirs, tuple(their_shape or our_shape), ours, tuple(our_shape)))

    z, w = arch.z_dim, arch.w_dim
    for i in range(arch.mapping_layers):
        fan_in = z if i == 0 else w
        row(f"mapping.fc{i}.weight", (w, fan_in), f"style.{i + 1}.weight")
        row(f"mapping.fc{i}.bias", (w,), f"style.{i + 1}.bias")
    row("mapping.w_avg", (w,), "latent_avg")

    def layer(ours: str, theirs: str, cin: int, cout: int, res: int, kernel: int, noise: int | None):
        row(f"{ours}.weight", (cout, cin, kernel, kernel), f"{theirs}.conv.weight", (1, cout, cin, kernel, kernel))
        row(f"{ours}.affine.weight", (cin, w), f"{theirs}.conv.modulation.weight")
        row(f"{ours}.affine.bias", (cin,), f"{theirs}.conv.modulation.bias")
        if noise is None:  # ToRGB
            row(f"{ours}.bias", (cout,), f"{theirs}.bias", (1, cout, 1, 1))
            return
        row(f"{ours}.bias", (cout,), f"{theirs}.activate.bias")
        row(f"{ours}.noise_strength", (), f"{theirs}.noise.weight", (1,))
        row(f"{ours}.noise_const", (res, res), f"noises.noise_{noise}", (1, 1, res, res))

    ch = arch.channel_table
    row("synthesis.b4.const", (ch[4], 4, 4), "input.input", (1, ch[4], 4, 4))
    layer("synthesis.b4.conv1", "conv1", ch[4], ch[4], 4, 3, 0)
    layer("synthesis.b4.torgb", "to_rgb1", ch[4], 3, 4, 1, None)
    for k, res in enumerate(sorted(ch)[1:]):
        b = f"synthesis.b{res}"
        layer(f"{b}.conv0", f"convs.{2 * k}", ch[res // 2], ch[res], res, 3, 2 * k + 1)
        layer(f"{b}.conv1", f"convs.{2 * k + 1}", ch[res], ch[res], res, 3, 2 * k + 2)
        layer(f"{b}.torgb", f"to_rgbs.{k}", ch[res], 3, res, 1, None)
    return rows


def _discriminator_rows(arch: StyleGANArch, source: str, d_channels: Mapping[int, int]) -> list[KeyRow]:
    """Rows for every tensor of our ``Discriminator`` at ``arch.resolution`` with ``d_channels``."""
    ros = source == "rosinality"
    rows: list[KeyRow] = []

    def row(ours: str, shape: tuple[int, ...], theirs: str):
        rows.append(KeyRow(theirs if ros else ours, shape, ours, shape))

    c = d_channels
    top = arch.resolution
    row(f"b{top}.fromrgb.weight", (c[top], 3, 1, 1), "convs.0.0.weight")
    row(f"b{top}.fromrgb.bias", (c[top],), "convs.0.1.bias")
    for i, res in enumerate(sorted((r for r in c if r >= 8), reverse=True), start=1):
        b, t = f"b{res}", f"convs.{i}"
        row(f"{b}.conv0.weight", (c[res], c[res], 3, 3), f"{t}.conv1.0.weight")
        row(f"{b}.conv0.bias", (c[res],), f"{t}.conv1.1.bias")
        row(f"{b}.conv1.weight", (c[res // 2], c[res], 3, 3), f"{t}.conv2.1.weight")
        row(f"{b}.conv1.bias", (c[res // 2],), f"{t}.conv2.2.bias")
        row(f"{b}.skip.weight", (c[res // 2], c[res], 1, 1), f"{t}.skip.1.weight")
    mb = arch.mbstd_num_channels
    row("b4.conv.weight", (c[4], c[4] + mb, 3, 3), "final_conv.0.weight")
    row("b4.conv.bias", (c[4],), "final_conv.1.bias")
    row("b4.fc.weight", (c[4], c[4] * 16), "final_linear.0.weight")
    row("b4.fc.bias", (c[4],), "final_linear.0.bias")
    row("b4.out.weight", (1, c[4]), "final_linear.1.weight")
    row("b4.out.bias", (1,), "final_linear.1.bias")
    return rows


def _apply_rows(rows: list[KeyRow], theirs: Mapping[str, torch.Tensor], *, what: str,
                ignorable: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Our state dict from ``theirs`` by ``rows``; ``WeightsError`` naming every missing, misshaped or
    unconsumed tensor (names ending in one of ``ignorable`` are constants checked elsewhere)."""
    missing = [r.theirs for r in rows if r.theirs not in theirs]
    misshapen = [f"{r.theirs} {list(theirs[r.theirs].shape)} != {list(r.their_shape)}"
                 for r in rows if r.theirs in theirs and tuple(theirs[r.theirs].shape) != r.their_shape]
    used = {r.theirs for r in rows}
    unexpected = [k for k in theirs if k not in used and not k.endswith(ignorable)]
    problems = []
    for label, items in (("missing", missing), ("wrong shape", misshapen), ("unexpected", unexpected)):
        if items:
            shown = ", ".join(items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")
            problems.append(f"{len(items)} {label} tensor{'s' if len(items) > 1 else ''} ({shown})")
    if problems:
        raise WeightsError(f"{what} does not match a StyleGAN2 config-F network: " + "; ".join(problems))
    return {r.ours: theirs[r.theirs].detach().to(torch.float32).reshape(r.our_shape).clone() for r in rows}


def _check_filters(tensors: Mapping[str, torch.Tensor], suffix: str, what: str, scale_ok: bool = False) -> None:
    """Every filter buffer must be StyleGAN2's [1, 3, 3, 1] (up to a constant gain for rosinality)."""
    want = setup_filter(list(DEFAULT_RESAMPLE_FILTER))
    for key, value in tensors.items():
        if not key.endswith(suffix):
            continue
        value = value.to(torch.float32)
        if scale_ok and value.sum() != 0:
            value = value / value.sum()
        if value.shape != want.shape or not torch.allclose(value, want, atol=1e-6):
            raise WeightsError(f"{what}: {key} is not the [1, 3, 3, 1] resample filter of config F")


def _bad(path: Path, text: str) -> WeightsError:
    return WeightsError(f"{path}: {text}")


# ----------------------------------------------------------------------------------------------------
# NVlabs.


def _read_nvlabs(path: Path) -> StyleGANWeights:
    data = load_restricted_pickle(path)
    if not isinstance(data, Mapping) or not isinstance(data.get("G_ema"), PersistentHolder):
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise _bad(path, f"not an NVlabs network pickle with a G_ema network (found {keys})")
    g = data["G_ema"]
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if mapping is None or synthesis is None:
        raise _bad(path, "G_ema has no mapping / synthesis network")
    if int(g.attr("c_dim", 0) or 0) != 0:
        raise _bad(path, "a conditional (c_dim > 0) generator cannot start StyleFace")
    if synthesis.child("b4") is None:
        raise _bad(path, f"{synthesis.class_name} is not a StyleGAN2 synthesis network (a StyleGAN3 / "
                         "alias-free generator has no b4 block): only StyleGAN2 config F can be imported")
    if int(g.attr("img_channels", 3)) != 3:
        raise _bad(path, "only 3-channel (RGB) generators can be imported")
    resolution = int(synthesis.attr("img_resolution"))
    blocks = [synthesis.child(f"b{2**i}") for i in range(2, int(math.log2(resolution)) + 1)]
    if any(b is None for b in blocks):
        raise _bad(path, "the synthesis network misses a block")
    for b in blocks:
        if b.attr("architecture", "skip") != "skip":
            raise _bad(path, f"synthesis architecture {b.attr('architecture')!r}: only 'skip' (config F) is supported")
    fc0 = mapping.child("fc0")
    if fc0 is None or not math.isclose(float(fc0.attr("bias_gain", 0)), MAPPING_LR_MULTIPLIER):
        raise _bad(path, f"the mapping network's lr multiplier is not {MAPPING_LR_MULTIPLIER}")
    conv_clamp = blocks[0].child("conv1").attr("conv_clamp")
    tensors = {f"mapping.{k}": v for k, v in mapping.tensors().items()}
    tensors.update({f"synthesis.{k}": v for k, v in synthesis.tensors().items()})
    _check_filters(tensors, "resample_filter", f"{path} G_ema")
    channels = tuple(int(tensors[f"synthesis.b{2**i}.conv1.weight"].shape[0]) for i in range(2, len(blocks) + 2))
    num_layers = int(mapping.attr("num_layers"))
    arch = StyleGANArch(
        source="nvlabs", z_dim=int(g.attr("z_dim")), w_dim=int(g.attr("w_dim")), mapping_layers=num_layers,
        resolution=resolution, channels=channels,
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
    )
    if "mapping.w_avg" not in tensors:
        raise _bad(path, "the mapping network has no w_avg buffer")
    generator = _apply_rows(_generator_rows(arch, "nvlabs"), tensors, what=f"{path} G_ema",
                            ignorable=("resample_filter",))

    discriminator = None
    d = data.get("D")
    if isinstance(d, PersistentHolder):
        arch, discriminator = _nvlabs_discriminator(path, d, arch)
    return StyleGANWeights(path=path, arch=arch, generator=generator, discriminator=discriminator)


def _nvlabs_discriminator(path: Path, d: PersistentHolder, arch: StyleGANArch):
    if int(d.attr("c_dim", 0) or 0) != 0:
        raise _bad(path, "a conditional (c_dim > 0) discriminator cannot be imported")
    if int(d.attr("img_resolution", 0)) != arch.resolution:
        raise _bad(path, f"D is {d.attr('img_resolution')} px but G_ema {arch.resolution} px")
    epilogue = d.child("b4")
    mbstd = epilogue.child("mbstd") if epilogue is not None else None
    blocks = [d.child(f"b{r}") for r in sorted(arch.channel_table, reverse=True) if r >= 8]
    if epilogue is None or any(b is None for b in blocks):
        raise _bad(path, "D misses a block")
    for b in blocks + [epilogue]:
        if b.attr("architecture", "resnet") != "resnet":
            raise _bad(path, f"discriminator architecture {b.attr('architecture')!r}: only 'resnet' (config F)")
    conv = epilogue.child("conv")
    d_clamp = conv.attr("conv_clamp") if conv is not None else None
    if (None if d_clamp is None else float(d_clamp)) != arch.conv_clamp:
        raise _bad(path, f"D's conv_clamp {d_clamp} differs from G's {arch.conv_clamp}")
    group = mbstd.attr("group_size") if mbstd is not None else None
    arch = dataclasses.replace(arch, mbstd_group_size=None if group is None else int(group),
                               mbstd_num_channels=int(mbstd.attr("num_channels", 1)) if mbstd is not None else 0)
    tensors = d.tensors()
    _check_filters(tensors, "resample_filter", f"{path} D")
    d_channels = _d_channels(path, tensors, arch, "b{res}.conv0.weight", "b4.conv.weight")
    rows = _discriminator_rows(arch, "nvlabs", d_channels)
    return arch, _apply_rows(rows, tensors, what=f"{path} D", ignorable=("resample_filter",))


def _d_channels(path: Path, tensors: Mapping[str, torch.Tensor], arch: StyleGANArch, block_key: str,
                epilogue_key: str) -> dict[int, int]:
    """The discriminator's channel table; StyleFace builds its D from the generator's table, so they must agree."""
    try:
        channels = {res: int(tensors[block_key.format(i=i, res=res)].shape[0])
                    for i, res in enumerate(sorted((r for r in arch.channel_table if r >= 8), reverse=True), start=1)}
        channels[4] = int(tensors[epilogue_key].shape[0])
    except KeyError as error:
        raise _bad(path, f"the discriminator has no tensor {error.args[0]}") from None
    if channels != arch.channel_table:
        raise _bad(path, f"discriminator channels {channels} differ from the generator's {arch.channel_table}; "
                         "StyleFace builds both from one table")
    return channels


# ----------------------------------------------------------------------------------------------------
# rosinality.


def _read_rosinality(path: Path) -> StyleGANWeights:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read {path} as a rosinality checkpoint with torch.load(weights_only=True) "
                           f"({type(error).__name__}: {error}); NVlabs network pickles end in .pkl") from error
    if not isinstance(data, Mapping) or not isinstance(data.get("g_ema"), Mapping):
        keys = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise _bad(path, f"not a rosinality checkpoint with a g_ema state dict (found {keys})")
    g = {k.removeprefix("module."): v for k, v in data["g_ema"].items()}
    mapping_layers = sum(1 for k in g if k.startswith("style.") and k.endswith(".weight"))
    num_rgbs = sum(1 for k in g if k.startswith("to_rgbs.") and k.endswith(".conv.weight"))
    if "input.input" not in g or "conv1.conv.weight" not in g or mapping_layers < 1:
        raise _bad(path, "g_ema is not a rosinality StyleGAN2 generator (no input.input / conv1 / style.*)")
    resolution = 4 * 2**num_rgbs
    channels = [int(g["conv1.conv.weight"].shape[1])]
    channels += [int(g[f"convs.{2 * k + 1}.conv.weight"].shape[1]) for k in range(num_rgbs)
                 if f"convs.{2 * k + 1}.conv.weight" in g]
    if len(channels) != num_ws_for(resolution) // 2:
        raise _bad(path, "g_ema misses some convs.* layers")
    if int(g["to_rgb1.conv.weight"].shape[1]) != 3:
        raise _bad(path, "only 3-channel (RGB) generators can be imported")
    arch = StyleGANArch(source="rosinality", z_dim=int(g["style.1.weight"].shape[1]),
                        w_dim=int(g["style.1.weight"].shape[0]), mapping_layers=mapping_layers,
                        resolution=resolution, channels=tuple(channels), conv_clamp=None)
    _check_filters(g, "kernel", f"{path} g_ema", scale_ok=True)
    latent_avg = data.get("latent_avg")
    state = dict(g)
    if isinstance(latent_avg, torch.Tensor):
        state["latent_avg"] = latent_avg.reshape(-1) if latent_avg.numel() == arch.w_dim else latent_avg
    else:
        state["latent_avg"] = torch.zeros(arch.w_dim)  # estimated below, from the mapped weights
    generator = _apply_rows(_generator_rows(arch, "rosinality"), state, what=f"{path} g_ema", ignorable=(".kernel",))
    if not isinstance(latent_avg, torch.Tensor):
        generator["mapping.w_avg"] = _estimate_w_avg(arch, generator)

    discriminator = None
    if isinstance(data.get("d"), Mapping):
        d = {k.removeprefix("module."): v for k, v in data["d"].items()}
        _check_filters(d, "kernel", f"{path} d", scale_ok=True)
        d_channels = _d_channels(path, d, arch, "convs.{i}.conv1.0.weight", "final_conv.0.weight")
        discriminator = _apply_rows(_discriminator_rows(arch, "rosinality", d_channels), d, what=f"{path} d",
                                    ignorable=(".kernel",))
    return StyleGANWeights(path=path, arch=arch, generator=generator, discriminator=discriminator)


@torch.no_grad()
def _estimate_w_avg(arch: StyleGANArch, generator: dict[str, torch.Tensor]) -> torch.Tensor:
    from styleface_cli.model.layers import MappingNetwork

    mapping = MappingNetwork(arch.z_dim, arch.w_dim, num_ws=None, num_layers=arch.mapping_layers)
    mapping.load_state_dict({k.removeprefix("mapping."): v for k, v in generator.items() if k.startswith("mapping.")})
    z = torch.randn([W_AVG_SAMPLES, arch.z_dim], generator=torch.Generator().manual_seed(0))
    return mapping(z).mean(dim=0)


# ----------------------------------------------------------------------------------------------------
# Into StyleFace.


def styleface_config_for(arch: StyleGANArch, base: StyleFaceConfig) -> StyleFaceConfig:
    """``base`` (the preset's new parts: recognizer, attribute resolution) with the generator sizes of
    ``arch`` (crop the weights first for a lower resolution). The channel table is stored as
    ``channel_base`` / ``channel_max`` when it follows that rule, else explicitly (``channels``)."""
    from styleface_cli.model.generator import block_channels
    from styleface_cli.model.styleface import StyleFaceConfig

    table = arch.channel_table
    top = arch.resolution
    channel_base, channel_max = table[top] * top, max(table.values())
    rule = block_channels(top, channel_base, channel_max) == table
    if not isinstance(base, StyleFaceConfig):
        raise TypeError("base must be a StyleFaceConfig")
    return dataclasses.replace(
        base, resolution=top, z_dim=arch.z_dim, w_dim=arch.w_dim, mapping_layers=arch.mapping_layers,
        channel_base=channel_base, channel_max=channel_max, channels=None if rule else arch.channels,
        conv_clamp=arch.conv_clamp, attr_resolution=min(base.attr_resolution, top),
    )


def load_stylegan_into(model: StyleFace, weights: StyleGANWeights) -> None:
    """Copy the imported mapping network into ``model.projector.mapping`` and the synthesis network into
    ``model.synthesis``, strictly (every tensor, same shapes); the other parts keep their values."""
    ours = model.state_dict()
    state = {}
    for key, value in weights.generator.items():
        target = "projector." + key if key.startswith("mapping.") else key
        state[target] = value
    wrong = [f"{k} {list(v.shape)} != {list(ours[k].shape)}" if k in ours else f"{k} (no such tensor)"
             for k, v in state.items() if k not in ours or ours[k].shape != v.shape]
    expected = [k for k in ours if k.startswith(("projector.mapping.", "synthesis."))]
    missing = [k for k in expected if k not in state]
    if wrong or missing:
        items = wrong + [f"{k} (missing)" for k in missing]
        raise WeightsError(f"{weights.path} does not fit the StyleFace network: {', '.join(items[:_SHOWN])}"
                           + (", ..." if len(items) > _SHOWN else ""))
    with torch.no_grad():
        for key, value in state.items():
            ours[key].copy_(value)
