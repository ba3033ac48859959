"""Write ``Frame`` records to a video file that keeps the input's timing, geometry, colour and audio.

The codec options come from pure functions tested by equality (``build_encoder_options``,
``build_stream_settings``, ``build_container_options``); ``VideoWriter`` only applies them.

The writer streams: each frame is encoded as it arrives (threaded inside FFmpeg, without the
GIL), and the source's audio packets are copied alongside, up to the current video time, so
memory does not grow with the length of the video. The file appears at ``output`` only when the
``with`` block ends without an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from styleface_cli.config import EncodeConfig
from styleface_cli.errors import ConfigError, InputError, OutputError
from styleface_cli.records import Frame, VideoInfo
from styleface_cli.atomic import atomic_output
from styleface_cli.video.decode import ffmpeg_reason

# x264's preset names, fastest first; other encoders get the matching step of their own scale.
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_VP9_CPU_USED = ("5", "5", "5", "4", "3", "2", "1", "0", "0")  # libvpx "good" deadline: 0 (slow) .. 5
_AOM_CPU_USED = ("6", "6", "6", "5", "4", "3", "2", "1", "0")
_SVTAV1_PRESET = ("12", "11", "10", "9", "8", "6", "4", "2", "1")  # 0 (slow) .. 13
_NVENC_PRESET = ("p1", "p2", "p3", "p3", "p4", "p5", "p6", "p7", "p7")
# Encoders that would copy what the source's frames carry besides pixels into their own bitstream: closed
# captions (A/53, text that may name people) and user-data SEI (a camera's or another encoder's notes).
# Neither is edited by anything here, so neither is carried over.
_NO_SOURCE_USER_DATA = {"a53cc": "0", "udu_sei": "0"}

# Encoders that take 4:2:0 at odd sizes. H.264 and HEVC cannot code 4:2:0 with an odd width or
# height (their cropping works in whole chroma samples), so odd sizes get 4:4:4 there: the output
# keeps the input's exact size, at the cost of the players that decode only 4:2:0.
_ODD_SIZE_420 = frozenset({"libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1", "mpeg4"})

_MP4_FAMILY = frozenset({".mp4", ".m4v", ".mov"})
# Containers that store no presentation timestamps, only one tick per frame at a constant rate (AVI):
# frames must be coded in display order (no B-frames) and timed on the frame-rate grid, or players
# (and our own reader) see frames out of order and a header rate of the time base (e.g. 600 fps).
_CONSTANT_RATE_CONTAINERS = frozenset({".avi"})
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "flac", "opus"})


@dataclasses.dataclass(frozen=True)
class VideoStreamSettings:
    """How the output video stream is set up; everything that is not an encoder option."""

    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction  # the input stream's, so every pts is kept exactly (1 / frame_rate in AVI)
    frame_rate: Fraction  # average rate, for the container header and the encoder's rate control
    rotation: int  # display matrix, degrees counter-clockwise
    color_range: int  # FFmpeg enums, as in VideoInfo
    color_primaries: int
    color_trc: int
    colorspace: int
    codec_tag: str | None  # "hvc1" for HEVC in MP4/MOV, which Apple players require
    max_b_frames: int | None = None  # None: the encoder's choice; 0 where the container cannot reorder


def resolve_codec(codec: str, suffix: str) -> str:
    """``"auto"`` -> H.264 (libx264), or VP9 for WebM, which cannot hold H.264; any other name as given."""
    if codec != "auto":
        return codec
    return "libvpx-vp9" if suffix.lower() == ".webm" else "libx264"


def build_encoder_options(cfg: EncodeConfig, info: VideoInfo, suffix: str = ".mp4") -> dict[str, str]:
    """Encoder options for ``cfg.codec`` (``auto`` resolved for ``suffix``): quality and speed in each
    encoder's own terms.

    ``cfg.crf`` is on x264's scale (0-51, lower is better) and ``cfg.preset`` is an x264 preset
    name; both are translated for the other encoders. ``cfg.encoder_options`` override the result.
    ``info`` is the input's description (the options do not depend on it today).
    """
    del info  # kept in the signature: options that depend on the input belong here
    codec, crf = resolve_codec(cfg.codec, suffix), cfg.crf
    rank = PRESETS.index(cfg.preset) if cfg.preset in PRESETS else None
    crf_63 = str(round(crf * 63 / 51))  # VP9 and AV1 count 0-63
    if codec in ("libx264", "libx264rgb"):
        options = {"crf": str(crf), "preset": cfg.preset, **_NO_SOURCE_USER_DATA}
    elif codec == "libx265":
        # x265 reaches x264's quality about 5 CRF steps higher; its own log goes to stderr unasked.
        options = {"crf": str(min(crf + 5, 51)), "preset": cfg.preset, "x265-params": "log-level=error",
                   **_NO_SOURCE_USER_DATA}
    elif codec == "libvpx-vp9":
        # Constant quality needs b=0 in libvpx; row-mt lets it use every core.
        options = {"crf": crf_63, "b": "0", "deadline": "good", "row-mt": "1"}
        if rank is not None:
            options["cpu-used"] = _VP9_CPU_USED[rank]
    elif codec == "libaom-av1":
        options = {"crf": crf_63, "b": "0", "row-mt": "1"}
        if rank is not None:
            options["cpu-used"] = _AOM_CPU_USED[rank]
    elif codec == "libsvtav1":
        options = {"crf": crf_63}
        if rank is not None:
            options["preset"] = _SVTAV1_PRESET[rank]
    elif codec in ("h264_nvenc", "hevc_nvenc", "av1_nvenc"):
        options = {"rc": "vbr", "cq": str(crf)}
        if codec != "av1_nvenc":
            options.update(_NO_SOURCE_USER_DATA)
        if rank is not None:
            options["preset"] = _NVENC_PRESET[rank]
    else:
        options = {}  # the encoder's own defaults
    options.update(dict(cfg.encoder_options))
    return options


def build_stream_settings(cfg: EncodeConfig, info: VideoInfo, suffix: str = ".mp4") -> VideoStreamSettings:
    """The output stream for ``info``'s video in a file named ``*suffix``: same size, timing, colour, rotation."""
    odd = info.width % 2 == 1 or info.height % 2 == 1
    codec = resolve_codec(cfg.codec, suffix)
    pix_fmt = "yuv444p" if odd and codec not in _ODD_SIZE_420 else "yuv420p"
    hevc = codec in ("libx265", "hevc_nvenc", "hevc_qsv", "hevc_vaapi", "hevc_videotoolbox")
    frame_rate = info.average_fps if info.average_fps > 0 else Fraction(25)
    constant_rate = suffix.lower() in _CONSTANT_RATE_CONTAINERS
    return VideoStreamSettings(
        codec=codec,
        width=info.width,
        height=info.height,
        pix_fmt=pix_fmt,
        time_base=1 / frame_rate if constant_rate else info.time_base,
        frame_rate=frame_rate,
        rotation=info.rotation,
        color_range=info.color_range,
        color_primaries=info.color_primaries,
        color_trc=info.color_trc,
        colorspace=info.colorspace,
        codec_tag="hvc1" if hevc and suffix.lower() in _MP4_FAMILY else None,
        max_b_frames=0 if constant_rate else None,
    )


