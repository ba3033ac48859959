"""The encoder option builders are pure functions: checked by equality, no encoding here."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

from styleface_cli.config import EncodeConfig
from styleface_cli.records import VideoInfo
from styleface_cli.video.encode import (
    VideoStreamSettings,
    audio_fallback_codec,
    build_container_options,
    build_encoder_options,
    build_stream_settings,
    can_copy_audio,
)

INFO = VideoInfo(
    path=Path("in.mp4"),
    width=1280,
    height=720,
    frame_count=250,
    average_fps=Fraction(30000, 1001),
    time_base=Fraction(1, 30000),
    duration_s=8.34,
    rotation=90,
    codec="h264",
    pix_fmt="yuv420p",
    audio_streams=1,
    color_range=1,
    color_primaries=1,
    color_trc=1,
    colorspace=1,
)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (EncodeConfig(), {"crf": "20", "preset": "veryfast", "a53cc": "0", "udu_sei": "0"}),
        (EncodeConfig(codec="libx264", crf=28, preset="medium"), {"crf": "28", "preset": "medium", "a53cc": "0", "udu_sei": "0"}),
        (
            EncodeConfig(codec="libx265", crf=20, preset="slow"),
            {"crf": "25", "preset": "slow", "x265-params": "log-level=error", "a53cc": "0", "udu_sei": "0"},
        ),
        (
            EncodeConfig(codec="libx265", crf=50, preset="fast"),
            {"crf": "51", "preset": "fast", "x265-params": "log-level=error", "a53cc": "0", "udu_sei": "0"},
        ),
        (
            EncodeConfig(codec="libvpx-vp9", crf=20, preset="veryfast"),
            {"crf": "25", "b": "0", "deadline": "good", "row-mt": "1", "cpu-used": "5"},
        ),
        (
            EncodeConfig(codec="libvpx-vp9", crf=51, preset="veryslow"),
            {"crf": "63", "b": "0", "deadline": "good", "row-mt": "1", "cpu-used": "0"},
        ),
        (
            EncodeConfig(codec="libvpx-vp9", crf=0, preset="custom"),
            {"crf": "0", "b": "0", "deadline": "good", "row-mt": "1"},
        ),
        (
            EncodeConfig(codec="libaom-av1", crf=30, preset="medium"),
            {"crf": "37", "b": "0", "row-mt": "1", "cpu-used": "3"},
        ),
        (EncodeConfig(codec="libsvtav1", crf=20, preset="veryfast"), {"crf": "25", "preset": "10"}),
        (EncodeConfig(codec="h264_nvenc", crf=23, preset="medium"), {"rc": "vbr", "cq": "23", "preset": "p5", "a53cc": "0", "udu_sei": "0"}),
        (EncodeConfig(codec="mpeg4", crf=20, preset="veryfast"), {}),
    ],
)
def test_quality_and_speed_in_each_encoders_terms(cfg, expected):
    assert build_encoder_options(cfg, INFO) == expected


def test_user_encoder_options_override_and_extend():
    cfg = EncodeConfig(encoder_options=(("crf", "17"), ("tune", "film"), ("x264-params", "keyint=60")))
    assert build_encoder_options(cfg, INFO) == {
        "crf": "17",
        "preset": "veryfast",
        "tune": "film",
        "x264-params": "keyint=60",
        "a53cc": "0",
        "udu_sei": "0",
    }


def test_stream_settings_keep_the_inputs_size_timing_colour_and_rotation():
    assert build_stream_settings(EncodeConfig(), INFO, ".mp4") == VideoStreamSettings(
        codec="libx264",
        width=1280,
        height=720,
        pix_fmt="yuv420p",
        time_base=Fraction(1, 30000),
        frame_rate=Fraction(30000, 1001),
        rotation=90,
        color_range=1,
        color_primaries=1,
        color_trc=1,
        colorspace=1,
        codec_tag=None,
    )


@pytest.mark.parametrize(
    ("codec", "width", "height", "pix_fmt"),
    [
        ("libx264", 64, 48, "yuv420p"),
        ("libx264", 65, 49, "yuv444p"),  # H.264 cannot code 4:2:0 at odd sizes
        ("libx264", 64, 49, "yuv444p"),
        ("libx265", 65, 48, "yuv444p"),
        ("libvpx-vp9", 65, 49, "yuv420p"),  # VP9 and AV1 can
        ("libsvtav1", 65, 49, "yuv420p"),  # (SVT-AV1 takes nothing but 4:2:0)
        ("mpeg4", 65, 49, "yuv420p"),
    ],
)
def test_odd_sizes_get_a_pixel_format_that_keeps_them(codec, width, height, pix_fmt):
    info = dataclasses.replace(INFO, width=width, height=height)
    settings = build_stream_settings(EncodeConfig(codec=codec), info, ".mkv")
    assert (settings.width, settings.height, settings.pix_fmt) == (width, height, pix_fmt)


def test_hevc_in_mp4_is_tagged_hvc1_for_apple_players():
    assert build_stream_settings(EncodeConfig(codec="libx265"), INFO, ".mp4").codec_tag == "hvc1"
    assert build_stream_settings(EncodeConfig(codec="libx265"), INFO, ".MOV").codec_tag == "hvc1"
    assert build_stream_settings(EncodeConfig(codec="libx265"), INFO, ".mkv").codec_tag is None
    assert build_stream_settings(EncodeConfig(codec="libx264"), INFO, ".mp4").codec_tag is None


def test_an_unknown_frame_rate_falls_back_to_25():
    info = dataclasses.replace(INFO, average_fps=Fraction(0))
    assert build_stream_settings(EncodeConfig(), info).frame_rate == Fraction(25)


def test_container_options_and_audio_fallback():
    assert build_container_options(".mp4") == {"movflags": "+faststart"}
    assert build_container_options(".mov") == {"movflags": "+faststart"}
    assert build_container_options(".mkv") == {}
    assert build_container_options(".webm") == {}
    assert audio_fallback_codec(".webm") == "libopus"
    assert audio_fallback_codec(".mp4") == "aac"
    assert audio_fallback_codec(".mkv") == "aac"


@pytest.mark.parametrize(
    ("codec", "suffix", "copy"),
    [
        ("aac", ".mp4", True),
        ("opus", ".MP4", True),
        ("pcm_s16le", ".mp4", False),  # FFmpeg would mux it, but few players read PCM in MP4
        ("pcm_s16le", ".mov", None),  # MOV and the rest: the muxer decides
        ("aac", ".webm", None),
    ],
)
def test_which_audio_is_stream_copied(codec, suffix, copy):
    assert can_copy_audio(codec, suffix) is copy


def test_builders_do_not_mutate_their_inputs():
    cfg = EncodeConfig(encoder_options=(("tune", "film"),))
    first = build_encoder_options(cfg, INFO)
    first["crf"] = "99"
    assert build_encoder_options(cfg, INFO)["crf"] == "20"


def test_auto_codec_follows_the_container():
    from styleface_cli.video.encode import resolve_codec

    assert resolve_codec("auto", ".mp4") == resolve_codec("auto", ".MKV") == "libx264"
    assert resolve_codec("auto", ".webm") == "libvpx-vp9"
    assert resolve_codec("libx265", ".webm") == "libx265"  # an explicit choice is kept (and fails clearly)
    assert build_encoder_options(EncodeConfig(), INFO, ".webm")["b"] == "0"
