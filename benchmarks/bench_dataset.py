"""Dataset throughput: ``styleface anonymize --jobs 1`` and ``--jobs 2`` against ``deface`` run once per file.

A synthetic dataset is made from ``../shared/fixtures``: photos are random crops (50-100% of each side),
mirror images and rescalings of the fixture photos, saved as JPEG (longest side at most 1280 px); clips are
short segments (``--clip-seconds``) cut from the fixture videos at different offsets, re-encoded with
H.264. Each tool then hides every face with a blur:

- ``styleface --jobs N``: one command over the folder (``--method blur --output-dir``), models loaded
  once per worker;
- ``deface``: the ``deface`` CLI called once per file, as a shell loop over a dataset would
  (``for f in photos/*; do deface "$f" -o ...; done``).

With ``--ray`` two more rows per set measure the cost of ``--ray`` on this one machine: ``styleface --ray
ADDRESS`` against a Ray instance already running here (started once by the benchmark with as many CPUs as
the machine has, as a cluster would be; ``--ray-cpus 1``, so one actor per core, like ``--jobs`` per core)
and ``--ray local``, which also pays for starting and stopping Ray inside the command.

Reported per set: files per second, video frames per second (clips), wall seconds and the peak resident
memory of the whole process tree (sampled every 50 ms from /proc, workers included). The target on a
2-core machine: ``--jobs 2`` at least 1.5x ``--jobs 1`` on photos, and ``--jobs 1`` at least 10x deface's
files per second on photos.

Run:  .venv/bin/python benchmarks/bench_dataset.py [--small] [--photos 200] [--clips 20] [--skip-deface] [--ray] [--json]
``--small`` (20 photos, 4 one-second clips) proves the script works in about a minute.
Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
BIN = Path(sys.executable).parent
DEFACE = BIN / "deface"


# -------------------------------------------------------------------------------------------------
# The dataset


def make_photos(count: int, folder: Path, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageOps

    sources = sorted((FIXTURES / "photos").glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no fixture photos in {FIXTURES / 'photos'}")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(count):
        with Image.open(sources[index % len(sources)]) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
        width, height = image.size
        cw, ch = int(width * rng.uniform(0.5, 1.0)), int(height * rng.uniform(0.5, 1.0))
        x, y = rng.randint(0, width - cw), rng.randint(0, height - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        scale = min(1.0, 1280 / max(image.size)) * rng.uniform(0.6, 1.0)
        image = image.resize((max(int(image.width * scale), 32), max(int(image.height * scale), 32)))
        path = folder / f"{index // 50:02d}" / f"photo_{index:04d}.jpg"
        path.parent.mkdir(exist_ok=True)
        image.save(path, quality=90)
        made.append(path)
    return made


def _cut_clip(source: Path, path: Path, offset: float, seconds: float) -> int:
    """Re-encode ``seconds`` of ``source`` from ``offset`` into ``path``; the frames written (0: past its end)."""
    import av

    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "20"})
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        wanted, written = int(seconds * rate), 0
        skip = int(offset * rate)
        for position, frame in enumerate(inp.decode(vin)):
            if position < skip:
                continue
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = written, 1 / rate
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(vout.encode(frame))
            written += 1
            if written >= wanted:
                break
        out.mux(vout.encode())
    return written


def make_clips(count: int, folder: Path, seconds: float) -> tuple[list[Path], int]:
    """``count`` clips of ``seconds`` each, cut from the fixture videos; their total frame count."""
    sources = sorted((FIXTURES / "videos").glob("*.mp4"))
    if not sources:
        raise SystemExit(f"no fixture videos in {FIXTURES / 'videos'}")
    folder.mkdir(parents=True, exist_ok=True)
    made, frames = [], 0
    for index in range(count):
        source = sources[index % len(sources)]
        path = folder / f"clip_{index:03d}.mp4"
        # later clips of one source start further in; one whose start is past the source's end starts at 0
        written = _cut_clip(source, path, (index // len(sources)) * seconds, seconds) \
            or _cut_clip(source, path, 0.0, seconds)
        made.append(path)
        frames += written
    return made, frames


# -------------------------------------------------------------------------------------------------
# Measuring


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, MiB (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/statm") as file:
                rss[int(name)] = int(file.read().split()[1]) * page
            parents[int(name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def measured(command: list[str], env: dict[str, str] | None = None, also: int | None = None) -> tuple[float, float]:
    """Run ``command``; (wall seconds, peak resident MiB of its process tree, plus the tree of process
    ``also``, e.g. a Ray instance the command uses). Fails loudly."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _tree_rss_mb(process.pid) + (_tree_rss_mb(also) if also is not None else 0.0))
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"command failed ({process.returncode}): {' '.join(command)}\n{stderr[-2000:]}")
    return seconds, peak


