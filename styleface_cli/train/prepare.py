"""Prepare a training set: folders of photos and videos, one identity each, become aligned crops.

For every usable face the output holds two crops, both cut from the original picture by a similarity
fitted to the detector's five landmarks:

- ``images/<identity>/<name>.png``: ``resolution x resolution``, FFHQ alignment (``align.ffhq_template``),
  the generator's frame: targets, reconstruction references and the discriminator's reals;
- ``crops112/<identity>/<name>.png``: 112x112, arcface alignment, what the recogniser and the identity
  projector read (sources and contrastive keys).

``records.jsonl`` gets one line per source file (photo or video) as soon as that file is done, which makes
the run resumable: a second run skips every source that already has a line. With ``--shard K/N`` (N
machines or jobs splitting one source folder into one output folder, no coordination) a run takes only
the sources whose path hashes to shard K (``inputs.shard_of``) and writes its lines to its own
``records-K-of-N.jsonl``, so no two writers share a file. ``index.json`` is rebuilt from the lines of
every records file at the end of every run (the shard that finishes last indexes everything) and is
what ``train.data`` reads; it lists the identities
(only those with at least one usable face), the samples (with the landmarks in the aligned frame) and
every skipped picture with its reason.

Which face is the labelled person? VGGFace2 and CelebA-HQ pictures are centred on the labelled person,
who is nearly always the largest face. We take the largest face, unless another face is of similar size
(area at least ``similar_face_ratio`` of the largest), in which case the picture is skipped as
ambiguous rather than risk a wrong label, which would poison the identity and contrastive losses. Faces
smaller than ``min_face`` pixels (shorter box side) are skipped too: upsampled to the training resolution
they teach the generator blur.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import cv2
import numpy as np

from styleface_cli.atomic import atomic_write_text
from styleface_cli.config import DetectConfig
from styleface_cli.errors import ConfigError, InputError, OutputError
from styleface_cli.face import align
from styleface_cli.inputs import VIDEO_SUFFIXES, shard_of
from styleface_cli.records import Detection

if TYPE_CHECKING:
    from styleface_cli.cluster import RayConfig

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset(VIDEO_SUFFIXES)
INDEX_NAME = "index.json"
RECORDS_NAME = "records.jsonl"
SETTINGS_NAME = "prepare.json"
CROP_SIZE = align.ARCFACE_SIZE  # the recogniser crops
INDEX_FORMAT = "styleface-train-index"
INDEX_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    src_dir: Path  # one folder per identity, or a flat folder with identity_from_name
    out_dir: Path
    resolution: int = 256  # side of the FFHQ-aligned training crops, a power of two
    workers: int = 1  # processes running detection and alignment
    identity_from_name: str | None = None  # regex on the file stem; group 1 (or the whole match) is the identity
    video_every: int = 10  # keep every k-th frame of a video
    min_face: int = 64  # faces whose shorter box side is below this (pixels) are skipped
    similar_face_ratio: float = 0.5  # a second face with at least this share of the largest's area -> ambiguous
    detect: DetectConfig = DetectConfig(threshold=0.5)  # training data wants sure faces, not every face
    shard: tuple[int, int] | None = None  # (K, N): only the sources of shard K of N
    ray: "RayConfig | None" = None  # run the sources on Ray actors (styleface_cli.cluster) instead of workers


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file and the identity it belongs to."""

    path: Path  # relative to the source folder
    identity: str
    name: str  # file name of its crops (no extension), unique within the identity


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
    sources: int  # input files found
    processed: int  # of which processed in this run
    already_done: int  # of which skipped because an earlier run did them
    samples: int  # usable faces in the whole index
    skipped: int  # unusable pictures in the whole index
    identities: int  # identities with at least one usable face
    index_path: Path


def discover_sources(src_dir: Path, identity_from_name: str | None) -> list[Source]:
    """The photos and videos under ``src_dir`` with their identity, sorted by path.

    Layouts: with ``identity_from_name`` (a regex) every file's stem gives its identity (group 1 if the
    regex has a group, else the whole match; files that do not match are ignored with no record);
    otherwise each immediate subfolder is one identity and holds its files at any depth (VGGFace2's
    ``n000001/0001_01.jpg``).
    """
    if not src_dir.is_dir():
        raise InputError(f"source folder not found: {src_dir}")
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    sources = []
    if identity_from_name is not None:
        try:
            pattern = re.compile(identity_from_name)
        except re.error as error:
            raise ConfigError(f"--identity-from-name is not a valid regular expression: {error}") from error
        for path in files:
            match = pattern.search(path.stem)
            if match:
                identity = match.group(1) if pattern.groups else match.group(0)
                if identity:
                    rel = path.relative_to(src_dir)
                    sources.append(Source(rel, identity, "__".join(rel.with_suffix("").parts)))
    else:
        flat = [p for p in files if p.parent == src_dir]
        if flat and not any(p.is_dir() for p in src_dir.iterdir()):
            raise ConfigError(f"{src_dir} holds files but no identity folders; pass --identity-from-name REGEX "
                              "to read identities from file names (e.g. '^(.+?)\\d+$')")
        for path in files:
            rel = path.relative_to(src_dir)
            if len(rel.parts) > 1:  # files beside the identity folders belong to no one
                sources.append(Source(rel, rel.parts[0], "__".join(rel.with_suffix("").parts[1:])))
    if not sources:
        raise InputError(f"no photos or videos with an identity found in {src_dir}")
    return sources


