"""Speed and memory of ``styleface anonymize`` against deface and against the decode+encode floor.

For each clip, in one run: hamilton_clip (640x360) as it is and scaled to 480x360 (small videos, where
the adaptive detection schedule works), the 720p fixture, and a 1080p upscale of it that this script makes:
- ``floor``: a pure PyAV decode + H.264 encode of the clip with styleface's encoder settings (frames go
  straight from decoder to encoder, which chooses its own frame types as FFmpeg's command line does), and
  the same with a round trip through RGB arrays, which a pipeline that edits RGB pixels would add;
- ``styleface``: ``styleface anonymize`` with its defaults;
- ``deface``: the ``deface`` CLI with its defaults (CenterFace at full resolution, imageio-ffmpeg);
each as a separate process, timed on the wall clock and with its peak resident memory (the largest of its
runs). Every command runs ``--repeats`` times (default 3; deface ``--deface-repeats``), interleaved, and
the median counts: this machine's speed drifts by 10-20% between minutes, which a single run would put
into the ratios. styleface's detector cache (the rewritten CenterFace and onnxruntime's optimised copy,
made once per machine by the first run) is made before any timing, so every timed run is a later run.

Run:  .venv/bin/python benchmarks/bench_anonymize.py [--clip PATH] [--no-small] [--no-1080p] [--skip-deface] [--json]
Prints a Markdown table (fps, ratios, peak memory) for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "fixtures" / "videos"
FIXTURE = VIDEOS / "talking_720p.mp4"
SMALL_FIXTURE = VIDEOS / "hamilton_clip.mp4"  # 640x360; also scaled to 480x360 here
BIN = Path(sys.executable).parent
FLOOR = "floor: PyAV decode + encode"

FLOOR_SCRIPT = r"""
import sys, av
from av.video.reformatter import VideoReformatter
src, dst, preset, crf, rgb = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "rgb"
with av.open(src) as inp, av.open(dst, "w") as out:
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    vout = out.add_stream("libx264", rate=vin.average_rate, options={"preset": preset, "crf": crf})
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.codec_context.thread_type = "AUTO"
    to_rgb, to_yuv = VideoReformatter(), VideoReformatter()  # reused: a new converter per frame costs more
    n = 0
    for frame in inp.decode(vin):
        if rgb:  # the round trip through RGB arrays that any pixel-editing pipeline makes
            image = to_rgb.reformat(frame, format="rgb24").to_ndarray()
            frame = to_yuv.reformat(av.VideoFrame.from_ndarray(image, format="rgb24"), format="yuv420p")
        frame.pts, frame.time_base = n, 1 / vin.average_rate
        # The encoder picks its own frame types, as in `ffmpeg -i in -c:v libx264 out` and styleface: left
        # as decoded, x264 would copy the input's I/P/B decisions and skip its own (12% less CPU here).
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in vout.encode(frame):
            out.mux(packet)
        n += 1
    for packet in vout.encode():
        out.mux(packet)
