"""The records ``styleface verify`` produces: one ``FaceCheck`` per face found, ``MetadataFinding`` per tag,
and one ``PairReport`` per (original, anonymised) pair."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class FoundFace:
    """A face the independent detector found in the original (upright frame coordinates)."""

    box: np.ndarray  # [4] float32 x0, y0, x1, y1
    score: float
    detector: str  # "dlib-cnn", "yunet", "scrfd"


@dataclasses.dataclass(frozen=True)
class FaceCheck:
    """One face of the original, checked in the output at the same place."""

    frame_index: int
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 in the upright frame
    detector: str
    change: float  # mean absolute luma difference (grey levels) inside the face, original vs output
    noise: float  # codec noise of the same frame outside the faces (grey levels, see findings.codec_noise)
    untouched: bool
    distance: float  # dlib descriptor distance, original vs output, both at the original's landmarks
    recognisable: bool
    reid_rank: int = 0  # rank of the face's own original among every original face (1 = first; 0 = not ranked)

    @property
    def risk(self) -> float:
        """Orders faces for the contact sheet: untouched first, then recognisable, then by closeness."""
        return 2.0 * self.untouched + 1.0 * self.recognisable + 1.0 / (1.0 + self.distance)

    def findings(self) -> list[str]:
        names = ["untouched"] * self.untouched + ["recognisable"] * self.recognisable
        return names + (["re-identified"] if self.reid_rank == 1 else [])

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.frame_index,
            "box": [round(float(v), 1) for v in self.box],
            "detector": self.detector,
            "change": round(self.change, 2),
            "noise": round(self.noise, 2),
            "untouched": self.untouched,
            "distance": round(self.distance, 3),
            "recognisable": self.recognisable,
            "reid_rank": self.reid_rank,
        }


@dataclasses.dataclass(frozen=True)
class MetadataFinding:
    """A piece of metadata left in the output that may identify a person, a place, a device or a time."""

    where: str  # "container", "stream 1 (audio)", "EXIF", "GPS", "XMP", ...
    key: str
    value: str  # shortened for display

    def __str__(self) -> str:
        return f"{self.where}: {self.key}={self.value}"


@dataclasses.dataclass(frozen=True)
class Reidentification:
    """How often each output face's own original ranks first among all original faces of the file."""

    faces: int  # output faces ranked
    gallery: int  # original face descriptors in the gallery
    rank1: int  # faces whose own original came first
    chance: float  # probability of that for a random ranking (1 / gallery)
    p_value: float  # binomial test: rank1 or more successes by chance alone

    @property
    def rate(self) -> float:
        return self.rank1 / self.faces if self.faces else 0.0


@dataclasses.dataclass
class PairReport:
    """The audit of one (original, anonymised) pair."""

    original: Path
    anonymized: Path
    kind: str = "video"  # "video" or "image"
    detectors: tuple[str, ...] = ()
    frames: int = 0  # frames in the output (decoded)
    frames_checked: int = 0
    scene_cut_frames: tuple[int, ...] = ()  # frames checked because a cut starts there (or just before)
    sampling: str = ""
    faces: list[FaceCheck] = dataclasses.field(default_factory=list)
    reid: Reidentification | None = None
    metadata: list[MetadataFinding] = dataclasses.field(default_factory=list)
    fail_on_reid: bool = False
    reid_p: float = 0.01
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)  # how the pair was compared, when unusual

    @property
    def untouched_frames(self) -> list[int]:
        return sorted({face.frame_index for face in self.faces if face.untouched})

    @property
    def recognisable_frames(self) -> list[int]:
        return sorted({face.frame_index for face in self.faces if face.recognisable})

    @property
    def reid_fails(self) -> bool:
        reid = self.reid
        return (self.fail_on_reid and reid is not None and reid.faces > 0 and reid.rate > reid.chance
                and reid.p_value < self.reid_p)

    def failures(self) -> list[str]:
        """Why this pair fails the audit, one reason each; empty when it passes."""
        reasons = []
        if self.error:
            reasons.append(self.error)
        if frames := self.untouched_frames:
            reasons.append(f"faces untouched in frames {_frame_list(frames)}")
        if frames := self.recognisable_frames:
            reasons.append(f"faces recognisable in frames {_frame_list(frames)}")
        if self.reid_fails:
            reasons.append(f"re-identified {self.reid.rate:.0%} of faces (chance {self.reid.chance:.1%})")
        if self.metadata:
            reasons.append("identifying metadata: " + "; ".join(str(item) for item in self.metadata))
        return reasons

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_json(self) -> dict[str, Any]:
        reid = self.reid
        return {
            "original": str(self.original),
            "anonymized": str(self.anonymized),
            "status": "error" if self.error else ("pass" if self.passed else "fail"),
            "kind": self.kind,
            "detectors": list(self.detectors),
            "frames": self.frames,
            "frames_checked": self.frames_checked,
            "sampling": self.sampling,
            "scene_cut_frames": list(self.scene_cut_frames),
            "faces_checked": len(self.faces),
            "untouched": len([face for face in self.faces if face.untouched]),
            "recognisable": len([face for face in self.faces if face.recognisable]),
            "untouched_frames": self.untouched_frames,
            "recognisable_frames": self.recognisable_frames,
            "reidentification": None if reid is None else {
                "faces": reid.faces, "gallery": reid.gallery, "rank1": reid.rank1, "rate": round(reid.rate, 4),
                "chance": round(reid.chance, 4), "p_value": float(f"{reid.p_value:.3g}"),
            },
            "metadata": [dataclasses.asdict(item) for item in self.metadata],
            "failures": self.failures(),
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "notes": self.notes,
            "face_checks": [face.to_json() for face in self.faces],
        }


def _frame_list(frames: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(frame) for frame in frames[:limit])
    return shown + (f" and {len(frames) - limit} more" if len(frames) > limit else "")
