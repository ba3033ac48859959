"""The GPU check: one short run that proves the CUDA path and measures it (``bash scripts/gpu/check.sh``).

Steps, most important first, each in its own process with its own time box (a share of what is left of
``--budget-s``), so a run that is cut off still reports what it measured and names what did not run:

1. ``doctor``     what ``styleface doctor`` says about this machine (printed first).
2. ``kernels``    build bias_act and upfirdn2d for this GPU's architecture, then ``pytest -m cuda``: the compiled
                  kernels against their reference twins (values and gradients, fp16/fp32/fp64).
3. ``generator``  StyleFace forward (random paper-size networks, 256/512/1024 px) under fp16 autocast,
                  compiled kernels vs reference ops, batch 1/8/32: face crops per second and peak GPU memory.
4. ``anonymize``  ``styleface anonymize --method styleface`` end to end on a clip made from a photo of real faces
                  (``.whl/photos/`` when carried, else insightface's sample photo): frames per second, the busy
                  seconds of each stage (decode, detect, align, generate, paste back, encode), output checks.
5. ``train``      a few 256 px bf16 training steps through ``torchrun --nproc_per_node 1`` (NCCL on a GPU), then a
                  resumed run that must continue from the saved state: steps per second, peak memory.

Every number goes to ``$OUT/gpu_check.json`` (rewritten after each step and each measurement), each step's
output to ``$OUT/gpu_check.log``; a short table is printed last. ``--dry-run`` runs the same steps on the CPU
with tiny sizes and no CUDA build, so CI proves the script works.

    python scripts/gpu/check.py --out /tmp/out            # on a CUDA machine
    python scripts/gpu/check.py --out /tmp/out --dry-run  # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
STEPS = ("doctor", "kernels", "generator", "anonymize", "train")
# Relative time boxes: each step gets this share of the time still left for it and the steps after it.
WEIGHTS = {"doctor": 0.5, "kernels": 4.0, "generator": 2.0, "anonymize": 1.5, "train": 1.7}
MIN_STEP_S = 10.0  # a step that would get less than this is reported as not run
RESULT_NAME = "gpu_check.json"
LOG_NAME = "gpu_check.log"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each step runs: the real check's sizes, or the dry run's tiny ones."""

    device: str  # "cuda" or "cpu"
    kernels: tuple[str, ...]  # generator policies, most important first
    run_kernels: str  # the --kernels policy of the anonymize and train runs ('ref' builds nothing)
    resolutions: tuple[int, ...]  # generator benchmark
    preset: str  # "paper" or "tiny"
    batch_sizes: tuple[int, ...]
    min_iters: int  # timed forwards per measurement, at least
    min_seconds: float  # and at least this long
    clip_size: tuple[int, int]  # anonymize: width, height
    clip_frames: int
    anonymize_resolution: int
    train_resolution: int
    train_batch: int
    train_steps: int  # first run; the resumed run adds half as many again
    amp: str

    @classmethod
    def for_run(cls, dry_run: bool) -> "Sizes":
        if dry_run:
            return cls(device="cpu", kernels=("ref",), run_kernels="ref", resolutions=(32,), preset="tiny", batch_sizes=(1, 2),
                       min_iters=1, min_seconds=0.0, clip_size=(320, 180), clip_frames=4, anonymize_resolution=32,
                       train_resolution=32, train_batch=2, train_steps=1, amp="off")
        return cls(device="cuda", kernels=("compiled", "ref"), run_kernels="auto", resolutions=(256, 512, 1024), preset="paper",
                   batch_sizes=(1, 8, 32), min_iters=3, min_seconds=0.5, clip_size=(1280, 720), clip_frames=96,
                   anonymize_resolution=256, train_resolution=256, train_batch=4, train_steps=4, amp="bf16")


# --------------------------------------------------------------------------------------------------
# Results: one JSON file per step process, merged by the orchestrator