print(n)
"""


def peak_rss_run(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak RSS of it and its children in MB)."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode\n"
        "dt = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(dt, peak, code)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    seconds, peak, code = out.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"command failed ({code}): {' '.join(command)}")
    return float(seconds), float(peak)


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.demux(video=0) if _.size)


def make_scaled(src: Path, dst: Path, width: int, height: int) -> None:
    """``src`` resized to ``width x height`` (Lanczos), near-lossless H.264, audio copied."""
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf", f"scale={width}:{height}:flags=lanczos",
                    "-c:v", "libx264", "-crf", "16", "-preset", "fast", "-c:a", "copy", str(dst)], check=True)


def bench_clip(clip: Path, work: Path, skip_deface: bool, repeats: int, deface_repeats: int) -> dict:
    """Time every run on ``clip``. Every command runs ``repeats`` times (deface ``deface_repeats``),
    interleaved, and the median counts (this machine's speed drifts by 10-20% from minute to minute;
    deface's own runs on one clip were seen to differ by 25%)."""
    from styleface_cli.config import EncodeConfig

    frames = frame_count(clip)
    floor = work / f"{clip.stem}_floor.mp4"
    runs: dict[str, list] = {}
    commands = {
        FLOOR: [sys.executable, "-c", FLOOR_SCRIPT, str(clip), str(floor), EncodeConfig.preset, str(EncodeConfig.crf), "pure"],
        "floor + RGB round trip": [sys.executable, "-c", FLOOR_SCRIPT, str(clip), str(floor), EncodeConfig.preset,
                                   str(EncodeConfig.crf), "rgb"],
        "styleface anonymize": [str(BIN / "styleface"), "anonymize", str(clip), "-o", str(work / f"{clip.stem}_styleface.mp4"),
                                "--overwrite", "--quiet"],
    }
    if not skip_deface:
        commands["deface"] = [str(BIN / "deface"), str(clip), "-o", str(work / f"{clip.stem}_deface.mp4")]
    for run in range(repeats):
        for name, command in commands.items():
            if name == "deface" and run >= deface_repeats:
                continue
            runs.setdefault(name, []).append(peak_rss_run(command))
    rows = {}
    for name, timings in runs.items():
        seconds = statistics.median(t for t, _ in timings)
        rows[name] = {"seconds": round(seconds, 2), "fps": round(frames / seconds, 2), "peak_mb": round(max(p for _, p in timings)),
                      "fps_range": [round(frames / max(t for t, _ in timings), 2), round(frames / min(t for t, _ in timings), 2)]}
    result = {"clip": clip.name, "frames": frames, "repeats": repeats, "rows": rows}
    fps = {name: row["fps"] for name, row in rows.items()}
    if "deface" in fps:
        result["speedup_vs_deface"] = round(fps["styleface anonymize"] / fps["deface"], 2)
        result["peak_mb_over_deface"] = rows["styleface anonymize"]["peak_mb"] - rows["deface"]["peak_mb"]
    result["fraction_of_floor"] = round(fps["styleface anonymize"] / fps[FLOOR], 2)
    result["fraction_of_rgb_floor"] = round(fps["styleface anonymize"] / fps["floor + RGB round trip"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=FIXTURE)
    parser.add_argument("--skip-deface", action="store_true")
    parser.add_argument("--no-1080p", action="store_true")
    parser.add_argument("--no-small", action="store_true", help="skip the 480x360 and 640x360 rows (hamilton_clip)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every command (median counts)")
    parser.add_argument("--deface-repeats", type=int, default=None,
                        help="runs of deface (default: --repeats; 1 saves minutes at 1080p, where deface takes ~2 min a run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.clip.is_file():
        sys.exit(f"clip not found: {args.clip} (the fixtures live in ../shared/fixtures)")
    from styleface_cli.config import DetectConfig
    from styleface_cli.face.detect import create_detector

    create_detector(DetectConfig())  # makes the detector cache that a user's first run makes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = []
        if not args.no_small:
            if not SMALL_FIXTURE.is_file():
                sys.exit(f"clip not found: {SMALL_FIXTURE} (or pass --no-small)")
            small = work / f"{SMALL_FIXTURE.stem}_480x360.mp4"
            make_scaled(SMALL_FIXTURE, small, 480, 360)
            clips += [small, SMALL_FIXTURE]
        clips.append(args.clip)
        if not args.no_1080p:
            big = work / f"{args.clip.stem}_1080p.mp4"
            make_scaled(args.clip, big, 1920, 1080)
            clips.append(big)
        repeats = max(args.repeats, 1)
        deface_repeats = repeats if args.deface_repeats is None else max(1, min(args.deface_repeats, repeats))
        results = [bench_clip(clip, work, args.skip_deface, repeats, deface_repeats) for clip in clips]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=1))
        return
    print(f"machine: {machine}")
    print("| clip | frames | run | fps (median) | fps range | peak MB |")
    print("|---|---|---|---|---|---|")
    for result in results:
        for name, row in result["rows"].items():
            spread = "-".join(str(v) for v in row["fps_range"])
            print(f"| {result['clip']} | {result['frames']} | {name} | {row['fps']} | {spread} | {row['peak_mb']} |")
        versus_deface = (f"styleface/deface = {result['speedup_vs_deface']}x, peak {result['peak_mb_over_deface']:+} MB vs deface, "
                         if "speedup_vs_deface" in result else "")
        extra = (f"{versus_deface}styleface/floor = {result['fraction_of_floor']}, "
                 f"styleface/(floor + RGB) = {result['fraction_of_rgb_floor']}")
        print(f"| {result['clip']} | | ratios | {extra} | | |")


if __name__ == "__main__":
    main()
