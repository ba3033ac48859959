"""One reader and one writer for videos, photos and animated images, so the pipeline has a single path.

A picture is a short stream: ``open_media`` yields each of its frames (one for a photo, every frame of an
animated GIF, WebP or PNG, timed in milliseconds) as a ``Frame`` with a private, writable image, and
``media_writer`` writes them back in the picture's own form (see ``video/images.py``) when the ``with``
block succeeds. ``output_problem`` is the one rule for which output file can hold which input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from styleface_cli.config import DEFAULT_MAX_PIXELS, EncodeConfig
from styleface_cli.errors import OutputError
from styleface_cli.inputs import VIDEO_SUFFIXES
from styleface_cli.records import Frame, VideoInfo
from styleface_cli.video.decode import open_video
from styleface_cli.video.encode import VideoWriter
from styleface_cli.video.images import (
    ANIMATION_FORMATS,
    Picture,
    Still,
    image_format,
    is_image_path,
    read_picture,
    write_picture,
)

# The containers the video writer produces are the ones inputs are searched for.
VIDEO_OUTPUT_SUFFIXES = VIDEO_SUFFIXES


def output_problem(output: Path, *, video: bool, animated: bool = False, alpha: bool = False) -> str | None:
    """Why ``output`` cannot hold the result of an input (None: it can), judged by its suffix alone.

    ``video``: the input is a video; else a picture, ``animated`` or not, with transparency (``alpha``) or
    not. A video needs a video container; a picture needs a picture format (it is not turned into a
    video, nor a video into pictures); an animation needs a format with frames (GIF, WebP, PNG);
    transparency needs a format with alpha (not JPEG).
    """
    suffix = Path(output).suffix.lower()
    kind = suffix or "a name without a suffix"
    fmt = image_format(Path(output))
    if video:
        if suffix in VIDEO_OUTPUT_SUFFIXES:
            return None
        if fmt is not None:
            return f"{kind} is a picture format and the input is a video; use {', '.join(VIDEO_OUTPUT_SUFFIXES)}"
        return f"cannot write {kind} videos; use {', '.join(VIDEO_OUTPUT_SUFFIXES)}"
    if fmt is None:
        what = "a video container and the input is a picture" if suffix in VIDEO_OUTPUT_SUFFIXES else "not a picture format written here"
        return f"{kind} is {what}; use .jpg, .png, .webp or .gif"
    if animated and fmt not in ANIMATION_FORMATS:
        return f"{kind} cannot hold an animation; use .gif, .webp or .png"
    if alpha and fmt == "JPEG":
        return f"{kind} cannot hold the picture's transparency; use .png or .webp"
    return None


def check_output_holds(source: Path, output: Path) -> None:
    """``OutputError`` when ``output``'s kind of file cannot hold ``source``'s (judged by both suffixes)."""
    problem = output_problem(output, video=not is_image_path(source))
    if problem is not None:
        raise OutputError(f"{output}: {problem}")


class PictureReader:
    """The frames of a photo or an animated image, one ``Frame`` each (pts in milliseconds)."""

    def __init__(self, path: Path, max_pixels: int) -> None:
        self.path = Path(path)
        self.picture: Picture = read_picture(self.path, max_pixels)
        self.info = self.picture.info
        self.stills: list[Still] = []  # what the writer puts back around the edited pixels

    def __enter__(self) -> "PictureReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.picture.frames.close()

    def __iter__(self) -> Iterator[Frame]:
        pts = 0
        for index, still in enumerate(self.picture.frames):
            self.stills.append(still)
            yield Frame(index=index, pts=pts, time_s=pts / 1000, image=still.rgb.copy())
            pts += still.duration_ms


class PictureWriter:
    """Collects the edited frames of a picture and writes them when the ``with`` block succeeds."""

    def __init__(self, output: Path, reader: PictureReader) -> None:
        self.output = Path(output)
        self.reader = reader
        self._images: list[np.ndarray] = []

    def __enter__(self) -> "PictureWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if not self._images:
                raise OutputError(f"{self.output}: nothing to write")
            write_picture(self.output, self.reader.picture, self.reader.stills[:len(self._images)], self._images)

    def write(self, frame: Frame) -> None:
        self._images.append(frame.image)


def open_media(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> "PictureReader | object":
    """A context manager with ``.info`` that iterates ``Frame`` records, for a video or a picture; pictures
    and frames above ``max_pixels`` are refused before they are decoded."""
    path = Path(path)
    return PictureReader(path, max_pixels) if is_image_path(path) else open_video(path, max_pixels)


def media_writer(output: Path, media: object, cfg: EncodeConfig, source: Path) -> "PictureWriter | VideoWriter":
    """The writer that fits the input read by ``media``: a picture for a picture, a video (audio remuxed from
    ``source``) otherwise. Refuses an ``output`` that cannot hold it (``output_problem``)."""
    info: VideoInfo = media.info
    if isinstance(media, PictureReader):
        picture = media.picture
        problem = output_problem(output, video=False, animated=picture.animated, alpha=picture.has_alpha)
    else:
        problem = output_problem(output, video=True)
    if problem is not None:
        raise OutputError(f"{output}: {problem}")
    if isinstance(media, PictureReader):
        return PictureWriter(output, media)
    return VideoWriter(output, info, cfg, source)
