"""One reader and one writer for both videos and still images, so the pipeline has a single path.

An image is a one-frame stream: ``open_media`` yields it as ``Frame`` 0 (a private, writable copy),
and ``media_writer`` writes it, with all metadata stripped, when the ``with`` block succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from styleface_cli.config import EncodeConfig
from styleface_cli.errors import OutputError
from styleface_cli.records import Frame, VideoInfo
from styleface_cli.video.decode import open_video
from styleface_cli.video.encode import VideoWriter
from styleface_cli.video.images import is_image_path, read_image, write_image


class ImageReader:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._image, self.info = read_image(self.path)

    def __enter__(self) -> "ImageReader":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(index=0, pts=0, time_s=0.0, image=np.array(self._image))


class ImageWriter:
    def __init__(self, output: Path, info: VideoInfo) -> None:
        self.output = Path(output)
        self.info = info
        self._image: np.ndarray | None = None

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self._image is None:
                raise OutputError(f"{self.output}: nothing to write")
            write_image(self.output, self._image)  # atomic

    def write(self, frame: Frame) -> None:
        self._image = frame.image


def open_media(path: Path) -> "ImageReader | object":
    """A context manager with ``.info`` that iterates ``Frame`` records, for a video or an image."""
    path = Path(path)
    return ImageReader(path) if is_image_path(path) else open_video(path)


def media_writer(output: Path, info: VideoInfo, cfg: EncodeConfig, source: Path) -> "ImageWriter | VideoWriter":
    """The writer that fits the input: an image for an image, a video (audio remuxed from ``source``) otherwise."""
    if info.is_image:
        if not is_image_path(Path(output)):
            raise OutputError(f"{output}: an image input needs an image output (.jpg, .png or .webp)")
        return ImageWriter(output, info)
    return VideoWriter(output, info, cfg, source)
