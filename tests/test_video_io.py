"""Decode -> encode round trips on synthesised clips: what goes in comes out, or a clear error."""

from __future__ import annotations

import dataclasses
import re
import resource
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from styleface_cli.config import EncodeConfig
from styleface_cli.errors import ConfigError, InputError, OutputError
from styleface_cli.records import Frame
from styleface_cli.video.decode import open_video, probe
from styleface_cli.video.encode import VideoWriter
from tests import media

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def round_trip(source: Path, output: Path, cfg: EncodeConfig = EncodeConfig()) -> None:
    """What the pipeline does, minus the faces: every frame read and written back."""
    with open_video(source) as reader, VideoWriter(output, reader.info, cfg, source) as writer:
        for frame in reader:
            writer.write(frame)


def assert_same_video(source: Path, output: Path, max_mean_error: float = 5.0) -> None:
    """Same geometry, timing and tags, and pixels within ``max_mean_error`` (0-255 scale, mean over the clip)."""
    in_info, in_frames = media.read_all(source)
    out_info, out_frames = media.read_all(output)
    assert (out_info.width, out_info.height) == (in_info.width, in_info.height)
    assert len(out_frames) == len(in_frames) == in_info.frame_count
    assert out_info.time_base == in_info.time_base
    assert [f.pts for f in out_frames] == [f.pts for f in in_frames]
    assert out_info.duration_s == pytest.approx(in_info.duration_s, abs=1e-3)
    assert out_info.rotation == in_info.rotation
    tags = ("color_range", "color_primaries", "color_trc", "colorspace")
    assert [getattr(out_info, t) for t in tags] == [getattr(in_info, t) for t in tags]
    assert all(b.image.shape == a.image.shape for a, b in zip(in_frames, out_frames))
    errors = [np.abs(b.image.astype(int) - a.image.astype(int)).mean() for a, b in zip(in_frames, out_frames)]
    error = float(np.mean(errors))
    assert error < max_mean_error


def no_leftovers(folder: Path, *expected: str) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(expected)


@pytest.mark.parametrize(
    ("width", "height", "vfr"),
    [(64, 48, False), (65, 49, False), (64, 48, True), (33, 25, True)],
    ids=["64x48", "odd-65x49", "vfr", "odd-vfr"],
)
def test_round_trip_keeps_size_frames_and_every_timestamp(tmp_path, width, height, vfr):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=width, height=height, frames=20, vfr=vfr)
    round_trip(source, output)
    assert_same_video(source, output)


def test_vfr_timestamps_really_are_irregular():
    # The VFR clips above must exercise irregular gaps, else they prove nothing.
    assert len(set(media.VFR_DURATIONS_MS)) > 3


@pytest.mark.parametrize(("source_name", "output_name"), [("in.mkv", "out.mp4"), ("in.mp4", "out.mkv")])
def test_a_vfr_clip_keeps_its_irregular_gaps_and_duration(tmp_path, source_name, output_name):
    source, output = tmp_path / source_name, tmp_path / output_name
    media.make_video(source, width=64, height=48, frames=12, vfr=True)
    round_trip(source, output)
    info, frames = media.read_all(output)
    durations_ms = (media.VFR_DURATIONS_MS * 2)[:12]
    gaps_ms = [round((b.time_s - a.time_s) * 1000) for a, b in zip(frames, frames[1:])]
    assert gaps_ms == list(durations_ms[:11])
    assert info.duration_s == pytest.approx(sum(durations_ms) / 1000, abs=1e-3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_read_from_the_display_matrix_and_kept(tmp_path, rotation):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=10, rotation=rotation)
    info = probe(source)
    assert info.rotation == rotation
    assert (info.width, info.height) == (64, 48)  # frames stay in their stored orientation
    round_trip(source, output)
    assert probe(output).rotation == rotation
    assert_same_video(source, output)


