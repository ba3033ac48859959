"""Pictures (photos and animated images): read upright, written back as they were, minus faces and metadata.

The pipeline works on ``[H, W, 3]`` uint8 RGB (``Frame.image``): the picture's colour data. What that
representation cannot hold is kept beside it in a ``Picture`` and put back on writing, so the output
displays as the input did everywhere outside the hidden faces:

- transparency: the alpha channel is written back exactly as it was (faces are hidden in the colour
  data under it, so a face made transparent stays hidden if someone removes the alpha);
- bit depth and mode: grey stays grey, 16-bit grey stays 16-bit (its 8-bit working copy is scaled, not
  clipped) with its transparent value, CMYK JPEG stays CMYK, a lossless WebP stays lossless; pixels the
  pipeline left alone are written bit for bit from the original, only changed pixels are converted back.
  Palette and 1-bit pictures become RGB(A) or grey: a lossless widening;
- the ICC colour profile (Display P3 and the like), and a PNG's gamma, chromaticity and sRGB chunks, are
  kept, and no pixel is colour-converted, so colours display as before. They say nothing about who or where;
- animations (GIF, WebP, APNG) keep every frame, each frame's duration and the loop count.

Everything else is dropped: EXIF (camera, GPS, time), XMP, comments and text chunks. EXIF orientation
is applied to the pixels before it is dropped.

Pictures above a pixel limit are refused before their pixels are decoded (decompression bombs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, ImageSequence, PngImagePlugin, UnidentifiedImageError

from styleface_cli.config import DEFAULT_MAX_PIXELS
from styleface_cli.errors import InputError, OutputError
from styleface_cli.records import VideoInfo
from styleface_cli.atomic import atomic_output, check_input_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")

_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF"}
ANIMATION_FORMATS = frozenset({"PNG", "WEBP", "GIF"})  # Pillow writes every frame of these
_ICC_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})

# Modes whose pixels are 16 (or more) bits of grey; their 8-bit working copy is value / 257.
_DEEP_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# Modes read as they are: each maps losslessly (or, for CMYK, by merging; see _back_to_mode) to RGB.
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_READABLE = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}) | _DEEP_GREY

# Pillow's own decompression-bomb check (a raw two-line warning above 89 million pixels, an error above
# twice that, neither adjustable per call) is replaced by ``check_pixel_limit``, which runs on the header
# before any pixel is decoded, says what to do in one line, and follows --max-pixels.
Image.MAX_IMAGE_PIXELS = None

# An animation's frames wait in memory until the last one is done (the writers need them all).
ANIMATION_PIXEL_FACTOR = 4  # all frames together may hold this many times the per-picture limit


def is_image_path(path: Path) -> bool:
    """Whether ``path`` names a picture this module reads and writes (by its suffix, any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_format(path: Path) -> str | None:
    """Pillow's format name for an output file named ``path`` (None: not a picture format written here)."""
    return _FORMATS.get(Path(path).suffix.lower())


@dataclasses.dataclass
class Still:
    """One frame of a picture, as read: the working RGB and what is put back around it on writing."""

    rgb: np.ndarray  # [H, W, 3] uint8: the colour data the pipeline sees and edits
    original: Image.Image  # upright, in its own mode: the pixels an unchanged area is written from
    alpha: np.ndarray | None  # [H, W] uint8 transparency, written back exactly (None: opaque)
    duration_ms: int  # how long an animation shows this frame (0 for a still)


@dataclasses.dataclass
class Picture:
    """A picture file's frames (one for a still) and what is kept of it on writing."""

    info: VideoInfo
    mode: str  # Pillow mode of the first frame, e.g. "RGBA", "I;16", "CMYK"
    icc_profile: bytes | None  # kept: display colours depend on it; it names no person or place
    png_colour: tuple[tuple[bytes, bytes], ...]  # a PNG's gAMA, cHRM and sRGB chunks: kept, for the same reason
    lossless: bool  # PNG, GIF, lossless WebP: a WebP output is written lossless too
    loop: int | None  # animations: times to play (0 = for ever); None: the file did not say
    has_alpha: bool  # an alpha channel or a transparent colour: kept, so the output must hold it
    animated: bool
    frames: Iterator[Still]  # decoded one at a time, upright


def read_picture(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Open a picture and check it; its frames are decoded as ``Picture.frames`` is iterated.

    Raises ``InputError`` for a missing, unreadable or truncated file, a mode that cannot be written
    back, or a picture above ``max_pixels`` pixels per frame (checked from the header, before decoding).
    """
    path = Path(path)
    check_input_file(path)
    try:
        opened = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file this tool can read (jpg, png, webp, gif)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: the image is corrupt or truncated ({error})") from None
    try:
        width, height = opened.size
        check_pixel_limit(path, width, height, max_pixels)
        # Only GIF, WebP and PNG frames are an animation; a phone's MPO JPEG holds its photo first and
        # previews or depth maps after it, which are not written back.
        animated = opened.format in ANIMATION_FORMATS and getattr(opened, "is_animated", False)
        count = opened.n_frames if animated else 1
        if count > 1 and width * height * count > ANIMATION_PIXEL_FACTOR * max_pixels:
            raise InputError(f"{path}: the animation's {count} frames of {width}x{height} are above "
                             f"{ANIMATION_PIXEL_FACTOR} times the pixel limit ({max_pixels}); raise --max-pixels if it is genuine")
        if opened.mode not in _READABLE:
            raise InputError(f"{path}: {opened.mode} pictures are not supported (grey, RGB, RGBA, palette, "
                             f"16-bit grey and CMYK are)")
        has_alpha = opened.mode in _ALPHA_MODES or "transparency" in opened.info
        mode = opened.mode
        # the upright size: EXIF orientations 5 to 8 turn the picture a quarter (animations are not turned)
        turned = count == 1 and opened.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
        if turned:
            width, height = height, width
        icc = opened.info.get("icc_profile") or None
        png_colour = png_colour_chunks(opened.info) if opened.format == "PNG" else ()
        lossless = opened.format in ("PNG", "GIF") or (opened.format == "WEBP" and _is_lossless_webp(path))
        loop = opened.info.get("loop")
        codec = (opened.format or "").lower()
        first_duration = opened.info.get("duration")
    except BaseException as error:
        opened.close()
        if isinstance(error, Exception) and not isinstance(error, InputError):  # Pillow's parsers raise anything
            raise InputError(f"{path}: the image is corrupt or truncated ({error})") from None
        raise
    info = VideoInfo(
        path=path,
        width=width,
        height=height,
        frame_count=count,
        average_fps=Fraction(0) if count == 1 else Fraction(1000, max(int(first_duration or 100), 1)),
        time_base=Fraction(1, 1000) if count > 1 else Fraction(1),
        duration_s=0.0,
        rotation=0,
        codec=codec,
        pix_fmt=mode,
        audio_streams=0,
        is_image=True,
    )
    return Picture(info=info, mode=mode, icc_profile=icc, png_colour=png_colour, lossless=lossless, loop=loop,
                   has_alpha=has_alpha,
                   animated=count > 1,
                   frames=_frames(opened, path, max_pixels, count))


def _is_lossless_webp(path: Path) -> bool:
    """Whether a WebP file's (first) image is coded lossless: its first bitstream chunk is VP8L, not VP8."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    lossless, lossy = head.find(b"VP8L"), head.find(b"VP8 ")
    return lossless >= 0 and (lossy < 0 or lossless < lossy)


def png_colour_chunks(info: dict) -> tuple[tuple[bytes, bytes], ...]:
    """The gAMA, cHRM and sRGB chunks of a PNG, rebuilt from what Pillow read of them (``Image.info``)."""
    chunks = []
    if "gamma" in info:
        chunks.append((b"gAMA", round(info["gamma"] * 100000).to_bytes(4, "big")))
    if "chromaticity" in info:
        chunks.append((b"cHRM", b"".join(round(v * 100000).to_bytes(4, "big") for v in info["chromaticity"])))
    if "srgb" in info and "icc_profile" not in info:  # PNG allows one of sRGB and iCCP
        chunks.append((b"sRGB", bytes([info["srgb"]])))
    return tuple(chunks)


def check_pixel_limit(path: Path, width: int, height: int, max_pixels: int) -> None:
    """``InputError`` when a ``width`` x ``height`` picture or frame is above ``max_pixels`` (0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise InputError(f"{path}: {width}x{height} ({width * height} pixels) is above the pixel limit of "
                         f"{max_pixels}; raise --max-pixels if the file is genuine")


def _frames(opened: Image.Image, path: Path, max_pixels: int, count: int) -> Iterator[Still]:
    """Each of the ``count`` frames as a ``Still``, upright; closes the file when done."""
    animated = count > 1
    done = 0
    with opened:
        try:
            for frame in (ImageSequence.Iterator(opened) if animated else [opened]):
                check_pixel_limit(path, *frame.size, max_pixels)  # before its pixels are decoded
                frame.load()  # decode now: a truncated file fails here, not later
                upright = ImageOps.exif_transpose(frame) if not animated else frame.copy()
                yield _still(upright, int(frame.info.get("duration") or 0) if animated else 0)
                done += 1
                if done == count:
                    break
        except InputError:
            raise
        except Exception as error:  # Pillow's decoders raise OSError, EOFError, struct.error, ...
            raise InputError(f"{path}: the image is corrupt or truncated ({error})") from None
    if done < count:
        raise InputError(f"{path}: the animation is truncated: it lists {count} frames but only {done} could be read")


def _still(image: Image.Image, duration_ms: int) -> Still:
    """The working RGB, alpha and original of one upright frame."""
    alpha = None
    if image.mode in _DEEP_GREY:
        deep = np.asarray(image).astype(np.int64)  # [H, W]
        if "transparency" in image.info:  # one transparent grey value (Pillow's RGBA conversion ignores it)
            alpha = np.where(deep == image.info["transparency"], 0, 255).astype(np.uint8)
        grey = ((np.clip(deep, 0, 65535) + 128) // 257).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            alpha = np.array(image.convert("RGBA").getchannel("A"), dtype=np.uint8)  # [H, W]
        rgb = np.asarray(image.convert("RGBA").convert("RGB") if alpha is not None else image.convert("RGB"),
                         dtype=np.uint8)
    return Still(rgb=np.ascontiguousarray(rgb), original=image, alpha=alpha, duration_ms=duration_ms)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, VideoInfo]:
    """Decode a photo (the first frame of an animation) to ``[H, W, 3]`` uint8 RGB, turned upright as its
    EXIF orientation says.

    The returned ``VideoInfo`` has ``is_image=True``, ``rotation=0`` (the turn is already applied),
    the upright size, and the file's format and PIL mode as ``codec`` and ``pix_fmt``.
    """
    picture = read_picture(path, max_pixels)
    try:
        first = next(picture.frames)
    finally:
        picture.frames.close()
    return first.rgb, picture.info


# --------------------------------------------------------------------------------------------------
# Writing


def output_mode(mode: str, has_alpha: bool, image_format: str) -> str:
    """The Pillow mode a picture of ``mode`` is written in as ``image_format``: its own where the format holds
    it, else the nearest lossless widening (8-bit where the format has no deeper grey).

    Raises ``OutputError`` when the format cannot hold the picture's transparency (JPEG).
    """
    if mode in _DEEP_GREY and image_format == "PNG":
        return "I;16"  # its transparency, if any, is one grey value (tRNS), kept as it is
    if has_alpha:
        if image_format == "JPEG":
            raise OutputError("a JPEG cannot hold the picture's transparency; write .png or .webp")
        return "LA" if mode in ("1", "L", "LA", "La") and image_format == "PNG" else "RGBA"
    if mode in _DEEP_GREY:
        return "RGB" if image_format == "WEBP" else "L"  # 8 bits: the format has no deeper grey
    if mode in ("1", "L"):
        return "RGB" if image_format == "WEBP" else "L"
    if mode == "CMYK" and image_format == "JPEG":
        return "CMYK"
    return "RGB"


def write_picture(path: Path, picture: Picture, stills: list[Still], edited: list[np.ndarray], quality: int = 95) -> None:
    """Write ``edited`` (each ``[H, W, 3]`` uint8 RGB, one per frame of ``stills``) to ``path`` atomically,
    keeping what ``Picture`` kept (alpha, mode, ICC profile, durations, loop) and no other metadata."""
    path = Path(path)
    fmt = image_format(path)
    if fmt is None:
        raise OutputError(f"{path}: cannot write {path.suffix or 'suffix-less'} pictures; use .jpg, .png, .webp or .gif")
    if len(stills) > 1 and fmt not in ANIMATION_FORMATS:
        raise OutputError(f"{path}: a {fmt} file cannot hold an animation; write .gif, .webp or .png")
    try:
        mode = output_mode(picture.mode, picture.has_alpha, fmt)
    except OutputError as error:
        raise OutputError(f"{path}: {error}") from None
    if fmt == "GIF" and any(s.alpha is not None and np.any((s.alpha > 0) & (s.alpha < 255)) for s in stills):
        raise OutputError(f"{path}: a GIF holds only on/off transparency and this picture has graded alpha; "
                          f"write .png or .webp")
    images = [_back_to_mode(still, rgb, mode) for still, rgb in zip(stills, edited)]
    # Fresh images from the pixels alone carry no info from the input; only what is passed here is
    # embedded (no exif=, xmp=, pnginfo=, comment=).
    options: dict = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP" and picture.lossless:
        options = {"lossless": True}
    if picture.icc_profile and fmt in _ICC_FORMATS:
        options["icc_profile"] = picture.icc_profile
    if picture.png_colour and fmt == "PNG":
        colour = PngImagePlugin.PngInfo()
        for kind, data in picture.png_colour:
            colour.add(kind, data)
        options["pnginfo"] = colour
    if len(images) > 1:
        options.update(save_all=True, append_images=images[1:], duration=[s.duration_ms for s in stills])
        if picture.loop is not None:
            options["loop"] = picture.loop
    with atomic_output(path) as temp:
        try:
            images[0].save(temp, format=fmt, **options)
        except (OSError, ValueError) as error:
            raise OutputError(f"{path}: writing the image failed ({error})") from None


def _back_to_mode(still: Still, rgb: np.ndarray, mode: str) -> Image.Image:
    """``rgb`` (the edited working copy) in ``mode``: unchanged pixels from the original, bit for bit where
    the mode is the original's; changed ones converted; the alpha channel as it was."""
    if rgb.shape != still.rgb.shape or rgb.dtype != np.uint8:
        raise ValueError(f"expected a {list(still.rgb.shape)} uint8 image, got {list(rgb.shape)} {rgb.dtype}")
    edited = Image.fromarray(np.ascontiguousarray(rgb))
    if mode in ("RGB", "RGBA", "L", "LA"):  # the working RGB holds these losslessly
        colour = edited.convert("L") if mode in ("L", "LA") else edited
        if mode in ("RGBA", "LA"):
            alpha = still.alpha if still.alpha is not None else np.full(rgb.shape[:2], 255, np.uint8)
            colour.putalpha(Image.fromarray(alpha))
        return colour
    changed = np.any(rgb != still.rgb, axis=2)  # [H, W]
    if mode == "I;16":
        original = np.asarray(still.original).astype(np.int64)
        grey = np.asarray(edited.convert("L")).astype(np.int64) * 257
        key = still.original.info.get("transparency")
        if isinstance(key, int):  # an edited pixel must not turn transparent by landing on the key
            grey = np.where(grey == key, key + 1 if key < 65535 else key - 1, grey)
        deep = np.where(changed, grey, np.clip(original, 0, 65535)).astype(np.uint16)
        written = Image.frombytes("I;16", still.original.size, deep.tobytes())
        if isinstance(key, int):
            written.info["transparency"] = key
        return written
    if mode == "CMYK":
        original = np.asarray(still.original)
        converted = np.asarray(edited.convert("CMYK"))
        merged = np.ascontiguousarray(np.where(changed[:, :, None], converted, original))
        return Image.frombytes("CMYK", still.original.size, merged.tobytes())
    raise ValueError(f"cannot write {mode} pictures")


def write_image(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Write ``[H, W, 3]`` uint8 RGB to a .jpg/.png/.webp/.gif file (by suffix), atomically, without metadata.

    ``quality`` (1-100) applies to JPEG and WebP; PNG is lossless.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 image, got {list(image.shape)} {image.dtype}")
    height, width = image.shape[:2]
    info = VideoInfo(path=Path(path), width=width, height=height, frame_count=1, average_fps=Fraction(0),
                     time_base=Fraction(1), duration_s=0.0, rotation=0, codec="", pix_fmt="RGB", audio_streams=0,
                     is_image=True)
    still = Still(rgb=image, original=Image.fromarray(np.ascontiguousarray(image)), alpha=None, duration_ms=0)
    picture = Picture(info=info, mode="RGB", icc_profile=None, png_colour=(), lossless=False, loop=None,
                      has_alpha=False, animated=False,
                      frames=iter(()))
    write_picture(path, picture, [still], [image], quality)
