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
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from styleface_cli.video.pixels import YuvPixels


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


class Frame:
    """One decoded frame, in decode order, with its own timestamp (VFR is kept as it is).

    Its pixels are ``image`` ([H, W, 3] uint8 RGB, stored orientation). A frame straight from the video
    reader may instead hold the decoder's YUV 4:2:0 planes (``yuv``, see ``video/pixels.py``): ``image``
    then converts them on first use, after which ``yuv`` is None and RGB is the frame's pixels. Stages
    that can work without RGB (detection via ``scaled``, obfuscation, encoding) check ``yuv`` first.
    """

    __slots__ = ("index", "pts", "time_s", "_image", "_yuv")

    def __init__(self, index: int, pts: int | None, time_s: float, image: np.ndarray | None = None,
                 yuv: YuvPixels | None = None) -> None:
        if (image is None) == (yuv is None):
            raise ValueError("a Frame holds either an RGB image or YUV planes")
        self.index = index  # 0-based position in the stream
        self.pts = pts  # presentation timestamp in ``VideoInfo.time_base`` units
        self.time_s = time_s  # presentation time in seconds
        self._image = image
        self._yuv = yuv

    @property
    def image(self) -> np.ndarray:
        """[H, W, 3] uint8 RGB (converted from the planes, edits included, on first use)."""
        if self._image is None:
            self._image = self._yuv.rgb()
            self._yuv = None
        return self._image

    @image.setter
    def image(self, image: np.ndarray) -> None:
        self._image, self._yuv = image, None

    @property
    def yuv(self) -> YuvPixels | None:
        """The decoder's planes while the frame is still held that way, else None."""
        return self._yuv

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        if self._yuv is not None:
            return self._yuv.width, self._yuv.height
        return self._image.shape[1], self._image.shape[0]

    def scaled(self, width: int, height: int, nearest: bool = False) -> np.ndarray:
        """[height, width, 3] uint8 RGB copy of the frame at another size (area averaging when shrinking,
        bilinear when enlarging; ``nearest`` samples instead, for cheap statistics), without converting
        the whole frame when it holds planes."""
        if self._yuv is not None:
            return self._yuv.scaled_rgb(width, height, nearest)
        if (width, height) == self.size:
            return self._image.copy()
        if nearest:
            interpolation = cv2.INTER_NEAREST
        else:
            interpolation = cv2.INTER_AREA if width < self.size[0] or height < self.size[1] else cv2.INTER_LINEAR
        return cv2.resize(self._image, (width, height), interpolation=interpolation)

    def __repr__(self) -> str:
        pixels = "yuv" if self._yuv is not None else "rgb"
        return f"Frame(index={self.index}, pts={self.pts}, time_s={self.time_s:.3f}, {pixels} {self.size[0]}x{self.size[1]})"


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