@pytest.mark.parametrize(
    "tags",
    [
        media.BT709_TAGS,
        {"color_range": 2, "color_primaries": 1, "color_trc": 13, "colorspace": 1},  # full range, sRGB curve
        {"color_range": 1, "color_primaries": 6, "color_trc": 6, "colorspace": 6},  # BT.601 (SMPTE 170M)
    ],
    ids=["bt709", "full-range", "bt601"],
)
def test_colour_tags_are_kept_and_colours_survive(tmp_path, tags):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=8, color_tags=tags)
    info = probe(source)
    assert {t: getattr(info, t) for t in tags} == tags
    round_trip(source, output, EncodeConfig(crf=10))
    # The codec's own loss is about 1.6 here; ignoring the tags (BT.601, limited range) gives 7-11.
    assert_same_video(source, output, max_mean_error=3.0)


def test_every_audio_stream_is_copied_with_its_language(tmp_path):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=25, audio_streams=2)
    assert probe(source).audio_streams == 2
    round_trip(source, output)
    before, after = media.read_audio_streams(source), media.read_audio_streams(output)
    assert [a["language"] for a in after] == ["eng", "fra"]
    def kind(streams):
        return [(a["codec"], a["channels"], a["rate"]) for a in streams]

    assert kind(after) == kind(before)
    for a, b in zip(after, before):
        assert a["duration_s"] == pytest.approx(b["duration_s"], abs=0.03)
    assert_same_video(source, output)


def test_audio_is_copied_packet_for_packet(tmp_path):
    source, output = tmp_path / "in.mkv", tmp_path / "out.mkv"
    media.make_video(source, width=64, height=48, frames=25, audio_streams=1)
    round_trip(source, output)

    def audio_packets(path):
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            return [(bytes(p), float(p.pts * p.time_base)) for p in container.demux(stream) if p.size]

    assert audio_packets(output) == audio_packets(source)


def test_audio_the_container_cannot_hold_is_re_encoded(tmp_path):
    # AAC cannot go into WebM: it becomes Opus, language tags and length kept.
    source, output = tmp_path / "in.mp4", tmp_path / "out.webm"
    media.make_video(source, width=65, height=49, frames=25, audio_streams=2)
    round_trip(source, output, EncodeConfig(codec="libvpx-vp9"))
    after = media.read_audio_streams(output)
    assert [(a["codec"], a["language"]) for a in after] == [("opus", "eng"), ("opus", "fra")]
    for a, b in zip(after, media.read_audio_streams(source)):
        assert a["duration_s"] == pytest.approx(b["duration_s"], abs=0.05)
    info, frames = media.read_all(output)
    # VP9 keeps 4:2:0 at odd sizes
    assert (info.width, info.height, info.pix_fmt, len(frames)) == (65, 49, "yuv420p", 25)


def test_pcm_audio_becomes_aac_in_mp4(tmp_path):
    source, output = tmp_path / "in.mov", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=10, audio_streams=1, audio_codec="pcm_s16le")
    round_trip(source, output)
    [audio] = media.read_audio_streams(output)
    assert (audio["codec"], audio["language"]) == ("aac", "eng")
    assert audio["duration_s"] == pytest.approx(0.4, abs=0.05)


def test_no_audio_when_keep_audio_is_off_or_there_is_no_source(tmp_path):
    source = tmp_path / "in.mp4"
    media.make_video(source, width=64, height=48, frames=5, audio_streams=2)
    round_trip(source, tmp_path / "off.mp4", EncodeConfig(keep_audio=False))
    assert media.read_audio_streams(tmp_path / "off.mp4") == []
    with open_video(source) as reader, VideoWriter(tmp_path / "none.mp4", reader.info, EncodeConfig(), None) as writer:
        for frame in reader:
            writer.write(frame)
    assert media.read_audio_streams(tmp_path / "none.mp4") == []
    assert len(media.read_all(tmp_path / "none.mp4")[1]) == 5


def test_an_error_inside_the_writer_leaves_nothing_behind(tmp_path):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=10, audio_streams=1)
    with pytest.raises(RuntimeError, match="detector crashed"):
        with open_video(source) as reader, VideoWriter(output, reader.info, EncodeConfig(), source) as writer:
            for frame in reader:
                writer.write(frame)
                if frame.index == 5:
                    raise RuntimeError("detector crashed")
    assert no_leftovers(tmp_path, "in.mp4")
    output.write_bytes(b"previous result")
    with pytest.raises(ValueError, match="expected a \\[48, 64, 3\\] uint8 image"):
        with VideoWriter(output, probe(source), EncodeConfig(), source) as writer:
            writer.write(Frame(index=0, pts=0, time_s=0.0, image=np.zeros((48, 64), np.uint8)))
    assert output.read_bytes() == b"previous result"
    assert no_leftovers(tmp_path, "in.mp4", "out.mp4")