def choose_face(detections: list[Detection], *, min_face: int, similar_face_ratio: float) -> tuple[Detection | None, str]:
    """The labelled face of a picture, or ``(None, reason)``. See the module docstring for the policy."""
    faces = [d for d in detections if d.landmarks is not None]
    if not faces:
        return None, "no face" if not detections else "no landmarks"
    areas = [float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])) for d in faces]
    order = np.argsort(areas)[::-1]
    largest = faces[order[0]]
    if len(faces) > 1 and areas[order[1]] >= similar_face_ratio * areas[order[0]]:
        return None, f"several faces of similar size ({len(faces)} faces)"
    side = float(min(largest.box[2] - largest.box[0], largest.box[3] - largest.box[1]))
    if side < min_face:
        return None, f"face too small ({side:.0f} px < {min_face} px)"
    return largest, ""


def prepare_data(*, config: PrepareConfig, on_progress: Callable[[int, int], None] | None = None) -> PrepareSummary:
    """Detect, choose, align and write every face of ``config.src_dir`` (see the module docstring).

    ``on_progress(done, total)`` is called after each source file. Resumable: sources already recorded
    in ``records.jsonl`` are not processed again.
    """
    if config.resolution < 16 or config.resolution & (config.resolution - 1):
        raise ConfigError(f"--resolution must be a power of two >= 16, got {config.resolution}")
    if config.workers < 1 or config.video_every < 1:
        raise ConfigError("--workers and --video-every must be at least 1")
    sources = discover_sources(config.src_dir, config.identity_from_name)
    if config.shard is not None:
        index, count = config.shard
        sources = [s for s in sources if shard_of(s.path.as_posix(), count) == index]
    out = config.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {out}: {error}") from error
    _check_settings(out / SETTINGS_NAME, config)
    records_path = out / records_name(config.shard)
    done = {record["source"] for record in read_all_records(out)}
    todo = [s for s in sources if s.path.as_posix() not in done]
    if on_progress:
        on_progress(0, len(todo))
    with open(records_path, "a", encoding="utf-8") as records:
        if records.tell() and _last_byte(records_path) != b"\n":
            records.write("\n")  # a line cut short by a crash must not swallow the next one
        for count, lines in enumerate(_run(todo, config), start=1):
            records.write("".join(json.dumps(line) + "\n" for line in lines))
            records.flush()
            if on_progress:
                on_progress(count, len(todo))
    index = build_index(read_all_records(out), config.resolution)
    _atomic_write_json(out / INDEX_NAME, index)
    return PrepareSummary(
        sources=len(sources), processed=len(todo), already_done=len(sources) - len(todo),
        samples=len(index["samples"]), skipped=len(index["skipped"]), identities=len(index["identities"]),
        index_path=out / INDEX_NAME,
    )


def _check_settings(path: Path, config: PrepareConfig) -> None:
    """Refuse to mix crops of another resolution or alignment into an existing output folder."""
    settings = {"resolution": config.resolution, "crop_size": CROP_SIZE, "alignment": "ffhq-5pt"}
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            raise ConfigError(f"{path.parent} was prepared with {old}; this run asks for {settings}. "
                              "Use another output folder.")
    else:
        _atomic_write_json(path, settings)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def records_name(shard: tuple[int, int] | None) -> str:
    """``records.jsonl``, or ``records-K-of-N.jsonl`` for shard K of N."""
    return RECORDS_NAME if shard is None else f"records-{shard[0]}-of-{shard[1]}.jsonl"


def read_all_records(out_dir: Path) -> list[dict]:
    """The lines of every records file in ``out_dir`` (the unsharded one and each shard's)."""
    paths = sorted(out_dir.glob("records-*-of-*.jsonl"))
    return [record for path in [out_dir / RECORDS_NAME, *paths] for record in read_records(path)]


