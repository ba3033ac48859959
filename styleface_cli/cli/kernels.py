"""``styleface kernels build`` and ``styleface kernels check``: the compiled kernels, ahead of time.

``build`` compiles (or finds in the cache) every kernel for every device kind on this machine (the C++
CPU build, and the CUDA build per GPU architecture) and reports what, where and how long; ``--json``
prints one JSON object on stdout. ``check`` runs the compiled kernels against their plain-PyTorch
reference twins (values and gradients) and prints a table; it exits with 1 on any mismatch. A kernel
that fails to build raises ``KernelBuildError`` (exit code 6, the message names the build log).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from styleface_cli.errors import ExitCode, KernelBuildError


def available_devices() -> list[str]:
    """``cpu`` plus one CUDA device per distinct GPU architecture (one build serves each architecture)."""
    import torch

    from styleface_cli.ops.build import device_kind

    devices, kinds = ["cpu"], {"cpu"}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            kind = device_kind(f"cuda:{index}")
            if kind not in kinds:
                kinds.add(kind)
                devices.append(f"cuda:{index}")
    return devices


def build_all(*, devices: list[str], cache_dir: Path | None, verbose: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Build every kernel for every device, trying them all even when one fails.

    Returns:
        One record per build that succeeded (see ``BuiltKernel.as_dict``), and one message per build
        that failed (each names its build log).
    """
    from styleface_cli.ops.build import KERNEL_NAMES, build_kernel

    records, failures = [], []
    for device in devices:
        for name in KERNEL_NAMES:
            try:
                built, _ = build_kernel(name, device, cache_dir=cache_dir, verbose=verbose)
            except KernelBuildError as error:
                failures.append(str(error))
                continue
            records.append(built.as_dict())
    return records, failures


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """One reference-vs-compiled comparison."""

    op: str  # "bias_act" or "upfirdn2d"
    case: str  # the arguments, e.g. "act=lrelu clamp=0.5" or "up=2 down=1 f=4x4"
    device: str
    dtype: str
    value_error: float  # max |compiled - ref| of the output, relative to max(1, max |ref|)
    grad_error: float  # the same for the gradient with respect to x
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.value_error <= self.tolerance and self.grad_error <= self.tolerance


def _relative_error(got, want) -> float:
    return float((got - want).abs().max() / max(1.0, float(want.abs().max())))


def _compare(run: Callable, x, device: str, op: str, case: str, tolerance: float) -> ParityResult:
    """Run ``run(x, impl)`` with both implementations; compare outputs and input gradients."""
    import torch

    outputs, grads = [], []
    weight = None
    for impl in ("ref", "compiled"):
        xi = x.detach().clone().requires_grad_(True)
        y = run(xi, impl)
        if weight is None:
            weight = torch.randn_like(y)  # a random cotangent, so every output element matters
        (grad,) = torch.autograd.grad((y * weight).sum(), xi)
        outputs.append(y.detach())
        grads.append(grad)
    return ParityResult(op, case, device, str(x.dtype).removeprefix("torch."),
                        _relative_error(outputs[1], outputs[0]), _relative_error(grads[1], grads[0]), tolerance)


def check_parity(*, devices: list[str], seed: int = 0) -> list[ParityResult]:
    """Compare every compiled kernel with its reference on ``devices`` (builds them if needed).

    Raises:
        KernelBuildError: a kernel could not be built (policy 'compiled').
    """
    import torch

    from styleface_cli.ops import ACTIVATIONS, bias_act, setup_filter, upfirdn2d

    generator = torch.Generator().manual_seed(seed)
    results = []
    for device in devices:
        for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            def randn(*shape):
                return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

            x, b = randn(2, 6, 5, 7), randn(6)
            for act in ACTIVATIONS:
                for clamp in (None, 0.5):
                    results.append(_compare(
                        lambda xi, impl: bias_act(xi, b, act=act, clamp=clamp, impl=impl),
                        x, device, "bias_act", f"act={act} clamp={clamp}", tolerance))
            x = randn(2, 3, 9, 8)
            filters = {"4x4": setup_filter([1, 3, 3, 1], device=device),
                       "sep8": setup_filter([1, 2, 3, 4, 4, 3, 2, 1], device=device)}
            for up, down in ((1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (2, 2)):
                for fname, f in filters.items():
                    results.append(_compare(
                        lambda xi, impl: upfirdn2d(xi, f, up=up, down=down, padding=[2, 3, 1, 4], impl=impl),
                        x, device, "upfirdn2d", f"up={up} down={down} f={fname}", tolerance))
    return results


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def register(app: typer.Typer) -> None:
    kernels_app = typer.Typer(
        name="kernels", help="Build and check the compiled kernels (bias_act, upfirdn2d).", no_args_is_help=True
    )
    app.add_typer(kernels_app, name="kernels")

    @kernels_app.command("build")
    def build(
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
        cache_dir: Annotated[Optional[Path], typer.Option(
            "--cache-dir", help="Where builds are cached [default: $STYLEFACE_CACHE/kernels or ~/.cache/styleface/kernels]."
        )] = None,
        verbose: Annotated[bool, typer.Option("--verbose", help="Show the compiler commands and output.")] = False,
    ) -> None:
        """Build every kernel for the devices of this machine (cached: fast when nothing changed)."""
        records, failures = build_all(devices=available_devices(), cache_dir=cache_dir, verbose=verbose)
        if json_output:
            typer.echo(json.dumps({"kernels": records, "failures": failures}))
        elif records:
            rows = [["kernel", "device", "status", "seconds", "path"]]
            for r in records:
                status = "compiled" if r["compiled"] else "cached"
                rows.append([r["name"], r["device_kind"], status, f"{r['seconds']:.1f}", r["path"]])
            _print_table(rows)
        if failures:  # after printing what did build; the CLI turns this into exit code 6
            raise KernelBuildError("; ".join(failures))

    @kernels_app.command("check")
    def check(
        json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    ) -> None:
        """Compare the compiled kernels with their references (values and gradients); exit 1 on a mismatch."""
        results = check_parity(devices=available_devices())
        failed = [r for r in results if not r.ok]
        if json_output:
            typer.echo(json.dumps({
                "ok": not failed,
                "results": [dict(dataclasses.asdict(r), ok=r.ok) for r in results],
            }))
        else:
            rows = [["op", "case", "device", "dtype", "value err", "grad err", "tol", "status"]]
            for r in results:
                rows.append([r.op, r.case, r.device, r.dtype, f"{r.value_error:.1e}", f"{r.grad_error:.1e}",
                             f"{r.tolerance:.0e}", "ok" if r.ok else "MISMATCH"])
            _print_table(rows)
            typer.echo(f"{len(results) - len(failed)}/{len(results)} cases agree")
        if failed:
            raise typer.Exit(int(ExitCode.FAILURE))
