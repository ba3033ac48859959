"""Detection: geometry helpers, the bundled CenterFace on a real photo, rotation passes, SCRFD decoding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from styleface_cli.config import DetectConfig
from styleface_cli.errors import ConfigError, WeightsError
from styleface_cli.face.detect import (
    ScrfdBackend,
    create_detector,
    detection_size,
    pad_to,
    nms,
    rotate_points_back,
)


def insightface_photo() -> np.ndarray:
    """The 6-face group photo shipped inside the insightface wheel, RGB."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_detection_size_scales_longest_side_and_pads_to_stride():
    # 1080p fills whole strides at 2% less than 1/3 (626x352 in 640x352) instead of padding 640x360 to 640x384
    assert detection_size(1920, 1080, 640) == (pytest.approx(352 / 1080), 640, 352)
    assert detection_size(1000, 1000, 640) == (pytest.approx(0.64), 640, 640)  # no padding to save
    scale, w, h = detection_size(65, 49, 0)
    assert (scale, w, h) == (1.0, 96, 64)
    assert detection_size(480, 270, 640) == (pytest.approx(4 / 3), 640, 384)  # small frames grow, as they are
    assert detection_size(640, 360, 640) == (1.0, 640, 384)  # never resampled just to save padding
    assert detection_size(100, 50, 640)[0] == 2.0  # at most twice


def test_pad_to_pads_without_stretching():
    image = np.full((49, 65, 3), 200, np.uint8)
    out = pad_to(image, 96, 64)
    assert out.shape == (64, 96, 3)
    assert (out[:49, :65] == 200).all() and (out[49:] == 0).all() and (out[:, 65:] == 0).all()


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.3], np.float32))
    assert keep.tolist() == [1, 2]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate_points_back_inverts_rot90(k):
    height, width = 7, 11
    image = np.zeros((height, width), np.uint8)
    image[2, 9] = 1  # a marked pixel at x=9, y=2
    turned = np.rot90(image, k)
    ys, xs = np.nonzero(turned)
    # pixel centres: (x + 0.5, y + 0.5)
    back = rotate_points_back(np.array([[xs[0] + 0.5, ys[0] + 0.5]], np.float32), k, width, height)
    assert np.allclose(back, [[9.5, 2.5]])


def test_centerface_finds_the_six_faces_of_the_insightface_photo():
    image = insightface_photo()
    detections = create_detector(DetectConfig()).detect(image)
    assert len(detections) == 6
    for det in detections:
        x0, y0, x1, y1 = det.box
        assert 60 < x1 - x0 < 200 and 60 < y1 - y0 < 200  # faces in t1.jpg are ~100 px
        assert det.landmarks.shape == (5, 2)
        # eyes above the mouth, inside the box
        assert det.landmarks[:2, 1].max() < det.landmarks[3:, 1].min()
        assert (det.landmarks[:, 0] >= x0 - 2).all() and (det.landmarks[:, 0] <= x1 + 2).all()


def test_batched_detection_equals_one_by_one():
    image = insightface_photo()
    detector = create_detector(DetectConfig(max_size=640))
    single = detector.detect(image)
    batch = detector.detect_batch([image, image[:, ::-1].copy()])
    assert len(batch) == 2 and len(batch[0]) == len(single) == len(batch[1])
    assert np.allclose(sorted(d.score for d in batch[0]), sorted(d.score for d in single), atol=1e-4)


def test_rotation_passes_find_sideways_faces_in_original_coordinates():
    upright = insightface_photo()
    sideways = np.ascontiguousarray(np.rot90(upright, 1))  # people lying on their side
    plain = create_detector(DetectConfig()).detect(sideways)
    rotated = create_detector(DetectConfig(rotations=(90, -90))).detect(sideways)
    # the upright pass is surer of each face than the detector is of the same faces lying sideways
    assert sum(sorted(d.score for d in rotated)[-6:]) > sum(sorted(d.score for d in plain)[-6:])
    # each face of the upright photo is found where the same turn puts it
    reference = create_detector(DetectConfig()).detect(upright)
    assert len(reference) == 6
    height, width = upright.shape[:2]
    centres = np.array([(d.box[:2] + d.box[2:]) / 2 for d in rotated])
    for r in reference:
        # rot90 ccw maps (x, y) -> (y, W - x)
        expected = np.array([(r.box[1] + r.box[3]) / 2, width - (r.box[0] + r.box[2]) / 2])
        assert np.hypot(*(centres - expected).T).min() < 15


def test_upright_turn_from_video_rotation_is_applied():
    upright = insightface_photo()
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # stored turned; the player turns it back by +1
    assert len(create_detector(DetectConfig()).detect(stored, upright_k=1)) == 6


