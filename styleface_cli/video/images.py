"""Read photos upright (EXIF orientation applied) and write them back with no metadata at all.

An anonymised photo must not keep what identifies where and with what it was taken, so
``write_image`` writes pixels only: no EXIF (camera, GPS position, time), no XMP, no ICC
profile, no text chunks.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from styleface_cli.errors import InputError, OutputError
from styleface_cli.records import VideoInfo
from styleface_cli.atomic import atomic_output, check_input_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


def is_image_path(path: Path) -> bool:
    """Whether ``path`` names a photo this module reads and writes (by its suffix, any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> tuple[np.ndarray, VideoInfo]:
    """Decode a photo to ``[H, W, 3]`` uint8 RGB, turned upright as its EXIF orientation says.

    The returned ``VideoInfo`` has ``is_image=True``, ``rotation=0`` (the turn is already applied),
    the upright size, one frame, and the file's format and PIL mode as ``codec`` and ``pix_fmt``.
    """
    path = Path(path)
    check_input_file(path)
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            codec, mode = (opened.format or "").lower(), opened.mode
            upright = ImageOps.exif_transpose(opened)
            image = np.asarray(upright.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file this tool can read (jpg, png, webp)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: the image is corrupt or truncated ({error})") from None
    height, width = image.shape[:2]
    info = VideoInfo(
        path=path,
        width=width,
        height=height,
        frame_count=1,
        average_fps=Fraction(0),
        time_base=Fraction(1),
        duration_s=0.0,
        rotation=0,
        codec=codec,
        pix_fmt=mode,
        audio_streams=0,
        is_image=True,
    )
    return np.ascontiguousarray(image), info


def write_image(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Write ``[H, W, 3]`` uint8 RGB to a .jpg/.png/.webp file (by suffix), atomically, without metadata.

    ``quality`` (1-100) applies to JPEG and WebP; PNG is lossless.
    """
    path = Path(path)
    image_format = _FORMATS.get(path.suffix.lower())
    if image_format is None:
        kind = path.suffix or "suffix-less"
        raise OutputError(f"{path}: cannot write {kind} images; use .jpg, .png or .webp")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 image, got {list(image.shape)} {image.dtype}")
    # A fresh image from the pixels alone carries no info from the input; nothing is passed that
    # Pillow would embed (exif=, icc_profile=, pnginfo=, xmp=).
    pixels = Image.fromarray(np.ascontiguousarray(image))
    options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {}
    with atomic_output(path) as temp:
        try:
            pixels.save(temp, format=image_format, **options)
        except OSError as error:
            raise OutputError(f"{path}: writing the image failed ({error})") from None