def read_records(path: Path) -> list[dict]:
    """The lines of ``records.jsonl``, one list entry per line, skipping a line cut short by a crash."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.append(entry)
    return records


def build_index(records: list[dict], resolution: int) -> dict:
    """index.json from the per-picture records: identities sorted by name, samples sorted by file."""
    usable = sorted((r for r in records if "image" in r), key=lambda r: (r["identity"], r["source"], r.get("frame") or 0))
    names = sorted({r["identity"] for r in usable})
    number = {name: i for i, name in enumerate(names)}
    samples = [
        {"identity": number[r["identity"]], "image": r["image"], "crop112": r["crop112"], "landmarks": r["landmarks"],
         "source": r["source"], "frame": r.get("frame")}
        for r in usable
    ]
    identities = [{"name": name, "samples": []} for name in names]
    for i, sample in enumerate(samples):
        identities[sample["identity"]]["samples"].append(i)
    skipped = sorted(
        ({"source": r["source"], "frame": r.get("frame"), "identity": r["identity"], "reason": r["skipped"]}
         for r in records if "skipped" in r),
        key=lambda r: (r["source"], r["frame"] or 0),
    )
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "resolution": resolution, "crop_size": CROP_SIZE,
            "alignment": "ffhq-5pt", "identities": identities, "samples": samples, "skipped": skipped}


def _atomic_write_json(path: Path, value: dict) -> None:
    atomic_write_text(path, json.dumps(value, indent=1))


# --------------------------------------------------------------------------------------------------
# Workers


def _run(todo: list[Source], config: PrepareConfig) -> Iterator[list[dict]]:
    """Records of each source, in completion order, from ``config.workers`` processes (or Ray actors)."""
    if config.ray is not None and todo:
        from styleface_cli.cluster import run_prepare

        yield from run_prepare(todo, config)
        return
    if config.workers == 1 or len(todo) <= 1:
        _init_worker(config)
        yield from map(_process_source, todo)
        return
    # spawn, not fork: onnxruntime sessions and OpenCV thread pools do not survive a fork reliably
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.workers, initializer=_init_worker, initargs=(config,)) as pool:
        yield from pool.imap_unordered(_process_source, todo, chunksize=1)


_WORKER: dict = {}


def _init_worker(config: PrepareConfig) -> None:
    from styleface_cli.face.detect import create_detector

    detect = config.detect
    if config.workers > 1 and detect.threads == 0:  # one thread per process: the processes are the parallelism
        detect = dataclasses.replace(detect, threads=1)
        cv2.setNumThreads(1)
    _WORKER["config"] = config
    _WORKER["detector"] = create_detector(detect)


def _process_source(source: Source) -> list[dict]:
    config: PrepareConfig = _WORKER["config"]
    path = config.src_dir / source.path
    base = {"source": source.path.as_posix(), "identity": source.identity}
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        frames = _video_frames(path, config.video_every)
    else:
        frames = _image_frames(path)
    records = []
    try:
        for frame_index, image in frames:
            record = dict(base, frame=frame_index)
            record.update(_process_picture(image, source, frame_index, config))
            records.append(record)
    except InputError as error:
        records.append(dict(base, frame=None, skipped=str(error)))
    if not records:
        records.append(dict(base, frame=None, skipped="no frames decoded"))
    return records


def _image_frames(path: Path) -> Iterator[tuple[int | None, np.ndarray]]:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError("unreadable image")
    yield None, np.ascontiguousarray(image[:, :, ::-1])


def _video_frames(path: Path, every: int) -> Iterator[tuple[int | None, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except Exception as error:  # PyAV raises many error types for broken files
        raise InputError(f"unreadable video: {error}".splitlines()[0]) from error
    with container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every == 0:
                    yield index, frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise InputError(f"video decoding failed: {error}".splitlines()[0]) from error


def _process_picture(image: np.ndarray, source: Source, frame: int | None, config: PrepareConfig) -> dict:
    """Detect, choose, align and write one picture; returns the record's payload."""
    detections = _WORKER["detector"].detect(image)
    face, reason = choose_face(detections, min_face=config.min_face, similar_face_ratio=config.similar_face_ratio)
    if face is None:
        return {"skipped": reason}
    name = source.name
    if frame is not None:
        name += f"_f{frame:06d}"
    identity_dir = _safe_name(source.identity)
    image_rel = f"images/{identity_dir}/{name}.png"
    crop_rel = f"crops112/{identity_dir}/{name}.png"
    aligned, matrix = align.align_face(image, face.landmarks, config.resolution, frame="ffhq", border="reflect")
    crop112, _ = align.align_face(image, face.landmarks, CROP_SIZE, frame="arcface", border="constant")
    for rel, pixels in ((image_rel, aligned), (crop_rel, crop112)):
        target = config.out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), np.ascontiguousarray(pixels[:, :, ::-1])):
            raise OutputError(f"cannot write {target}")
    landmarks = align.transform_points(face.landmarks, matrix)
    return {"image": image_rel, "crop112": crop_rel, "landmarks": np.round(landmarks, 2).tolist(),
            "score": round(float(face.score), 4)}


def _safe_name(identity: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", identity).strip(".") or "_"
