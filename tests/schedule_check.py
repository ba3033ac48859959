"""Does a detection schedule lose any face that the fixed schedule finds?

The reference is the detector itself under the fixed schedule (every frame at ``DetectConfig.max_size``,
small frames enlarged: the default before the adaptive schedule). A face counts as kept when the regions
that ``styleface anonymize`` recorded for that frame (``--export-tracks``) hide it by the same rule as
the YuNet coverage tests (``tests.yunet.uncovered``: all 5 landmarks and at least 80% of the inner face).

Used by ``tests/test_detect_schedule.py`` on the small fixture clips and by
``benchmarks/check_detection_schedule.py`` on every clip.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from styleface_cli.cli.app import app
from styleface_cli.config import DetectConfig, ObfuscateConfig
from styleface_cli.face.detect import create_detector
from styleface_cli.face.obfuscate import covered_mask
from styleface_cli.records import Detection
from styleface_cli.tracks_file import read_tracks
from tests import media
from tests.yunet import uncovered

MASK_SCALE = ObfuscateConfig.mask_scale  # the default the user gets


@dataclasses.dataclass
class ScheduleCheck:
    """One clip: the fixed schedule's detections, and those of them each run left visible."""

    clip: str
    frames: int
    detections: int  # the fixed schedule's raw detections, summed over frames
    smallest: float  # height (px) of the smallest of them
    lost_by_fixed: list[str]  # left visible by a default run with the fixed schedule (the baseline)
    lost_by_auto: list[str]  # left visible by a default run with the adaptive schedule

    @property
    def newly_lost(self) -> list[str]:
        """Faces the adaptive schedule leaves visible that the fixed schedule's run hid."""
        return [face for face in self.lost_by_auto if face not in set(self.lost_by_fixed)]


def fixed_detections(frames, cfg: DetectConfig = DetectConfig(schedule="fixed")) -> list[list[Detection]]:
    """What the detector finds in each frame, given the frame as the pipeline gives it (the decoder's planes,
    scaled to the detection size in one pass): an RGB copy resampled another way moves scores near the
    threshold across it, and those detections would differ from the run's."""
    detector = create_detector(cfg)
    return [detector.detect(frame) for frame in frames]


def recorded_regions(clip: Path, work: Path, *extra: str):
    """The regions a default ``anonymize`` run (plus ``extra`` options) records per frame."""
    tracks = work / "tracks.json"
    result = CliRunner().invoke(app, ["anonymize", str(clip), "-o", str(work / f"out{clip.suffix}"), "--overwrite",
                                      "--export-tracks", str(tracks), "--json", "--quiet", "--method", "blur", *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["frames"] > 0
    return read_tracks(tracks)


def visible(frames, detections: list[list[Detection]], listed) -> list[str]:
    """Each detection that the listed regions leave visible, as 'frame N: face [x0, y0, x1, y1] (h px)'."""
    found = []
    for frame, dets in zip(frames, detections):
        width, height = frame.size
        covered = covered_mask(height, width, listed.faces(frame.index).regions, MASK_SCALE)
        for det in dets:
            landmarks = det.landmarks if det.landmarks is not None else np.zeros((0, 2), np.float32)
            if uncovered(det.box, landmarks, covered):
                found.append(f"frame {frame.index}: face {np.round(det.box).astype(int).tolist()} "
                             f"({det.box[3] - det.box[1]:.0f} px high, score {det.score:.2f})")
    return found


def check_clip(clip: Path, work: Path) -> ScheduleCheck:
    """Compare the adaptive (default) schedule with the fixed one on ``clip``."""
    _, frames = media.read_all(clip)
    detections = fixed_detections(frames)
    heights = [float(d.box[3] - d.box[1]) for dets in detections for d in dets]
    fixed_run = recorded_regions(clip, work, "--det-size", str(DetectConfig.max_size))
    auto_run = recorded_regions(clip, work)
    return ScheduleCheck(clip=clip.name, frames=len(frames), detections=len(heights),
                         smallest=min(heights, default=float("nan")),
                         lost_by_fixed=visible(frames, detections, fixed_run),
                         lost_by_auto=visible(frames, detections, auto_run))
