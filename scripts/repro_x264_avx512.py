"""PyAV-only reproduction: x264's AVX-512 code encodes identical frames to different bitstreams.

No styleface code, no threads of ours: decode a small clip once into arrays, then encode those same arrays N
times in one process with libx264 (CRF 23, preset medium, one x264 thread) and print how many different
outputs came out, for x264's default CPU flags, for those flags without AVX-512, and for ``asm=0`` (C only).

    python scripts/repro_x264_avx512.py [clip.mp4] [runs]

Without a clip it makes a 96x64 one. On an AVX-512 CPU (AMD EPYC here, PyAV 18.1, x264 build 165) the default
gives about as many outputs as runs; without AVX-512, and with C only, one. See styleface_cli/video/x264_cpu.py.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from styleface_cli.video.x264_cpu import deterministic_x264_asm  # noqa: E402  (only to print the mask)


def make_clip(path: Path, width: int = 96, height: int = 64, frames: int = 60) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.arange(width)[None, :]
        y = np.arange(height)[:, None]
        for i in range(frames):
            channels = np.broadcast_arrays((x + i) * 255 // width, y * 255 // height, np.full_like(x, i * 9 % 256))
            rgb = np.stack(channels, -1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode(None))


def encode(frames: list[tuple[np.ndarray, int]], width: int, height: int, time_base: Fraction,
           x264_params: str | None, output: Path) -> str:
    options = {"crf": "23", "preset": "medium"}
    if x264_params:
        options["x264-params"] = x264_params
    with av.open(str(output), "w") as container:
        stream = container.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = 1
        for planes, pts in frames:
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return hashlib.sha1(output.read_bytes()).hexdigest()[:12]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="x264-repro-"))
    clip = Path(sys.argv[1]) if len(sys.argv) > 1 else folder / "clip.mp4"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if len(sys.argv) <= 1:
        make_clip(clip)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        frames = [(frame.to_ndarray(format="yuv420p"), frame.pts) for frame in container.decode(stream)]
        width, height, time_base = stream.width, stream.height, stream.time_base
    mask = deterministic_x264_asm()
    print(f"{clip} {width}x{height}, {len(frames)} frames; x264 mask without AVX-512: {mask}")
    for label, params in (("default", None), ("no AVX-512", f"asm={mask}" if mask is not None else None),
                          ("C only", "asm=0")):
        if label == "no AVX-512" and params is None:
            print("no AVX-512: (this CPU has none, or x264 cannot be inspected)")
            continue
        hashes = [encode(frames, width, height, time_base, params, folder / f"out{i}.mp4") for i in range(runs)]
        print(f"{label}: {len(set(hashes))} different output(s) in {runs} encodes")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
