"""Test media synthesised with PyAV and Pillow, so tests need no files from outside the repository.

Every helper writes a small file and returns nothing; ``read_all`` and ``read_audio_streams`` read
files back for assertions. Sizes and lengths are up to the caller: keep them tiny (64x48, 10-30
frames) so a test runs in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from styleface_cli.records import Frame, VideoInfo

# Irregular frame durations, in milliseconds, cycled through by ``make_video(vfr=True)``.
VFR_DURATIONS_MS = (40, 80, 40, 120, 33, 47, 200, 40, 17, 63)

# BT.709 in every field, as a camera would tag HD video (values are FFmpeg's AVCOL_* enums).
BT709_TAGS = {"color_range": 1, "color_primaries": 1, "color_trc": 1, "colorspace": 1}

AUDIO_LANGUAGES = ("eng", "fra", "deu", "spa")


def gradient(width: int, height: int, index: int) -> np.ndarray:
    """A gradient that moves one pixel per frame, with a bright block marking the top-left corner.

    Returns ``[height, width, 3]`` uint8 RGB. The corner block makes rotations and flips visible.
    """
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = ((x + index) * 255 // max(width, 1)) % 256
    image[..., 1] = (y * 255 // max(height, 1)).astype(np.uint8)
    image[..., 2] = (index * 9) % 256
    image[: max(height // 4, 1), : max(width // 4, 1)] = (250, 250, 250)
    return image


def _frame_timing(frames: int, fps: int, vfr: bool) -> tuple[Fraction, list[int], list[int]]:
    """Time base, and each frame's pts and duration in it."""
    if vfr:
        time_base = Fraction(1, 1000)
        durations = [VFR_DURATIONS_MS[i % len(VFR_DURATIONS_MS)] for i in range(frames)]
    else:
        time_base = Fraction(1, fps)
        durations = [1] * frames
    pts = [sum(durations[:i]) for i in range(frames)]
    return time_base, pts, durations


def make_video(
    path: Path,
    *,
    width: int,
    height: int,
    frames: int,
    fps: int = 25,
    vfr: bool = False,
    rotation: int = 0,
    audio_streams: int = 0,
    codec: str = "libx264",
    audio_codec: str | None = None,
    draw: Callable[[int], np.ndarray] | None = None,
    color_tags: Mapping[str, int] | None = None,
    faststart: bool = False,
) -> None:
    """Write a small video; the container is chosen by the suffix of ``path`` (.mp4, .mkv, .webm, ...).

    ``vfr`` gives frames the irregular durations of ``VFR_DURATIONS_MS`` (time base 1/1000 s);
    ``rotation`` (degrees counter-clockwise) goes into the display matrix; each audio stream is a
    sine tone as long as the video, tagged with the language ``AUDIO_LANGUAGES[i]``, encoded with
    ``audio_codec`` (default AAC, Opus for .webm); ``draw(i)`` returns frame ``i`` as
    ``[height, width, 3]`` uint8 RGB (default: ``gradient``);
    ``color_tags`` (e.g. ``BT709_TAGS``) sets colour range/primaries/trc/space; ``faststart``
    puts the mp4 index before the data (so a cut file still opens).
    """
    time_base, frame_pts, durations = _frame_timing(frames, fps, vfr)
    end_pts = frame_pts[-1] + durations[-1]
    duration_of = dict(zip(frame_pts, durations))
    # 4:2:0 needs even sizes in H.264/HEVC; odd sizes get 4:4:4 (VP9 and AV1 take 4:2:0 at any size).
    odd = width % 2 or height % 2
    pix_fmt = "yuv444p" if odd and codec in ("libx264", "libx265") else "yuv420p"
    audio_codec = audio_codec or ("libopus" if Path(path).suffix.lower() == ".webm" else "aac")
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        video.time_base = time_base
        if vfr:
            # Without B-frames decode order is presentation order, so the per-frame durations set
            # below are also what MP4 (which times samples in decode order) needs to end on time.
            video.codec_context.max_b_frames = 0
        for name, value in (color_tags or {}).items():
            setattr(video.codec_context, name, value)
        if rotation:
            video.set_display_rotation(rotation)
        audio = []
        for i in range(audio_streams):
            stream = container.add_stream(audio_codec, rate=48000)
            stream.layout = "stereo" if i % 2 == 0 else "mono"
            stream.metadata["language"] = AUDIO_LANGUAGES[i % len(AUDIO_LANGUAGES)]
            audio.append(stream)
        audio_written = 0  # samples per stream so far
        audio_end = round(end_pts * time_base * 48000)

        def write_audio_until(sample: int) -> None:
            nonlocal audio_written
            while audio and audio_written < sample:
                n = min(1024, sample - audio_written)
                for k, stream in enumerate(audio):
                    container.mux(stream.encode(_tone(stream, audio_written, n, 220.0 * (k + 1))))
                audio_written += n

        for index, pts in enumerate(frame_pts):
            image = draw(index) if draw is not None else gradient(width, height, index)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            for name, value in (color_tags or {}).items():
                setattr(frame, name, value)
            container.mux(_with_durations(video.encode(frame), duration_of))
            # Keep the audio about as far as the video, as a real recorder interleaves them.
            write_audio_until(min(audio_end, round((pts + 1) * time_base * 48000)))
        write_audio_until(audio_end)
        container.mux(_with_durations(video.encode(), duration_of))
        for stream in audio:
            container.mux(stream.encode())