class StepResult:
    """A step's numbers, written to its file after every change, so a killed step still leaves them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.flush()

    def append(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def styleface(*args: str) -> list[str]:
    """The command line of ``styleface ARGS`` from this source tree (no console script needed)."""
    return [sys.executable, "-c", "import sys; from styleface_cli.cli.app import main; sys.argv[0] = 'styleface'; main()",
            *args]


def run_cli_in_process(args: list[str]) -> tuple[int, str]:
    """``styleface ARGS`` in this process (so probes can time its stages): exit code and stdout."""
    from styleface_cli.cli.app import main

    saved, sys.argv = sys.argv, ["styleface", *args]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --------------------------------------------------------------------------------------------------
# 1. doctor


def step_doctor(sizes: Sizes, work: Path, result: StepResult, deadline: float) -> None:
    from styleface_cli.cli import doctor

    report = doctor.collect()
    for line in doctor.format_report(report):
        print(line)
    result.update(ok=report["ok"], missing=report["missing"], report=report)
    if sizes.device == "cuda" and not report["torch"].get("cuda_available"):
        raise RuntimeError("torch sees no CUDA device")


# --------------------------------------------------------------------------------------------------
# 2. kernels


def step_kernels(sizes: Sizes, work: Path, result: StepResult, deadline: float) -> None:
    from styleface_cli.errors import KernelBuildError
    from styleface_cli.ops.build import KERNEL_NAMES, build_kernel, device_kind

    builds_ok = True
    if sizes.device == "cuda":
        result.update(device_kind=device_kind("cuda"))
        for name in KERNEL_NAMES:
            try:
                built, _ = build_kernel(name, "cuda")
                result.append("builds", built.as_dict())
            except KernelBuildError as error:
                builds_ok = False
                result.append("builds", {"name": name, "error": str(error), "log_tail": _failed_log_tail(str(error))})
    else:
        result.update(builds="skipped: the dry run builds no CUDA kernels")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "pytest.mark.cuda" in p.read_text())
    junit = work / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *files]
    if sizes.device == "cuda" and importlib.util.find_spec("xdist") is not None:
        command[4:4] = ["-n", "4"]  # the gradgradchecks are many small launches: four processes share the GPU
    result.update(pytest_command=" ".join(command[1:]))
    # Stop pytest a little before this step's time box, so its partial output and the builds are still reported.
    limit = max(deadline - time.time() - 10, 10)
    try:
        done = subprocess.run(command, cwd=REPO, timeout=limit)
    except subprocess.TimeoutExpired:
        result.update(pytest_exit=None, tests=f"cut off after {limit:.0f} s (see the log for the tests that ran)")
        raise RuntimeError("pytest -m cuda did not finish within the step's time box")
    counts = _junit_counts(junit)
    result.update(pytest_exit=done.returncode, tests=counts)
    if not builds_ok or done.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"kernel builds ok: {builds_ok}; pytest -m cuda exit {done.returncode}")
    if sizes.device == "cuda" and counts.get("passed", 0) == 0:
        raise RuntimeError("no CUDA test ran on a CUDA machine")


def _failed_log_tail(message: str, lines: int = 30) -> str:
    path = message.rsplit("see the build log ", 1)[-1].strip()
    try:
        return "\n".join(Path(path).read_text().splitlines()[-lines:])
    except OSError:
        return ""


def _junit_counts(path: Path) -> dict[str, Any]:
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    cases = list(root.iter("testcase"))
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    return {"total": len(cases), "passed": len(cases) - len(failed) - skipped, "failed": len(failed),
            "skipped": skipped, "failures": failed[:20]}


# --------------------------------------------------------------------------------------------------
# 3. generator throughput


def step_generator(sizes: Sizes, work: Path, result: StepResult, deadline: float) -> None:
    import torch

    from styleface_cli.errors import KernelBuildError
    from styleface_cli.model import StyleFace, StyleFaceConfig, set_kernel_policy

    device = torch.device(sizes.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    result.update(dtype="float16 (autocast)" if cuda else "float32", device=_device_name(device))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if cuda else contextlib.nullcontext
    for resolution in sizes.resolutions:
        torch.manual_seed(0)
        config = StyleFaceConfig.preset(resolution) if sizes.preset == "paper" else StyleFaceConfig.tiny(resolution)
        model = StyleFace(config).eval().to(device)
        g = torch.Generator().manual_seed(0)
        probe_target = (torch.rand(1, 3, resolution, resolution, generator=g) * 2 - 1).to(device)
        probe_w = model.sample_identity(1, generator=g).w_plus
        reference_output = None
        for kernels in sizes.kernels:
            set_kernel_policy(model, kernels)
            try:
                with torch.inference_mode(), autocast():
                    output = model(probe_target, probe_w, noise_mode="const").float()  # also the warm-up
            except KernelBuildError as error:
                result.append("rows", {"resolution": resolution, "kernels": kernels, "error": str(error)})
                continue
            if reference_output is None:
                reference_output = output
                difference = None
            else:  # the same input through the other ops: they must agree to fp16 precision
                difference = float((output - reference_output).abs().max())
            for batch in sizes.batch_sizes:
                row: dict[str, Any] = {"resolution": resolution, "kernels": kernels, "batch": batch}
                if deadline - time.time() < 5:  # leave the last seconds to the report, not to a half measurement
                    result.append("rows", dict(row, error="skipped: the step's time box ran out"))
                    continue
                if difference is not None and batch == sizes.batch_sizes[0]:
                    row[f"max_abs_diff_vs_{sizes.kernels[0]}"] = difference
                try:
                    row.update(_time_forward(model, batch, sizes, device, autocast))
                except torch.cuda.OutOfMemoryError as error:
                    row["error"] = f"out of memory: {str(error).splitlines()[0]}"
                    torch.cuda.empty_cache()
                result.append("rows", row)
                print(json.dumps(row), flush=True)
        del model, reference_output
        if cuda:
            torch.cuda.empty_cache()


def _time_forward(model, batch: int, sizes: Sizes, device, autocast) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(batch)
    target = (torch.rand(batch, 3, model.resolution, model.resolution, generator=g) * 2 - 1).to(device)
    w_plus = model.sample_identity(batch, generator=g).w_plus
    cuda = device.type == "cuda"
    with torch.inference_mode(), autocast():
        model(target, w_plus, noise_mode="const")  # warm-up: cuDNN's algorithm search for this shape
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        iters, start = 0, time.perf_counter()
        while iters < sizes.min_iters or time.perf_counter() - start < sizes.min_seconds:
            model(target, w_plus, noise_mode="const")
            iters += 1
            if cuda:
                torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - start) / iters
    row = {"iters": iters, "ms_per_batch": round(seconds * 1000, 2), "crops_per_s": round(batch / seconds, 2)}
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return row


def _device_name(device) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})"


# --------------------------------------------------------------------------------------------------
# 4. anonymize end to end


PHOTO_NAMES = ("t1.jpg",)


def find_photo() -> Path | None:
    """A photo of real faces: one carried in ``.whl/photos/`` (scripts/gpu/wheels.sh puts insightface's group
    photo there), else the one inside the installed insightface package."""
    carried = sorted((REPO / ".whl" / "photos").glob("*.jpg"))
    if carried:
        return carried[0]
    spec = importlib.util.find_spec("insightface")
    if spec is not None and spec.origin is not None:
        for name in PHOTO_NAMES:
            path = Path(spec.origin).parent / "data" / "images" / name
            if path.is_file():
                return path
    return None


def make_clip(photo: Path, path: Path, *, width: int, height: int, frames: int, fps: int = 25) -> None:
    """A clip of ``frames`` frames panning and zooming slowly across ``photo``, with a sine-tone AAC track."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO))
    from tests.media import make_video

    image = Image.open(photo).convert("RGB")
    w, h = image.size
    aspect = width / height

    def draw(i: int) -> np.ndarray:
        t = i / max(frames - 1, 1)
        zoom = 1.0 - 0.15 * t  # a slow push-in
        cw = min(w, h * aspect) * zoom
        ch = cw / aspect
        x0 = (w - cw) * (0.3 + 0.4 * t)  # and a pan
        y0 = (h - ch) * 0.5
        crop = image.resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        return np.asarray(crop)

    make_video(path, width=width, height=height, frames=frames, fps=fps, audio_streams=1, draw=draw)


