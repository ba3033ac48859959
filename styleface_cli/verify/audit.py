"""``verify_pair``: the whole audit of one (original, anonymised) pair, read top to bottom.

metadata of the output -> decode both in step -> sample frames (scene cuts included) -> find faces in the
original (independent detectors) -> check each face in the output (untouched, recognisable) -> rank every
output face against all original faces (re-identification) -> report.

Both files are only read. Frames stream: nothing is kept per frame but, per face, a few numbers and its two
128-d descriptors (2 KB; the re-identification gallery), and, for the contact sheet, the crops of the
riskiest faces so far; at most ``2 x workers + 1`` sampled frames are in flight.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from styleface_cli.config import VerifyConfig
from styleface_cli.errors import InputError
from styleface_cli.records import Frame
from styleface_cli.verify.detect import Describer, IndependentDetector
from styleface_cli.verify.findings import codec_noise, face_change, is_untouched, luma, reidentification
from styleface_cli.verify.metadata import audit_metadata
from styleface_cli.verify.records import FaceCheck, FoundFace, PairReport
from styleface_cli.verify.sampling import FrameSampler, sampling_step, upright
from styleface_cli.verify.sheet import RiskiestFaces
from styleface_cli.video.media import open_media


@dataclasses.dataclass
class VerifyTools:
    """The models, loaded once per run."""

    detector: IndependentDetector
    describer: Describer

    def close(self) -> None:
        self.detector.close()


def load_tools(cfg: VerifyConfig) -> VerifyTools:
    return VerifyTools(detector=IndependentDetector(cfg), describer=Describer())


def verify_pair(original: Path, anonymized: Path, *, cfg: VerifyConfig, tools: VerifyTools,
                riskiest: RiskiestFaces | None = None, on_frame: Callable[[int, int], None] | None = None) -> PairReport:
    """Audit ``anonymized`` against ``original``; raises ``InputError`` when they cannot be compared.
    ``on_frame(frames, faces)`` is told of every frame decoded and every face checked (the progress bar)."""
    progress = on_frame or (lambda frames, faces: None)
    started = time.perf_counter()
    report = PairReport(original=Path(original), anonymized=Path(anonymized), detectors=tools.detector.names,
                        fail_on_reid=cfg.fail_on_reid, reid_p=cfg.reid_p)
    report.metadata = audit_metadata(Path(anonymized), cfg.allowed_tags)
    checked: list[tuple[FaceCheck, np.ndarray, np.ndarray]] = []  # (check, original and output descriptors)
    with open_media(original) as source, open_media(anonymized) as output:
        report.kind = "image" if source.info.is_image else "video"
        resize_to = _comparable_size(source.info, output.info)
        if resize_to is not None:
            report.notes.append(f"the output is {output.info.width}x{output.info.height}; its frames are scaled to the "
                                f"original's {resize_to[0]}x{resize_to[1]} to be compared")
        sampler = FrameSampler(cfg, sampling_step(cfg, source.info.frame_count, source.info.average_fps))
        report.sampling = sampler.describe() if report.kind == "video" else "the image"
        frames = paired_frames(source, output, report, progress)
        sampled = upright_samples(frames, sampler, source.info.rotation, output.info.rotation, resize_to, report)
        for index, before, after, found in detect_ahead(sampled, tools.detector):
            faces = check_frame(before, after, index, found, cfg=cfg, describer=tools.describer)
            for face, _, _ in faces:
                if riskiest is not None:
                    riskiest.add(face, before, after, Path(anonymized).name)
            checked.extend(faces)
            progress(0, len(faces))
    report.scene_cut_frames = tuple(sampler.cut_frames)
    if not checked and report.frames_checked:
        report.notes.append(no_faces_note(source.info.width, source.info.height, cfg))
    report.faces, report.reid = reidentification(
        [face for face, _, _ in checked],
        np.array([described for _, described, _ in checked]).reshape(-1, 128),
        np.array([described for _, _, described in checked]).reshape(-1, 128))
    report.seconds = time.perf_counter() - started
    return report


# dlib's CNN face detector (mmod_human_face_detector) finds faces from about 60 px across at its input size
# (measured: a frontal portrait scaled down is found at 60 px, not at 50); each upsampling step halves that.
DLIB_CNN_SMALLEST_FACE = 60


def no_faces_note(width: int, height: int, cfg: VerifyConfig) -> str:
    """Why a pass with no face found proves little: the smallest face the detectors could have found."""
    scale = cfg.det_size / max(width, height) if cfg.det_size > 0 else 1.0
    smallest = DLIB_CNN_SMALLEST_FACE / (scale * 2 ** cfg.upsample)
    return (f"no face was found in the checked frames of the original: faces smaller than about {smallest:.0f} px "
            f"are beyond dlib's CNN detector at --det-size {cfg.det_size} --upsample {cfg.upsample}; for small faces "
            f"add --upsample 1 (4x the time) or --detector-model with a YuNet or SCRFD file")


def paired_frames(source, output, report: PairReport, progress: Callable[[int, int], None]
                  ) -> Iterator[tuple[Frame, Frame]]:
    """The two files' frames in step (counted in ``report.frames``); ``InputError`` when their counts differ."""
    for source_frame, output_frame in itertools.zip_longest(source, output):
        if source_frame is None or output_frame is None:
            longer = source if output_frame is None else output
            counts = [report.frames, report.frames + 1 + sum(1 for _ in longer)]
            original_frames, output_frames = counts if output_frame is not None else counts[::-1]
            raise InputError(f"{report.anonymized}: has {output_frames} frames but the original {report.original} "
                             f"has {original_frames}; their frames cannot be paired")
        report.frames += 1
        progress(1, 0)
        yield source_frame, output_frame