def styleface(folder: Path, out: Path, jobs: int, *extra: str, also: int | None = None,
              env_extra: dict[str, str] | None = None) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    return measured([sys.executable, "-m", "styleface_cli.cli.app", "anonymize", str(folder), "--output-dir", str(out),
                     "--method", "blur", "--jobs", str(jobs), "--quiet", *extra], env, also)


class RayHead:
    """A Ray instance on this machine for the ``--ray`` rows, kept by a small Python process (stopped at the end)."""

    def __enter__(self) -> "RayHead":
        script = ("import os, ray, sys; ray.init(include_dashboard=False); "
                  "print(ray.get_runtime_context().gcs_address, os.environ.get('RAY_AUTH_MODE', ''), flush=True); "
                  "sys.stdin.read()")
        self.process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.address, _, auth_mode = self.process.stdout.readline().strip().partition(" ")
        if not self.address:
            raise RuntimeError("the Ray instance did not start")
        # a driver joining by address must use the instance's authentication mode (token by default)
        self.env = {"RAY_AUTH_MODE": auth_mode} if auth_mode else {}
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()  # ray.shutdown() runs as the script ends
        self.process.wait(timeout=60)


def deface_loop(files: list[Path], out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    seconds, peak = 0.0, 0.0
    for index, path in enumerate(files):
        took, rss = measured([str(DEFACE), str(path), "-o", str(out / f"{index:05d}{path.suffix}"),
                              "--replacewith", "blur"])
        seconds += took
        peak = max(peak, rss)
    return seconds, peak


# -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20 photos and 4 one-second clips (a quick check)")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--skip-deface", action="store_true")
    parser.add_argument("--ray", action="store_true", help="add --ray rows (a running local Ray, and --ray local)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    if args.small:
        args.photos, args.clips, args.clip_seconds = 20, 4, 1.0
    if not args.skip_deface and not DEFACE.is_file():
        raise SystemExit(f"deface is not installed at {DEFACE} (or pass --skip-deface)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as work, contextlib.ExitStack() as stack:
        work = Path(work)
        head = stack.enter_context(RayHead()) if args.ray else None
        photos = make_photos(args.photos, work / "photos")
        clips, clip_frames = make_clips(args.clips, work / "clips", args.clip_seconds)
        sets = [("photos", work / "photos", photos, len(photos)), ("clips", work / "clips", clips, clip_frames)]
        for name, folder, files, frames in sets:
            for jobs in (1, 2):
                seconds, peak = styleface(folder, work / f"out-{name}-{jobs}", jobs)
                rows.append({"set": name, "tool": f"styleface --jobs {jobs}", "files": len(files), "frames": frames,
                             "seconds": seconds, "peak_mib": peak})
            if head is not None:
                for tool, address, pid, env in (("styleface --ray (running Ray)", head.address, head.process.pid, head.env),
                                                ("styleface --ray local", "local", None, {})):
                    seconds, peak = styleface(folder, work / f"out-{name}-ray-{address.replace(':', '-')}", 1, "--ray",
                                              address, also=pid, env_extra=env)
                    rows.append({"set": name, "tool": tool, "files": len(files), "frames": frames,
                                 "seconds": seconds, "peak_mib": peak})
            if not args.skip_deface:
                seconds, peak = deface_loop(files, work / f"out-{name}-deface")
                rows.append({"set": name, "tool": "deface (once per file)", "files": len(files), "frames": frames,
                             "seconds": seconds, "peak_mib": peak})

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.photos} photos, {args.clips} clips of {args.clip_seconds:g} s; blur\n")
    print("| set | tool | files | files/s | video fps | wall s | peak memory |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = {}
    for row in rows:
        row["files_per_s"] = row["files"] / row["seconds"]
        row["fps"] = row["frames"] / row["seconds"] if row["set"] == "clips" else None
        base.setdefault(row["set"], row["files_per_s"])
        fps = f"{row['fps']:.1f}" if row["fps"] is not None else "-"
        print(f"| {row['set']} | {row['tool']} | {row['files']} | {row['files_per_s']:.2f} | {fps} | "
              f"{row['seconds']:.1f} | {row['peak_mib']:.0f} MiB |")
    for name in ("photos", "clips"):
        by_tool = {row["tool"]: row["files_per_s"] for row in rows if row["set"] == name}
        one, two = by_tool.get("styleface --jobs 1"), by_tool.get("styleface --jobs 2")
        deface = by_tool.get("deface (once per file)")
        line = f"\n{name}: --jobs 2 / --jobs 1 = {two / one:.2f}x"
        for tool in ("styleface --ray (running Ray)", "styleface --ray local"):
            if tool in by_tool:
                line += f"; {tool.removeprefix('styleface ')} / --jobs 2 = {by_tool[tool] / two:.2f}x"
        if deface:
            line += f"; --jobs 1 / deface = {one / deface:.1f}x; --jobs 2 / deface = {two / deface:.1f}x"
        print(line)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
