"""Throughput of the StyleFace generator (images/s) per device, resolution, batch size and kernel policy.

What is timed: ``StyleFace.forward(target, w_plus)`` -- the attribute U-Net, the AttrInjection gates and
the StyleGAN2 synthesis -- in eval mode under ``torch.inference_mode()`` with constant noise, i.e. the
per-frame cost of a face swap. The identity encoder runs once per track and is not timed. Networks are
the paper presets (``StyleFaceConfig.preset``) with random weights.

Kernel policies: 'ref' (plain PyTorch) and 'compiled' (the C++ / CUDA kernels of ``styleface_cli.ops``,
built on first use; reported as unavailable when they cannot be built).

On a CPU one batch of 16 at 512 px takes minutes, so each measurement that the batch-1 time predicts to
exceed ``--budget-s`` is reported as skipped (``--budget-s 0`` runs everything).

    .venv/bin/python benchmarks/bench_generator.py
    .venv/bin/python benchmarks/bench_generator.py --devices cuda --iters 20 --batch-sizes 1,4,16,32
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from styleface_cli.errors import KernelBuildError  # noqa: E402
from styleface_cli.model import StyleFace, StyleFaceConfig, set_kernel_policy  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(model: StyleFace, batch: int, iters: int, device: torch.device) -> float:
    """Seconds per forward of ``batch`` images, averaged over ``iters`` runs (after the caller's warm-up)."""
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(batch, 3, model.resolution, model.resolution, generator=g) * 2 - 1).to(device)
    w_plus = model.sample_identity(batch, generator=g).w_plus
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        model(target, w_plus)
    synchronize(device)
    return (time.perf_counter() - start) / iters


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=words, default=["cpu", "cuda"], help="cpu,cuda (cuda is skipped when absent)")
    parser.add_argument("--resolutions", type=ints, default=[256, 512])
    parser.add_argument("--batch-sizes", type=ints, default=[1, 4, 16])
    parser.add_argument("--kernels", type=words, default=["ref", "compiled"])
    parser.add_argument("--iters", type=int, default=None, help="timed runs per measurement (default: 1 CPU, 10 CUDA)")
    parser.add_argument("--budget-s", type=float, default=30.0,
                        help="skip a CPU measurement predicted to take longer than this (0 = never skip)")
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} CPU threads")
    print(f"{'device':<28} {'res':>5} {'kernels':<9} {'batch':>5} {'images/s':>10} {'ms/batch':>10}")
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(device_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or 'cpu'})"
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        iters = args.iters or (10 if device.type == "cuda" else 1)
        for resolution in args.resolutions:
            torch.manual_seed(0)
            model = StyleFace(StyleFaceConfig.preset(resolution)).eval().to(device)
            for kernels in args.kernels:
                set_kernel_policy(model, kernels)
                try:
                    with torch.inference_mode(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        time_batches(model, 1, 1, device)  # warm-up: kernel build / load, allocator, cuDNN search
                        per_image = time_batches(model, 1, 1, device)
                except KernelBuildError as error:
                    print(f"{label:<28} {resolution:>5} {kernels:<9} {'-':>5} unavailable: {error}")
                    continue
                for batch in args.batch_sizes:
                    predicted = per_image * batch * iters
                    if device.type == "cpu" and args.budget_s and predicted > args.budget_s:
                        print(f"{label:<28} {resolution:>5} {kernels:<9} {batch:>5} {'skipped':>10} "
                              f"(predicted {predicted:.0f} s > --budget-s {args.budget_s:.0f})")
                        continue
                    with torch.inference_mode():
                        seconds = time_batches(model, batch, iters, device)
                    print(f"{label:<28} {resolution:>5} {kernels:<9} {batch:>5} {batch / seconds:>10.2f} "
                          f"{seconds * 1000:>10.1f}", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