def test_missing_and_bad_detector_files_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        create_detector(DetectConfig(backend="scrfd", model_path=tmp_path / "nope.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(WeightsError):
        create_detector(DetectConfig(backend="scrfd", model_path=junk))
    with pytest.raises(ConfigError, match="detector-model"):
        create_detector(DetectConfig(backend="scrfd"))
    with pytest.raises(ConfigError):
        create_detector(DetectConfig(backend="yolo"))


# --------------------------------------------------------------------------------------------------
# SCRFD: a synthetic ONNX file with the real model's input and nine outputs


def make_scrfd_like_onnx(path: Path, batched: bool = True) -> None:
    """An SCRFD-shaped model: input ``input.1`` [B,3,H,W]; per stride 8/16/32 a score [B, h*w*2, 1],
    box distances [B, h*w*2, 4] and landmark offsets [B, h*w*2, 10]. The score is high where the
    average-pooled image is bright; distances are 1 stride on every side; landmarks sit on the anchor."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, outputs = [], [], []
    groups = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        pooled = f"pool{stride}"
        nodes.append(helper.make_node("AveragePool", ["input.1"], [pooled], kernel_shape=[stride, stride], strides=[stride, stride]))
        for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
            w = np.zeros((2 * channels, 3, 1, 1), np.float32)
            b = np.zeros((2 * channels,), np.float32)
            if kind == "score":
                w[:] = 40.0 / 3  # input is (x - 127.5) / 128: white ~ +1, black ~ -1
                b[:] = -20.0
            elif kind == "bbox":
                b[:] = 1.0
            inits += [helper.make_tensor(f"w_{kind}{stride}", TensorProto.FLOAT, w.shape, w.ravel()),
                      helper.make_tensor(f"b_{kind}{stride}", TensorProto.FLOAT, b.shape, b)]
            conv, out = f"conv_{kind}{stride}", f"{kind}_{stride}"
            nodes.append(helper.make_node("Conv", [pooled, f"w_{kind}{stride}", f"b_{kind}{stride}"], [conv]))
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [conv + "s"]))
                conv += "s"
            nodes.append(helper.make_node("Transpose", [conv], [conv + "t"], perm=[0, 2, 3, 1]))
            shape = np.array([0, -1, channels] if batched else [-1, channels], np.int64)
            inits.append(helper.make_tensor(f"shape_{kind}{stride}", TensorProto.INT64, shape.shape, shape))
            nodes.append(helper.make_node("Reshape", [conv + "t", f"shape_{kind}{stride}"], [out]))
            dims = ["B", "N", channels] if batched else ["N", channels]
            groups[kind].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, dims))
    outputs = groups["score"] + groups["bbox"] + groups["kps"]
    graph = helper.make_graph(nodes, "scrfd_like",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1 if not batched else "B", 3, "H", "W"])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("batched", [True, False])
def test_scrfd_backend_decodes_boxes_and_landmarks(tmp_path, batched):
    path = tmp_path / "scrfd_like.onnx"
    make_scrfd_like_onnx(path, batched=batched)
    backend = ScrfdBackend(path)
    assert backend.levels == 3 and backend.num_anchors == 2 and backend.has_landmarks
    image = np.zeros((128, 160, 3), np.uint8)
    image[64:96, 96:128] = 255  # one bright 32x32 cell of the stride-32 grid: row 2, column 3
    detector = create_detector(DetectConfig(backend="scrfd", model_path=path, threshold=0.5))
    detections = detector.detect(image)
    assert detections, "the bright patch must be detected"
    best = max(detections, key=lambda d: d.score)
    centre = (best.box[:2] + best.box[2:]) / 2
    assert best.landmarks.shape == (5, 2)
    # anchors sit on the top-left corner of their cell (insightface convention): the stride-32 anchor of
    # the patch is at (96, 64); the stride-8 anchors inside the patch span 96..120 x 64..88
    assert 90 <= centre[0] <= 122 and 58 <= centre[1] <= 90
    assert np.allclose(best.landmarks, centre, atol=1e-3)
    assert all(d.box[0] >= 60 and d.box[1] >= 30 for d in detections)
    assert detector.detect_batch([image, np.zeros_like(image)])[1] == []


def test_scrfd_via_cli_option_needs_a_real_file(tmp_path):
    from typer.testing import CliRunner

    from styleface_cli.cli.app import app

    result = CliRunner().invoke(app, ["anonymize", str(tmp_path / "x.jpg"), "--detector", "scrfd"])
    assert result.exit_code != 0
