"""Photos: read upright (EXIF orientation applied), written back with no metadata at all."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from styleface_cli.errors import InputError, OutputError
from styleface_cli.video.images import is_image_path, read_image, write_image
from tests.media import gradient, make_image_with_gps_exif

# What a viewer shows for each EXIF orientation, as a function of the stored pixels.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: np.transpose(a, (1, 0, 2)),
    6: lambda a: np.rot90(a, k=-1),  # stored turned left: turn 90 degrees clockwise
    7: lambda a: np.rot90(a, k=2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = tmp_path / "photo.png"  # lossless, so the pixels compare exactly
    make_image_with_gps_exif(path, width=40, height=30, orientation=orientation)
    image, info = read_image(path)
    expected = UPRIGHT[orientation](gradient(40, 30, 0))
    np.testing.assert_array_equal(image, expected)
    assert image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
    assert (info.width, info.height) == (expected.shape[1], expected.shape[0])
    assert info.is_image and info.rotation == 0 and info.frame_count == 1
    assert info.codec == "png"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_written_photos_carry_no_metadata(tmp_path, suffix):
    source = tmp_path / f"in{suffix}"
    make_image_with_gps_exif(source)
    assert Image.open(source).getexif().get_ifd(0x8825), "the test photo must start with a GPS position"
    image, _ = read_image(source)
    output = tmp_path / f"out{suffix}"
    write_image(output, image)
    data = output.read_bytes()
    with Image.open(output) as written:
        assert len(written.getexif()) == 0
        assert not written.getexif().get_ifd(0x8825)
        assert not {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp"} & set(written.info)
        assert written.size == (image.shape[1], image.shape[0])
    assert b"Exif" not in data and b"TestCam" not in data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, output.name])


def test_png_round_trip_is_exact_and_jpeg_is_close(tmp_path):
    image = gradient(33, 21, 5)  # odd sizes
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0], image)
    write_image(tmp_path / "a.jpg", image, quality=95)
    back = read_image(tmp_path / "a.jpg")[0].astype(int)
    assert np.abs(back - image).mean() < 6


def test_write_replaces_atomically_and_refuses_unknown_suffixes(tmp_path):
    image = gradient(16, 16, 0)
    target = tmp_path / "out.jpg"
    target.write_bytes(b"old")
    write_image(target, image)
    assert read_image(target)[0].shape == (16, 16, 3)
    with pytest.raises(OutputError, match=r"\.bmp"):
        write_image(tmp_path / "out.bmp", image)
    with pytest.raises(ValueError):
        write_image(tmp_path / "gray.png", np.zeros((8, 8), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jpg"]


def test_unreadable_photos_give_one_line_input_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo\n")
    make_image_with_gps_exif(tmp_path / "good.jpg", width=256, height=256)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cases = {
        "missing.jpg": "no such file",
        "empty.jpg": "empty",
        "text.jpg": "not an image",
        "cut.jpg": "corrupt or truncated",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as error:
            read_image(tmp_path / name)
        assert "\n" not in str(error.value)


def test_image_paths_are_recognised_by_suffix(tmp_path):
    assert is_image_path(tmp_path / "a.jpg") and is_image_path(tmp_path / "a.JPEG")
    assert is_image_path(tmp_path / "a.png") and is_image_path(tmp_path / "a.webp")
    assert not is_image_path(tmp_path / "a.mp4") and not is_image_path(tmp_path / "jpg")
