"""The CPU instruction sets x264 may use, so that the same input always encodes to the same bitstream.

x264's AVX-512 code (on by default wherever the CPU has AVX-512: recent AMD EPYC/Ryzen, Intel Xeon) is not
deterministic with its macroblock-tree rate control (``mbtree``, on in every preset but ultrafast): two
encodes of identical frames with identical settings, even in one process and with one x264 thread, can give
different bitstreams (decoded pixels up to ~27 levels apart). Measured with PyAV 18.1 (x264 build 165) on an
AMD EPYC, 10 encodes of one 60-frame clip: 5 to 10 different outputs at 64x48, 96x64, 160x120 and 240x144,
one at 256x144 and 1280x720 (widths whose lowres row is a multiple of 16 macroblocks); with AVX-512 masked
out, with ``asm=0`` or with ``mbtree=0``, one output at every size. Which output comes depends on what the
heap held before, so that AVX-512 code evidently reads memory it never wrote. So the writer hands x264 the CPU
flags it would detect itself, minus AVX-512: every other SIMD path stays on and mbtree keeps its gains.
(Outputs can still differ between CPUs with different instruction sets: x264's SIMD and C mbtree round
floats differently. The promise is the same output for the same input on one machine.)

The flags come from the libx264 that PyAV's libavcodec actually loaded (its exported ``x264_cpu_detect`` and
``x264_cpu_names``), so no constant here can disagree with the library. Where that library cannot be found
(a platform without ``/proc/self/maps`` and no bundled copy next to PyAV) the encoder keeps its own choice.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from pathlib import Path

import av  # loads libavcodec, and with it libx264


class _CpuName(ctypes.Structure):  # x264.h: typedef struct { const char *name; uint32_t flags; } x264_cpu_name_t;
    _fields_ = [("name", ctypes.c_char_p), ("flags", ctypes.c_uint32)]


def _loaded_x264() -> str | None:
    """The path of the libx264 loaded in this process (Linux), else one bundled with PyAV, else None."""
    maps = Path("/proc/self/maps")
    if maps.is_file():
        for line in maps.read_text().splitlines():
            fields = line.split(maxsplit=5)  # address, perms, offset, device, inode[, path]
            if len(fields) == 6 and "libx264" in os.path.basename(fields[5]):
                return fields[5].strip()
    package = Path(av.__file__).parent
    for pattern in ("../av.libs/libx264*", ".dylibs/libx264*", "../av.libs/*x264*.dll"):
        found = sorted(glob.glob(str(package / pattern)))
        if found:
            return found[0]
    return None


def cpu_flags_without_avx512(detected: int, names: dict[str, int]) -> int | None:
    """``detected`` (x264's own CPU mask) without AVX-512, or None when there is nothing to take away.

    ``names`` is x264's table of flag sets by name; the AVX-512 bit is what ``AVX512`` adds to ``AVX2``.
    """
    if "AVX512" not in names or "AVX2" not in names:
        return None
    avx512 = names["AVX512"] & ~names["AVX2"]
    if not avx512 or not detected & avx512:
        return None
    return detected & ~avx512


@functools.cache
def deterministic_x264_asm() -> int | None:
    """The ``asm`` value (x264's CPU mask) that keeps every SIMD path of this CPU but AVX-512; None when
    x264 would not use AVX-512 here or its library cannot be inspected (then x264 detects as usual)."""
    path = _loaded_x264()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.x264_cpu_detect.restype = ctypes.c_uint32
        detected = int(lib.x264_cpu_detect())
        table = (_CpuName * 128).in_dll(lib, "x264_cpu_names")
    except (OSError, AttributeError, ValueError):
        return None
    names: dict[str, int] = {}
    for entry in table:  # ends with { "", 0 }
        if not entry.flags:
            break
        names[entry.name.decode("ascii", "replace")] = int(entry.flags)
    return cpu_flags_without_avx512(detected, names)