def build_container_options(suffix: str) -> dict[str, str]:
    """Muxer options for a file named ``*suffix``: MP4/MOV put their index first, for web playback."""
    return {"movflags": "+faststart"} if suffix.lower() in _MP4_FAMILY else {}


def audio_fallback_codec(suffix: str) -> str:
    """The encoder for audio that cannot be stream-copied into a file named ``*suffix``."""
    return "libopus" if suffix.lower() in (".webm", ".ogg", ".opus") else "aac"


# FFmpeg's colour matrices (AVColorSpace) as swscale's matrix constants (SWS_CS_*), which is what
# VideoFrame.reformat takes; untagged video is converted with BT.601, as decoders read it.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_SWS_BT601 = 5

# The only stream tag an audio track keeps: players need it to offer the right track. Everything else
# (title, comment, handler_name naming the phone's owner, GPS/location, encoder, creation time, Matroska
# statistics) may identify the source and is dropped; dispositions (default, forced, ...) are kept.
KEPT_STREAM_TAGS = frozenset({"language"})


class VideoWriter:
    """Encodes ``Frame`` records into ``output``, copying the audio of ``source``; a context manager.

    Frames must come in presentation order with increasing ``pts`` in ``info.time_base`` units, as
    the reader yields them, each with ``image`` ``[info.height, info.width, 3]`` uint8 RGB.
    """

    def __init__(self, output: Path, info: VideoInfo, cfg: EncodeConfig, source: Path | None = None) -> None:
        self.output = Path(output)
        self.info = info
        self.cfg = cfg
        self.source = Path(source) if source is not None else None
        self._suffix = self.output.suffix.lower()
        self.settings = build_stream_settings(cfg, info, self._suffix)
        # Timing state. A frame's duration is known only when the next one arrives, so the newest
        # frame waits here; the newest packet waits too, because MP4 ends the file where the last
        # packet in *decode* order ends, and only the end of the stream says what that must be.
        self._held: tuple[av.VideoFrame, int] | None = None  # (frame, pts)
        self._first_pts: int | None = None
        self._last_step = 0  # pts distance between the two most recent frames
        self._durations: dict[int, int] = {}  # pts -> duration, for the frames inside the encoder
        self._held_packet: av.Packet | None = None
        self._first_dts: int | None = None
        self._audio: _AudioCopier | None = None
        self._yuv = VideoReformatter()

    def __enter__(self) -> VideoWriter:
        with contextlib.ExitStack() as stack:
            temp = stack.enter_context(atomic_output(self.output))
            self._container = stack.enter_context(_open_output(temp, self.output, self._suffix))
            self._video = self._add_video_stream()
            if self.cfg.keep_audio and self.source is not None:
                self._audio = stack.enter_context(_AudioCopier.open(self.source, self._container, self._suffix))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self._stack.__exit__(exc_type, exc, tb)  # closes the files, removes the temporary one
            return
        with self._stack:  # an error while finishing also removes the temporary file
            self._finish()

    def write(self, frame: Frame) -> None:
        """Encode one frame at its own ``pts`` (``time_s`` stands in when ``pts`` is None)."""
        s = self.settings
        yuv = frame.yuv
        if yuv is not None and (yuv.width, yuv.height, yuv.format) == (s.width, s.height, s.pix_fmt):
            video_frame = yuv.video_frame()  # the planes as they are: no colour conversion at all
        else:
            if frame.image.shape != (s.height, s.width, 3) or frame.image.dtype != np.uint8:
                raise ValueError(
                    f"frame {frame.index}: expected a [{s.height}, {s.width}, 3] uint8 image, "
                    f"got {list(frame.image.shape)} {frame.image.dtype}"
                )
            video_frame = self._to_yuv(frame.image)
        if frame.pts is None:
            pts = round(frame.time_s / s.time_base)
        elif s.time_base != self.info.time_base:  # onto the output's grid (AVI)
            pts = round(frame.pts * self.info.time_base / s.time_base)
        else:
            pts = frame.pts
        if self._held is not None:
            held_pts = self._held[1]
            # Broken inputs can repeat a timestamp; one tick later keeps the output decodable.
            pts = max(pts, held_pts + 1)
            self._last_step = pts - held_pts
            self._encode(*self._held, duration=self._last_step)
        else:
            self._first_pts = pts
        self._held = (video_frame, pts)
        if self._audio is not None:
            self._audio.copy_until(float(pts * s.time_base), self.output)

    def _finish(self) -> None:
        """Encode the last frame, drain the encoder, copy the rest of the audio, write the trailer."""
        if self._held is None:
            raise OutputError(f"{self.output}: no video frames were written")
        frame, pts = self._held
        self._held = None
        duration = self._last_frame_duration(pts)
        self._encode(frame, pts, duration)
        try:
            self._mux(self._video.encode(None))
        except av.error.FFmpegError as error:
            raise OutputError(f"{self.output}: encoding failed at the end ({ffmpeg_reason(error)})") from None
        last = self._held_packet
        if self._suffix in _MP4_FAMILY and last.dts is not None and self._first_dts is not None:
            # MP4 ends a track at the smaller of two ends: the presentation end (the largest
            # pts + duration) and the sum of sample durations, which run in decode order. With
            # B-frames the last packet decoded is not the last shown, so it must reach both.
            end_pts = pts + duration
            last.duration = max(last.duration, (end_pts - self._first_pts) - (last.dts - self._first_dts))
        self._mux_now([last])
        if self._audio is not None:
            self._audio.copy_until(None, self.output)

    def _last_frame_duration(self, pts: int) -> int:
        """Up to the input's own end of stream when known; else the step between the last two frames."""
        s = self.settings
        if self.info.duration_s > 0:
            end = self._first_pts + round(self.info.duration_s / s.time_base)
            if end > pts:
                return end - pts
        if self._last_step > 0:
            return self._last_step
        return max(round(1 / (s.frame_rate * s.time_base)), 1)

    def _encode(self, frame: av.VideoFrame, pts: int, duration: int) -> None:
        frame.pts, frame.time_base = pts, self.settings.time_base
        self._durations[pts] = duration
        try:
            packets = self._video.encode(frame)
        except av.error.FFmpegError as error:
            raise OutputError(f"{self.output}: encoding failed at pts {pts} ({ffmpeg_reason(error)})") from None
        self._mux(packets)

    def _mux(self, packets: list[av.Packet]) -> None:
        """Mux all but the newest packet, which waits (see ``_finish``)."""
        for packet in packets:
            # Encoders drop frame durations; without them the muxer guesses the last frame's.
            packet.duration = self._durations.pop(packet.pts, 0) if packet.pts is not None else 0
            if self._first_dts is None:
                self._first_dts = packet.dts
            if self._held_packet is not None:
                self._mux_now([self._held_packet])
            self._held_packet = packet

    def _mux_now(self, packets: list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except av.error.FFmpegError as error:
            raise OutputError(f"{self.output}: writing failed ({ffmpeg_reason(error)})") from None

    def _to_yuv(self, image: np.ndarray) -> av.VideoFrame:
        """``[H, W, 3]`` uint8 RGB to the encoder's pixel format, with the input's matrix, range and tags."""
        s = self.settings
        rgb = av.VideoFrame.from_ndarray(image, format="rgb24")
        # One reformatter for all frames: rgb.reformat() would set up swscale anew for each
        # (about 18 ms per 1080p frame, five times the conversion itself).
        yuv = self._yuv.reformat(
            rgb,
            format=s.pix_fmt,
            dst_colorspace=_SWS_MATRIX.get(s.colorspace, _SWS_BT601),
            dst_color_range=2 if s.color_range == 2 else 1,
        )
        yuv.color_range, yuv.colorspace = s.color_range, s.colorspace
        yuv.color_primaries, yuv.color_trc = s.color_primaries, s.color_trc
        return yuv

    def _add_video_stream(self) -> av.VideoStream:
        s, cfg = self.settings, self.cfg
        options = build_encoder_options(cfg, self.info, self._suffix)
        try:
            stream = self._container.add_stream(s.codec, rate=s.frame_rate, options=options)
        except ValueError as error:  # unknown encoder, or one this container cannot hold
            raise ConfigError(f"{self.output}: cannot write {s.codec!r} video here ({error})") from None
        stream.width, stream.height, stream.pix_fmt = s.width, s.height, s.pix_fmt
        stream.time_base = s.time_base
        context = stream.codec_context
        context.time_base = s.time_base
        context.thread_type = "AUTO"
        context.color_range, context.color_primaries = s.color_range, s.color_primaries
        context.color_trc, context.colorspace = s.color_trc, s.colorspace
        if s.codec_tag:
            context.codec_tag = s.codec_tag
        if s.max_b_frames is not None:
            context.max_b_frames = s.max_b_frames
        if s.rotation:
            stream.set_display_rotation(s.rotation)
        try:  # open now, so a bad preset or option fails before any work is done
            context.open()
        except (av.error.FFmpegError, ValueError) as error:
            raise ConfigError(f"cannot open the {s.codec} encoder with {options} ({ffmpeg_reason(error)})") from None
        if context.options:  # what the encoder did not take
            raise ConfigError(f"the {s.codec} encoder does not know the option(s) {sorted(context.options)}")
        return stream


@contextlib.contextmanager
def _open_output(temp: Path, output: Path, suffix: str) -> Iterator[av.container.OutputContainer]:
    """An output container on ``temp``, closed at the end; closing errors never hide the first error."""
    try:
        container = av.open(str(temp), "w", options=build_container_options(suffix))
    except (ValueError, av.error.FFmpegError) as error:
        raise OutputError(
            f"{output}: cannot write this kind of file ({ffmpeg_reason(error)}); use .mp4, .mov, .mkv or .webm"
        ) from None
    try:
        yield container
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()
        raise
    try:
        container.close()  # writes the trailer (and, for MP4, moves the index to the front)
    except av.error.FFmpegError as error:
        raise OutputError(f"{output}: finishing the file failed ({ffmpeg_reason(error)})") from None


@dataclasses.dataclass
class _AudioRoute:
    output: av.AudioStream
    copy: bool  # stream copy; else decode and re-encode


class _AudioCopier:
    """Moves every audio stream of a source file into an output container, in step with the video.

    Packets are stream-copied where the output container can hold the codec, else decoded and
    re-encoded (AAC, or Opus for WebM). Only the language tag and the dispositions are kept.
    Only one demuxed packet waits here at a time; the muxer's interleaving queue holds the rest,
    bounded by how far the video encoder lags behind its input (its lookahead).
    """

    def __init__(
        self, source: av.container.InputContainer, routes: dict[int, _AudioRoute], output: av.container.OutputContainer
    ) -> None:
        self._source_path = Path(source.name)
        self._routes = routes
        self._output = output
        self._packets = source.demux(*[source.streams[i] for i in routes])
        self._pending: av.Packet | None = None
        self._drained = not routes

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path, output: av.container.OutputContainer, suffix: str) -> Iterator[_AudioCopier]:
        try:
            source = av.open(str(path), metadata_errors="replace")
        except av.error.FFmpegError as error:
            raise InputError(f"{path}: cannot read the audio ({ffmpeg_reason(error)})") from None
        with source:
            routes = {}
            for stream in source.streams:
                if stream.type == "audio":
                    routes[stream.index] = _add_audio_stream(output, stream, suffix)
                else:
                    stream.discard = av.stream.Discard.all  # the demuxer skips the video
            copier = cls(source, routes, output)
            try:
                yield copier
            finally:
                copier._packets.close()

    def copy_until(self, time_s: float | None, output_path: Path) -> None:
        """Move the audio packets that start before ``time_s`` seconds (all that are left when None)."""
        while not self._drained:
            if self._pending is None:
                try:
                    self._pending = next(self._packets, None)
                except av.error.FFmpegError as error:
                    raise InputError(f"{self._source_path}: reading the audio failed ({ffmpeg_reason(error)})") from None
                if self._pending is None:
                    self._drained = True
                    self._flush_encoders(output_path)
                    return
            packet = self._pending
            start = packet.pts if packet.pts is not None else packet.dts
            if time_s is not None and start is not None and float(start * packet.time_base) > time_s:
                return
            self._pending = None
            route = self._routes[packet.stream.index]
            try:
                if route.copy:
                    if packet.size:  # size 0: the demuxer's end-of-stream marker
                        packet.stream = route.output
                        self._output.mux(packet)
                else:
                    for frame in packet.decode():
                        self._output.mux(route.output.encode(frame))
            except av.error.FFmpegError as error:
                raise OutputError(f"{output_path}: copying the audio failed ({ffmpeg_reason(error)})") from None

    def _flush_encoders(self, output_path: Path) -> None:
        try:
            for route in self._routes.values():
                if not route.copy:
                    self._output.mux(route.output.encode(None))
        except av.error.FFmpegError as error:
            raise OutputError(f"{output_path}: copying the audio failed ({ffmpeg_reason(error)})") from None


