"""The detector's stem run in strips (``face/strips.py``) against its reference twin, the whole graph:
the same outputs bit for bit on CenterFace and on small graphs built here, the same faces on a real photo,
and graphs whose geometry cannot be followed are left whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from styleface_cli.config import DetectConfig
from styleface_cli.face import detect, strips
from styleface_cli.face.strips import NotSplittable, StripedSession, StripPlan, split_graph
from tests.test_detect import insightface_photo


def _session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def centerface():
    model, input_name = detect.centerface_graph(detect.centerface_model_path())
    stem, head = split_graph(model)
    return _session(model), _session(stem), _session(head), input_name


def _random_images(shape, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 3, 384, 480), (1, 3, 480, 640), (2, 3, 352, 640), (1, 3, 64, 96), (1, 3, 32, 32)])
@pytest.mark.parametrize("strip_rows", [1, strips.STRIP_ROWS, 10**9])  # one aligned step per strip, the default, whole
def test_centerface_in_strips_equals_the_whole_graph(centerface, shape, strip_rows):
    whole, stem, head, input_name = centerface
    images = _random_images(shape)
    expected = whole.run(None, {input_name: images})
    got = StripedSession(stem, head, strip_rows).run(None, {input_name: images})
    assert len(got) == len(expected) == 4
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # the same arithmetic on the same numbers: bit for bit


def test_centerface_plan_reads_the_backbone(centerface):
    _, stem, head, input_name = centerface
    plan = StripedSession(stem, head).plan
    # the head reads the 1/4 feature (24 channels, the FPN's skip) and the 1/8 one (144 channels)
    assert sorted((c, s) for _, c, s in plan.outputs) == [(24, 4), (144, 8)]
    assert plan.input_name == input_name and plan.align == 8
    # the deepest stem output sees 13 input pixels either way (3x3 convs at strides 1, 2, 4), rounded up to 16
    assert plan.halo == 16


def test_strips_without_their_halo_would_differ(centerface):
    """The test above can fail: with no margin the strips' edges show in the outputs."""
    whole, stem, head, input_name = centerface
    striped = StripedSession(stem, head, 64)
    striped.plan = dataclasses.replace(striped.plan, halo=0)
    images = _random_images((1, 3, 384, 480), seed=3)
    expected = whole.run(None, {input_name: images})[0]
    assert not np.array_equal(expected, striped.run(None, {input_name: images})[0])


def test_detector_finds_the_same_faces_in_strips_as_whole(tmp_path, monkeypatch):
    monkeypatch.setenv(detect.CACHE_ENV_VAR, str(tmp_path))
    striped = detect.create_detector(DetectConfig())
    assert isinstance(striped.backend.session, StripedSession)
    monkeypatch.setattr(detect, "_centerface_session",
                        lambda path, threads: detect._cached_session(path, "centerface", lambda p: detect.centerface_graph(p)[0], threads))
    whole = detect.create_detector(DetectConfig())
    assert not isinstance(whole.backend.session, StripedSession)
    photo = insightface_photo()
    faces = [(d.box.tolist(), d.score) for d in striped.detect(photo)]
    assert len(faces) >= 5
    assert faces == [(d.box.tolist(), d.score) for d in whole.detect(photo)]


# --------------------------------------------------------------------------------------------------
# Small graphs built here


