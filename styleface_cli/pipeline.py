"""The pipeline: composition of the stages, nothing else.

    decode -> detect -> find scene cuts -> track (cover gaps, back-fill) -> choose faces
           -> hide them (blur / pixelate / mask, or align + identity + generate + paste back) -> encode

Every stage is a generator over typed records, so frames stream through and memory stays bounded by
the few frames that the tracker and a generator batch hold. Decoding, detection+tracking and encoding
each run in their own thread, and the detector keeps a call in flight per CPU core (PyAV, onnxruntime,
OpenCV and torch release the GIL while they work), so hiding (the generator above all) never waits on
I/O and vice versa. Frames carry the decoder's YUV planes until a stage asks for RGB (``Frame``), so the
obfuscation methods never convert a whole frame. Videos and images take the same path; an image is a
one-frame stream.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from styleface_cli.config import AnonymizeConfig
from styleface_cli.face.detect import DetectionPlan, Detector, plan_detection
from styleface_cli.face.scenecut import SAMPLE_SIZE, SceneCutDetector
from styleface_cli.face.track import Tracker
from styleface_cli.records import Detection, FaceRegion, Frame, FrameFaces
from styleface_cli.tools import Tools
from styleface_cli.tracks_file import TrackLog, read_tracks, write_tracks
from styleface_cli.video.media import media_writer, open_media

Stream = Iterator[tuple[Frame, FrameFaces]]
Choose = Callable[[Frame, list[FaceRegion]], list[FaceRegion]]


class Writer(Protocol):
    def write(self, frame: Frame) -> None: ...


@dataclasses.dataclass
class RunStats:
    """What one run did (the CLI turns it into the JSON report)."""

    frames: int = 0
    faces: int = 0  # face regions hidden or replaced, summed over frames
    tracks: int = 0  # distinct track ids
    sources: dict[str, int] = dataclasses.field(default_factory=dict)  # regions per RegionSource
    seconds: float = 0.0
    generator_batches: list[int] = dataclasses.field(default_factory=list)  # crops per generator call


OnFrame = Callable[[FrameFaces], None]


# --------------------------------------------------------------------------------------------------
# The two entry points


def run(*, source: Path, output: Path, cfg: AnonymizeConfig, tools: Tools, on_frame: OnFrame | None = None) -> RunStats:
    """Hide (anonymize) or replace (swap) the chosen faces of a video or image, writing ``output`` atomically."""
    started = time.perf_counter()
    stats = RunStats()
    hide = tools.hider()  # fresh per input: identities and geometry are per video
    with open_media(source, cfg.read.max_pixels) as media, media_writer(output, media, cfg.encode, source) as writer, \
            contextlib.ExitStack() as threads:  # closed first: stage threads stop before reader and writer
        log = TrackLog(media.info) if cfg.export_tracks is not None else None  # only kept when asked for
        frames = threads.enter_context(contextlib.closing(decode(media)))
        plan = plan_detection(media.info.width, media.info.height, cfg.detect)
        detected = threads.enter_context(contextlib.closing(ahead(detect(
            frames, tools.detector, plan, upright_k=media.info.rotation // 90, batch_size=tools.detector.batch_size,
            workers=tools.detector.workers), depth=16)))  # detection never waits on the tracker
        with_cuts = find_scene_cuts(detected, SceneCutDetector(cfg.track.scene_cut_threshold))
        tracked = threads.enter_context(contextlib.closing(ahead(track(with_cuts, Tracker(cfg.track)))))
        chosen = choose_faces(tracked, tools.chooser())
        hidden = hide(chosen)
        logged = log.record(hidden) if log is not None else hidden
        encode(count(logged, stats, on_frame), writer)
    if log is not None:
        write_tracks(cfg.export_tracks, log)
    stats.generator_batches = list(getattr(hide, "batch_sizes", []))
    stats.seconds = time.perf_counter() - started
    return stats


def render(*, source: Path, tracks: Path, output: Path, cfg: AnonymizeConfig, tools: Tools, on_frame: OnFrame | None = None) -> RunStats:
    """Hide the faces listed in a tracks file (exported, maybe edited by a reviewer): no detection."""
    started = time.perf_counter()
    stats = RunStats()
    listed = read_tracks(tracks)
    hide = tools.hider()
    with open_media(source, cfg.read.max_pixels) as media, media_writer(output, media, cfg.encode, source) as writer, \
            contextlib.ExitStack() as threads:
        listed.check_matches(media.info)
        frames = threads.enter_context(contextlib.closing(decode(media)))
        stream = ((frame, listed.faces(frame.index)) for frame in frames)
        encode(count(hide(stream), stats, on_frame), writer)
    stats.generator_batches = list(getattr(hide, "batch_sizes", []))
    stats.seconds = time.perf_counter() - started
    return stats


# --------------------------------------------------------------------------------------------------
# Stages


def decode(reader: Iterable[Frame], depth: int = 4) -> Iterator[Frame]:
    """Frames from ``reader``, decoded ahead in a thread (bounded queue: memory stays flat)."""
    return _threaded(iter(reader), depth)


def ahead(stream: Iterator, depth: int = 4) -> Iterator:
    """Run the stages behind ``stream`` in their own thread, ``depth`` items ahead of the consumer."""
    return _threaded(stream, depth)


def detect(frames: Iterator[Frame], detector: Detector, plan: DetectionPlan, upright_k: int = 0, batch_size: int = 1,
           workers: int = 1) -> Iterator[tuple[Frame, list[Detection]]]:
    """Each frame with the faces the detector finds in it at the size ``plan`` gives it, in order:
    ``batch_size`` frames (of one detection size) per network call, ``workers`` calls in flight at once
    (onnxruntime runs concurrent calls on their callers' threads)."""
    with concurrent.futures.ThreadPoolExecutor(max(workers, 1), thread_name_prefix="styleface-detect") as pool:
        pending: deque[tuple[list[Frame], list[tuple[list[Frame], concurrent.futures.Future]]]] = deque()
        for window in _detection_windows(frames, batch_size, plan):
            calls = [(batch, pool.submit(detector.detect_batch, batch, upright_k, plan.size_for(batch[0].index)))
                     for batch in _size_batches(window, batch_size, plan)]
            pending.append((window, calls))
            if len(pending) > workers:
                yield from _in_order(*pending.popleft())
        while pending:
            yield from _in_order(*pending.popleft())


def find_scene_cuts(stream: Iterator[tuple[Frame, list[Detection]]], is_cut: SceneCutDetector) -> Iterator[tuple[Frame, list[Detection], bool]]:
    """Flag the first frame of every new shot, so no track (and no mask) is dragged across a cut."""
    for frame, detections in stream:
        yield frame, detections, is_cut(frame.scaled(*SAMPLE_SIZE, nearest=True))


def track(stream: Iterator[tuple[Frame, list[Detection], bool]], tracker: Tracker) -> Stream:
    """Frames with their final face regions; frames wait here until the tracker can back-fill them."""
    held: deque[Frame] = deque()
    for frame, detections, cut in stream:
        held.append(frame)
        for faces in tracker.push(frame.index, detections, scene_cut=cut):
            yield _pair(held, faces)
    for faces in tracker.flush():
        yield _pair(held, faces)


def choose_faces(stream: Stream, choose: Choose | None) -> Stream:
    """Keep only the regions to process (swap targets; all but --keep-face); ``None`` keeps all."""
    for frame, faces in stream:
        if choose is not None:
            faces.regions = choose(frame, faces.regions)
        yield frame, faces


def count(stream: Stream, stats: RunStats, on_frame: OnFrame | None) -> Stream:
    """Tally frames, regions and tracks as they pass; tell ``on_frame`` (the progress bar)."""
    track_ids: set[int] = set()
    for frame, faces in stream:
        stats.frames += 1
        stats.faces += len(faces.regions)
        for region in faces.regions:
            stats.sources[region.source.value] = stats.sources.get(region.source.value, 0) + 1
            if region.track_id >= 0:
                track_ids.add(region.track_id)
        stats.tracks = len(track_ids)
        if on_frame is not None:
            on_frame(faces)
        yield frame, faces


def encode(stream: Stream, writer: Writer, depth: int = 4) -> None:
    """Write every frame; the encoder runs in its own thread behind a bounded queue."""
    _drain_threaded(stream, lambda item: writer.write(item[0]), depth)


# --------------------------------------------------------------------------------------------------
# Helpers


def _batched(items: Iterator, size: int, key: Callable | None = None) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items; with ``key``, all items of a list have one key."""
    batch: list = []
    for item in items:
        if batch and key is not None and key(item) != key(batch[0]):
            yield batch
            batch = []
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _detection_windows(frames: Iterator[Frame], batch_size: int, plan: DetectionPlan) -> Iterator[list[Frame]]:
    """Runs of consecutive frames sent to the detector together. Usually one batch (one size). When calls
    take several frames (a GPU) and the plan alternates sizes (small videos), ``batch_size x stride``
    frames, which ``_size_batches`` sorts into full batches of each size: taken in frame order, the
    enlarged frames would cut every batch short (1 enlarged frame, then 3 native ones, at a stride of 4)."""
    if batch_size > 1 and plan.enlarged and plan.stride > 1:
        return _batched(frames, batch_size * plan.stride)
    return _batched(frames, batch_size, key=lambda frame: plan.size_for(frame.index))


def _size_batches(window: list[Frame], batch_size: int, plan: DetectionPlan) -> list[list[Frame]]:
    """``window``'s frames as batches of up to ``batch_size`` frames of one detection size each."""
    by_size: dict[int, list[Frame]] = {}
    for frame in window:
        by_size.setdefault(plan.size_for(frame.index), []).append(frame)
    return [batch for group in by_size.values() for batch in _batched(iter(group), batch_size)]


def _in_order(window: list[Frame], calls: list[tuple[list[Frame], concurrent.futures.Future]]) -> Iterator[tuple[Frame, list[Detection]]]:
    """The frames of ``window`` in their own order, each with its detections from whichever call had it."""
    found: dict[int, list[Detection]] = {}
    for batch, future in calls:
        for frame, detections in zip(batch, future.result()):
            found[id(frame)] = detections
    for frame in window:
        yield frame, found[id(frame)]


def _pair(held: deque[Frame], faces: FrameFaces) -> tuple[Frame, FrameFaces]:
    frame = held.popleft()
    assert frame.index == faces.frame_index, (frame.index, faces.frame_index)
    return frame, faces


_DONE = object()


def _threaded(items: Iterator, depth: int) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` ahead; re-raise its error in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        """Put ``item`` unless the consumer has gone; never blocks for good."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            offer(error)

    thread = threading.Thread(target=produce, name="styleface-stage", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _drain_threaded(stream: Iterator, consume: Callable, depth: int) -> None:
    """Feed ``stream`` to ``consume`` running in a background thread; errors from either side propagate."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []

    def work() -> None:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if failure:
                continue  # keep draining so the producer never blocks
            try:
                consume(item)
            except BaseException as error:
                failure.append(error)

    thread = threading.Thread(target=work, name="styleface-encode", daemon=True)
    thread.start()
    try:
        for item in stream:
            if failure:
                break
            buffer.put(item)
    finally:
        buffer.put(_DONE)
        thread.join()
    if failure:
        raise failure[0]
