"""The pipeline: composition of the stages, nothing else.

    decode -> detect -> find scene cuts -> track (cover gaps, back-fill) -> hide faces -> encode

Every stage is a generator over typed records, so frames stream through and memory stays bounded by
the few frames that the tracker holds back for back-filling. Decoding and encoding run in their own
threads (PyAV and onnxruntime release the GIL while they work), so the detector never waits on I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from styleface_cli.config import AnonymizeConfig, ObfuscateConfig
from styleface_cli.face.detect import Detector, create_detector
from styleface_cli.face.obfuscate import obfuscate_frame
from styleface_cli.face.scenecut import SceneCutDetector
from styleface_cli.face.track import Tracker
from styleface_cli.records import Detection, FaceRegion, Frame, FrameFaces, RegionSource, VideoInfo
from styleface_cli.tracks_file import TrackLog, read_tracks, write_tracks
from styleface_cli.video.decode import open_video
from styleface_cli.video.encode import VideoWriter
from styleface_cli.video.images import is_image_path, read_image, write_image

Stream = Iterator[tuple[Frame, FrameFaces]]


@dataclasses.dataclass
class RunStats:
    """What one run did (the CLI turns it into the JSON report)."""

    frames: int = 0
    faces: int = 0  # face regions hidden, summed over frames
    tracks: int = 0  # distinct track ids
    sources: dict[str, int] = dataclasses.field(default_factory=dict)  # regions per RegionSource
    seconds: float = 0.0


OnFrame = Callable[[FrameFaces], None]


# --------------------------------------------------------------------------------------------------
# The two entry points


def anonymize(*, source: Path, output: Path, cfg: AnonymizeConfig, on_frame: OnFrame | None = None) -> RunStats:
    """Hide every face of a video or image ``source``, writing ``output`` atomically."""
    started = time.perf_counter()
    stats = RunStats()
    detector = create_detector(cfg.detect)
    if is_image_path(source):
        image, info = read_image(source)
        frame = Frame(index=0, pts=0, time_s=0.0, image=np.array(image))  # a private, writable copy
        faces = FrameFaces(0, [_region(d) for d in detector.detect_batch([image])[0]])
        log = TrackLog(info)
        for frame, faces in count(log.record(hide_faces(iter([(frame, faces)]), cfg.obfuscate)), stats, on_frame):
            write_image(output, frame.image)
    else:
        with open_video(source) as reader, VideoWriter(output, reader.info, cfg.encode, source) as writer, \
                contextlib.closing(decode(reader)) as frames:  # closing: the decode thread stops before the reader
            log = TrackLog(reader.info)
            detected = detect(frames, detector, upright_k=reader.info.rotation // 90, batch_size=detector.batch_size)
            with_cuts = find_scene_cuts(detected, SceneCutDetector(cfg.track.scene_cut_threshold))
            tracked = track(with_cuts, Tracker(cfg.track))
            hidden = hide_faces(tracked, cfg.obfuscate)
            encode(count(log.record(hidden), stats, on_frame), writer)
    if cfg.export_tracks is not None:
        write_tracks(cfg.export_tracks, log)
    stats.seconds = time.perf_counter() - started
    return stats


def render(*, source: Path, tracks: Path, output: Path, cfg: AnonymizeConfig, on_frame: OnFrame | None = None) -> RunStats:
    """Hide the faces listed in a tracks file (exported, maybe edited by a reviewer): no detection."""
    started = time.perf_counter()
    stats = RunStats()
    listed = read_tracks(tracks)
    if is_image_path(source):
        image, _ = read_image(source)
        stream = iter([(Frame(0, 0, 0.0, np.array(image)), listed.faces(0))])
        for frame, _faces in count(hide_faces(stream, cfg.obfuscate), stats, on_frame):
            write_image(output, frame.image)
    else:
        with open_video(source) as reader, VideoWriter(output, reader.info, cfg.encode, source) as writer, \
                contextlib.closing(decode(reader)) as frames:
            listed.check_matches(reader.info)
            stream = ((frame, listed.faces(frame.index)) for frame in frames)
            encode(count(hide_faces(stream, cfg.obfuscate), stats, on_frame), writer)
    stats.seconds = time.perf_counter() - started
    return stats


# --------------------------------------------------------------------------------------------------
# Stages


def decode(reader: Iterable[Frame], depth: int = 8) -> Iterator[Frame]:
    """Frames from ``reader``, decoded ahead in a thread (bounded queue: memory stays flat)."""
    return _threaded(iter(reader), depth)


def detect(frames: Iterator[Frame], detector: Detector, upright_k: int = 0, batch_size: int = 1) -> Iterator[tuple[Frame, list[Detection]]]:
    """Each frame with the faces the detector finds in it, ``batch_size`` frames per network call."""
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= batch_size:
            yield from zip(batch, detector.detect_batch([f.image for f in batch], upright_k))
            batch = []
    if batch:
        yield from zip(batch, detector.detect_batch([f.image for f in batch], upright_k))


def find_scene_cuts(stream: Iterator[tuple[Frame, list[Detection]]], is_cut: SceneCutDetector) -> Iterator[tuple[Frame, list[Detection], bool]]:
    """Flag the first frame of every new shot, so no track (and no mask) is dragged across a cut."""
    for frame, detections in stream:
        yield frame, detections, is_cut(frame.image)


def track(stream: Iterator[tuple[Frame, list[Detection], bool]], tracker: Tracker) -> Stream:
    """Frames with their final face regions; frames wait here until the tracker can back-fill them."""
    held: deque[Frame] = deque()
    for frame, detections, cut in stream:
        held.append(frame)
        for faces in tracker.push(frame.index, detections, scene_cut=cut):
            yield _pair(held, faces)
    for faces in tracker.flush():
        yield _pair(held, faces)


def hide_faces(stream: Stream, cfg: ObfuscateConfig) -> Stream:
    """Blur, pixelate or mask each region (the generative method plugs in here as another stage)."""
    for frame, faces in stream:
        obfuscate_frame(frame.image, faces.regions, cfg)
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


def encode(stream: Stream, writer: VideoWriter, depth: int = 8) -> None:
    """Write every frame; the encoder runs in its own thread behind a bounded queue."""
    _drain_threaded(stream, lambda item: writer.write(item[0]), depth)


# --------------------------------------------------------------------------------------------------
# Helpers


def _region(detection: Detection) -> FaceRegion:
    return FaceRegion(track_id=-1, box=detection.box, landmarks=detection.landmarks, score=detection.score,
                      source=RegionSource.DETECTED)


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

    thread = threading.Thread(target=produce, name="styleface-decode", daemon=True)
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
