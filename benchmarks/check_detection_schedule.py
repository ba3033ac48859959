"""Does the adaptive detection schedule lose any face that the fixed schedule finds? Every fixture clip.

For each clip in ../shared/fixtures/videos, and hamilton_clip scaled to 480x360 (the benchmark's small
clip): every detection of the fixed schedule (``--det-size 640``: every frame at 640 px, small videos
enlarged) is checked against the regions that a default run (adaptive schedule) records for its frame,
and against those of a fixed-schedule run, by the YuNet coverage rule (``tests/schedule_check.py``).
A face is "newly visible" when the fixed run hid it and the default run does not.

Run:  PYTHONPATH=. .venv/bin/python benchmarks/check_detection_schedule.py [--json]
Exits 1 when any face is newly visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_anonymize import SMALL_FIXTURE, VIDEOS, make_scaled  # noqa: E402
from tests.schedule_check import check_clip  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not VIDEOS.is_dir():
        sys.exit(f"fixtures not found: {VIDEOS}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / f"{SMALL_FIXTURE.stem}_480x360.mp4"
        make_scaled(SMALL_FIXTURE, small, 480, 360)
        for clip in [*sorted(VIDEOS.glob("*.mp4")), small]:
            run_dir = work / clip.stem
            run_dir.mkdir()
            result = check_clip(clip, run_dir)
            results.append(result)
            print(f"{result.clip}: {result.detections} detections in {result.frames} frames (smallest {result.smallest:.0f} px); "
                  f"left visible by the fixed run {len(result.lost_by_fixed)}, by the default run {len(result.lost_by_auto)}, "
                  f"newly visible {len(result.newly_lost)}", file=sys.stderr, flush=True)
            for face in result.newly_lost:
                print(f"    newly visible: {face}", file=sys.stderr)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) | {"newly_lost": r.newly_lost} for r in results], indent=1))
    else:
        print("| clip | frames | fixed-schedule detections | smallest | visible after fixed run | after default run | newly visible |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r.clip} | {r.frames} | {r.detections} | {r.smallest:.0f} px | {len(r.lost_by_fixed)} | {len(r.lost_by_auto)} | {len(r.newly_lost)} |")
    sys.exit(1 if any(r.newly_lost for r in results) else 0)


if __name__ == "__main__":
    main()