@pytest.mark.parametrize(
    ("name", "cfg", "words"),
    [
        ("out.mp4", EncodeConfig(preset="warp-speed"), "cannot open the libx264 encoder"),
        (
            "out.mp4",
            EncodeConfig(encoder_options=(("no-such-option", "1"),)),
            "does not know the option(s) ['no-such-option']",
        ),
        ("out.webm", EncodeConfig(codec="libx264"), "cannot write 'libx264' video here"),
        ("out.mp4", EncodeConfig(codec="no-such-codec"), "cannot write 'no-such-codec' video here"),
    ],
)
def test_bad_encoder_settings_fail_before_any_work_and_leave_nothing(tmp_path, name, cfg, words):
    source = tmp_path / "in.mp4"
    media.make_video(source, width=64, height=48, frames=3)
    with pytest.raises(ConfigError, match=re.escape(words)):
        VideoWriter(tmp_path / name, probe(source), cfg, source).__enter__()
    assert no_leftovers(tmp_path, "in.mp4")


def test_a_writer_given_no_frames_writes_nothing(tmp_path):
    source = tmp_path / "in.mp4"
    media.make_video(source, width=64, height=48, frames=3)
    with pytest.raises(OutputError, match="no video frames"):
        with VideoWriter(tmp_path / "out.mp4", probe(source), EncodeConfig(), source):
            pass
    assert no_leftovers(tmp_path, "in.mp4")


def _bad_inputs(folder: Path) -> dict[str, str]:
    """File name -> the words its InputError must contain."""
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    media.make_audio_only(folder / "audio.mp4")
    media.make_video(folder / "whole.mp4", width=64, height=48, frames=40)
    media.make_truncated(folder / "whole.mp4", folder / "no_index.mp4", keep=0.7)  # the index is at the end
    media.make_video(folder / "whole_fs.mp4", width=160, height=120, frames=40, faststart=True)
    media.make_truncated(folder / "whole_fs.mp4", folder / "cut.mp4", keep=0.6)
    media.make_video(folder / "whole.mkv", width=160, height=120, frames=40)
    media.make_truncated(folder / "whole.mkv", folder / "cut.mkv", keep=0.5)
    return {
        "missing.mp4": "no such file",
        "empty.mp4": "empty",
        "text.mp4": "not a readable video",
        "audio.mp4": "no video stream (it has 1 audio stream)",
        "no_index.mp4": "not a readable video",
        "cut.mp4": "truncated",
        "cut.mkv": "truncated",
    }


