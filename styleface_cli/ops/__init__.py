"""Custom ops of the StyleGAN2-style generator, each with a plain-PyTorch reference twin.

``bias_act`` (fused bias + activation) and ``upfirdn2d`` (upsample, FIR filter, downsample) run either
the reference (``impl='ref'``) or a compiled kernel (C++ on CPU, CUDA on GPU) that is built lazily on
first use and cached by content (``impl='compiled'``, or ``'auto'``: compiled if it builds, else the
reference after one warning). Importing this package never compiles anything.
"""

from styleface_cli.ops.bias_act import ACTIVATIONS, bias_act, bias_act_ref
from styleface_cli.ops.build import ENV_VAR, KERNEL_POLICIES, resolve_policy
from styleface_cli.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d

__all__ = [
    "ACTIVATIONS",
    "ENV_VAR",
    "KERNEL_POLICIES",
    "bias_act",
    "bias_act_ref",
    "downsample2d",
    "filter2d",
    "resolve_policy",
    "setup_filter",
    "upfirdn2d",
    "upfirdn2d_ref",
    "upsample2d",
]
