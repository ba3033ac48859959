"""The contact sheet: the riskiest faces, each as the original's crop beside the output's, for a person to review.

Only the ``size`` riskiest faces' crops are kept while the video streams (a bounded heap), so memory stays
flat however long the video is.
"""

from __future__ import annotations

import heapq
import itertools
import math
from pathlib import Path

import cv2
import numpy as np

from styleface_cli.verify.records import FaceCheck
from styleface_cli.video.images import write_image

CROP = 128  # px, side of each crop on the sheet
LABEL = 34  # px of text under each pair
GAP = 6  # px between tiles
COLUMNS = 4
BACKGROUND = (32, 32, 32)


def sheet_layout(tiles: int) -> tuple[int, int, int, int]:
    """(columns, rows, width, height) of a sheet of ``tiles`` tiles."""
    columns = max(1, min(COLUMNS, tiles))
    rows = max(1, math.ceil(tiles / columns))
    tile_w, tile_h = 2 * CROP + GAP, CROP + LABEL + GAP
    return columns, rows, columns * tile_w + GAP, rows * tile_h + GAP


def crop(image: np.ndarray, box: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """[CROP, CROP, 3] uint8: the square around ``box`` (with ``margin``) from ``image``, resized."""
    height, width = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin) / 2
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(min(cx + half, width)), int(min(cy + half, height))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((CROP, CROP, 3), np.uint8)
    return cv2.resize(image[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_AREA)


class RiskiestFaces:
    """Keeps the crops of the ``size`` riskiest faces seen so far."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[tuple[float, int, FaceCheck, np.ndarray, np.ndarray, str]] = []
        self._order = itertools.count()

    def wants(self, risk: float) -> bool:
        return self.size > 0 and (len(self._heap) < self.size or risk > self._heap[0][0])

    def add(self, face: FaceCheck, original: np.ndarray, output: np.ndarray, label: str = "") -> None:
        """``original`` and ``output``: the two upright frames the face was checked in; ``label`` names the
        output file on the tile."""
        if not self.wants(face.risk):
            return
        entry = (face.risk, next(self._order), face, crop(original, face.box), crop(output, face.box), label)
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def write(self, path: Path) -> int:
        """Write the sheet (riskiest first) to ``path``; returns the number of tiles."""
        entries = sorted(self._heap, key=lambda entry: (-entry[0], entry[1]))
        tiles = len(entries)
        columns, rows, width, height = sheet_layout(max(tiles, 1))
        sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
        for i, (_, _, face, original, output, label) in enumerate(entries):
            x = GAP + (i % columns) * (2 * CROP + GAP)
            y = GAP + (i // columns) * (CROP + LABEL + GAP)
            sheet[y : y + CROP, x : x + CROP] = original
            sheet[y : y + CROP, x + CROP + GAP : x + 2 * CROP + GAP] = output
            findings = ", ".join(face.findings()) or "hidden"
            colour = (255, 90, 90) if face.untouched or face.recognisable else (200, 200, 200)
            name = label if len(label) <= 18 else label[:8] + ".." + label[-8:]
            _text(sheet, f"{name} frame {face.frame_index}  d={face.distance:.2f}".strip(), x, y + CROP + 14, colour)
            _text(sheet, findings, x, y + CROP + 29, colour)
        if tiles == 0:
            _text(sheet, "no faces found", GAP, GAP + 20, (200, 200, 200))
        write_image(Path(path), sheet)
        return tiles


def _text(image: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int]) -> None:
    cv2.putText(image, text, (x + 2, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1, cv2.LINE_AA)