def test_unusable_inputs_fail_with_one_line_and_leave_nothing_behind(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    for name, words in _bad_inputs(inputs).items():
        with pytest.raises(InputError, match=re.escape(words)) as error:
            round_trip(inputs / name, outputs / name)
        message = str(error.value)
        assert "\n" not in message and name in message
        assert no_leftovers(outputs), name


def test_truncation_is_found_wherever_the_cut_falls(tmp_path):
    whole = tmp_path / "whole.mp4"
    media.make_video(whole, width=160, height=120, frames=40, faststart=True, audio_streams=1)
    for keep in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        media.make_truncated(whole, tmp_path / "cut.mp4", keep=keep)
        with pytest.raises(InputError, match=r"(truncated|corrupt).*frame") as error:
            round_trip(tmp_path / "cut.mp4", tmp_path / "out.mp4")
        assert "\n" not in str(error.value)
        assert no_leftovers(tmp_path, "whole.mp4", "cut.mp4"), keep


def test_probe_reads_the_header_and_the_first_frame_only(tmp_path):
    source = tmp_path / "in.mp4"
    media.make_video(source, width=64, height=48, frames=30, fps=30, audio_streams=2, rotation=270)
    info = probe(source)
    assert (info.width, info.height, info.frame_count, info.rotation) == (64, 48, 30, 270)
    assert info.average_fps == 30 and info.duration_s == pytest.approx(1.0)
    assert (info.codec, info.pix_fmt, info.audio_streams, info.is_image) == ("h264", "yuv420p", 2, False)
    with open_video(source) as reader:
        frames = [next(iter(reader)) for _ in range(1)]
    assert frames[0].index == 0 and frames[0].pts == 0 and frames[0].image.shape == (48, 64, 3)


def test_encoding_streams_instead_of_keeping_frames(tmp_path):
    """300 frames of 320x240 are 69 MB of RGB; the round trip may hold only a few at a time.

    tracemalloc sees what Python and numpy allocate; the decoded images themselves live in FFmpeg's
    buffers (the arrays are views), which only the process size shows.
    """
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=320, height=240, frames=300, fps=50, audio_streams=1)
    frame_bytes = 320 * 240 * 3
    rss_at: dict[int, int] = {}
    tracemalloc.start()
    try:
        cfg = EncodeConfig(preset="ultrafast")
        with open_video(source) as reader, VideoWriter(output, reader.info, cfg, source) as writer:
            for frame in reader:
                writer.write(frame)
                if frame.index in (50, 299):
                    rss_at[frame.index] = _rss_bytes()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * frame_bytes, f"Python held {peak / frame_bytes:.0f} frames at once"
    assert rss_at[299] - rss_at[50] < 60 * frame_bytes, "process memory grew with the number of frames"
    assert len(media.read_all(output)[1]) == 300


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak so far is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.fixtures
@pytest.mark.skipif(not (FIXTURES / "videos" / "hamilton_clip.mp4").exists(), reason="needs ../shared/fixtures")
def test_real_footage_round_trip(tmp_path):
    source, output = FIXTURES / "videos" / "hamilton_clip.mp4", tmp_path / "out.mp4"
    round_trip(source, output)
    in_info, out_info = probe(source), probe(output)
    assert (out_info.width, out_info.height) == (in_info.width, in_info.height)
    assert out_info.frame_count == in_info.frame_count == 275
    assert out_info.duration_s == pytest.approx(in_info.duration_s, abs=1e-3)
    # Everything else too: time base, rotation, colour tags, codec, pixel format, audio streams.
    assert dataclasses.replace(out_info, path=source, average_fps=in_info.average_fps) == in_info
    [audio_in], [audio_out] = media.read_audio_streams(source), media.read_audio_streams(output)
    assert audio_out == audio_in
    with open_video(source) as a, open_video(output) as b:
        for x, y in zip(a, b):
            assert x.pts == y.pts
            if x.index % 25 == 0:
                assert np.abs(x.image.astype(int) - y.image.astype(int)).mean() < 6


def _planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def test_untouched_yuv420p_frames_reach_the_encoder_without_a_colour_round_trip(tmp_path):
    """Read as planes, written as planes: with lossless x264 the output's planes equal the input's exactly
    (an RGB round trip would change them by rounding)."""
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=5)
    with open_video(source) as reader, VideoWriter(output, reader.info, EncodeConfig(crf=0), source) as writer:
        for frame in reader:
            assert frame.yuv is not None  # decoded frames keep their planes
            writer.write(frame)
            assert frame.yuv is not None  # and writing them never made RGB of them
    assert all(np.array_equal(a, b) for a, b in zip(_planes(source), _planes(output), strict=True))


def test_edited_planes_are_what_gets_encoded(tmp_path):
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    media.make_video(source, width=64, height=48, frames=3)
    with open_video(source) as reader, VideoWriter(output, reader.info, EncodeConfig(crf=0), source) as writer:
        for frame in reader:
            luma, _, _ = frame.yuv.planes()
            luma[8:24, 8:24] = 16
            writer.write(frame)
    expected = _planes(source)
    for before, after in zip(expected, _planes(output), strict=True):
        assert (after[8:24, 8:24] == 16).all()
        before[8:24, 8:24] = 16
        assert np.array_equal(before, after)
