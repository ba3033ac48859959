"""Read a video as a stream of ``Frame`` records with their own timestamps, plus one ``VideoInfo``.

Frames are decoded one at a time (threaded inside FFmpeg), so memory does not grow with the
length of the video. Timestamps are passed through untouched: a variable-frame-rate video stays
variable. Images stay in their stored orientation; ``VideoInfo.rotation`` says how to turn them.

Every way an input can be unusable ends in a one-line ``InputError``: missing, empty, not a media
file, no video stream, frames above the pixel limit (checked from the container's header, before any
frame is decoded), undecodable, or truncated. Truncation is judged the same way for every container, by
what it declares: fewer frames than its index lists (MP4/MOV), fewer than its header promises (AVI),
an end well before its declared duration (Matroska/WebM tags, any stream duration), or a damaged packet
at the very end of the data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from styleface_cli.config import DEFAULT_MAX_PIXELS
from styleface_cli.errors import InputError
from styleface_cli.records import Frame, VideoInfo
from styleface_cli.atomic import check_input_file
from styleface_cli.video.pixels import YuvPixels, frame_to_rgb, keeps_planes

# How much earlier than it declares a stream without an exact frame index (AVI, Matroska, WebM, ...)
# may end before it counts as truncated: declared counts and durations are rounded, and AVI counts
# dropped-frame placeholders that decode to nothing, but a cut-off download loses whole seconds.
_TRUNCATION_TOLERANCE_S = 0.5


def probe(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Open ``path``, read its ``VideoInfo`` (decoding only the first frame), close it."""
    with open_video(path, max_pixels) as reader:
        return reader.info


