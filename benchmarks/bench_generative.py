"""The generative method: temporal stability on the fixture clips, and throughput at 720p.

1. Stability: for each fixture clip, ``styleface anonymize --method styleface`` with a tiny random
   checkpoint, then the mean frame-to-frame change of the pixels inside the replaced face areas,
   divided by the same measure on the input. ~1 means the new faces move as much as the old ones did;
   far above 1 means flicker. (A random network draws noise, not faces: this measures the pipeline's
   stability -- fixed codes per track, smoothed alignment, paste-back -- not the trained model's.)
2. Throughput: frames per second of ``--method styleface`` on the first frames of the 720p fixture
   with randomly initialised 256 and 512 paper-size checkpoints, batch size 1 against the default.

Run:  .venv/bin/python benchmarks/bench_generative.py [--frames 6] [--skip-throughput] [--skip-stability]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "fixtures" / "videos"
sys.path.insert(0, str(ROOT))


def styleface(*args: str) -> dict:
    command = [str(Path(sys.executable).parent / "styleface"), *map(str, args), "--json", "--quiet", "--overwrite"]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def stability(clip: Path, work: Path, checkpoint: Path) -> dict:
    from styleface_cli.tracks_file import read_tracks
    from tests import media

    out, tracks = work / f"{clip.stem}_gen.mp4", work / f"{clip.stem}.json"
    styleface("anonymize", clip, "-o", out, "--method", "styleface", "--checkpoint", checkpoint, "--export-tracks", tracks)
    listed = read_tracks(tracks)
    _, before = media.read_all(clip)
    _, after = media.read_all(out)
    changes_in, changes_out = [], []
    for i in range(1, len(before)):
        for region in listed.faces(i).regions:
            if region.track_id < 0 or not any(r.track_id == region.track_id for r in listed.faces(i - 1).regions):
                continue
            x0, y0, x1, y1 = np.clip(region.box, 0, [before[i].image.shape[1], before[i].image.shape[0]] * 2).astype(int)
            if x1 - x0 < 4 or y1 - y0 < 4:
                continue
            sl = np.s_[y0:y1, x0:x1]
            changes_in.append(np.abs(before[i].image[sl].astype(int) - before[i - 1].image[sl]).mean())
            changes_out.append(np.abs(after[i].image[sl].astype(int) - after[i - 1].image[sl]).mean())
    if not changes_in:
        return {"clip": clip.name, "pairs": 0}
    return {"clip": clip.name, "pairs": len(changes_in), "input_change": round(float(np.mean(changes_in)), 2),
            "output_change": round(float(np.mean(changes_out)), 2),
            "ratio": round(float(np.mean(changes_out) / max(np.mean(changes_in), 1e-6)), 2)}


def throughput(work: Path, frames: int) -> list[dict]:
    import imageio_ffmpeg

    from styleface_cli.config import GenerateConfig
    from styleface_cli.model import StyleFaceConfig, init_checkpoint

    clip = work / "talking_720p_short.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(VIDEOS / "talking_720p.mp4"),
                    "-frames:v", str(frames), "-c:v", "libx264", "-crf", "16", "-an", str(clip)], check=True)
    rows = []
    for resolution in (256, 512):
        ckpt = work / f"paper_{resolution}.safetensors"
        init_checkpoint(StyleFaceConfig.preset(resolution), ckpt, seed=0)
        for batch in (1, GenerateConfig.batch_size):
            started = time.perf_counter()
            record = styleface("anonymize", clip, "-o", work / "t.mp4", "--method", "styleface", "--checkpoint", ckpt,
                               "--batch-size", batch, "--min-identity-distance", "0")
            seconds = time.perf_counter() - started
            rows.append({"resolution": resolution, "batch_size": batch, "frames": record["frames"],
                         "faces": record["faces"], "fps_wall": round(record["frames"] / seconds, 3),
                         "fps_pipeline": record["fps"], "generator_batches": record.get("generator_batches")})
        ckpt.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6, help="frames of the 720p clip for the throughput runs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-stability", action="store_true")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        sys.exit(f"fixtures not found at {VIDEOS}")
    from styleface_cli.model import StyleFaceConfig, init_checkpoint

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_stability:
            tiny = work / "tiny.safetensors"
            init_checkpoint(StyleFaceConfig.tiny(64), tiny, seed=0)
            print("\n| clip | frame pairs | input change | output change | ratio |\n|---|---|---|---|---|")
            for clip in sorted(VIDEOS.glob("*.mp4")):
                row = stability(clip, work, tiny)
                print(f"| {row['clip']} | {row['pairs']} | {row.get('input_change', '-')} | {row.get('output_change', '-')} | {row.get('ratio', '-')} |")
        if not args.skip_throughput:
            print("\n| checkpoint | batch size | frames | faces | fps (wall, incl. model load) | fps (pipeline) |\n|---|---|---|---|---|---|")
            for row in throughput(work, args.frames):
                print(f"| paper {row['resolution']} (random) | {row['batch_size']} | {row['frames']} | {row['faces']} | {row['fps_wall']} | {row['fps_pipeline']} |")


if __name__ == "__main__":
    main()
