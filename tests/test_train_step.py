"""One training step of the full StyleFace objective on a tiny model: every parameter group moves, every
loss term is finite, the contrastive machinery (dynamic list, momentum projector) updates."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from styleface_cli.face import align
from styleface_cli.train import prepare


def make_synthetic_dataset(root: Path, *, identities: int = 3, per_identity: tuple[int, ...] = (2, 2, 1),
                           resolution: int = 32, seed: int = 0) -> Path:
    """A prepared training set of drawn faces (an ellipse per identity colour on a noisy background),
    written as ``prepare-data`` writes one, with its index. Returns the folder."""
    rng = np.random.default_rng(seed)
    template = align.ffhq_template(resolution)
    records = []
    for k in range(identities):
        colour = rng.uniform(40, 220, 3)
        for p in range(per_identity[k]):
            image = rng.uniform(0, 255, (resolution, resolution, 3)).astype(np.float32)
            image = cv2.GaussianBlur(image, (0, 0), resolution / 16)
            landmarks = template + rng.normal(0, resolution / 100, template.shape)
            centre = landmarks.mean(0)
            axes = (int(resolution * 0.22), int(resolution * 0.3))
            cv2.ellipse(image, (int(centre[0]), int(centre[1])), axes, 0, 0, 360, colour.tolist(), -1)
            for x, y in landmarks:
                cv2.circle(image, (int(x), int(y)), max(1, resolution // 32), (20.0, 20.0, 20.0), -1)
            image = image.clip(0, 255).astype(np.uint8)
            crop112 = align.warp_crop(image, align.estimate_affine(landmarks, align.ARCFACE_TEMPLATE_112), 112)
            name = f"id{k}/pic{p}"
            for folder, pixels in (("images", image), ("crops112", crop112)):
                path = root / folder / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), pixels[:, :, ::-1])
            records.append({"source": f"{name}.jpg", "identity": f"id{k}", "frame": None, "image": f"images/{name}.png",
                            "crop112": f"crops112/{name}.png", "landmarks": landmarks.tolist()})
    index = prepare.build_index(records, resolution)
    (root / prepare.INDEX_NAME).write_text(__import__("json").dumps(index))
    return root


from styleface_cli.model import StyleFaceConfig  # noqa: E402
from styleface_cli.model.styleface import part_of  # noqa: E402
from styleface_cli.train import data, loop  # noqa: E402

RESOLUTION = 32


def tiny_config(root: Path, run_dir: Path, **kw) -> loop.TrainConfig:
    """The settings every training test uses: a tiny network, batch 2, plain-PyTorch ops, no worker processes."""
    defaults = dict(data_dir=root, run_dir=run_dir, model=StyleFaceConfig.tiny(RESOLUTION), batch_size=2,
                    data_workers=0, kernels="ref", sample_every=0, log_every=1, checkpoint_every=1000)
    defaults.update(kw)
    return loop.TrainConfig(**defaults)


def single_process() -> loop.Distributed:
    return loop.Distributed(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _batch(dataset: data.PairDataset, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    items = [dataset[key] for key in keys]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), resolution=RESOLUTION)


def test_one_step_moves_every_parameter_group_and_every_loss_is_finite(dataset_root, tmp_path):
    torch.set_num_threads(2)
    config = tiny_config(dataset_root, tmp_path, deid_prob=0.0)
    index = data.load_index(dataset_root)
    trainer = loop.Trainer(config, num_identities=index.num_identities, dist=single_process())
    dataset = data.PairDataset(index, resolution=RESOLUTION, same_identity_prob=0.5, seed=0)
    batch = _batch(dataset, [(0, 0), (0, 3)])
    batch["same"] = torch.tensor([True, False])  # one reconstruction pair, one swap pair
    before = {name: p.detach().clone() for name, p in trainer.G.named_parameters()}
    d_before = [p.detach().clone() for p in trainer.D.parameters()]
    ema_before = [p.detach().clone() for p in trainer.G_ema.parameters()]
    momentum_before = [p.detach().clone() for p in trainer.momentum_projector.parameters()]
    keys_before = trainer.keys_list.clone()

    values = trainer.step_batch(batch)

    expected = {"g_adversarial", "identity", "reconstruction", "fm_background", "fm_whole", "contrastive", "g_total",
                "d_fake", "d_real", "d_total", "r1"}
    assert expected <= set(values)
    for name in expected:
        assert np.isfinite(values[name]), name
    for name in ("identity", "reconstruction", "fm_background", "fm_whole", "contrastive", "r1"):
        assert values[name] > 0, name
    moved: dict[str, bool] = {}
    for name, p in trainer.G.named_parameters():
        moved[part_of(name)] = moved.get(part_of(name), False) or not torch.equal(p, before[name])
    assert moved == {"recognizer": False, "projector": True, "mapping": True, "attributes": True, "injection": True,
                     "synthesis": True}
    assert all(not torch.equal(a, b) for a, b in zip(trainer.D.parameters(), d_before))
    assert any(not torch.equal(a, b) for a, b in zip(trainer.G_ema.parameters(), ema_before))
    # the momentum projector moved by (1 - m) of the way towards the updated projector
    for old, new, online in zip(momentum_before, trainer.momentum_projector.parameters(),
                                trainer.G.projector.parameters()):
        torch.testing.assert_close(new, config.momentum * old + (1 - config.momentum) * online.detach())
    # K: the rows of this batch's identities changed (to unit vectors), the others did not
    changed_rows = set(batch["identity"].tolist())
    for row in range(index.num_identities):
        assert torch.equal(trainer.keys_list[row], keys_before[row]) == (row not in changed_rows)
    torch.testing.assert_close(trainer.keys_list.norm(dim=1), torch.ones(index.num_identities))
    assert trainer.step == 1 and trainer.images_seen == 2


def test_recognizer_crop_of_the_generator_frame_matches_the_arcface_alignment():
    resolution = 256
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (resolution, resolution, 3)).astype(np.float32), (0, 0), 4)
    expected = align.warp_crop(image, align.ffhq_to_arcface(resolution), 112)
    box, theta = loop._to_arcface_grid_theta(resolution)
    trainer = type("T", (), {"box": box, "arcface_theta": theta})()
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    got = loop.Trainer.crop_for_recognizer(trainer, tensor)[0].permute(1, 2, 0).numpy()
    assert got.shape == (112, 112, 3)
    assert np.abs(got - expected)[8:-8, 8:-8].mean() < 1.5  # box-filtered vs bilinear: close, not equal
