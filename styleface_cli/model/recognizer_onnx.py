"""insightface model-pack recognizers (``w600k_r50.onnx`` of buffalo_l, ``glintr100.onnx`` of antelopev2) as
IResNet weights.

These files are arcface_torch IResNet-50 / -100 backbones exported with ``torch.onnx.export``. The export
renames what it touches: every convolution absorbed the BatchNorm after it (constant folding: a
``Conv`` with a bias, under a generated name such as ``onnx::Conv_683`` or ``683``), PReLU slopes became
``[C, 1, 1]`` tensors under generated names, and equal tensors may be shared through ``Identity`` nodes.
Only the BatchNorms that follow no convolution (each block's ``bn1``, the final ``bn2``, ``features``)
and ``fc`` keep readable names. So the map is by **graph position**, not by name: the graph's
parameterised nodes, in execution order, must be exactly IResNet's layers in ``forward`` order, with
the same shapes (``_slots``); a different sequence, op or shape raises ``WeightsError`` saying where.

Per layer (``y = conv(x) + b`` folded, or ``conv`` then ``BatchNormalization``)::

    stem      Conv(+BN) -> conv1 (+ bn1)          PRelu -> prelu
    block     BatchNormalization -> bn1           Conv(+BN) -> conv1 (+ bn2)      PRelu -> prelu
              Conv(+BN) -> conv2 (+ bn3)          [Conv(+BN) 1x1 -> downsample.0 (+ downsample.1)]
    head      BatchNormalization -> bn2           Gemm -> fc                      BatchNormalization -> features

A folded convolution's bias becomes its BatchNorm with weight 1, bias ``b``, mean 0, variance
``1 - eps`` (exact up to float rounding); a BatchNormalization with another epsilon keeps its output by
moving the difference into the variance. The result is a state dict for a strict load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from styleface_cli.errors import WeightsError
from styleface_cli.model.recognizer import BN_EPS, IResNet

__all__ = ["iresnet_state_from_onnx"]

_PARAMETERISED = ("Conv", "BatchNormalization", "PRelu", "Gemm")
_PASS_THROUGH = ("Add", "Flatten", "Reshape", "Dropout", "Identity", "Shape", "Gather", "Unsqueeze", "Concat", "Cast")


def _read_graph(path: Path):
    """(items, values): the parameterised nodes in order as (op, node, [tensor or None per input])."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:  # a dependency of the package; missing only in a broken environment
        raise WeightsError(f"reading {path} needs the onnx package ({error})") from error
    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise WeightsError(f"cannot read {path} as an ONNX model ({type(error).__name__}: {error})") from error
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    items = []
    produced_by: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
            continue
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
            continue
        if node.op_type in ("Unsqueeze", "Reshape") and node.input[0] in values:  # constant shape edits
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in values:
                values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
            elif node.op_type == "Unsqueeze":
                axes = attrs.get("axes", values.get(node.input[1]) if len(node.input) > 1 else None)
                if axes is not None:
                    values[node.output[0]] = np.expand_dims(values[node.input[0]], tuple(int(a) for a in axes))
            continue
        if node.op_type in _PARAMETERISED:
            tensors = [values.get(name) for name in node.input]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            items.append((node.op_type, node, tensors, attrs))
            for out in node.output:
                produced_by[out] = len(items) - 1
        elif node.op_type not in _PASS_THROUGH:
            raise WeightsError(f"{path}: node {node.name or node.op_type} ({node.op_type}) is not part of an "
                               "arcface_torch IResNet export")
    # A BatchNormalization fed directly by a convolution belongs to it.
    layers = []
    for op, node, tensors, attrs in items:
        source = produced_by.get(node.input[0])
        if (op == "BatchNormalization" and layers and layers[-1][0] == "Conv" and source is not None
                and items[source][1] is layers[-1][1] and layers[-1][4] is None):
            layers[-1] = (*layers[-1][:4], (tensors, attrs))
            continue
        layers.append((op, node, tensors, attrs, None))
    return layers


def _slots(recognizer: IResNet) -> list[tuple[str, str, str | None]]:
    """IResNet's layers in forward order: (op, our prefix, the BatchNorm a convolution folds into)."""
    slots = [("Conv", "conv1", "bn1"), ("PRelu", "prelu", None)]
    for stage, blocks in enumerate(recognizer.layers, start=1):
        for j in range(blocks):
            p = f"layer{stage}.{j}"
            slots += [("BatchNormalization", f"{p}.bn1", None), ("Conv", f"{p}.conv1", f"{p}.bn2"),
                      ("PRelu", f"{p}.prelu", None), ("Conv", f"{p}.conv2", f"{p}.bn3")]
            if getattr(recognizer, f"layer{stage}")[j].downsample is not None:
                slots.append(("Conv", f"{p}.downsample.0", f"{p}.downsample.1"))
    return slots + [("BatchNormalization", "bn2", None), ("Gemm", "fc", None), ("BatchNormalization", "features", None)]


