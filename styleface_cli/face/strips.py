"""A detector's high-resolution stem run in horizontal strips: the same numbers, far less memory.

CenterFace (a MobileNetV2 backbone) spends most of its memory, and 40% of its time, in its first layers,
at 1/2 and 1/4 of the input size: one of them is 96 channels at half resolution, 17.7 MB for a 480x384
input, 28 MB for 640x480, and every detector call in flight holds its own. Those layers see only a few
pixels around each output (3x3 and 1x1 convolutions), so they can run on horizontal strips of the image,
each with a margin (``halo``) wide enough that its rows are exactly those of the whole-image run; the
rest of the network (``head``) then runs once on the assembled stem outputs. Measured here (two calls in
flight, one 640x480 call for three 480x384 ones, as the small-video schedule makes them): the detector's
onnxruntime memory 92 -> 51 MB, the same CPU time (the strips recompute their margins, but their
tensors stay in the CPU's cache). The outputs are bit for bit those of the whole graph (``tests/test_strips.py``
compares them, the whole-graph session being the reference twin).

``split_graph`` cuts a graph after its first layers by reading the geometry of every node (stride and
how far its receptive field reaches); a graph with anything it cannot reason about (an op other than
convolutions and element-wise ones, asymmetric padding) is not split, and runs whole.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Sequence

import numpy as np

PLAN_KEY = "styleface.strips"  # metadata entry of the stem model holding its ``StripPlan`` (JSON)
CUT_STRIDE = 8  # the stem ends after the first layer whose output is at 1/8 of the input size
# Input rows per strip (rounded to the plan's alignment). Each strip recomputes 2 * halo rows (32 for
# CenterFace), so thin strips cost CPU: measured here with two calls in flight, against the whole graph,
# 96-row strips took 9% less CPU at 640x352 (their tensors stay in the CPU's cache), 4% less at 1280x736 and
# 15% more at 1920x1088 (24-row strips: +3%, +25%, +50%).
STRIP_ROWS = 96

_UNARY = {"Relu", "Clip", "Sigmoid", "LeakyRelu", "BatchNormalization", "Identity", "HardSigmoid", "HardSwish"}
_BINARY = {"Add", "Mul", "Sub", "Div", "Sum", "Max", "Min"}


class NotSplittable(ValueError):
    """The graph has a layer whose geometry ``split_graph`` cannot follow; run it whole."""


@dataclasses.dataclass(frozen=True)
class StripPlan:
    """How the stem's outputs are assembled from strips.

    ``outputs``: the stem tensors the head reads, as ``(name, channels, stride)``. ``align``: input rows a
    strip starts and ends on (the largest stride, so every tensor's grid lines up). ``halo``: input rows
    added above and below each strip so its own rows do not depend on the strip's edges.
    """

    input_name: str
    outputs: tuple[tuple[str, int, int], ...]
    align: int
    halo: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StripPlan:
        data = json.loads(text)
        return cls(data["input_name"], tuple(tuple(o) for o in data["outputs"]), int(data["align"]), int(data["halo"]))


def split_graph(model, cut_stride: int = CUT_STRIDE):
    """``(stem, head)`` ONNX models from ``model`` (an ``onnx.ModelProto`` with one image input [B, C, H, W]).

    The stem is every node up to the first one whose output has ``cut_stride`` (plus the element-wise
    nodes right after it); its outputs are the tensors that later nodes read. Each tensor's geometry is
    followed from the input: its stride and its reach (how many input pixels beyond its own position a
    value depends on, in each direction). The plan (``StripPlan``) goes into the stem's metadata.
    Raises ``NotSplittable`` for a graph it cannot follow.
    """
    from onnx import helper

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1:
        raise NotSplittable("the graph has more than one input")
    image = inputs[0].name
    geometry: dict[str, tuple[int, int]] = {image: (1, 0)}  # tensor -> (stride, reach in input pixels)
    nodes = list(graph.node)
    end = None
    for index, node in enumerate(nodes):
        stride_reach = _geometry(node, geometry, constants)
        for output in node.output:
            geometry[output] = stride_reach
        if stride_reach[0] >= cut_stride:
            end = index + 1
            while end < len(nodes) and nodes[end].op_type in _UNARY and list(nodes[end].input[:1]) == [nodes[end - 1].output[0]]:
                for output in nodes[end].output:
                    geometry[output] = stride_reach
                end += 1
            break
    if end is None or end >= len(nodes):
        raise NotSplittable(f"no layer reaches stride {cut_stride} before the end of the graph")
    stem_nodes, head_nodes = nodes[:end], nodes[end:]
    produced = {out for node in stem_nodes for out in node.output}
    read_later = [name for node in head_nodes for name in node.input if name in produced]
    crossing = list(dict.fromkeys(read_later))
    if any(out.name in produced for out in graph.output) or image in {n for node in head_nodes for n in node.input}:
        raise NotSplittable("the head reads the image, or a stem tensor is a graph output")
    # Each stem layer's geometry for every tensor the head reads: its rows depend on the input rows
    # within `reach` of their position. Strips start on multiples of the largest stride, with a halo
    # of whole multiples of it covering the largest reach.
    align = max(geometry[name][0] for name in crossing)
    if any(align % geometry[name][0] for name in crossing):
        raise NotSplittable("stem output strides do not divide each other")
    halo = math.ceil(max(geometry[name][1] for name in crossing) / align) * align
    channels = _channels(model, crossing)
    plan = StripPlan(image, tuple((name, channels[name], geometry[name][0]) for name in crossing), align, halo)

    def submodel(node_list, graph_inputs, graph_outputs, name):
        used = {n for node in node_list for n in node.input}
        sub = helper.make_graph(node_list, name, graph_inputs, graph_outputs,
                                [init for init in graph.initializer if init.name in used])
        result = helper.make_model(sub, opset_imports=model.opset_import)
        result.ir_version = model.ir_version
        return result

    image_channels = inputs[0].type.tensor_type.shape.dim[1].dim_value or 3
    stem_in = [helper.make_tensor_value_info(image, 1, ["B", image_channels, "H", "W"])]
    between = [helper.make_tensor_value_info(n, 1, ["B", channels[n], f"H{s}", f"W{s}"]) for n, _, s in plan.outputs]
    stem = submodel(stem_nodes, stem_in, between, "stem")  # the stem's outputs are the head's inputs
    helper.set_model_props(stem, {PLAN_KEY: plan.to_json()})
    head = submodel(head_nodes, between, list(graph.output), "head")
    return stem, head


def _geometry(node, geometry: dict[str, tuple[int, int]], constants: dict) -> tuple[int, int]:
    """(stride, reach) of ``node``'s outputs from its inputs'; ``NotSplittable`` where it cannot tell."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    tensors = [name for name in node.input if name and name not in constants]
    if not tensors or any(name not in geometry for name in tensors):
        raise NotSplittable(f"{node.op_type} {node.name!r} reads a tensor of unknown geometry")
    if node.op_type == "Conv":
        kernel = list(attrs.get("kernel_shape", []))
        strides = list(attrs.get("strides", [1, 1]))
        dilations = list(attrs.get("dilations", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(kernel) != 2:
            raise NotSplittable(f"Conv {node.name!r}: only explicit 2-D padding is followed")
        if strides[0] != strides[1] or pads[0] != pads[2] or pads[1] != pads[3]:
            raise NotSplittable(f"Conv {node.name!r}: unequal strides or asymmetric padding")
        if any(2 * pads[i] != (kernel[i] - 1) * dilations[i] for i in range(2)):
            raise NotSplittable(f"Conv {node.name!r}: padding that does not centre the kernel")
        stride, reach = geometry[tensors[0]]
        # An output at position p sees the inputs within pads * stride pixels of p * stride.
        return stride * strides[0], reach + max(pads[0], pads[1]) * stride
    if node.op_type in _UNARY:
        return geometry[tensors[0]]
    if node.op_type in _BINARY:
        strides = {geometry[name][0] for name in tensors}
        if len(strides) != 1:
            raise NotSplittable(f"{node.op_type} {node.name!r} mixes strides")
        for name in node.input:
            if name in constants and len(constants[name].dims) >= 2 and any(d > 1 for d in constants[name].dims[-2:]):
                raise NotSplittable(f"{node.op_type} {node.name!r} adds a constant with a spatial extent")
        return strides.pop(), max(geometry[name][1] for name in tensors)
    raise NotSplittable(f"{node.op_type} {node.name!r} is not followed")


def _channels(model, names: Sequence[str]) -> dict[str, int]:
    """Channel count of each named tensor, from ONNX shape inference on a nominal input size."""
    import onnx
    from onnx import shape_inference

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    dims = probe.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, dims[1].dim_value or 3, 256, 256)):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(probe)
    shapes = {v.name: v.type.tensor_type.shape.dim for v in inferred.graph.value_info}
    channels = {}
    for name in names:
        if name not in shapes or len(shapes[name]) != 4 or not shapes[name][1].dim_value:
            raise NotSplittable(f"the channel count of {name!r} is unknown")
        channels[name] = shapes[name][1].dim_value
    return channels


class StripedSession:
    """``stem`` run in strips, then ``head`` on the assembled outputs, behind an onnxruntime session's
    ``run``/``get_inputs``/``get_outputs``: it returns what the whole graph's session would (that session is
    its reference twin, ``tests/test_strips.py``)."""

    def __init__(self, stem, head, strip_rows: int = STRIP_ROWS) -> None:
        self.stem, self.head = stem, head
        self.plan = StripPlan.from_json(stem.get_modelmeta().custom_metadata_map[PLAN_KEY])
        self.strip_rows = max(self.plan.align, strip_rows // self.plan.align * self.plan.align)
        self.stem_names = [name for name, _, _ in self.plan.outputs]

    def get_inputs(self):
        return self.stem.get_inputs()

    def get_outputs(self):
        return self.head.get_outputs()

    def get_providers(self) -> list[str]:
        return self.stem.get_providers()

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``feeds``: {input name: [B, C, H, W] float32}. H and W are cut into strips when they are
        multiples of ``plan.align`` (the detector pads to 32); other sizes run the stem once, whole."""
        plan = self.plan
        blob = feeds[plan.input_name]
        batch, _, height, width = blob.shape
        if height % plan.align or width % plan.align:
            parts = self.stem.run(self.stem_names, {plan.input_name: blob})
            return self.head.run(output_names, dict(zip(self.stem_names, parts)))
        assembled = {name: np.empty((batch, channels, height // stride, width // stride), np.float32)
                     for name, channels, stride in plan.outputs}
        for top in range(0, height, self.strip_rows):
            bottom = min(top + self.strip_rows, height)
            low, high = max(top - plan.halo, 0), min(bottom + plan.halo, height)
            strip = np.ascontiguousarray(blob[:, :, low:high])  # [B, C, rows + halos, W]
            parts = self.stem.run(self.stem_names, {plan.input_name: strip})
            for (name, _, stride), part in zip(plan.outputs, parts):
                assembled[name][:, :, top // stride : bottom // stride] = part[:, :, (top - low) // stride : (bottom - low) // stride]
        return self.head.run(output_names, assembled)
