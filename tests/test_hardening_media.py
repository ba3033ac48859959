"""What real files do to the media side (issue 9): transparency, bit depths and modes, animations, colour
profiles, stream tags, truncation in any container, decompression bombs, output kinds, AVI timing, and
start-up imports. Every file is built here (Pillow, PyAV)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.config import EncodeConfig
from styleface_cli.errors import ConfigError, ExitCode, InputError, OutputError
from styleface_cli.records import VideoInfo
from styleface_cli.video.decode import open_video
from styleface_cli.video.encode import build_stream_settings
from styleface_cli.video.images import read_image
from styleface_cli.video.media import media_writer, open_media
from tests import media
from tests.test_cli_anonymize import FACE_BOXES_T1
from tests.test_detect import insightface_photo

REPO = Path(__file__).resolve().parents[1]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def anonymize(source: Path, out: Path, *extra: str):
    result = run("anonymize", str(source), "-o", str(out), "--method", "blur", "--quiet", *extra)
    return result


def face_box(margin: int = 30) -> tuple[int, int, int, int]:
    """The inner part of the first face of the insightface photo (always inside the blur ellipse)."""
    x0, y0, x1, y1 = FACE_BOXES_T1[0]
    return x0 + margin, y0 + margin, x1 - margin, y1 - margin


def far_from_faces(array: np.ndarray) -> np.ndarray:
    """A corner of the photo that no face's ellipse reaches (the faces sit lower)."""
    return array[:150, :60]


