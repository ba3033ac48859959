"""``styleface verify``'s findings on styleface's and deface's outputs, side by side, and verify's own speed.

For each fixture clip (cut to its first ``--frames`` frames, re-encoded at crf 18 so every tool starts from
the same file): ``styleface anonymize`` with blur, pixelate and mask, and the ``deface`` CLI with its defaults;
then ``styleface verify`` (in this process, models loaded once, ``--every`` K) on each output. Findings:
faces checked, untouched, recognisable (dlib distance < 0.6), the smallest descriptor distance, the
re-identification rank-1 rate against its chance level, identifying metadata, verdict.

Speed: verify on the 720p fixture (``talking_720p.mp4``), frames per second of the video, with the default
sampling (every 30th frame there, plus scene cuts) over the whole clip, and with every frame checked over
its first ``--speed-frames`` frames.

Run:  .venv/bin/python benchmarks/bench_verify.py [--small] [--json]
``--small`` (one clip, 6 frames, every 2nd; speed over 3 frames) proves the script works in ~3 minutes.
Prints Markdown tables for the README.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from styleface_cli.config import VerifyConfig  # noqa: E402
from styleface_cli.errors import StylefaceError  # noqa: E402
from styleface_cli.verify.audit import load_tools, verify_pair  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "videos"
CLIPS = ("head_pose_two_people.mp4", "talking_head_speech.mp4", "walking_small_faces.mp4",
         "classroom_far_faces.mp4", "tears_of_steel_cuts.mp4")
SPEED_CLIP = FIXTURES / "talking_720p.mp4"
BIN = Path(sys.executable).parent


def cut(source: Path, target: Path, frames: int) -> int:
    """The first ``frames`` frames of ``source`` as H.264 crf 18 (same size and rate); returns the count."""
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "18", "preset": "veryfast"})
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        count = 0
        for frame in inp.decode(vin):
            if count == frames:
                break
            frame.pts, frame.time_base, frame.pict_type = count, 1 / vin.average_rate, av.video.frame.PictureType.NONE
            out.mux(vout.encode(frame))
            count += 1
        out.mux(vout.encode())
    return count


def make_outputs(clip: Path, work: Path) -> dict[str, Path]:
    outputs = {}
    for method in ("blur", "pixelate", "mask"):
        outputs[f"styleface {method}"] = work / f"{clip.stem}_{method}.mp4"
        subprocess.run([str(BIN / "styleface"), "anonymize", str(clip), "-o", str(outputs[f"styleface {method}"]),
                        "--method", method, "--overwrite", "--quiet"], check=True)
    if (BIN / "deface").exists():
        outputs["deface"] = work / f"{clip.stem}_deface.mp4"
        subprocess.run([str(BIN / "deface"), str(clip), "-o", str(outputs["deface"])], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return outputs


def findings(clip_name: str, tool: str, report) -> dict:
    distances = [face.distance for face in report.faces]
    reid = report.reid
    return {
        "clip": clip_name, "tool": tool, "frames": report.frames, "checked": report.frames_checked,
        "faces": len(report.faces), "untouched": sum(f.untouched for f in report.faces),
        "recognisable": sum(f.recognisable for f in report.faces),
        "min_distance": round(min(distances), 3) if distances else None,
        "reid_rate": round(reid.rate, 3) if reid else None, "reid_chance": round(reid.chance, 3) if reid else None,
        "metadata": len(report.metadata), "verdict": "pass" if report.passed else "FAIL",
        "seconds": round(report.seconds, 1),
    }


def speed(tools, work: Path, speed_frames: int) -> list[dict]:
    rows = []
    runs = [("default sampling (whole clip)", SPEED_CLIP, VerifyConfig())]
    short = work / "talking_720p_short.mp4"
    cut(SPEED_CLIP, short, speed_frames)
    runs.append((f"every frame (first {speed_frames} frames)", short, VerifyConfig(every=1)))
    for label, clip, cfg in runs:
        started = time.perf_counter()
        report = verify_pair(clip, clip, cfg=cfg, tools=tools)  # the clip against itself
        seconds = time.perf_counter() - started
        rows.append({"run": label, "frames": report.frames, "checked": report.frames_checked, "sampling": report.sampling,
                     "seconds": round(seconds, 1), "fps": round(report.frames / seconds, 2),
                     "checked_per_s": round(report.frames_checked / seconds, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="One clip, 6 frames, every 2nd; speed over 3 frames.")
    parser.add_argument("--frames", type=int, default=48, help="Frames of each clip (default 48).")
    parser.add_argument("--every", type=int, default=4, help="verify --every for the findings (default 4).")
    parser.add_argument("--speed-frames", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    clips, frames, every, speed_frames = CLIPS, args.frames, args.every, args.speed_frames
    if args.small:
        clips, frames, every, speed_frames = CLIPS[:1], 6, 2, 3
    cfg = VerifyConfig(every=every)
    tools = load_tools(cfg)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_verify_") as folder:
        work = Path(folder)
        for name in clips:
            clip = work / name
            cut(FIXTURES / name, clip, frames)
            for tool, output in make_outputs(clip, work).items():
                try:
                    rows.append(findings(name, tool, verify_pair(clip, output, cfg=cfg, tools=tools)))
                except StylefaceError as error:  # e.g. a tool that dropped frames: say so in the table
                    rows.append({"clip": name, "tool": tool, "faces": 0, "error": str(error), "verdict": "ERROR"})
                print(json.dumps(rows[-1]), file=sys.stderr)
        tools.close()
        speed_tools = load_tools(VerifyConfig())
        speeds = speed(speed_tools, work, speed_frames)
        speed_tools.close()
    if args.json:
        print(json.dumps({"machine": platform.machine(), "findings": rows, "speed": speeds}, indent=1))
        return
    print(f"findings (first {frames} frames of each clip, verify --every {every}, dlib CNN at det-size {cfg.det_size}):\n")
    print("| clip | tool | faces checked | untouched | recognisable | min distance | re-id rank-1 / chance | metadata | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['clip']} | {r['tool']} | error: {r['error']} | | | | | | ERROR |")
            continue
        reid = f"{r['reid_rate']:.0%} / {r['reid_chance']:.0%}" if r["faces"] else "-"
        print(f"| {r['clip']} | {r['tool']} | {r['faces']} | {r['untouched']} | {r['recognisable']} | "
              f"{r['min_distance'] if r['min_distance'] is not None else '-'} | {reid} | {r['metadata']} | {r['verdict']} |")
    print(f"\nverify's speed on {SPEED_CLIP.name} (1280x720):\n")
    print("| run | frames | checked | seconds | fps (video) | checked frames/s |")
    print("|---|---|---|---|---|---|")
    for s in speeds:
        print(f"| {s['run']}, {s['sampling']} | {s['frames']} | {s['checked']} | {s['seconds']} | {s['fps']} | {s['checked_per_s']} |")


if __name__ == "__main__":
    main()
