"""The typed records that flow between the pipeline's stages.

decode -> ``Frame`` -> detect -> ``Detection`` -> track -> ``FaceRegion`` (grouped per frame in
``FrameFaces``) -> obfuscate / generate -> encode.

Conventions used everywhere:
- images are ``np.ndarray`` of shape ``[H, W, 3]``, dtype ``uint8``, RGB, in the *stored* (coded)
  orientation of the video; ``VideoInfo.rotation`` says how a player turns them for display;
- boxes are ``np.ndarray`` of shape ``[4]``, float32, ``(x0, y0, x1, y1)`` in pixels of that image;
- landmarks are ``np.ndarray`` of shape ``[5, 2]``, float32, ``(x, y)`` in pixels, in the order
  left eye, right eye, nose tip, left mouth corner, right mouth corner (as seen in the image).
"""

from __future__ import annotations

import dataclasses
import enum
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about an input, read once when it is opened."""

    path: Path
    width: int  # coded width in pixels (may be odd)
    height: int  # coded height in pixels (may be odd)
    frame_count: int  # frames in the stream as far as the container says (0 = unknown)
    average_fps: Fraction  # average frame rate (VFR streams keep their own timestamps anyway)
    time_base: Fraction  # of the video stream
    duration_s: float  # of the video stream, 0.0 when unknown
    rotation: int  # display rotation in degrees, counter-clockwise, one of 0, 90, 180, 270
    codec: str  # input video codec name, e.g. "h264"
    pix_fmt: str  # input pixel format, e.g. "yuv420p"
    audio_streams: int  # how many audio streams the input has
    is_image: bool = False  # a still image (jpg/png/webp), not a video
    # Colour tags of the video stream, as FFmpeg's enums (the writer keeps them on its output):
    color_range: int = 0  # AVColorRange: 0 unspecified, 1 limited ("tv"), 2 full ("pc")
    color_primaries: int = 2  # AVColorPrimaries: 1 BT.709, 2 unspecified, 6 SMPTE 170M, 9 BT.2020, ...
    color_trc: int = 2  # AVColorTransferCharacteristic: 1 BT.709, 2 unspecified, 16 PQ, 18 HLG, ...
    colorspace: int = 2  # AVColorSpace (the YUV matrix): 1 BT.709, 2 unspecified, 6 SMPTE 170M, ...


@dataclasses.dataclass
class Frame:
    """One decoded frame, in decode order, with its own timestamp (VFR is kept as it is)."""

    index: int  # 0-based position in the stream
    pts: int | None  # presentation timestamp in ``VideoInfo.time_base`` units
    time_s: float  # presentation time in seconds
    image: np.ndarray  # [H, W, 3] uint8 RGB, stored orientation


@dataclasses.dataclass(frozen=True)
class Detection:
    """One face found by a detector in one frame."""

    box: np.ndarray  # [4] float32 x0, y0, x1, y1
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray | None  # [5, 2] float32, or None when the detector gives none


class RegionSource(str, enum.Enum):
    """Where the box that covers a face in one frame came from."""

    DETECTED = "detected"  # a detection in this very frame (smoothed when its track is confirmed)
    PREDICTED = "predicted"  # the detector lost the face; the track's motion model carries the box
    BACKFILLED = "backfilled"  # frames just before a track was first seen, covered in hindsight
    MANUAL = "manual"  # added or edited by a reviewer in a tracks file


@dataclasses.dataclass(frozen=True)
class FaceRegion:
    """A face to hide (or replace) in one frame."""

    track_id: int  # stable per person within a shot; -1 for a detection not (yet) in a track
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 (without the safety margin)
    landmarks: np.ndarray | None  # [5, 2] float32 or None
    score: float
    source: RegionSource
    identity: str | None = None  # fingerprint of the identity code that replaced this face (generative method)


@dataclasses.dataclass
class FrameFaces:
    """All the faces to hide in one frame."""

    frame_index: int
    regions: list[FaceRegion]
