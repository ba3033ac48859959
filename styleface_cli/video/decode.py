"""Read a video as a stream of ``Frame`` records with their own timestamps, plus one ``VideoInfo``.

Frames are decoded one at a time (threaded inside FFmpeg), so memory does not grow with the
length of the video. Timestamps are passed through untouched: a variable-frame-rate video stays
variable. Images stay in their stored orientation; ``VideoInfo.rotation`` says how to turn them.

Every way an input can be unusable ends in a one-line ``InputError``: missing, empty, not a media
file, no video stream, undecodable, or truncated (fewer frames than the container's index lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from styleface_cli.errors import InputError
from styleface_cli.records import Frame, VideoInfo
from styleface_cli.atomic import check_input_file
from styleface_cli.video.pixels import YuvPixels, frame_to_rgb, keeps_planes

# How much earlier than its declared duration a stream without a frame index (Matroska, WebM)
# may end before it counts as truncated: a little more than the last frame may be missing from
# the count when the container rounds, but a cut-off download loses whole seconds.
_TRUNCATION_TOLERANCE_S = 0.5


def probe(path: Path) -> VideoInfo:
    """Open ``path``, read its ``VideoInfo`` (decoding only the first frame), close it."""
    with open_video(path) as reader:
        return reader.info


def open_video(path: Path) -> VideoReader:
    """Open a video for reading; use as a context manager and iterate it for ``Frame`` records."""
    return VideoReader(Path(path))


class VideoReader:
    """Decodes the first video stream of a file, one ``Frame`` at a time.

    ``info`` is read when the reader is created: the container's description of the stream plus
    what only a decoded frame tells (rotation from the display matrix, colour tags), so the first
    frame is decoded here and handed out first by the iterator. Iterate once.
    """

    def __init__(self, path: Path) -> None:
        check_input_file(path)
        self.path = path
        try:
            self._container = av.open(str(path), metadata_errors="replace")
        except av.error.FFmpegError as error:
            raise InputError(f"{path}: not a readable video file ({ffmpeg_reason(error)})") from None
        try:
            self._stream = _video_stream(self._container, path)
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
        try:
            for packet in self._container.demux(stream):
                for frame in packet.decode():
                    count += 1
                    last = frame
                    yield frame
        except av.error.FFmpegError as error:
            raise InputError(
                f"{path}: the video stream is corrupt: decoding failed after frame {count} ({ffmpeg_reason(error)})"
            ) from None
        if self._expected_frames and count < self._expected_frames:
            raise InputError(
                f"{path}: the video stream is truncated: it lists {self._expected_frames} frames "
                f"but only {count} could be decoded"
            )
        if not self._expected_frames and last is not None and last.pts is not None:
            declared_end = _declared_end_s(stream)
            frame_s = float(1 / stream.average_rate) if stream.average_rate else 0.0
            decoded_end = float(last.pts * stream.time_base) + frame_s
            if declared_end is not None and decoded_end < declared_end - _TRUNCATION_TOLERANCE_S:
                raise InputError(
                    f"{path}: the video stream is truncated: it should last until {declared_end:.2f} s "
                    f"but decoding stopped at {decoded_end:.2f} s (frame {count})"
                )

    def _read_info(self, first: av.VideoFrame) -> VideoInfo:
        stream, container = self._stream, self._container
        time_base = stream.time_base or Fraction(1, 90000)
        average_fps = stream.average_rate or stream.guessed_rate or Fraction(0)
        if stream.duration is not None:
            duration_s = float(stream.duration * time_base)
        elif (declared_end := _declared_end_s(stream)) is not None:
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


def _declared_end_s(stream: av.VideoStream) -> float | None:
    """End time a Matroska/WebM muxer wrote into the stream's DURATION tag, in seconds."""
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag.strip()) if tag else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own short wording of an error, e.g. 'Invalid data found when processing input' (else the
    error's text)."""
    return str(getattr(error, "strerror", None) or error).strip()