def _bn(prefix: str, tensors, attrs, conv_bias: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Our BatchNorm tensors from ONNX BatchNormalization inputs (x, scale, B, mean, var); a convolution bias
    before it is moved into the mean."""
    scale, bias, mean, var = tensors[1:5]
    if any(t is None for t in (scale, bias, mean, var)):
        raise WeightsError(f"the BatchNormalization of {prefix} has inputs that are not constants")
    eps = float(attrs.get("epsilon", 1e-5))
    mean = mean - conv_bias if conv_bias is not None else mean
    return {f"{prefix}.weight": scale, f"{prefix}.bias": bias, f"{prefix}.running_mean": mean,
            f"{prefix}.running_var": var + eps - BN_EPS}


def _bias_bn(prefix: str, bias: np.ndarray) -> dict[str, np.ndarray]:
    channels = bias.shape[0]
    return {f"{prefix}.weight": np.ones(channels, np.float32), f"{prefix}.bias": bias,
            f"{prefix}.running_mean": np.zeros(channels, np.float32),
            f"{prefix}.running_var": np.full(channels, 1.0 - BN_EPS, np.float32)}


def iresnet_state_from_onnx(path: str | Path, recognizer: IResNet) -> dict[str, torch.Tensor]:
    """An IResNet state dict for ``recognizer`` from an insightface ONNX recognizer (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"recognizer weights not found: {path}")
    layers = _read_graph(path)
    slots = _slots(recognizer)
    blocks_theirs = sum(1 for op, *_ in layers if op == "PRelu") - 1
    if blocks_theirs != sum(recognizer.layers):
        raise WeightsError(f"{path} has {blocks_theirs} residual blocks; the recognizer ({sum(recognizer.layers)} "
                           "blocks) does not match it: iresnet50 has 24 (w600k_r50), iresnet100 49 (glintr100)")
    if len(layers) != len(slots):
        raise WeightsError(f"{path} has {len(layers)} parameterised layers, an IResNet of this size {len(slots)}")
    # Within a block the exporter may place the 1x1 shortcut before the residual branch: put it last.
    layers = _shortcut_last(layers, slots)
    ours = recognizer.state_dict()
    state: dict[str, np.ndarray] = {}
    for (op, node, tensors, attrs, bn), (want, prefix, fold) in zip(layers, slots):
        where = f"{path}: node {node.name or op} (for {prefix})"
        if op != want:
            raise WeightsError(f"{where} is a {op}, IResNet has a {want} there")
        if op == "Conv":
            weight, bias = tensors[1], tensors[2] if len(tensors) > 2 else None
            if weight is None or (len(tensors) > 2 and node.input[2] and bias is None):
                raise WeightsError(f"{where}: the weight or bias is not a constant")
            state[f"{prefix}.weight"] = weight
            if bn is not None:
                state.update(_bn(fold, *bn, conv_bias=bias))
            elif bias is not None:
                state.update(_bias_bn(fold, bias))
            else:
                raise WeightsError(f"{where}: a convolution without its BatchNorm")
        elif op == "PRelu":
            if tensors[1] is None:
                raise WeightsError(f"{where}: the slope is not a constant")
            state[f"{prefix}.weight"] = tensors[1].reshape(-1)
        elif op == "BatchNormalization":
            state.update(_bn(prefix, tensors, attrs))
        else:  # Gemm: y = x W^T + b with transB=1 (torch's export); W [in, out] otherwise
            weight = tensors[1] if attrs.get("transB", 0) else np.asarray(tensors[1]).T
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = weight, tensors[2]
    out = {}
    for key, value in state.items():
        tensor = torch.from_numpy(np.array(value, dtype=np.float32))  # a writable copy
        if key in ours and tensor.shape != ours[key].shape:
            raise WeightsError(f"{path}: the tensor for {key} is {list(tensor.shape)}, the recognizer has "
                               f"{list(ours[key].shape)}")
        out[key] = tensor
    return out


def _shortcut_last(layers, slots):
    """Reorder each downsampling block's five layers so that its 1x1 shortcut convolution comes last."""
    out = list(layers)
    for i, (_, prefix, _) in enumerate(slots):
        if prefix.endswith(".bn1") and i + 4 < len(slots) and slots[i + 4][1].endswith("downsample.0"):
            group = out[i:i + 5]
            shortcut = [item for item in group if item[0] == "Conv" and item[2][1] is not None
                        and tuple(item[2][1].shape[2:]) == (1, 1)]
            if len(shortcut) == 1:
                out[i:i + 5] = [item for item in group if item is not shortcut[0]] + shortcut
    return out
