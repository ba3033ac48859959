"""What a command builds once and every input then uses: the detector, the generator and its codes,
the recogniser and the reference faces.

``prepare_tools(cfg)`` loads them; per input, ``Tools.hider()`` and ``Tools.chooser()`` make the
stages that keep per-video state (identity codes per track, alignment averages, match decisions).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from styleface_cli.config import AnonymizeConfig
from styleface_cli.errors import ConfigError
from styleface_cli.face.align import align_face
from styleface_cli.face.detect import RotatingDetector, create_detector
from styleface_cli.face.obfuscate import obfuscate_stream
from styleface_cli.records import FaceRegion, Frame, FrameFaces

Stream = Iterator[tuple[Frame, FrameFaces]]


@dataclasses.dataclass
class Tools:
    cfg: AnonymizeConfig
    detector: RotatingDetector
    model: object | None = None  # StyleFace, when the generative method runs
    source_code: object | None = None  # IdentityCode of the swap source
    mix_codes: dict = dataclasses.field(default_factory=dict)  # level name -> IdentityCode
    recognizer: object | None = None  # match.FaceRecognizer, for --target-face / --keep-face
    references: list[np.ndarray] = dataclasses.field(default_factory=list)

    def hider(self) -> Callable[[Stream], Stream]:
        """The hiding stage for one input."""
        if self.cfg.method != "styleface":
            return functools.partial(obfuscate_stream, cfg=self.cfg.obfuscate)
        from styleface_cli.face.generate import FaceGenerator
        from styleface_cli.face.identity import IdentityBank

        bank = IdentityBank(self.model, self.cfg.identity, source=self.source_code, mix=self.mix_codes,
                            device=self.cfg.generate.device)
        return FaceGenerator(self.model, bank, self.cfg.generate, self.cfg.obfuscate)

    def chooser(self) -> Callable[[Frame, list[FaceRegion]], list[FaceRegion]] | None:
        """Which regions of a frame to process, for one input (None: all of them)."""
        select = self.cfg.select
        if select.mode == "all":
            return None
        from styleface_cli.face.match import TrackMatcher, largest_region

        if select.mode == "largest":
            return lambda frame, regions: [largest_region(regions)] if regions else []
        if select.mode == "tracks":
            wanted = set(select.track_ids)
            return lambda frame, regions: [r for r in regions if r.track_id in wanted]
        matcher = TrackMatcher(self.recognizer, self.references, votes=1)
        if select.mode == "faces":  # swap only the people in the photos; until known, leave a face alone
            return lambda frame, regions: [r for r in regions if matcher.matches(frame.image, r, safe_default=False)]
        if select.mode == "except":  # hide all but the people in the photos; until known, hide
            return lambda frame, regions: [r for r in regions if not matcher.matches(frame.image, r, safe_default=False)]
        raise ConfigError(f"unknown face selection {select.mode!r}")


def prepare_tools(cfg: AnonymizeConfig) -> Tools:
    """Load everything the run needs, once."""
    # The pipeline runs its stages in parallel threads; OpenCV splitting each small resize or blend
    # across the cores as well only adds hand-offs (a 1-channel 566x714 blend: 1.3 ms on 2 threads,
    # 0.8 ms on one, measured here).
    cv2.setNumThreads(1)
    limit_malloc_arenas()  # before the stage threads start
    tools = Tools(cfg=cfg, detector=create_detector(cfg.detect))
    if cfg.method == "styleface":
        from styleface_cli.model import load_checkpoint, set_kernel_policy

        if cfg.generate.checkpoint is None:
            raise ConfigError("--method styleface needs a checkpoint")
        tools.model = load_checkpoint(cfg.generate.checkpoint, device=cfg.generate.device)
        set_kernel_policy(tools.model, cfg.generate.kernels)
        if cfg.identity.sources:
            tools.source_code = source_identity(tools, cfg.identity.sources)
        tools.mix_codes = {level: source_identity(tools, [path]) for level, path in cfg.identity.mix}
    if cfg.select.mode in ("faces", "except"):
        from styleface_cli.face.match import choose_recognizer, reference_embeddings

        tools.recognizer = choose_recognizer(tools.model, device=cfg.generate.device)
        tools.references = reference_embeddings(list(cfg.select.faces), tools.recognizer, tools.detector)
    return tools


M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
MALLOC_ARENAS = 2


@functools.cache
def _libc():
    return ctypes.CDLL(None)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc keep at most ``arenas`` heaps (its default: 8 per core); call before the stage
    threads start. Returns whether the limit was set.

    Each thread that allocates gets a heap of its own up to that limit, and a heap keeps what was freed in
    it for its own next allocations: with the decoder's, encoder's, detector's and stage threads all
    allocating, that held 8-10 MB more at the peak of a 480x360 run than two heaps shared by all, for the
    same CPU time (measured here; 14 MB with ``MALLOC_ARENA_MAX=2`` in the environment, which also covers
    the threads that imports start). ``malloc_trim`` after start-up lowered no peak. It applies to the whole
    process (the API's callers too). Not on a C library without ``mallopt``; an explicit ``MALLOC_ARENA_MAX``
    wins.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = _libc().mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def source_identity(tools: Tools, paths) -> object:
    """The identity code of the person in ``paths`` (one or more photos; codes averaged)."""
    import torch

    from styleface_cli.face.identity import average_codes, to_tensor
    from styleface_cli.face.match import largest_face

    codes = []
    with torch.inference_mode():
        for path in paths:
            image, face = largest_face(Path(path), tools.detector)
            crop, _ = align_face(image, face.landmarks, 112, frame="arcface")
            codes.append(tools.model.encode_identity(to_tensor(crop, tools.cfg.generate.device)))
    return average_codes(codes)
