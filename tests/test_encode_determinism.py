"""The same input gives the same output pixels every time, in one process or many.

x264's AVX-512 code with mb-tree rate control gives a different bitstream from run to run for identical input
frames (``styleface_cli/video/x264_cpu.py``), so the writer masks AVX-512 out of x264's CPU flags. On a CPU
without AVX-512 the repeat tests pass with or without the mask; on one with AVX-512 (this project's machines)
they fail without it: 96x64 clips gave 10 different outputs in 10 encodes.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import pytest

from styleface_cli import pipeline
from styleface_cli.config import EncodeConfig
from styleface_cli.records import VideoInfo
from styleface_cli.video.decode import open_video
from styleface_cli.video.encode import VideoWriter, build_encoder_options
from styleface_cli.video.x264_cpu import cpu_flags_without_avx512, deterministic_x264_asm
from tests import media

# x264 build 165's own table (x264_cpu_names), as PyAV 18's libx264 holds it: each name's full flag set.
X264_NAMES = {"MMX2": 0x3, "SSE": 0x7, "SSE2": 0xF, "SSE2Fast": 0x10000F, "LZCNT": 0x1F, "SSE3": 0x2F,
              "SSSE3": 0x6F, "SSE4.1": 0xEF, "SSE4.2": 0x1EF, "AVX": 0x3EF, "FMA3": 0x13EF, "BMI1": 0x23FF,
              "BMI2": 0x63FF, "AVX2": 0xF3FF, "AVX512": 0x1F3FF, "Cache64": 0x40000}
INFO = VideoInfo(path=Path("in.mp4"), width=96, height=64, frame_count=30, average_fps=Fraction(25),
                 time_base=Fraction(1, 25), duration_s=1.2, rotation=0, codec="h264", pix_fmt="yuv420p",
                 audio_streams=0)


def frame_hashes(path: Path) -> list[str]:
    """One hash per decoded frame: the planes exactly as stored."""
    with av.open(str(path)) as container:
        return [hashlib.sha1(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()
                for frame in container.decode(video=0)]


def test_only_the_avx512_bit_is_taken_from_what_x264_detects():
    zen4 = 0x11F3FF  # what x264 detects on an AMD EPYC (Zen 4): AVX-512, AVX2, ..., SSE2Fast
    assert cpu_flags_without_avx512(zen4, X264_NAMES) == 0x10F3FF  # everything but bit 16
    assert cpu_flags_without_avx512(0x10F3FF, X264_NAMES) is None  # no AVX-512: x264 keeps its own choice
    assert cpu_flags_without_avx512(zen4, {"AVX2": 0xF3FF}) is None  # a table without the name: left alone


def test_the_loaded_x264_never_gets_avx512():
    mask = deterministic_x264_asm()
    if mask is None:
        pytest.skip("x264 would not use AVX-512 on this CPU (or its library cannot be inspected)")
    assert mask & 0x10000 == 0 and mask & 0xF3FF == 0xF3FF  # AVX2 and below kept, AVX-512 gone


def test_the_cpu_mask_comes_before_the_users_x264_params():
    assert build_encoder_options(EncodeConfig(), INFO, x264_asm=7)["x264-params"] == "asm=7"
    user = EncodeConfig(encoder_options=(("x264-params", "keyint=60:asm=0"),))
    assert build_encoder_options(user, INFO, x264_asm=7)["x264-params"] == "asm=7:keyint=60:asm=0"  # the user's win
    assert "x264-params" not in build_encoder_options(EncodeConfig(), INFO)
    assert "x264-params" not in build_encoder_options(EncodeConfig(codec="libvpx-vp9"), INFO, x264_asm=7)


def test_the_writer_encodes_the_same_frames_to_the_same_bitstream_every_time(tmp_path):
    source = tmp_path / "clip.mp4"
    media.make_video(source, width=96, height=64, frames=30)
    outputs = []
    for run in range(5):
        output = tmp_path / f"out{run}.mp4"
        with open_video(source) as reader, VideoWriter(output, reader.info, EncodeConfig(), source) as writer:
            for frame in reader:
                writer.write(frame)
        outputs.append(output.read_bytes())
    assert all(output == outputs[0] for output in outputs), "x264 gave different bitstreams for the same frames"


def test_the_same_clip_through_the_pipeline_five_times_gives_the_same_pixels(tmp_path):
    from styleface_cli.api import Anonymizer

    source = tmp_path / "clip.mp4"
    media.make_video(source, width=96, height=64, frames=30)
    anonymizer = Anonymizer.from_options(method="blur")  # models loaded once: one process, five runs
    runs = []
    for run in range(5):
        output = tmp_path / f"out{run}.mp4"
        stats = pipeline.run(source=source, output=output, cfg=anonymizer.cfg, tools=anonymizer.tools)
        assert stats.frames == 30
        runs.append(frame_hashes(output))
    assert len(runs[0]) == 30
    for run, hashes in enumerate(runs[1:], 1):
        differ = [i for i, (a, b) in enumerate(zip(hashes, runs[0])) if a != b]
        assert hashes == runs[0], f"run {run}: frames {differ} differ from run 0"