def upright_samples(frames: Iterator[tuple[Frame, Frame]], sampler: FrameSampler, source_rotation: int,
                    output_rotation: int, resize_to: tuple[int, int] | None,
                    report: PairReport) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, original, output) as upright [H, W, 3] uint8 RGB, for the frames the sampler picks
    (counted in ``report.frames_checked``); RGB is made only for those."""
    for source_frame, output_frame in frames:
        if sampler(source_frame):
            report.frames_checked += 1
            after = upright(output_frame.image, output_rotation)
            if resize_to is not None:
                after = cv2.resize(after, resize_to, interpolation=cv2.INTER_AREA)
            yield source_frame.index, upright(source_frame.image, source_rotation), after


def detect_ahead(samples: Iterator[tuple[int, np.ndarray, np.ndarray]], detector: IndependentDetector
                 ) -> Iterator[tuple[int, np.ndarray, np.ndarray, list[FoundFace]]]:
    """The samples with the faces found in their original, in order; a few frames are in flight at once so that
    every detector worker stays busy (and memory stays bounded)."""
    in_flight: collections.deque = collections.deque()
    for index, before, after in samples:
        in_flight.append((index, before, after, detector.submit(before)))
        if len(in_flight) > 2 * detector.workers:
            index, before, after, found = in_flight.popleft()
            yield index, before, after, found.result()
    while in_flight:
        index, before, after, found = in_flight.popleft()
        yield index, before, after, found.result()


def check_frame(original: np.ndarray, output: np.ndarray, frame_index: int, found: list[FoundFace], *,
                cfg: VerifyConfig, describer: Describer) -> list[tuple[FaceCheck, np.ndarray, np.ndarray]]:
    """Every face ``found`` in the ``original`` upright frame, checked in ``output``: (check, original
    descriptor, output descriptor at the original's landmarks)."""
    if not found:
        return []
    difference = np.abs(luma(original) - luma(output))  # [H, W] int16
    noise = codec_noise(difference, [face.box for face in found])
    checked = []
    for face in found:
        change = face_change(difference, face.box)
        landmarks = describer.landmarks(original, face.box)
        described_original = describer.descriptor(original, landmarks)
        described_output = describer.descriptor(output, landmarks)
        distance = float(np.linalg.norm(described_original - described_output))
        check = FaceCheck(
            frame_index=frame_index,
            box=face.box,
            detector=face.detector,
            change=change,
            noise=noise,
            untouched=is_untouched(change, noise, cfg.noise_factor, cfg.min_change),
            distance=distance,
            recognisable=distance < cfg.same_person,
        )
        checked.append((check, described_original, described_output))
    return checked


def _comparable_size(source, output) -> tuple[int, int] | None:
    """None when both have one upright size; else the original's (width, height) that the output's frames
    are scaled to, when the output is the same picture resized by less than 16 px each way (deface rounds
    sizes up to multiples of 16: 480x270 -> 480x272, 640x360 -> 640x368); raises ``InputError`` otherwise."""
    def upright_size(info):
        return (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)

    if source.is_image != output.is_image:
        raise InputError(f"{output.path}: one of the pair is a photo and the other a video")
    (w0, h0), (w1, h1) = upright_size(source), upright_size(output)
    if (w0, h0) == (w1, h1):
        return None
    if abs(w1 - w0) >= 16 or abs(h1 - h0) >= 16:
        raise InputError(f"{output.path}: is {w1}x{h1} but the original {source.path} is {w0}x{h0}; "
                         "verify compares outputs that show the original's picture")
    return w0, h0

