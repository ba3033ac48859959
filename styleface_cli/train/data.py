"""The training set made by ``prepare-data``: an identity index and a dataset of (source, target) pairs.

One item is built around target sample ``i``:

- ``target``: the FFHQ-aligned crop ``[3, R, R]`` in [-1, 1] and its landmarks ``[5, 2]`` (pixels of it);
- ``source112``: a 112x112 arcface crop ``[3, 112, 112]`` in [-1, 1] of the *source* identity ``j``:
  with probability ``same_identity_prob`` the target's own identity (a *different* picture of that person
  when there is one, so the identity path cannot shortcut through pose and lighting), otherwise a
  picture of another identity, uniformly over identities (not pictures, so identities with many
  pictures do not dominate the swaps);
- ``key112``: another picture of identity ``j`` (x^{j'} of Algorithm 1), the contrastive positive key.
  An identity with one picture uses that picture, mirrored: a second view that keeps the identity;
- ``identity``: ``j`` (row of the dynamic list K), ``same``: whether ``j`` is the target's identity.

Randomness is a pure function of ``(seed, epoch, i)`` (``numpy.random.default_rng``), so an item is the
same whichever process or worker draws it, and a resumed run sees the very pairs it would have seen.
Batches come from ``torch.utils.data.DistributedSampler`` (one shard per rank) through
``ResumableBatchSampler``, which can start in the middle of an epoch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from styleface_cli.errors import InputError
from styleface_cli.train.prepare import INDEX_FORMAT, INDEX_NAME


@dataclasses.dataclass(frozen=True)
class Sample:
    identity: int
    image: Path  # FFHQ-aligned crop, absolute
    crop112: Path  # arcface crop, absolute
    landmarks: np.ndarray  # [5, 2] float32, pixels of ``image``


@dataclasses.dataclass(frozen=True)
class TrainIndex:
    """The parsed ``index.json``."""

    resolution: int
    identity_names: tuple[str, ...]
    samples: tuple[Sample, ...]
    by_identity: tuple[tuple[int, ...], ...]  # sample numbers of each identity

    @property
    def num_identities(self) -> int:
        return len(self.identity_names)


def load_index(data_dir: Path) -> TrainIndex:
    """Read ``data_dir/index.json`` (made by ``prepare-data``); raises ``InputError`` when unusable."""
    path = Path(data_dir) / INDEX_NAME
    if not path.is_file():
        raise InputError(f"{path} not found; make the training set with 'styleface prepare-data' first")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not a readable index: {error}") from error
    if raw.get("format") != INDEX_FORMAT:
        raise InputError(f"{path} is not a styleface training index")
    samples = tuple(
        Sample(identity=int(s["identity"]), image=path.parent / s["image"], crop112=path.parent / s["crop112"],
               landmarks=np.asarray(s["landmarks"], dtype=np.float32).reshape(5, 2))
        for s in raw["samples"]
    )
    names = tuple(i["name"] for i in raw["identities"])
    by_identity = tuple(tuple(i["samples"]) for i in raw["identities"])
    if not samples or len(names) < 2:
        raise InputError(f"{path} has {len(samples)} usable faces of {len(names)} identities; "
                         "training needs at least two identities")
    return TrainIndex(resolution=int(raw["resolution"]), identity_names=names, samples=samples, by_identity=by_identity)


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """[H, W, 3] uint8 RGB, resized to ``size x size`` (area filter) when given and different."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read training image {path}")
    if size is not None and image.shape[0] != size:
        shrink = image.shape[0] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image[:, :, ::-1])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float32 in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


class PairDataset(Dataset):
    """Pairs for swapping and reconstruction around each target sample (see the module docstring).

    ``resolution`` may be smaller than the prepared one (crops are downscaled and landmarks scaled), so
    one prepared set serves quick low-resolution runs too. Keys are ``(epoch, sample)`` tuples.
    """

    def __init__(self, index: TrainIndex, *, resolution: int, same_identity_prob: float, seed: int) -> None:
        if resolution > index.resolution:
            raise InputError(f"the training set was prepared at {index.resolution} px; cannot train at {resolution}")
        self.index = index
        self.resolution = resolution
        self.same_identity_prob = same_identity_prob
        self.seed = seed

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        target = self.index.samples[i]
        same = rng.random() < self.same_identity_prob
        if same:
            identity = target.identity
            source_number = _pick_other(rng, self.index.by_identity[identity], avoid=i)
        else:
            others = self.index.num_identities - 1
            identity = int(rng.integers(others))
            identity += identity >= target.identity  # uniform over the other identities
            source_number = int(rng.choice(self.index.by_identity[identity]))
        key_number = _pick_other(rng, self.index.by_identity[identity], avoid=source_number)
        key112 = read_rgb(self.index.samples[key_number].crop112)
        if key_number == source_number:
            key112 = key112[:, ::-1]  # a one-picture identity: the mirror image is the second view
        scale = self.resolution / self.index.resolution
        return {
            "target": to_tensor(read_rgb(target.image, self.resolution)),
            "target_landmarks": torch.from_numpy((target.landmarks + 0.5) * scale - 0.5),  # pixel centres
            "source112": to_tensor(read_rgb(self.index.samples[source_number].crop112)),
            "key112": to_tensor(np.ascontiguousarray(key112)),
            "identity": torch.tensor(identity, dtype=torch.int64),
            "same": torch.tensor(same),
        }


def _pick_other(rng: np.random.Generator, numbers: tuple[int, ...], avoid: int) -> int:
    """A sample of ``numbers`` other than ``avoid``, or ``avoid`` itself when it is the only one."""
    choices = [n for n in numbers if n != avoid]
    return int(rng.choice(choices)) if choices else avoid


class ResumableBatchSampler(Sampler):
    """Batches of ``(epoch, sample)`` keys for one rank, from step ``start_step`` on, for ever.

    Each epoch's order (and the shard of this rank) is ``DistributedSampler``'s with ``set_epoch``;
    incomplete batches are dropped so every rank makes the same number of steps and all batches are full.
    """

    def __init__(self, dataset_size: int, *, batch_size: int, rank: int, world_size: int, seed: int,
                 start_step: int = 0) -> None:
        self.sampler = DistributedSampler(range(dataset_size), num_replicas=world_size, rank=rank, shuffle=True,
                                          seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.start_step = start_step
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise InputError(f"the training set has {dataset_size} faces, fewer than one batch per process "
                             f"({batch_size} x {world_size} processes)")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, offset = divmod(step, self.batches_per_epoch)
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(offset, self.batches_per_epoch):
                yield [(epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
            step = (epoch + 1) * self.batches_per_epoch

    def __len__(self) -> int:  # the loop stops it; DataLoader only needs a number
        return 2**62
