"""Which onnxruntime execution providers run the face detector (CenterFace or SCRFD).

onnxruntime's default wheel (``onnxruntime``) has only the CPU provider, also on a GPU machine: there the
detector runs on the CPU, one single-threaded call per core (at most 4) in flight, while the generator runs
on the GPU. With ``onnxruntime-gpu`` installed instead, ``CUDAExecutionProvider`` is listed and the detector
runs on the GPU, one call at a time in batches (``styleface doctor`` says which one this machine uses).
"""

from __future__ import annotations

from typing import Sequence

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def detector_providers(available: Sequence[str] | None = None) -> list[str]:
    """The providers to give ``onnxruntime.InferenceSession``, best first: CUDA when this onnxruntime has
    it, then the CPU (always last, as onnxruntime's fallback for nodes CUDA lacks).

    ``available`` defaults to ``onnxruntime.get_available_providers()``.
    """
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    return [CUDA, CPU] if CUDA in available else [CPU]
