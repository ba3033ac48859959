"""Learning check (not CI): does a small StyleFace learn on real photos within minutes on a CPU?

Prepares the family photos of ``../shared/fixtures/identities/family`` (8 people, 16 usable photos) at a
low resolution, trains a small network with the full objective for a few minutes, and measures on fixed
pairs, with the EMA generator, every few steps:

- reconstruction: L1 between the output and the target when the source is the target's own face;
- identity: ``1 - cos`` between the recogniser embeddings of a swap's output and of its source.

It prints both curves and their start and end values, and exits 1 when either did not go down.

Honest caveats: the recogniser is the 'tiny' IResNet with random weights (no pretrained face recogniser
can be downloaded here), so "identity" means agreement in a random but fixed feature space, not a face
identity; 16 photos are far too few for a GAN, so this shows that the objective and the optimiser work
together, not image quality.

    .venv/bin/python benchmarks/bench_learning.py --minutes 5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from styleface_cli.model import StyleFaceConfig
from styleface_cli.train import data, losses, loop, prepare

FAMILY = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "identities" / "family"


@torch.no_grad()
def evaluate(trainer: loop.Trainer, eval_set: dict[str, torch.Tensor]) -> tuple[float, float]:
    model = trainer.G_ema
    targets, own, others = eval_set["target"], eval_set["own112"], eval_set["other112"]
    reconstruction = model(targets, model.encode_identity(own).w_plus, noise_mode="const")
    swap = model(targets, model.encode_identity(others).w_plus, noise_mode="const")
    rec = float((reconstruction - targets).abs().mean())
    identity = float(losses.identity_loss(model.embed(trainer.crop_for_recognizer(swap)), model.embed(others)))
    return rec, identity


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=25, help="steps between evaluations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep the prepared data here (default: a temp dir)")
    args = parser.parse_args()
    if not FAMILY.is_dir():
        print(f"fixtures not found: {FAMILY}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="styleface-bench-"))
    summary = prepare.prepare_data(config=prepare.PrepareConfig(
        src_dir=FAMILY, out_dir=work / "data", resolution=args.resolution, identity_from_name=r"^(.+?)\d+$"))
    print(f"prepared {summary.samples} faces of {summary.identities} identities in {work / 'data'}")

    model = dataclasses.replace(StyleFaceConfig.tiny(args.resolution), channel_base=2048, channel_max=64,
                                z_dim=64, w_dim=64, mapping_layers=2)
    config = loop.TrainConfig(
        data_dir=work / "data", run_dir=work / "run", model=model, batch_size=args.batch_size, steps=10**9,
        same_identity_prob=0.5, deid_prob=0.1, lr_g=0.002, lr_d=0.002, ema_kimg=0.5, data_workers=0,
        kernels="ref", seed=0,
    )
    index = data.load_index(config.data_dir)
    dist = loop.Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = loop.Trainer(config, num_identities=index.num_identities, dist=dist)
    dataset = data.PairDataset(index, resolution=args.resolution, same_identity_prob=config.same_identity_prob,
                               seed=config.seed)
    n = len(index.samples)
    other = [next(j for j in range(n) if index.samples[(i + j) % n].identity != index.samples[i].identity)
             for i in range(n)]
    eval_set = {
        "target": torch.stack([data.to_tensor(data.read_rgb(s.image, args.resolution)) for s in index.samples]),
        "own112": torch.stack([data.to_tensor(data.read_rgb(s.crop112)) for s in index.samples]),
        "other112": torch.stack([data.to_tensor(data.read_rgb(index.samples[(i + other[i]) % n].crop112))
                                 for i in range(n)]),
    }
    counts = trainer.G.parameter_counts()
    print(f"model: {args.resolution} px, {counts['total'] - counts['recognizer']:,} trainable generator parameters, "
          f"batch {args.batch_size}, {args.threads} threads, budget {args.minutes} min")
    sampler = data.ResumableBatchSampler(n, batch_size=args.batch_size, rank=0, world_size=1, seed=0)
    batches = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    curve = [(0, *evaluate(trainer, eval_set))]
    print(f"{'step':>6} {'seconds':>8} {'reconstruction L1':>18} {'identity 1-cos':>15}")
    print(f"{0:>6} {0.0:>8.1f} {curve[0][1]:>18.4f} {curve[0][2]:>15.4f}")
    started = time.perf_counter()
    while time.perf_counter() - started < args.minutes * 60:
        trainer.step_batch(next(batches))
        if trainer.step % args.eval_every == 0:
            curve.append((trainer.step, *evaluate(trainer, eval_set)))
            print(f"{trainer.step:>6} {time.perf_counter() - started:>8.1f} {curve[-1][1]:>18.4f} {curve[-1][2]:>15.4f}",
                  flush=True)
    if curve[-1][0] != trainer.step:
        curve.append((trainer.step, *evaluate(trainer, eval_set)))
    steps, rec, ident = np.array(curve).T
    print(f"\nreconstruction L1: {rec[0]:.4f} -> {rec[-1]:.4f} (best {rec.min():.4f}) after {int(steps[-1])} steps")
    print(f"identity 1-cos:    {ident[0]:.4f} -> {ident[-1]:.4f} (best {ident.min():.4f})")
    learned = rec[-1] < rec[0] and ident[-1] < ident[0]
    print("both went down" if learned else "NOT LEARNING: at least one curve did not go down")
    return 0 if learned else 1


if __name__ == "__main__":
    sys.exit(main())
