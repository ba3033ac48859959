"""The tracks file: per-frame face regions, for review and re-rendering without detection.

``--export-tracks FILE.json`` writes it; ``styleface render INPUT --tracks FILE.json`` reads it back,
edited or not. Format (version 1)::

    {
      "format": "styleface-tracks", "version": 1,
      "input": "clip.mp4", "width": 1280, "height": 720, "frame_count": 300, "rotation": 0,
      "frames": [
        {"frame": 12, "time": 0.48, "faces": [
            {"track": 3, "box": [x0, y0, x1, y1], "landmarks": [[x, y] x5] or null,
             "score": 0.91, "source": "detected" | "predicted" | "backfilled" | "manual",
             "identity": "3f2a9c01b7e4"  (only with --method styleface: which identity code replaced it)}]}
      ]
    }

Only frames with faces are listed. Boxes are in pixels of the stored (coded) frame, without the
safety margin (``--mask-scale`` applies when rendering). A reviewer adds a face by adding an entry
(``track`` may be -1, ``source`` "manual", ``score`` 1); removing one un-hides it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from styleface_cli.errors import InputError
from styleface_cli.records import FaceRegion, Frame, FrameFaces, RegionSource, VideoInfo
from styleface_cli.atomic import atomic_output

FORMAT = "styleface-tracks"
VERSION = 1


@dataclasses.dataclass
class TrackLog:
    """Collects the regions of every frame as the stream passes (a tap stage)."""

    info: VideoInfo
    frames: list[dict] = dataclasses.field(default_factory=list)

    def record(self, stream: Iterator[tuple[Frame, FrameFaces]]) -> Iterator[tuple[Frame, FrameFaces]]:
        for frame, faces in stream:
            if faces.regions:
                self.frames.append({
                    "frame": faces.frame_index,
                    "time": round(frame.time_s, 6),
                    "faces": [_region_to_json(r) for r in faces.regions],
                })
            yield frame, faces


def write_tracks(path: Path, log: TrackLog) -> None:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "input": str(log.info.path),
        "width": log.info.width,
        "height": log.info.height,
        "frame_count": log.info.frame_count,
        "rotation": log.info.rotation,
        "frames": log.frames,
    }
    with atomic_output(Path(path)) as temp:
        Path(temp).write_text(json.dumps(document, indent=1) + "\n")


@dataclasses.dataclass
class ListedTracks:
    """A tracks file read back: regions by frame index."""

    width: int
    height: int
    by_frame: dict[int, list[FaceRegion]]

    def faces(self, frame_index: int) -> FrameFaces:
        return FrameFaces(frame_index, list(self.by_frame.get(frame_index, [])))

    def check_matches(self, info: VideoInfo) -> None:
        if (info.width, info.height) != (self.width, self.height):
            raise InputError(f"the tracks file is for a {self.width}x{self.height} video, but "
                             f"{info.path} is {info.width}x{info.height}")


def read_tracks(path: Path) -> ListedTracks:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tracks file not found: {path}")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"tracks file {path} is not valid JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{path} is not a styleface tracks file (no \"format\": \"{FORMAT}\")")
    if document.get("version") != VERSION:
        raise InputError(f"tracks file {path} has version {document.get('version')}; this styleface reads {VERSION}")
    by_frame: dict[int, list[FaceRegion]] = {}
    try:
        for entry in document["frames"]:
            regions = by_frame.setdefault(int(entry["frame"]), [])
            regions.extend(_region_from_json(face) for face in entry["faces"])
        return ListedTracks(int(document["width"]), int(document["height"]), by_frame)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"tracks file {path} is malformed: {type(error).__name__}: {error}") from error


def _region_to_json(region: FaceRegion) -> dict:
    return {
        "track": int(region.track_id),
        "box": [round(float(v), 2) for v in region.box],
        "landmarks": None if region.landmarks is None else [[round(float(x), 2), round(float(y), 2)] for x, y in region.landmarks],
        "score": round(float(region.score), 4),
        "source": region.source.value,
        **({"identity": region.identity} if region.identity else {}),
    }


def _region_from_json(face: dict) -> FaceRegion:
    box = np.asarray(face["box"], np.float32)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {face['box']}")
    landmarks = face.get("landmarks")
    lm = None if landmarks is None else np.asarray(landmarks, np.float32).reshape(5, 2)
    return FaceRegion(
        track_id=int(face.get("track", -1)),
        box=box,
        landmarks=lm,
        score=float(face.get("score", 1.0)),
        source=RegionSource(face.get("source", RegionSource.MANUAL.value)),
        identity=face.get("identity"),
    )
