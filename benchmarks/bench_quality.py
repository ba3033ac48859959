"""The paper's quality measures for a StyleFace checkpoint, on the shared fixture photos and one clip.

Faces: every face the detector (CenterFace, score >= 0.5, box >= 48 px) finds in ../shared/fixtures/photos
and identities (at most ``--faces``), each aligned twice: the FFHQ crop at the model's resolution (the
target the generator redraws) and the 112 px ArcFace crop (the identity source). The measures run on the
aligned crops (the model's own output), not on pasted-back frames, so the blending does not enter them.

Methods (written down here, once):

* **Identity, swap**: every ordered pair (source s, target t), s != t, of the first ``--swap-faces``
  faces: ``y = G(target t, identity of s)``. Reported: mean cosine similarity of the recogniser's
  embeddings of y and of s (higher is better), the same for y and t (what is left of the target's
  identity), and the share of outputs the recogniser calls the same person as s (its own threshold).
* **Identity, de-identification**: every face t with a random identity (seeded): ``y = G(t, random)``.
  The recogniser compares y with every original face: "still matches the original" is the share of
  outputs within its threshold of t; "matches someone else" the share whose nearest original within the
  threshold is another face (to whom: the per-face list with ``--json``). Lower is better for both.
* **Pose error**: 68 dlib landmarks on target and output (each turned upright in the 320 px frame dlib's
  recogniser uses here, predictor run in that frame's fixed face box), head pose by ``cv2.solvePnP``
  (iterative) of six of them (nose tip 30, chin 8, outer eye corners 36/45, mouth corners 48/54) against
  the generic 3-D face of the common OpenCV head-pose recipe, focal length = frame width, no distortion;
  yaw, pitch, roll in degrees; error = L2 norm of the (yaw, pitch, roll) difference, mean over outputs.
* **Expression error**: the 68 landmarks minus their head pose in 2-D: centred on the mean of the rigid
  points (nose bridge 27-30, eye corners 36/39/42/45), rotated so the outer eye corners are level, scaled
  to unit outer-eye distance; the descriptor is brows, eyes and mouth (17-26, 36-67). Error = mean
  point distance between output and target descriptors, in percent of the eye distance.
* **Temporal stability** (video): the largest face of the first ``--frames`` frames of the clip, each
  frame swapped to one fixed source identity and de-identified with one fixed random identity (as the
  pipeline does: one code per track). Identity jitter = mean recogniser distance between consecutive
  outputs; landmark jitter = mean 68-landmark displacement between consecutive outputs (px in the 320
  frame), and its ratio to the same on the input crops (~1: the output moves as the input did).

The paper's Table 1 (de-identification on LFW, against CIAGAN) measures pose with a CNN head-pose
estimator and expression with 3DMM coefficients: its numbers show the direction, not the scale, of ours.
A random checkpoint measures nothing about quality; the benchmark then only proves it runs.

Run:  .venv/bin/python benchmarks/bench_quality.py CHECKPOINT [--recognizer dlib|checkpoint] [--faces 12]
      [--swap-faces 6] [--frames 24] [--clip talking_head_speech.mp4] [--json]
Needs dlib and its models (``pip install -e '.[dev]'``) for the landmarks.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
sys.path.insert(0, str(ROOT))

PAPER_TABLE1 = {"pose": {"CIAGAN": 6.18, "StyleFace (paper)": 2.75},
                "expression": {"CIAGAN": 1.26, "StyleFace (paper)": 0.35}}
POSE_POINTS = (30, 8, 36, 45, 48, 54)
# The generic face (nose tip at the origin, y up, +z towards the viewer) in OpenCV's camera axes (y down,
# +z away from the camera), so that a frontal face has rotation ~identity.
POSE_MODEL = np.array([(0.0, 0.0, 0.0), (0.0, -330.0, -65.0), (-225.0, 170.0, -135.0), (225.0, 170.0, -135.0),
                       (-150.0, -150.0, -125.0), (150.0, -150.0, -125.0)]) * np.array([1.0, -1.0, -1.0])
RIGID = (27, 28, 29, 30, 36, 39, 42, 45)
EXPRESSION = tuple(range(17, 27)) + tuple(range(36, 68))
MIN_SCORE, MIN_FACE = 0.5, 48


@dataclass
class Face:
    name: str  # file name and face number
    target: np.ndarray  # [R, R, 3] uint8 RGB, FFHQ frame at the model's resolution
    source: np.ndarray  # [112, 112, 3] uint8 RGB, ArcFace frame


class Landmarks68:
    """dlib's 68-point predictor in the upright frame of ``face.match`` (same fixed face box)."""

    def __init__(self, resolution: int):
        import dlib
        import face_recognition_models

        from styleface_cli.face import match
        from styleface_cli.face.align import estimate_affine, ffhq_template

        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.box = dlib.rectangle(*match._UPRIGHT_BOX)
        self.size = match._UPRIGHT_SIZE
        self.matrix = estimate_affine(ffhq_template(resolution), match._UPRIGHT_TEMPLATE)  # crop -> upright

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        upright = np.ascontiguousarray(cv2.warpAffine(crop, self.matrix, (self.size, self.size),
                                                      flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        shape = self.predictor(upright, self.box)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)  # [68, 2]


def head_pose(points: np.ndarray, size: int) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from 68 landmarks (method in the module docstring)."""
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    image_points = points[list(POSE_POINTS)].astype(np.float64)
    ok, rvec, _ = cv2.solvePnP(POSE_MODEL, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    rotation, _ = cv2.Rodrigues(rvec)
    pitch, yaw, roll = cv2.RQDecomp3x3(rotation)[0]  # degrees about x, y, z
    return np.array([yaw, pitch, roll])


def expression_descriptor(points: np.ndarray) -> np.ndarray:
    """Pose-normalised brows, eyes and mouth ([42, 2], unit outer-eye distance)."""
    centred = points - points[list(RIGID)].mean(axis=0)
    eye = centred[45] - centred[36]
    angle = np.arctan2(eye[1], eye[0])
    c, s = np.cos(-angle), np.sin(-angle)
    rotated = centred @ np.array([[c, -s], [s, c]]).T
    return rotated[list(EXPRESSION)] / max(np.linalg.norm(eye), 1e-9)


def collect_faces(resolution: int, limit: int) -> list[Face]:
    from styleface_cli.config import DetectConfig
    from styleface_cli.face.align import align_face
    from styleface_cli.face.detect import create_detector
    from styleface_cli.video.images import read_image

    detector = create_detector(DetectConfig())
    paths = sorted((FIXTURES / "photos").glob("*.jpg")) + sorted((FIXTURES / "identities").rglob("*.png"))
    faces = []
    for path in paths:
        image, _ = read_image(path)
        found = [d for d in detector.detect(image) if d.landmarks is not None and d.score >= MIN_SCORE
                 and min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= MIN_FACE]
        for k, det in enumerate(sorted(found, key=lambda d: -float(d.box[2] - d.box[0]))):
            target, _ = align_face(image, det.landmarks, resolution, frame="ffhq", border="replicate")
            source, _ = align_face(image, det.landmarks, 112, frame="arcface")
            faces.append(Face(f"{path.name}#{k}", target, source))
            if len(faces) >= limit:
                return faces
    return faces


def clip_faces(clip: Path, resolution: int, frames: int) -> list[Face]:
    """The largest face of each of the first ``frames`` frames (frames without one are skipped)."""
    from styleface_cli.config import DetectConfig
    from styleface_cli.face.align import align_face
    from styleface_cli.face.detect import create_detector

    detector = create_detector(DetectConfig())
    capture = cv2.VideoCapture(str(clip))
    faces = []
    for index in range(frames):
        ok, bgr = capture.read()
        if not ok:
            break
        image = np.ascontiguousarray(bgr[:, :, ::-1])
        found = [d for d in detector.detect(image) if d.landmarks is not None]
        if found:
            det = max(found, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
            target, _ = align_face(image, det.landmarks, resolution, frame="ffhq", border="replicate")
            source, _ = align_face(image, det.landmarks, 112, frame="arcface")
            faces.append(Face(f"{clip.name}@{index}", target, source))
    capture.release()
    return faces


class Model:
    """The checkpoint as the benchmark uses it: uint8 crops in, uint8 FFHQ crops out."""

    def __init__(self, path: Path):
        import torch

        from styleface_cli.model import load_checkpoint, set_kernel_policy

        self.torch = torch
        self.model = set_kernel_policy(load_checkpoint(path), "ref")
        self.resolution = self.model.resolution

    def _tensor(self, images: list[np.ndarray]):
        batch = np.stack(images).astype(np.float32) / 127.5 - 1.0
        return self.torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()

    def identity(self, faces: list[Face]):
        with self.torch.no_grad():
            return self.model.encode_identity(self._tensor([f.source for f in faces])).w_plus

    def random_identity(self, n: int, seed: int):
        generator = self.torch.Generator().manual_seed(seed)
        with self.torch.no_grad():
            return self.model.sample_identity(n, generator=generator).w_plus

    def render(self, targets: list[np.ndarray], w_plus) -> list[np.ndarray]:
        with self.torch.no_grad():
            out = self.model(self._tensor(targets), w_plus, noise_mode="const")
        out = ((out.clamp(-1, 1) + 1) * 127.5).round().to(self.torch.uint8).permute(0, 2, 3, 1).numpy()
        return list(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def evaluate(*, checkpoint: Path, recognizer_name: str, faces_limit: int, swap_faces: int, clip: Path | None,
             frames: int, seed: int = 0) -> dict:
    from styleface_cli.face.align import ffhq_template
    from styleface_cli.face.match import CheckpointRecognizer, DlibRecognizer

    model = Model(checkpoint)
    res = model.resolution
    recognizer = CheckpointRecognizer(model.model) if recognizer_name == "checkpoint" else DlibRecognizer()
    template = ffhq_template(res)
    box = np.array([0, 0, res, res], np.float32)

    def embed(crop: np.ndarray) -> np.ndarray:
        return recognizer.embed(crop, template, box)

    landmarks = Landmarks68(res)
    faces = collect_faces(res, faces_limit)
    if len(faces) < 2:
        raise RuntimeError(f"found {len(faces)} faces in {FIXTURES}; need at least 2")
    originals = [embed(f.target) for f in faces]
    target_lm = [landmarks(f.target) for f in faces]
    size = landmarks.size

    def geometry(outputs: list[np.ndarray], target_ids: list[int]) -> tuple[float, float]:
        pose, expr = [], []
        for out, t in zip(outputs, target_ids):
            lm = landmarks(out)
            pose.append(np.linalg.norm(head_pose(lm, size) - head_pose(target_lm[t], size)))
            diff = expression_descriptor(lm) - expression_descriptor(target_lm[t])
            expr.append(100.0 * np.linalg.norm(diff, axis=1).mean())
        return float(np.mean(pose)), float(np.mean(expr))

    # swap
    pool = faces[:swap_faces]
    w_src = model.identity(pool)
    pairs = [(s, t) for s in range(len(pool)) for t in range(len(pool)) if s != t]
    outputs = model.render([pool[t].target for _, t in pairs], w_src[[s for s, _ in pairs]])
    out_emb = [embed(o) for o in outputs]
    swap = {
        "pairs": len(pairs),
        "cos_to_source": float(np.mean([_cosine(e, originals[s]) for e, (s, _) in zip(out_emb, pairs)])),
        "cos_to_target": float(np.mean([_cosine(e, originals[t]) for e, (_, t) in zip(out_emb, pairs)])),
        "source_match_rate": float(np.mean([recognizer.distance(e, originals[s]) <= recognizer.threshold
                                            for e, (s, _) in zip(out_emb, pairs)])),
    }
    swap["pose_error"], swap["expression_error"] = geometry(outputs, [t for _, t in pairs])

    # de-identification
    outputs = model.render([f.target for f in faces], model.random_identity(len(faces), seed))
    matched_to = []
    for t, out in enumerate(outputs):
        e = embed(out)
        distances = [recognizer.distance(e, o) for o in originals]
        nearest = int(np.argmin(distances))
        matched_to.append(None if distances[nearest] > recognizer.threshold else faces[nearest].name)
    deid = {
        "faces": len(faces),
        "matches_original": float(np.mean([m == f.name for m, f in zip(matched_to, faces)])),
        "matches_someone_else": float(np.mean([m is not None and m != f.name for m, f in zip(matched_to, faces)])),
        "matched_to": {f.name: m for f, m in zip(faces, matched_to)},
    }
    deid["pose_error"], deid["expression_error"] = geometry(outputs, list(range(len(faces))))

    temporal = None
    if clip is not None:
        sequence = clip_faces(clip, res, frames)
        if len(sequence) >= 2:
            n = len(sequence)
            w_swap = model.identity(faces[:1]).expand(n, -1, -1)
            w_deid = model.random_identity(1, seed + 1).expand(n, -1, -1)
            lm_in = [landmarks(f.target) for f in sequence]
            move_in = float(np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in zip(lm_in, lm_in[1:])]))
            temporal = {"clip": clip.name, "frames": n, "input_landmark_jitter": move_in}
            for mode, w in (("swap", w_swap), ("deid", w_deid)):
                outs = model.render([f.target for f in sequence], w)
                emb = [embed(o) for o in outs]
                lm = [landmarks(o) for o in outs]
                move = float(np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in zip(lm, lm[1:])]))
                temporal[mode] = {
                    "identity_jitter": float(np.mean([recognizer.distance(a, b) for a, b in zip(emb, emb[1:])])),
                    "landmark_jitter": move,
                    "landmark_jitter_ratio": move / max(move_in, 1e-9),
                }
    return {"checkpoint": str(checkpoint), "resolution": res, "recognizer": recognizer.name,
            "recognizer_threshold": recognizer.threshold, "swap": swap, "deid": deid, "temporal": temporal,
            "paper_table1": PAPER_TABLE1}


def table(result: dict) -> str:
    s, d, t = result["swap"], result["deid"], result["temporal"]
    rows = [
        ("identity, swap: cos(output, source) ^", f"{s['cos_to_source']:.3f}", ""),
        ("identity, swap: cos(output, target)", f"{s['cos_to_target']:.3f}", ""),
        ("identity, swap: same person as source ^", f"{100 * s['source_match_rate']:.1f} %", ""),
        ("de-id: still matches the original v", f"{100 * d['matches_original']:.1f} %", ""),
        ("de-id: matches someone else v", f"{100 * d['matches_someone_else']:.1f} %", ""),
        ("pose error, de-id (deg) v", f"{d['pose_error']:.2f}", "CIAGAN 6.18, paper 2.75"),
        ("pose error, swap (deg) v", f"{s['pose_error']:.2f}", ""),
        ("expression error, de-id (% eye dist.) v", f"{d['expression_error']:.2f}", "CIAGAN 1.26, paper 0.35 (3DMM)"),
        ("expression error, swap (% eye dist.) v", f"{s['expression_error']:.2f}", ""),
    ]
    if t is not None:
        for mode in ("swap", "deid"):
            rows.append((f"temporal, {mode}: identity jitter v", f"{t[mode]['identity_jitter']:.3f}", ""))
            rows.append((f"temporal, {mode}: landmark jitter / input's", f"{t[mode]['landmark_jitter_ratio']:.2f}",
                         f"input {t['input_landmark_jitter']:.2f} px"))
    head = (f"StyleFace quality: {result['checkpoint']} ({result['resolution']} px), recogniser "
            f"{result['recognizer']}; {d['faces']} faces, {s['pairs']} swap pairs"
            + (f", {t['frames']} frames of {t['clip']}" if t else ""))
    width = max(len(r[0]) for r in rows)
    lines = [head, f"{'measure':<{width}}  {'value':>9}  Table 1 (LFW)", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value:>9}  {ref}" for name, value, ref in rows]
    lines.append("^ higher is better, v lower is better; methods: benchmarks/bench_quality.py docstring")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--recognizer", choices=("dlib", "checkpoint"), default="dlib",
                        help="who judges identity: dlib's ResNet (independent of the model; default) or the "
                             "checkpoint's own recogniser")
    parser.add_argument("--faces", type=int, default=12, help="faces from the fixture photos (de-identification)")
    parser.add_argument("--swap-faces", type=int, default=6, help="faces for swapping (all ordered pairs)")
    parser.add_argument("--clip", default="talking_head_speech.mp4",
                        help="fixture clip for temporal stability ('' = none)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    args = parser.parse_args(argv)
    clip = FIXTURES / "videos" / args.clip if args.clip else None
    result = evaluate(checkpoint=args.checkpoint, recognizer_name=args.recognizer, faces_limit=args.faces,
                      swap_faces=args.swap_faces, clip=clip, frames=args.frames, seed=args.seed)
    print(json.dumps(result) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