def _with_durations(packets: list[av.Packet], duration_of: dict[int, int]) -> list[av.Packet]:
    """Encoders drop frame durations; set them so the file's last frame lasts as long as intended."""
    for packet in packets:
        packet.duration = duration_of[packet.pts]
    return packets


def _tone(stream: av.AudioStream, start: int, samples: int, hz: float) -> av.AudioFrame:
    t = (start + np.arange(samples)) / 48000.0
    wave = (0.2 * np.sin(2 * math.pi * hz * t)).astype(np.float32)
    channels = stream.layout.nb_channels
    frame = av.AudioFrame.from_ndarray(np.repeat(wave[None, :], channels, 0), format="fltp", layout=stream.layout.name)
    frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
    return frame


def make_audio_only(path: Path, *, seconds: float = 1.0) -> None:
    """Write an AAC tone without any video stream (e.g. ``clip.m4a`` or ``clip.mp4``)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "stereo"
        total = round(seconds * 48000)
        for start in range(0, total, 1024):
            container.mux(stream.encode(_tone(stream, start, min(1024, total - start), 440.0)))
        container.mux(stream.encode())


def make_truncated(path_in: Path, path_out: Path, *, keep: float = 0.6) -> None:
    """Copy the first ``keep`` fraction of ``path_in``'s bytes, as an interrupted download would."""
    data = Path(path_in).read_bytes()
    Path(path_out).write_bytes(data[: int(len(data) * keep)])


def make_image_with_gps_exif(path: Path, *, width: int = 64, height: int = 48, orientation: int = 1) -> None:
    """Write a photo (format by suffix) whose EXIF holds a camera make, a GPS position and ``orientation``.

    The stored pixels are ``gradient(width, height, 0)``: its bright block is in the stored top-left.
    """
    image = Image.fromarray(gradient(width, height, 0))
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0112] = orientation  # Orientation
    gps = {
        1: "N",  # GPSLatitudeRef
        2: (48.0, 51.0, 29.0),  # GPSLatitude
        3: "E",  # GPSLongitudeRef
        4: (2.0, 17.0, 40.0),  # GPSLongitude
    }
    exif[0x8825] = gps  # GPSInfo IFD
    suffix = Path(path).suffix.lower()
    kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg", ".webp") else {}
    image.save(path, exif=exif.tobytes(), **kwargs)


def read_all(path: Path) -> tuple[VideoInfo, list[Frame]]:
    """Decode a whole (small) video with the project's reader: its ``VideoInfo`` and every ``Frame``."""
    from styleface_cli.video.decode import open_video

    with open_video(Path(path)) as reader:
        return reader.info, list(reader)


def read_audio_streams(path: Path) -> list[dict]:
    """Each audio stream's codec, language tag, channels, sample rate and duration in seconds."""
    with av.open(str(path)) as container:
        result = []
        for stream in container.streams.audio:
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            else:  # Matroska keeps no per-stream duration: add up the packets.
                duration = sum(float(p.duration * p.time_base) for p in container.demux(stream) if p.duration)
                container.seek(0)
            result.append(
                {
                    "codec": stream.codec_context.name,
                    "language": stream.metadata.get("language"),
                    "channels": stream.codec_context.channels,
                    "rate": stream.codec_context.sample_rate,
                    "duration_s": duration,
                }
            )
        return result
