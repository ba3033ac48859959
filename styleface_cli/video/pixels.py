"""A decoded frame's pixels as the decoder gives them: 8-bit YUV 4:2:0 planes.

Turning every frame into RGB and back costs more than anything the obfuscation methods do (about 7 ms
per 1080p frame here, mostly RGB -> YUV in swscale). The detector only needs a small RGB copy, the
obfuscation methods can work on the planes, and the encoder takes the planes as they are. So the reader
hands out frames that keep their ``YuvPixels``; ``Frame.image`` converts to RGB only when a stage asks
for it (the generator, the recognisers), and from then on RGB is the frame's pixels. Pixels nobody
edits are never converted at all, so they reach the encoder bit for bit.

The decoder's own buffers may be the reference pictures it predicts the next frames from, so they are
never written: the first edit copies the planes out.
"""

from __future__ import annotations

import threading

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Pixel formats kept as planes: 8-bit 4:2:0 at even sizes; every other input goes to RGB at once.
# (yuvj420p is left out: the encoder would convert it to limited-range yuv420p on the way in.)
PLANAR_FORMATS = frozenset({"yuv420p"})

_local = threading.local()  # swscale contexts are set up once per thread and purpose, then reused


def _reformatter(purpose: str) -> VideoReformatter:
    """One ``VideoReformatter`` per thread and purpose: setting one up costs more than a conversion."""
    cache = getattr(_local, "reformatters", None)
    if cache is None:
        cache = _local.reformatters = {}
    if purpose not in cache:
        cache[purpose] = VideoReformatter()
    return cache[purpose]


def keeps_planes(frame: av.VideoFrame) -> bool:
    """Whether ``frame`` can stay as ``YuvPixels`` (8-bit 4:2:0, even width and height)."""
    return frame.format.name in PLANAR_FORMATS and frame.width % 2 == 0 and frame.height % 2 == 0


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """[H, W, 3] uint8 RGB of a decoded frame, with its own matrix and range (BT.601 when untagged)."""
    return _reformatter("rgb").reformat(frame, format="rgb24").to_ndarray()


class YuvPixels:
    """The pixels of one decoded 8-bit 4:2:0 frame: Y ``[H, W]``, U and V ``[H/2, W/2]`` uint8.

    ``planes()`` gives writable planes (copied out of the decoder's buffers on first use); ``video_frame()``
    gives the frame to encode (the decoder's own when nothing was edited); ``rgb()`` and ``scaled_rgb()``
    convert with the frame's colour matrix and range.
    """

    __slots__ = ("_source", "_data")

    def __init__(self, frame: av.VideoFrame) -> None:
        if not keeps_planes(frame):
            raise ValueError(f"YuvPixels holds even-sized 8-bit 4:2:0 frames, not {frame.format.name} {frame.width}x{frame.height}")
        self._source = frame
        self._data: np.ndarray | None = None  # [H * 3 / 2, W] uint8 I420 once edited

    @property
    def width(self) -> int:
        return self._source.width

    @property
    def height(self) -> int:
        return self._source.height

    @property
    def format(self) -> str:
        """FFmpeg's name of the pixel format, e.g. ``"yuv420p"``."""
        return self._source.format.name

    @property
    def full_range(self) -> bool:
        """Whether Y spans 0-255 (JPEG/"pc" range) rather than 16-235."""
        return int(self._source.color_range) == 2

    @property
    def edited(self) -> bool:
        return self._data is not None

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Writable Y ``[H, W]``, U ``[H/2, W/2]``, V ``[H/2, W/2]`` uint8 views of one I420 array."""
        if self._data is None:
            self._data = self._source.to_ndarray(format="yuv420p")  # a copy: [H * 3 / 2, W]
        height, width = self.height, self.width
        quarter = (height // 2) * (width // 2)
        chroma = self._data[height:].reshape(-1)
        return (self._data[:height],
                chroma[:quarter].reshape(height // 2, width // 2),
                chroma[quarter:].reshape(height // 2, width // 2))

    def video_frame(self) -> av.VideoFrame:
        """The frame to encode: the decoder's own when unedited, else a new one with the same colour tags.

        Its picture type is cleared: the encoder must choose its own frame types, not copy the input's.
        """
        frame = self._current()
        frame.pict_type = av.video.frame.PictureType.NONE
        return frame

    def rgb(self) -> np.ndarray:
        """[H, W, 3] uint8 RGB, edits included."""
        return frame_to_rgb(self._current())

    def scaled_rgb(self, width: int, height: int, nearest: bool = False) -> np.ndarray:
        """[height, width, 3] uint8 RGB scaled in one swscale pass (area averaging when shrinking, bilinear
        when enlarging, or nearest-neighbour sampling), edits included."""
        shrink = width < self.width or height < self.height
        interpolation = "POINT" if nearest else ("AREA" if shrink else "BILINEAR")
        frame = _reformatter(f"scaled-{interpolation}").reformat(
            self._current(), width=width, height=height, format="rgb24", interpolation=interpolation)
        return frame.to_ndarray()

    def _current(self) -> av.VideoFrame:
        return self._source if self._data is None else self._edited_frame()

    def _edited_frame(self) -> av.VideoFrame:
        """A new frame of the edited planes, with the decoded frame's colour tags."""
        frame, source = av.VideoFrame.from_ndarray(self._data, format="yuv420p"), self._source
        frame.color_range, frame.colorspace = source.color_range, source.colorspace
        frame.color_primaries, frame.color_trc = source.color_primaries, source.color_trc
        return frame