# --------------------------------------------------------------------------------------------------
# 3. Transparency is kept exactly; faces are hidden in the colour data under it


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_transparency_is_kept_and_faces_under_it_are_hidden(tmp_path, suffix):
    photo = insightface_photo()  # [H, W, 3] with six faces
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    x0, y0, x1, y1 = FACE_BOXES_T1[0]
    alpha[:, : (x0 + x1) // 2] = 0  # the user made the left half transparent, half a face included
    alpha[10:20, :] = 128
    source = tmp_path / f"cutout{suffix}"
    rgba = Image.fromarray(np.dstack([photo, alpha]))
    rgba.save(source, **({"lossless": True} if suffix == ".webp" else {}))
    out = tmp_path / f"out{suffix}"
    result = anonymize(source, out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        pixels = np.asarray(written)
    np.testing.assert_array_equal(pixels[..., 3], alpha)  # exactly as it was
    fx0, fy0, fx1, fy1 = face_box()
    hidden = np.abs(pixels[fy0:fy1, fx0:fx1, :3].astype(int) - photo[fy0:fy1, fx0:fx1]).mean()
    assert hidden > 10, "the face under the transparent half must be hidden in the colour data"


def test_transparency_cannot_go_into_a_jpeg(tmp_path):
    source = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([media.gradient(40, 30, 0), np.full((30, 40), 7, np.uint8)])).save(source)
    result = anonymize(source, tmp_path / "out.jpg")
    assert result.exit_code == ExitCode.OUTPUT
    assert "transparency" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutout.png"]


# --------------------------------------------------------------------------------------------------
# 4. Every mode and bit depth is written back faithfully (or refused clearly)


def test_16_bit_grey_png_stays_16_bit_and_exact(tmp_path):
    deep = (np.arange(48 * 64).reshape(48, 64) * 21 % 65536).astype(np.uint16)  # values up to 65535
    source = tmp_path / "deep.png"
    Image.fromarray(deep).save(source)
    assert Image.open(source).mode == "I;16"
    out = tmp_path / "out.png"
    result = anonymize(source, out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(written), deep)  # no faces: every value as it was
    # the 8-bit working copy is scaled, not clipped (the old reader gave an almost white picture)
    working, _ = read_image(source)
    np.testing.assert_array_equal(working[..., 0], ((deep.astype(int) + 128) // 257).astype(np.uint8))


def test_16_bit_grey_with_a_transparent_value_keeps_both(tmp_path):
    deep = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    source = tmp_path / "deep.png"
    Image.fromarray(deep).save(source, transparency=500)  # the pixel of value 500 is transparent
    out = tmp_path / "out.png"
    with open_media(source) as reader, media_writer(out, reader, EncodeConfig(), source) as writer:
        for frame in reader:
            frame.image[20:25, 20:25] = (0, 0, 0)  # a hidden face, outside the transparent pixel
            writer.write(frame)
    with Image.open(out) as written:
        assert (written.mode, written.info.get("transparency")) == ("I;16", 500)
        got = np.asarray(written)
    outside = np.ones(deep.shape, bool)
    outside[20:25, 20:25] = False
    np.testing.assert_array_equal(got[outside], deep[outside])
    assert (got == 500).sum() == 1 and np.all(got[20:25, 20:25] == 0)


def test_lossless_webp_stays_lossless(tmp_path):
    source = tmp_path / "art.webp"
    image = media.gradient(40, 30, 0)
    Image.fromarray(image).save(source, lossless=True)
    out = tmp_path / "out.webp"
    assert anonymize(source, out).exit_code == 0
    with Image.open(out) as written:
        np.testing.assert_array_equal(np.asarray(written.convert("RGB")), image)


def _picture(mode: str, path: Path) -> Image.Image:
    rgb = Image.fromarray(media.gradient(40, 30, 3))
    if mode == "P+transparency":
        image = rgb.quantize(16)
        image.info["transparency"] = 3
        image.save(path, transparency=3)
    elif mode == "L+transparency":
        image = rgb.convert("L")
        image.save(path, transparency=int(np.asarray(image)[0, 0]))
    else:
        image = rgb.convert(mode)
        image.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return Image.open(path)


# (input mode, file) -> the mode it is written back in
MODES = {
    ("1", ".png"): "L",
    ("L", ".png"): "L",
    ("LA", ".png"): "LA",
    ("P", ".png"): "RGB",
    ("P+transparency", ".png"): "RGBA",
    ("L+transparency", ".png"): "LA",
    ("RGB", ".png"): "RGB",
    ("RGBA", ".png"): "RGBA",
    ("L", ".jpg"): "L",
    ("CMYK", ".jpg"): "CMYK",
}


@pytest.mark.parametrize("mode,suffix", sorted(MODES))
def test_every_mode_is_written_back_as_it_was_outside_edits(tmp_path, mode, suffix):
    source = tmp_path / f"in{suffix}"
    original = _picture(mode, source)
    expected_mode = MODES[(mode, suffix)]
    out = tmp_path / f"out{suffix}"
    with open_media(source) as reader, media_writer(out, reader, EncodeConfig(), source) as writer:
        for frame in reader:
            edited = frame.image  # [H, W, 3]
            edited[5:15, 5:15] = (200, 30, 90)  # a "hidden face"
            writer.write(frame)
    with Image.open(out) as written:
        assert written.mode == expected_mode
        assert "transparency" not in written.info or expected_mode == "RGBA"
        written.load()
        back = written.copy()
    # outside the edit, the picture reads as the original did (exactly, for the lossless PNG)
    want = np.asarray(original.convert("RGBA"), dtype=int)
    got = np.asarray(back.convert("RGBA"), dtype=int)
    outside = np.ones(want.shape[:2], bool)
    outside[5:15, 5:15] = False
    tolerance = 0 if suffix == ".png" else 12
    assert np.abs(got[outside] - want[outside]).max() <= tolerance
    assert np.abs(got[8:12, 8:12, :3] - want[8:12, 8:12, :3]).max() > 20  # the edit is there


def test_modes_that_cannot_be_written_back_are_refused(tmp_path):
    source = tmp_path / "float.png"  # a TIFF of 32-bit floats under a picture name
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(source, format="TIFF")
    result = anonymize(source, tmp_path / "out.png")
    assert result.exit_code == ExitCode.INPUT
    assert "not supported" in result.output and len(result.output.strip().splitlines()) == 1


def test_output_modes_are_a_pure_rule():
    from styleface_cli.video.images import output_mode

    assert output_mode("I;16", False, "PNG") == "I;16"
    assert output_mode("I;16", False, "JPEG") == "L"
    assert output_mode("I;16", True, "PNG") == "I;16" and output_mode("I;16", True, "WEBP") == "RGBA"
    assert output_mode("1", False, "PNG") == "L"
    assert output_mode("RGBA", True, "WEBP") == "RGBA"
    assert output_mode("LA", True, "PNG") == "LA" and output_mode("LA", True, "WEBP") == "RGBA"
    assert output_mode("P", True, "PNG") == "RGBA" and output_mode("P", False, "PNG") == "RGB"
    assert output_mode("CMYK", False, "JPEG") == "CMYK" and output_mode("CMYK", False, "PNG") == "RGB"
    with pytest.raises(OutputError, match="transparency"):
        output_mode("RGBA", True, "JPEG")


# --------------------------------------------------------------------------------------------------
# 6. Animated images are videos: every frame, durations and loop kept, in their own format


DURATIONS = [40, 80, 120, 200]


def _animation(path: Path, faces: bool = True) -> list[np.ndarray]:
    photo = insightface_photo()
    x0, y0, x1, y1 = FACE_BOXES_T1[0]
    crop = photo[y0 - 60 : y1 + 60, x0 - 60 : x1 + 60]  # one face with room around it
    frames = []
    for i in range(len(DURATIONS)):
        frame = np.roll(crop, 4 * i, axis=1) if faces else media.gradient(crop.shape[1], crop.shape[0], i)
        frames.append(np.ascontiguousarray(frame))
    images = [Image.fromarray(f) for f in frames]
    options = {"lossless": True} if path.suffix == ".webp" else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=DURATIONS, loop=3, **options)
    return frames


def _read_animation(path: Path) -> tuple[list[np.ndarray], list[int], int | None]:
    frames, durations = [], []
    with Image.open(path) as image:
        loop = image.info.get("loop")
        for i in range(image.n_frames):
            image.seek(i)
            image.load()
            durations.append(int(image.info["duration"]))
            frames.append(np.asarray(image.convert("RGB")).astype(int))
    return frames, durations, loop


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animations_keep_every_frame_timing_and_loop_and_hide_every_face(tmp_path, suffix):
    source = tmp_path / f"anim{suffix}"
    drawn = _animation(source)
    out = tmp_path / f"out{suffix}"
    result = run("anonymize", str(source), "-o", str(out), "--method", "blur", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] == len(DURATIONS)
    frames, durations, loop = _read_animation(out)
    assert durations == DURATIONS and loop == 3
    original, _, _ = _read_animation(source)
    assert len(frames) == len(DURATIONS)
    for i, (got, was) in enumerate(zip(frames, original)):
        centre = (slice(95, 125), slice(95 + 4 * i, 125 + 4 * i))  # the face's middle, moving right
        assert np.abs(got[centre] - was[centre]).mean() > 10, f"frame {i}: the face is not hidden"
        assert np.abs(got[:12, :12] - was[:12, :12]).mean() < 3  # far from the face: as it was


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_truncated_animations_are_refused(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    _animation(whole, faces=False)
    cut = tmp_path / f"cut{suffix}"
    media.make_truncated(whole, cut, keep=0.8)
    result = anonymize(cut, tmp_path / f"out{suffix}")
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "truncated" in result.output
    assert not (tmp_path / f"out{suffix}").exists()


def test_a_phones_multi_picture_jpeg_is_a_photo_not_an_animation(tmp_path):
    source = tmp_path / "phone.jpg"  # MPO: the photo, then a preview (or a depth map)
    first, second = Image.fromarray(media.gradient(40, 30, 0)), Image.fromarray(media.gradient(40, 30, 9))
    first.save(source, format="MPO", save_all=True, append_images=[second])
    assert Image.open(source).format == "MPO"
    result = anonymize(source, tmp_path / "out.jpg")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.jpg") as written:
        assert getattr(written, "n_frames", 1) == 1
        assert np.abs(np.asarray(written, dtype=int) - media.gradient(40, 30, 0)).mean() < 3


def test_graded_transparency_cannot_go_into_a_gif(tmp_path):
    source = tmp_path / "soft.png"
    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    Image.fromarray(np.dstack([media.gradient(40, 30, 0), alpha])).save(source)
    result = anonymize(source, tmp_path / "out.gif")
    assert result.exit_code == ExitCode.OUTPUT and "GIF" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.png"]


@pytest.mark.parametrize("output", ["out.jpg", "out.mp4"])
def test_animations_into_a_format_without_frames_are_refused(tmp_path, output):
    source = tmp_path / "anim.webp"
    _animation(source, faces=False)
    result = anonymize(source, tmp_path / output)
    assert result.exit_code == ExitCode.OUTPUT, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.webp"]


@pytest.mark.parametrize("output", ["out.jpg", "out.gif", "out.tif", "out.heic", "out.xyz", "out"])
def test_video_into_a_picture_or_unknown_output_is_refused_before_anything_is_made(tmp_path, output):
    clip = tmp_path / "clip.mp4"
    media.make_video(clip, width=64, height=48, frames=3)
    target = tmp_path / "new" / output  # --output-dir style: the folder does not exist yet
    result = run("anonymize", str(clip), "-o", str(target), "--method", "blur", "--quiet")
    assert result.exit_code == ExitCode.OUTPUT, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and output in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_output_dir_for_an_input_we_cannot_write_back_leaves_no_empty_folder(tmp_path):
    clip = tmp_path / "clip.ts"  # FFmpeg reads it; the writer does not write MPEG-TS
    media.make_video(clip, width=64, height=48, frames=3)
    result = run("anonymize", str(clip), "--output-dir", str(tmp_path / "out"), "--method", "blur")
    assert result.exit_code == ExitCode.OUTPUT, result.output
    assert not (tmp_path / "out").exists()


def test_picture_into_a_video_is_refused(tmp_path):
    source = tmp_path / "photo.png"
    Image.fromarray(media.gradient(40, 30, 0)).save(source)
    result = anonymize(source, tmp_path / "out.mp4")
    assert result.exit_code == ExitCode.OUTPUT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_which_output_holds_which_input_is_one_pure_rule():
    from styleface_cli.video.media import output_problem

    assert output_problem(Path("a.mp4"), video=True) is None
    assert output_problem(Path("a.AVI"), video=True) is None
    for name in ("a.jpg", "a.gif", "a.tif", "a.heic", "a.xyz", "a"):
        assert output_problem(Path(name), video=True) is not None, name
    assert output_problem(Path("a.webp"), video=False, animated=True) is None
    assert output_problem(Path("a.gif"), video=False, animated=True, alpha=True) is None
    assert output_problem(Path("a.jpg"), video=False, animated=True) is not None
    assert output_problem(Path("a.jpg"), video=False, alpha=True) is not None
    assert output_problem(Path("a.jpeg"), video=False) is None
    assert output_problem(Path("a.mp4"), video=False) is not None
    assert output_problem(Path("a.tif"), video=False) is not None


# --------------------------------------------------------------------------------------------------
# 7. Colour profiles are kept (pixels not converted); identifying metadata is still stripped


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_icc_profile_is_kept_and_everything_else_stripped(tmp_path, suffix):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # any profile: bytes kept as is
    source = tmp_path / f"phone{suffix}"
    media.make_image_with_gps_exif(source, width=64, height=48, orientation=6)
    with Image.open(source) as image:
        exif = image.getexif().tobytes()
        pixels = image.copy()
    options = {"quality": 95} if suffix != ".png" else {}
    pixels.save(source, exif=exif, icc_profile=profile, **options)
    out = tmp_path / f"out{suffix}"
    result = anonymize(source, out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.info.get("icc_profile") == profile
        assert not written.getexif() and "exif" not in written.info
        assert written.size == (48, 64)  # EXIF orientation 6 applied
        got = np.asarray(written.convert("RGB"), dtype=int)
    expected, _ = read_image(source)  # upright, not colour-converted
    with open_media(source) as reader:
        assert (reader.info.width, reader.info.height) == (48, 64) == (expected.shape[1], expected.shape[0])
    assert np.abs(got - expected).mean() < (0.01 if suffix == ".png" else 3)
    assert b"TestCam" not in out.read_bytes()


def test_png_gamma_and_chromaticity_are_kept(tmp_path):
    from PIL import PngImagePlugin

    source = tmp_path / "linear.png"
    chunks = PngImagePlugin.PngInfo()
    chunks.add(b"gAMA", (100000).to_bytes(4, "big"))  # linear light: displays much darker without it
    chunks.add(b"cHRM", b"".join(round(v * 100000).to_bytes(4, "big")
                                 for v in (0.3127, 0.329, 0.68, 0.32, 0.265, 0.69, 0.15, 0.06)))  # P3 primaries
    chunks.add(b"tEXt", b"Author\0Jane Doe")
    Image.fromarray(media.gradient(40, 30, 0)).save(source, pnginfo=chunks)
    out = tmp_path / "out.png"
    assert anonymize(source, out).exit_code == 0
    with Image.open(source) as before, Image.open(out) as after:
        assert after.info["gamma"] == before.info["gamma"] == 1.0
        assert after.info["chromaticity"] == before.info["chromaticity"]
        assert "Author" not in after.info
    assert b"Jane Doe" not in out.read_bytes()


# --------------------------------------------------------------------------------------------------
# 5. Identifying stream tags are stripped from every stream


def _tag_audio(source: Path, target: Path, tags: dict[str, str]) -> None:
    """Remux ``source`` into ``target`` with ``tags`` on its audio stream (and a GPS tag on the file)."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        routes = {}
        for stream in inp.streams:
            routes[stream.index] = out.add_stream_from_template(stream)
            if stream.type == "audio":
                routes[stream.index].metadata.update(tags)
        out.metadata["location"] = "+48.8584+002.2945/"
        for packet in inp.demux():
            if not packet.size:  # the demuxer's end-of-stream markers
                continue
            packet.stream = routes[packet.stream.index]
            out.mux(packet)


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_audio_stream_tags_that_identify_are_stripped(tmp_path, suffix):
    plain = tmp_path / f"plain{suffix}"
    media.make_video(plain, width=64, height=48, frames=10, audio_streams=1)
    tagged = tmp_path / f"tagged{suffix}"
    _tag_audio(plain, tagged, {"title": "Jane Doe at home", "comment": "GPS 48.8584 N 2.2945 E",
                               "handler_name": "iPhone de Jean Dupont", "language": "fra"})
    with av.open(str(tagged)) as check:
        meta = dict(check.streams.audio[0].metadata)
        assert "Jane Doe at home" in meta.values() or "iPhone de Jean Dupont" in meta.values()
    out = tmp_path / f"out{suffix}"
    result = anonymize(tagged, out)
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    for secret in (b"Jane Doe", b"48.8584", b"Jean Dupont"):
        assert secret not in data, secret
    with av.open(str(out)) as written:
        assert written.streams.audio[0].metadata.get("language") == "fra"


def test_kept_stream_tags_are_only_the_language():
    from styleface_cli.video.encode import kept_stream_tags

    tags = {"title": "Jane", "LANGUAGE": "eng", "comment": "x", "handler_name": "h", "location": "+1+2/"}
    assert kept_stream_tags(tags) == {"language": "eng"}


# --------------------------------------------------------------------------------------------------
# 8. Truncation, judged the same way in every container


def _cut(tmp_path: Path, suffix: str, keep: float, codec: str = "libx264") -> Path:
    whole = tmp_path / f"whole{suffix}"
    media.make_video(whole, width=64, height=48, frames=60, codec=codec)
    cut = tmp_path / f"cut{suffix}"
    media.make_truncated(whole, cut, keep=keep)
    return cut


@pytest.mark.parametrize("keep", [0.7, 0.9])
def test_truncated_avi_is_refused(tmp_path, keep):
    cut = _cut(tmp_path, ".avi", keep)  # 0.7: half the frames (header says 60); 0.9: cut inside a frame
    with pytest.raises(InputError, match="truncated"):
        media.read_all(cut)
    result = anonymize(cut, tmp_path / "out.avi")
    assert result.exit_code == ExitCode.INPUT, result.output
    assert not (tmp_path / "out.avi").exists()


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9"), (".mov", "libx264"),
                                          (".flv", "libx264")])
def test_truncated_files_of_other_containers_are_refused(tmp_path, suffix, codec):
    with pytest.raises(InputError, match="truncated|corrupt|not a readable"):
        media.read_all(_cut(tmp_path, suffix, 0.5, codec))


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mov", ".ts", ".flv", ".webm"])
def test_complete_files_are_not_taken_for_truncated(tmp_path, suffix):
    clip = tmp_path / f"clip{suffix}"
    codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
    media.make_video(clip, width=64, height=48, frames=30, codec=codec, vfr=suffix in (".mkv", ".webm"),
                     audio_streams=0 if suffix == ".avi" else 1)
    _, frames = media.read_all(clip)
    assert len(frames) == 30


def test_real_fixture_clips_in_other_containers_are_not_taken_for_truncated(tmp_path):
    folder = REPO.parent / "shared" / "fixtures" / "videos"
    if not folder.is_dir():
        pytest.skip("no shared fixtures")
    for path in sorted(folder.glob("*.mp4"))[:4]:
        copy = tmp_path / f"{path.stem}.mkv"
        with av.open(str(path)) as inp, av.open(str(copy), "w") as out:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
            for packet in inp.demux():
                if packet.dts is None or packet.stream.index not in streams:
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        with open_video(path) as reader:
            expected = sum(1 for _ in reader)
        with open_video(copy) as reader:
            assert sum(1 for _ in reader) == expected


# --------------------------------------------------------------------------------------------------
# 10 and 13. Decompression bombs: refused by a pixel limit before decoding, with one clean line


def _png_bomb(path: Path, side: int) -> None:
    """A ``side`` x ``side`` greyscale PNG of zeros (a few hundred KB for 13000 x 13000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row * 500) for _ in range(side // 500)) + packer.compress(row * (side % 500))
    body += packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_picture_bomb_is_refused_before_decoding_with_one_clean_line(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, 13000)
    assert bomb.stat().st_size < 1_000_000
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", "from styleface_cli.cli.app import main; main()",
                             "anonymize", str(bomb), "--method", "blur"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == ExitCode.INPUT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("styleface: error:") and "pixel limit" in lines[-1] and "--max-pixels" in lines[-1]
    assert "Warning" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]


def test_pixel_limit_is_an_option(tmp_path):
    from styleface_cli.config import DEFAULT_MAX_PIXELS

    photo = tmp_path / "photo.png"
    Image.fromarray(media.gradient(100, 100, 0)).save(photo)
    result = anonymize(photo, tmp_path / "small.png", "--max-pixels", "9999")
    assert result.exit_code == ExitCode.INPUT and "pixel limit of 9999" in result.output
    assert anonymize(photo, tmp_path / "ok.png", "--max-pixels", "10000").exit_code == 0
    assert DEFAULT_MAX_PIXELS >= 3840 * 2160 * 5  # a 4K frame and a 48-megapixel photo are fine by default
    assert isinstance(run("anonymize", str(photo), "--max-pixels", "-1").exception, ConfigError)


@pytest.fixture(scope="module")
def video_bomb(tmp_path_factory) -> Path:
    """One 8192 x 8192 H.264 frame: about 200 KB that decodes to 100 MB (and several times that in flight)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = 8192
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame(8192, 8192, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_video_bomb_is_refused_from_its_header(video_bomb, tmp_path):
    with pytest.raises(InputError, match="8192x8192 frames .* above the pixel limit"):
        open_video(video_bomb)
    result = anonymize(video_bomb, tmp_path / "out.mp4")
    assert result.exit_code == ExitCode.INPUT, result.output
    assert not (tmp_path / "out.mp4").exists()
    with open_video(video_bomb, max_pixels=8192 * 8192) as reader:  # raised on purpose: it reads
        assert reader.info.width == 8192


# --------------------------------------------------------------------------------------------------
# 12. AVI gets timing it can hold: no B-frames, the frame-rate grid, the real rate in its header


def test_avi_settings_are_constant_rate_without_b_frames():
    info = VideoInfo(path=Path("in.mp4"), width=64, height=48, frame_count=30, average_fps=Fraction(30),
                     time_base=Fraction(1, 15360), duration_s=1.0, rotation=0, codec="h264", pix_fmt="yuv420p",
                     audio_streams=0)
    avi = build_stream_settings(EncodeConfig(), info, ".avi")
    mp4 = build_stream_settings(EncodeConfig(), info, ".mp4")
    assert (avi.time_base, avi.max_b_frames) == (Fraction(1, 30), 0)
    assert (mp4.time_base, mp4.max_b_frames) == (Fraction(1, 15360), None)


def test_h264_with_b_frames_into_avi_reads_back_in_order_at_its_rate(tmp_path):
    clip = tmp_path / "clip.mp4"
    media.make_video(clip, width=64, height=48, frames=30, fps=30)  # libx264 defaults: B-frames
    out = tmp_path / "out.avi"
    result = anonymize(clip, out)
    assert result.exit_code == 0, result.output
    info, frames = media.read_all(out)
    assert len(frames) == 30
    assert info.average_fps == 30
    times = [frame.time_s for frame in frames]
    # in order, one frame period apart (FFmpeg's AVI reader guesses H.264 timestamps one frame late: the
    # first reads as 1/30 s; AVI stores none of its own)
    steps = np.diff(times)
    assert np.allclose(steps, 1 / 30) and times[0] <= 1 / 30 + 1e-9


# --------------------------------------------------------------------------------------------------
# 11. Start-up imports run on one thread


def test_start_up_starts_no_thread_that_imports(monkeypatch):
    from styleface_cli.config import AnonymizeConfig
    from styleface_cli.tools import prepare_tools

    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name) or real_start(self))
    prepare_tools(AnonymizeConfig())
    assert started == [], f"threads started at start-up: {started}"


def test_sort_filter_agrees_with_filterpys_kalman_filter():
    """``SortFilter`` replaces filterpy (whose import cost 0.7 s of start-up) with the same equations."""
    kalman = pytest.importorskip("filterpy.kalman")
    from styleface_cli.face.track import SortFilter, _box_to_z, _F, _H, _inverse_of_diagonal

    rng = np.random.default_rng(0)
    boxes = np.cumsum(rng.normal(0, 3, (40, 4)), axis=0) + [100, 100, 180, 200]
    ours = SortFilter(_box_to_z(boxes[0]))
    reference = kalman.KalmanFilter(dim_x=7, dim_z=4)  # configured as the tracker configured it before
    reference.F, reference.H, reference.inv = _F.copy(), _H.copy(), _inverse_of_diagonal
    reference.R[2:, 2:] *= 10.0
    reference.P[4:, 4:] *= 1000.0
    reference.P *= 10.0
    reference.Q[-1, -1] *= 0.01
    reference.Q[4:, 4:] *= 0.01
    reference.x[:4] = _box_to_z(boxes[0])
    for step, box in enumerate(boxes[1:]):
        ours.predict()
        reference.predict()
        if step % 5 != 3:  # some frames without a detection
            ours.update(_box_to_z(box))
            reference.update(_box_to_z(box))
        np.testing.assert_allclose(ours.x, reference.x, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(ours.P, reference.P, rtol=1e-12, atol=1e-9)