def can_copy_audio(codec: str, suffix: str) -> bool | None:
    """Whether ``codec`` audio goes into a ``*suffix`` file as it is; None: the muxer decides.

    FFmpeg's MP4 muxer also takes PCM and other codecs that few players read in MP4; those are
    re-encoded there. MOV takes PCM natively.
    """
    if suffix.lower() in (".mp4", ".m4v"):
        return codec in _MP4_AUDIO_COPY
    return None


def kept_stream_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags of a source stream that its copy keeps (``KEPT_STREAM_TAGS``, any case)."""
    return {key.lower(): value for key, value in tags.items() if key.lower() in KEPT_STREAM_TAGS}


def _add_audio_stream(container: av.container.OutputContainer, source: av.AudioStream, suffix: str) -> _AudioRoute:
    """An output stream for ``source``: a stream copy if the container takes the codec, else a re-encode."""
    output = None
    if can_copy_audio(source.codec_context.name, suffix) is not False:
        with contextlib.suppress(ValueError):  # e.g. "'webm' format does not support 'aac' codec"
            output = container.add_stream_from_template(source)
    copy = output is not None
    if not copy:
        codec = audio_fallback_codec(suffix)
        rates = av.Codec(codec, "w").audio_rates
        rate = source.sample_rate if not rates or source.sample_rate in rates else max(rates)
        output = container.add_stream(codec, rate=rate)
        output.layout = source.layout
    output.metadata.clear()  # a template stream starts with the source's tags
    output.metadata.update(kept_stream_tags(source.metadata))
    output.disposition = source.disposition
    return _AudioRoute(output=output, copy=copy)