def open_video(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoReader:
    """Open a video for reading; use as a context manager and iterate it for ``Frame`` records.

    Frames above ``max_pixels`` pixels (0: no limit) are refused, before decoding when the header says so."""
    return VideoReader(Path(path), max_pixels)


class VideoReader:
    """Decodes the first video stream of a file, one ``Frame`` at a time.

    ``info`` is read when the reader is created: the container's description of the stream plus
    what only a decoded frame tells (rotation from the display matrix, colour tags), so the first
    frame is decoded here and handed out first by the iterator. Iterate once.
    """

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        check_input_file(path)
        self.path = path
        self.max_pixels = max_pixels
        try:
            self._container = av.open(str(path), metadata_errors="replace")
        except av.error.FFmpegError as error:
            raise InputError(f"{path}: not a readable video file ({ffmpeg_reason(error)})") from None
        try:
            self._stream = _video_stream(self._container, path)
            self._check_size(self._stream.codec_context.width, self._stream.codec_context.height)
            self._stream.thread_type = "AUTO"  # frame + slice threads in the decoder, without the GIL
            self._expected_frames = _indexed_frame_count(self._stream)
            self._decoded = self._decode_frames()
            self._first = next(self._decoded, None)
            if self._first is None:
                raise InputError(f"{path}: the video stream has no decodable frames")
            self.info = self._read_info(self._first)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._decoded.close()
        self._container.close()

    def __iter__(self) -> Iterator[Frame]:
        """Yield every frame in presentation order, stored orientation: 8-bit 4:2:0 frames keep their planes
        (``Frame.yuv``), others are converted to RGB with their own matrix and range (BT.601 when untagged)."""
        time_base = self.info.time_base
        frame_s = 1 / self.info.average_fps if self.info.average_fps else Fraction(1, 25)
        index = 0
        frame = self._first
        self._first = None
        while frame is not None:
            pts = frame.pts
            time_s = float(pts * time_base) if pts is not None else float(index * frame_s)
            if keeps_planes(frame):  # RGB only if a stage asks for it (see video/pixels.py)
                yield Frame(index=index, pts=pts, time_s=time_s, yuv=YuvPixels(frame))
            else:
                yield Frame(index=index, pts=pts, time_s=time_s, image=frame_to_rgb(frame))
            index += 1
            frame = next(self._decoded, None)

    def _decode_frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames; raises ``InputError`` on a decode error or a stream that ends too early."""
        path, stream = self.path, self._stream
        count = 0
        last: av.VideoFrame | None = None
        cut_short = False  # the last packet read was damaged: the data ends inside it
        try:
            for packet in self._container.demux(stream):
                if packet.size:  # size 0: the demuxer's end-of-stream marker
                    cut_short = packet.is_corrupt
                for frame in packet.decode():
                    self._check_size(frame.width, frame.height)
                    count += 1
                    last = frame
                    yield frame
        except av.error.FFmpegError as error:
            raise InputError(
                f"{path}: the video stream is corrupt: decoding failed after frame {count} ({ffmpeg_reason(error)})"
            ) from None
        if cut_short:
            raise InputError(f"{path}: the video stream is truncated: its data ends inside a frame (after frame {count})")
        if self._expected_frames and count < self._expected_frames:
            raise InputError(
                f"{path}: the video stream is truncated: it lists {self._expected_frames} frames "
                f"but only {count} could be decoded"
            )
        if self._expected_frames or last is None:
            return  # an exact index was checked; no frame at all fails when the reader opens
        rate = stream.average_rate or stream.guessed_rate
        frame_s = float(1 / rate) if rate else 0.0
        declared_frames = stream.frames  # AVI's header, other containers' counts; 0 when not declared
        slack_frames = max(2, round(_TRUNCATION_TOLERANCE_S / frame_s)) if frame_s else 2
        if declared_frames > 0 and count < declared_frames - slack_frames:
            raise InputError(
                f"{path}: the video stream is truncated: its header promises {declared_frames} frames "
                f"but only {count} could be decoded"
            )
        declared_end = _declared_end_s(stream, self._container)
        if declared_end is not None and last.pts is not None:
            decoded_end = float(last.pts * stream.time_base) + frame_s
            if decoded_end < declared_end - _TRUNCATION_TOLERANCE_S:
                raise InputError(
                    f"{path}: the video stream is truncated: it should last until {declared_end:.2f} s "
                    f"but decoding stopped at {decoded_end:.2f} s (frame {count})"
                )

    def _check_size(self, width: int, height: int) -> None:
        """``InputError`` for frames above the pixel limit (decompression bombs)."""
        if self.max_pixels and width * height > self.max_pixels:
            raise InputError(
                f"{self.path}: {width}x{height} frames ({width * height} pixels) are above the pixel limit of "
                f"{self.max_pixels}; raise --max-pixels if the file is genuine"
            )

    def _read_info(self, first: av.VideoFrame) -> VideoInfo:
        stream, container = self._stream, self._container
        time_base = stream.time_base or Fraction(1, 90000)
        average_fps = stream.average_rate or stream.guessed_rate or Fraction(0)
        if stream.duration is not None:
            duration_s = float(stream.duration * time_base)
        elif (declared_end := _declared_end_s(stream, None)) is not None:
            start_s = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
            duration_s = max(declared_end - start_s, 0.0)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        else:
            duration_s = 0.0
        return VideoInfo(
            path=self.path,
            width=first.width,
            height=first.height,
            frame_count=self._expected_frames or stream.frames,
            average_fps=Fraction(average_fps),
            time_base=Fraction(time_base),
            duration_s=duration_s,
            rotation=round((first.rotation % 360) / 90) % 4 * 90,
            codec=stream.codec_context.name,
            pix_fmt=first.format.name,
            audio_streams=len(container.streams.audio),
            color_range=int(first.color_range),
            color_primaries=int(first.color_primaries),
            color_trc=int(first.color_trc),
            colorspace=int(first.colorspace),
        )


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first real video stream (cover art in an audio file does not count)."""
    if not container.streams:
        raise InputError(f"{path}: not a readable video file (no media streams found; is it cut short?)")
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    audio = len(container.streams.audio)
    found = f" (it has {audio} audio stream{'s' if audio != 1 else ''})" if audio else ""
    raise InputError(f"{path}: has no video stream{found}")


def _indexed_frame_count(stream: av.VideoStream) -> int:
    """Frames a complete file must decode to, from the container's index (MP4/MOV), or 0 if unknown.

    Samples an edit list cuts away are marked "discard" and never come out of the decoder.
    """
    if stream.frames <= 0 or len(stream.index_entries) != stream.frames:
        return 0
    return sum(1 for entry in stream.index_entries if not entry.is_discard)


def _declared_end_s(stream: av.VideoStream, container: av.container.InputContainer | None) -> float | None:
    """When the video stream should end, in seconds, as the file declares it: the stream's own duration
    (after its start), else a Matroska/WebM DURATION tag, else (``container`` given) the file's duration when
    the video is its only stream (with others it is the longest stream's). None when nothing is declared."""
    if stream.duration is not None and stream.time_base:
        start = stream.start_time if stream.start_time is not None else 0
        return float((start + stream.duration) * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag.strip()) if tag else None
    if match is not None:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container is not None and container.duration is not None and len(container.streams) == 1:
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        return start + container.duration / av.time_base
    return None


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own short wording of an error, e.g. 'Invalid data found when processing input' (else the
    error's text)."""
    return str(getattr(error, "strerror", None) or error).strip()