def _conv(name: str, src: str, dst: str, cin: int, cout: int, k: int, stride: int, pads: list[int] | None = None,
          group: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(cout, cin // group, k, k)).astype(np.float32) * 0.3, f"{name}.w")
    bias = numpy_helper.from_array(rng.normal(size=cout).astype(np.float32) * 0.1, f"{name}.b")
    pad = (k - 1) // 2
    node = helper.make_node("Conv", [src, weight.name, bias.name], [dst], name=name, kernel_shape=[k, k],
                            strides=[stride, stride], pads=pads or [pad] * 4, group=group)
    return node, [weight, bias]


def _model(nodes_and_weights, outputs: list[tuple[str, int]], input_channels: int = 3) -> onnx.ModelProto:
    nodes = [n for n, _ in nodes_and_weights]
    weights = [w for _, ws in nodes_and_weights for w in ws]
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", input_channels, "H", "W"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", c, None, None]) for name, c in outputs],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _backbone() -> onnx.ModelProto:
    """A tiny MobileNet-like net: stride 2, a 3x3 depthwise layer and a residual add, stride 4, stride 8
    with a 5x5 convolution; a 'head' reads the 1/4 and the 1/8 features."""
    relu = lambda src, dst: (helper.make_node("Relu", [src], [dst]), [])  # noqa: E731
    layers = [
        _conv("c1", "image", "a1", 3, 8, 3, 2, seed=1), relu("a1", "r1"),
        _conv("dw", "r1", "a2", 8, 8, 3, 1, group=8, seed=2), relu("a2", "r2"),
        (helper.make_node("Add", ["r1", "r2"], ["s2"]), []),
        _conv("c3", "s2", "a3", 8, 12, 3, 2, seed=3), relu("a3", "r3"),
        _conv("c4", "r3", "a4", 12, 16, 5, 2, seed=4), relu("a4", "r4"),
        _conv("c5", "r4", "deep", 16, 16, 3, 2, seed=5),
        _conv("h3", "r3", "out", 12, 4, 3, 1, seed=6),
    ]
    return _model(layers, [("out", 4), ("deep", 16)])


@pytest.mark.parametrize("strip_rows", [1, 16, 10**9])
def test_a_small_backbone_in_strips_equals_the_whole_graph(strip_rows):
    model = _backbone()
    stem, head = split_graph(model)
    plan = StripPlan.from_json({p.key: p.value for p in stem.metadata_props}[strips.PLAN_KEY])
    # r3 (stride 4) and r4 (the first at stride 8) cross the cut
    assert sorted((name, s) for name, _, s in plan.outputs) == [("r3", 4), ("r4", 8)] and plan.align == 8
    # r4 sees 13 input pixels either way: c1 (3x3 on stride 1) 1, dw (3x3 on stride 2) +2, c3 (3x3 on
    # stride 2) +2, c4 (5x5 on stride 4) +8; the halo is that in whole 8-pixel steps
    assert plan.halo == 16
    striped = StripedSession(_session(stem), _session(head), strip_rows)
    whole = _session(model)
    for shape in [(1, 3, 64, 64), (2, 3, 96, 40), (1, 3, 16, 16)]:
        images = _random_images(shape, seed=shape[2])
        for got, expected in zip(striped.run(None, {"image": images}), whole.run(None, {"image": images})):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_sizes_off_the_alignment_run_the_stem_whole():
    model = _backbone()
    striped = StripedSession(*(_session(m) for m in split_graph(model)), 1)
    images = _random_images((1, 3, 68, 64))  # 68 rows: not a whole number of 8-pixel steps
    for got, expected in zip(striped.run(None, {"image": images}), _session(model).run(None, {"image": images})):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layer, reason", [
    ((helper.make_node("MaxPool", ["r3"], ["p3"], kernel_shape=[2, 2]), []), "MaxPool"),
    (_conv("odd", "r3", "p3", 12, 12, 3, 1, pads=[0, 0, 2, 2]), "asymmetric"),
    (_conv("wide", "r3", "p3", 12, 12, 3, 1, pads=[2, 2, 2, 2]), "centre"),
])
def test_layers_whose_geometry_is_unknown_leave_the_graph_whole(layer, reason):
    relu = (helper.make_node("Relu", ["p3"], ["q3"]), [])
    nodes = [_conv("c1", "image", "a1", 3, 8, 3, 2), (helper.make_node("Relu", ["a1"], ["r3pre"]), []),
             _conv("c2", "r3pre", "r3", 8, 12, 3, 1), layer, relu, _conv("c4", "q3", "out", 12, 4, 3, 4)]
    with pytest.raises(NotSplittable, match=reason):
        split_graph(_model(nodes, [("out", 4)]))