class StageClock:
    """Busy seconds per pipeline stage, summed over calls and threads (stages overlap in time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.calls[stage] = self.calls.get(stage, 0) + 1

    @contextlib.contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def wrap(self, stage: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.time(stage):
                return function(*args, **kwargs)
        return timed


@contextlib.contextmanager
def timed_pipeline(clock: StageClock) -> Iterator[None]:
    """Patch the pipeline's stage functions so each call adds to ``clock`` (decode's lazy YUV->RGB conversion
    falls to the stage that first asks for RGB)."""
    from styleface_cli import pipeline
    from styleface_cli.face import generate

    class TimedDetector:
        def __init__(self, detector) -> None:
            self._detector = detector

        def __getattr__(self, name: str):
            return getattr(self._detector, name)

        def detect_batch(self, *args, **kwargs):
            with clock.time("detect"):
                return self._detector.detect_batch(*args, **kwargs)

    class TimedWriter:
        def __init__(self, writer) -> None:
            self._writer = writer

        def write(self, frame) -> None:
            with clock.time("encode"):
                self._writer.write(frame)

    def timed_frames(reader):
        frames = iter(reader)
        while True:
            with clock.time("decode"):
                frame = next(frames, None)
            if frame is None:
                return
            yield frame

    saved = (pipeline.decode, pipeline.detect, pipeline.encode, generate.FaceGenerator.generate,
             generate.FaceGenerator.align, generate.paste_back)
    decode, detect, encode = saved[:3]
    pipeline.decode = lambda reader, *a, **k: decode(timed_frames(reader), *a, **k)
    pipeline.detect = lambda frames, detector, *a, **k: detect(frames, TimedDetector(detector), *a, **k)
    pipeline.encode = lambda stream, writer, *a, **k: encode(stream, TimedWriter(writer), *a, **k)
    generate.FaceGenerator.generate = clock.wrap("generate", saved[3])
    generate.FaceGenerator.align = clock.wrap("align", saved[4])
    generate.paste_back = clock.wrap("paste_back", saved[5])
    try:
        yield
    finally:
        (pipeline.decode, pipeline.detect, pipeline.encode, generate.FaceGenerator.generate,
         generate.FaceGenerator.align, generate.paste_back) = saved


def step_anonymize(sizes: Sizes, work: Path, result: StepResult, deadline: float) -> None:
    photo = find_photo()
    if photo is None:
        raise RuntimeError("no photo of faces: run scripts/gpu/wheels.sh (it carries one in .whl/photos/)")
    width, height = sizes.clip_size
    clip, output, checkpoint = work / "clip.mp4", work / "clip-anonymized.mp4", work / "styleface.safetensors"
    with _stopwatch() as made:
        make_clip(photo, clip, width=width, height=height, frames=sizes.clip_frames)
    result.update(photo=str(photo), clip={"width": width, "height": height, "frames": sizes.clip_frames,
                                          "bytes": clip.stat().st_size, "seconds_to_make": made()})
    with _stopwatch() as init:
        code, _ = run_cli_in_process(["model", "init", str(checkpoint), "--preset", sizes.preset,
                                      "--resolution", str(sizes.anonymize_resolution), "--overwrite"])
    if code != 0:
        raise RuntimeError(f"styleface model init exited with {code}")
    result.update(checkpoint={"preset": sizes.preset, "resolution": sizes.anonymize_resolution,
                              "bytes": checkpoint.stat().st_size, "seconds_to_init": init()})
    args = ["anonymize", str(clip), "-o", str(output), "--overwrite", "--method", "styleface", "--checkpoint",
            str(checkpoint), "--device", sizes.device, "--kernels", sizes.run_kernels,
            # With random weights every random identity looks 'too close' to the original, so each new track
            # would pay up to max_tries extra generator and recognizer passes: accept the first draw instead.
            "--min-identity-distance", "0", "--json", "--quiet"]
    result.update(command="styleface " + " ".join(args))
    clock = StageClock()
    with timed_pipeline(clock), _stopwatch() as wall:
        code, stdout = run_cli_in_process(args)
    seconds = wall()
    records = json_lines(stdout)
    result.update(exit_code=code, record=records[-1] if records else None, wall_seconds=round(seconds, 3),
                  fps=round(sizes.clip_frames / seconds, 2),
                  stage_busy_seconds={k: round(v, 3) for k, v in sorted(clock.seconds.items())},
                  stage_calls=clock.calls)
    if code != 0:
        raise RuntimeError(f"styleface anonymize exited with {code}")
    checks = check_output(clip, output)
    result.update(output=checks)
    if not checks["ok"]:
        raise RuntimeError(f"output checks failed: {checks}")


def check_output(source: Path, output: Path) -> dict[str, Any]:
    """Size, frame count, dimensions and audio of ``output`` against ``source``."""
    import av

    def describe(path: Path) -> dict[str, Any]:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = [s for s in container.streams if s.type == "audio"]
            frames = sum(1 for _ in container.decode(video=0))
            duration = float(container.duration / av.time_base) if container.duration else None
            return {"bytes": path.stat().st_size, "frames": frames, "width": video.width, "height": video.height,
                    "codec": video.codec_context.name, "audio_streams": len(audio),
                    "audio_codec": audio[0].codec_context.name if audio else None, "duration_s": duration}

    src, out = describe(source), describe(output)
    ok = (out["bytes"] > 0 and out["frames"] == src["frames"] and (out["width"], out["height"]) == (src["width"], src["height"])
          and out["audio_streams"] == src["audio_streams"] >= 1)
    return {"ok": ok, "source": src, "output": out}


@contextlib.contextmanager
def _stopwatch() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    end: list[float] = []
    try:
        yield lambda: round((end[0] if end else time.perf_counter()) - start, 3)
    finally:
        end.append(time.perf_counter())


# --------------------------------------------------------------------------------------------------
# 5. training through torchrun


def step_train(sizes: Sizes, work: Path, result: StepResult, deadline: float) -> None:
    sys.path.insert(0, str(REPO))
    from tests.test_train_step import make_synthetic_dataset

    data = make_synthetic_dataset(work / "train-data", identities=4, per_identity=(2, 2, 2, 2),
                                  resolution=sizes.train_resolution)
    run_dir = work / "train-run"
    common = [str(data), "--out", str(run_dir), "--preset", sizes.preset, "--resolution", str(sizes.train_resolution),
              "--batch-size", str(sizes.train_batch), "--amp", sizes.amp, "--device", sizes.device, "--workers", "0",
              "--kernels", sizes.run_kernels, "--log-every", "1", "--sample-every", "0", "--checkpoint-every",
              str(sizes.train_steps), "--json", "--quiet"]
    first, resumed = sizes.train_steps, sizes.train_steps + max(1, sizes.train_steps // 2)
    runs = []
    for label, extra in (("first", ["--steps", str(first)]), ("resumed", ["--steps", str(resumed), "--resume"])):
        probe = work / f"train-{label}.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                   str(Path(__file__).resolve()), "probe-train", "--probe-out", str(probe), "--", *common, *extra]
        with _stopwatch() as wall:
            done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(done.stdout)
        summary = json_lines(done.stdout)
        info = json.loads(probe.read_text()) if probe.is_file() else {}
        row = {"run": label, "exit_code": done.returncode, "wall_seconds": wall(),
               "summary": summary[-1] if summary else None, **info}
        runs.append(row)
        result.append("runs", row)
        if done.returncode != 0:
            raise RuntimeError(f"the {label} training run exited with {done.returncode}")
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in logged]
    first_log = [line for line in logged if line["step"] <= first]
    rate = _steps_per_second(first_log)
    resumed_ok = (runs[1]["summary"] or {}).get("start_step") == first and (runs[1]["summary"] or {}).get("steps") == resumed \
        and steps == list(range(1, resumed + 1))
    result.update(logged_steps=steps, steps_per_s=rate, resume_continues=resumed_ok,
                  backend=runs[0].get("backend"), process_group_smoke=runs[0].get("process_group_smoke"),
                  peak_gib=runs[0].get("peak_gib"),
                  images_per_s=round(rate * sizes.train_batch, 2) if rate else None)
    if not resumed_ok:
        raise RuntimeError(f"the resumed run did not continue from step {first}: logged steps {steps}")
    if runs[0].get("backend") not in ("nccl", "gloo"):
        raise RuntimeError(f"training under torchrun ran without a process group: {runs[0].get('backend')}")
    if not (runs[0].get("process_group_smoke") or {}).get("ok"):
        raise RuntimeError(f"the process-group all-reduce failed: {runs[0].get('process_group_smoke')}")


def _steps_per_second(logged: list[dict]) -> float | None:
    """Steps per second after the first step (which pays for cuDNN's search and the kernel load)."""
    if len(logged) < 2:
        return None
    seconds = logged[-1]["seconds"] - logged[0]["seconds"]
    return round((len(logged) - 1) / seconds, 3) if seconds > 0 else None


def probe_train(probe_out: Path, args: list[str]) -> int:
    """Under torchrun: ``styleface train ARGS``, then the backend and peak GPU memory into ``probe_out``."""
    import torch
    import torch.distributed

    seen: dict[str, Any] = {}
    init = torch.distributed.init_process_group

    def recording_init(*a, **k):
        seen["backend"] = k.get("backend", a[0] if a else None)
        return init(*a, **k)

    seen["process_group_smoke"] = _process_group_smoke()
    torch.distributed.init_process_group = recording_init  # after the smoke test: only the loop's own call counts
    code, stdout = run_cli_in_process(["train", *args])
    sys.stdout.write(stdout)
    if torch.cuda.is_available():
        seen["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    seen["exit_code"] = code
    seen.setdefault("backend", "none: the training loop made no process group under torchrun")
    probe_out.write_text(json.dumps(seen))
    return code


def _process_group_smoke() -> dict[str, Any]:
    """One all-reduce through torchrun's rendezvous on the backend the loop would pick (NCCL on a GPU, gloo on
    a CPU), before training: it names the backend's own failure apart from the loop's. The group is taken
    down again before training starts, and the loop then makes its own (DDP over one process)."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if backend == "nccl" else torch.device("cpu")
    smoke: dict[str, Any] = {"backend": backend}
    try:
        if backend == "nccl":
            torch.cuda.set_device(device)
            version = torch.cuda.nccl.version()
            smoke["nccl_version"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        dist.init_process_group(backend=backend, init_method="env://")
        tensor = torch.full((4,), float(dist.get_rank() + 1), device=device)
        dist.all_reduce(tensor)
        expected = dist.get_world_size() * (dist.get_world_size() + 1) / 2
        smoke["ok"] = bool(torch.all(tensor == expected))
    except Exception as error:  # the report says what failed; training still runs after it
        smoke.update(ok=False, error=f"{type(error).__name__}: {error}".splitlines()[0])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return smoke


# --------------------------------------------------------------------------------------------------
# The orchestrator


STEP_FUNCTIONS = {"doctor": step_doctor, "kernels": step_kernels, "generator": step_generator,
                  "anonymize": step_anonymize, "train": step_train}


def run_step(name: str, dry_run: bool, work: Path, result_path: Path, deadline: float) -> int:
    """One step in this process (the orchestrator starts it and kills it at ``deadline``, a ``time.time()``):
    0 when it passed."""
    result = StepResult(result_path)
    result.flush()
    try:
        STEP_FUNCTIONS[name](Sizes.for_run(dry_run), work, result, deadline)
    except Exception as error:
        import traceback

        traceback.print_exc()
        result.update(error=f"{type(error).__name__}: {error}")
        return 1
    return 0


def time_box(name: str, remaining: float, steps_left: list[str]) -> float:
    """This step's share of the time left, by the weights of it and the steps after it."""
    return remaining * WEIGHTS[name] / sum(WEIGHTS[s] for s in steps_left)


def orchestrate(*, out: Path, work: Path, dry_run: bool, budget_s: float, steps: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + budget_s
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dry_run": dry_run, "budget_s": budget_s, "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "steps": {},
    }
    result_file, log_path = out / RESULT_NAME, out / LOG_NAME
    env = dict(os.environ, PYTHONUNBUFFERED="1", STYLEFACE_CACHE=str(work / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with log_path.open("a") as log:
        for index, name in enumerate(steps):
            remaining = deadline - time.monotonic()
            limit = time_box(name, remaining, steps[index:])
            if limit < MIN_STEP_S:
                report["steps"][name] = {"status": "not run", "reason": f"out of time ({remaining:.0f} s left of {budget_s:.0f})"}
                _write(result_file, report)
                print(f"[check] {name}: not run (out of time)", flush=True)
                continue
            print(f"[check] {name}: running (time box {limit:.0f} s)", flush=True)
            log.write(f"\n===== {name} (time box {limit:.0f} s) =====\n")
            log.flush()
            step_result = work / f"step-{name}.json"
            command = [sys.executable, str(Path(__file__).resolve()), "step", name, "--work", str(work),
                       "--result", str(step_result), "--deadline", f"{time.time() + limit:.1f}"]
            command += ["--dry-run"] if dry_run else []
            # The doctor's report is printed to the console as well: the check shows it first.
            tee = name == "doctor"
            begin = time.monotonic()
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE if tee else log,
                                       stderr=subprocess.STDOUT, start_new_session=True, text=tee or None)
            status = _wait(process, limit, log if tee else None)
            seconds = round(time.monotonic() - begin, 1)
            data = json.loads(step_result.read_text()) if step_result.is_file() else {}
            report["steps"][name] = {"status": status, "seconds": seconds, "time_box_s": round(limit, 1), **data}
            _write(result_file, report)
            print(f"[check] {name}: {status} in {seconds:.0f} s", flush=True)
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["not_run"] = [s for s in steps if report["steps"][s]["status"] in ("not run", "timed out")]
    report["ok"] = all(report["steps"][s]["status"] == "ok" for s in steps)
    _write(result_file, report)
    return report


def _wait(process: subprocess.Popen, limit: float, tee_log) -> str:
    """Wait for a step, killing its whole process group at ``limit``: 'ok', 'failed' or 'timed out'."""
    reader = None
    if tee_log is not None:
        def copy() -> None:
            for line in process.stdout:
                sys.stdout.write(line)
                tee_log.write(line)
            tee_log.flush()
        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        code = None
    # The whole process group, also after a normal exit: no straggler (a pytest-xdist worker, a torchrun
    # child) may hold the GPU while the next step measures.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if reader is not None:
        reader.join(timeout=5)
    return "timed out" if code is None else ("ok" if code == 0 else "failed")


def _write(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short table printed last: one line per step, then one per generator measurement."""
    rows = [("step", "status", "seconds", "result")]
    for name, step in report["steps"].items():
        rows.append((name, step["status"], f"{step.get('seconds', 0):.0f}", _headline(name, step)))
    lines = _table(rows)
    generator = report["steps"].get("generator", {}).get("rows", [])
    if generator:
        lines.append("")
        rows = [("res", "kernels", "batch", "crops/s", "ms/batch", "peak GiB")]
        for r in generator:
            rows.append((str(r["resolution"]), r["kernels"], str(r.get("batch", "-")), str(r.get("crops_per_s", r.get("error", "-"))),
                         str(r.get("ms_per_batch", "-")), str(r.get("peak_gib", "-"))))
        lines += _table(rows)
    lines.append("")
    lines.append(("all steps passed" if report["ok"] else "NOT ALL STEPS PASSED")
                 + (f"; not run or cut off: {', '.join(report['not_run'])}" if report["not_run"] else ""))
    return lines


def _headline(name: str, step: dict[str, Any]) -> str:
    if step["status"] == "not run":
        return step.get("reason", "")
    parts = []
    if name == "doctor" and "report" in step:
        t = step["report"].get("torch", {})
        gpus = t.get("gpus") or []
        parts.append(gpus[0]["name"] if gpus else t.get("device", "?"))
        parts.append(f"torch {t.get('version')}, CUDA {t.get('cuda')}, cuDNN {t.get('cudnn')}")
        parts.append(f"detector on {step['report'].get('onnxruntime', {}).get('detector', ['?'])[0]}")
    elif name == "kernels":
        builds = step.get("builds")
        if isinstance(builds, list):
            parts.append("built " + ", ".join(f"{b['name']} {b.get('device_kind', '')} {b.get('seconds', 'FAILED')} s" for b in builds))
        tests = step.get("tests") or {}
        parts.append(f"pytest -m cuda: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, {tests.get('skipped', 0)} skipped")
    elif name == "generator" and "rows" in step:
        failed = [r for r in step["rows"] if "error" in r]
        parts.append(f"{len(step['rows']) - len(failed)} measurements in {step.get('dtype')} on {step.get('device')} "
                     f"(table below)" + (f", {len(failed)} failed or skipped" if failed else ""))
    elif name == "anonymize" and "fps" in step:
        busy = ", ".join(f"{k} {v:.1f}" for k, v in step.get("stage_busy_seconds", {}).items())
        out = step.get("output", {}).get("output", {})
        parts.append(f"{step['fps']} fps; busy s: {busy}; output {out.get('frames')} frames, {out.get('audio_streams')} audio")
    elif name == "train" and "runs" in step:
        smoke = step.get("process_group_smoke") or {}
        parts.append(f"{step.get('steps_per_s')} steps/s, peak {step.get('peak_gib')} GiB, "
                     f"{smoke.get('backend')} all-reduce ok: {smoke.get('ok')}, resume continues: {step.get('resume_continues')}")
    if "error" in step:
        parts.append(f"error: {step['error']}")
    return "; ".join(str(p) for p in parts)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip() for row in rows]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe-train"]:
        parser = argparse.ArgumentParser(prog="check.py probe-train")
        parser.add_argument("--probe-out", type=Path, required=True)
        parser.add_argument("args", nargs=argparse.REMAINDER)
        parsed = parser.parse_args(argv[1:])
        return probe_train(parsed.probe_out, parsed.args[1:] if parsed.args[:1] == ["--"] else parsed.args)
    if argv[:1] == ["step"]:
        parser = argparse.ArgumentParser(prog="check.py step")
        parser.add_argument("name", choices=STEPS)
        parser.add_argument("--work", type=Path, required=True)
        parser.add_argument("--result", type=Path, required=True)
        parser.add_argument("--deadline", type=float, required=True, help="time.time() at which the step is killed")
        parser.add_argument("--dry-run", action="store_true")
        parsed = parser.parse_args(argv[1:])
        return run_step(parsed.name, parsed.dry_run, parsed.work, parsed.result, parsed.deadline)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"),
                        help="where gpu_check.json and gpu_check.log go (default $OUT)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: OUT/../gpu-check-work in /tmp)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no CUDA build")
    parser.add_argument("--budget-s", type=float, default=None, help="time for all steps (default 450; dry run 240)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = parser.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps: {', '.join(unknown)}")
    budget = args.budget_s if args.budget_s is not None else (240.0 if args.dry_run else 450.0)
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"styleface-gpu-check-{os.getpid()}"
    report = orchestrate(out=args.out, work=work, dry_run=args.dry_run, budget_s=budget, steps=steps)
    print()
    for line in summary_lines(report):
        print(line)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
