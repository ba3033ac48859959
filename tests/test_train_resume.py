"""Resuming: 2 steps + save + resume for 1 step ends where 3 straight steps end; export loads as a model."""

from __future__ import annotations

import json

import pytest
import torch

from styleface_cli.errors import OutputError
from styleface_cli.model import load_checkpoint
from styleface_cli.train import loop
from tests.test_train_step import RESOLUTION, make_synthetic_dataset, tiny_config


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), resolution=RESOLUTION)


def _assert_states_equal(a: dict, b: dict, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{path}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_states_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_states_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_two_steps_then_resume_one_equals_three_straight(dataset_root, tmp_path):
    torch.set_num_threads(2)
    # r1_interval 2: the R1 step falls on step 0 and step 2, so the resumed step includes one
    common = dict(r1_interval=2, same_identity_prob=0.5, deid_prob=0.5, export=None)
    split = tmp_path / "split"
    first = loop.run_training(config=tiny_config(dataset_root, split, steps=2, **common))
    assert first.steps == 2 and first.last_state.name == "state-00000002.pt"
    with pytest.raises(OutputError, match="--resume"):
        loop.run_training(config=tiny_config(dataset_root, split, steps=3, **common))
    resumed = loop.run_training(config=tiny_config(dataset_root, split, steps=3, resume=True,
                                                   **{**common, "export": tmp_path / "model.safetensors"}))
    assert resumed.start_step == 2 and resumed.steps == 3
    straight = loop.run_training(config=tiny_config(dataset_root, tmp_path / "straight", steps=3, **common))

    a = loop.read_training_state(resumed.last_state)
    b = loop.read_training_state(straight.last_state)
    assert a["step"] == b["step"] == 3 and a["images_seen"] == b["images_seen"] == 6
    for key in ("G", "D", "G_ema", "momentum_projector", "keys_list", "opt_g", "opt_d", "rng"):
        _assert_states_equal(a[key], b[key], key)
    # the log continues across the resume: one line per step
    steps = [json.loads(line)["step"] for line in (split / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

    # the exported model is the EMA generator, in the format weights.py loads strictly
    model = load_checkpoint(resumed.exported)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, a["G_ema"][name])
    again = tmp_path / "again.safetensors"
    loop.export_model(state_path=loop.latest_state(split), out=again)
    assert load_checkpoint(again).config == model.config
