"""prepare-data: discovery of identities, the face-choice policy, resumability, skip reasons, videos;
and the pair dataset / batch sampler that read its output."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from styleface_cli.errors import ConfigError, InputError
from styleface_cli.records import Detection
from styleface_cli.train import data, prepare

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FAMILY = FIXTURES / "identities" / "family"
FAMILY_IDENTITIES = ["Family1-Dad", "Family1-Daughter", "Family1-Mom", "Family1-Son", "Family2-Lady", "Family2-Man",
                     "Family3-Lady", "Family3-Man"]
needs_family = pytest.mark.skipif(not FAMILY.is_dir(), reason="../shared/fixtures/identities/family is absent")


def _det(x0, y0, x1, y1, landmarks=True):
    lm = np.zeros((5, 2), np.float32) if landmarks else None
    return Detection(box=np.array([x0, y0, x1, y1], np.float32), score=0.9, landmarks=lm)


def test_choose_face_policy():
    choose = lambda dets: prepare.choose_face(dets, min_face=32, similar_face_ratio=0.5)  # noqa: E731
    assert choose([]) == (None, "no face")
    assert choose([_det(0, 0, 50, 50, landmarks=False)]) == (None, "no landmarks")
    big, small = _det(0, 0, 100, 100), _det(200, 0, 260, 60)  # 0.36 of the area: clearly a bystander
    assert choose([small, big])[0] is big
    face, reason = choose([big, _det(200, 0, 290, 90)])  # 0.81 of the area: ambiguous
    assert face is None and reason.startswith("several faces of similar size")
    face, reason = choose([_det(0, 0, 20, 40)])
    assert face is None and reason.startswith("face too small")


def test_discover_sources_layouts(tmp_path):
    (tmp_path / "flat").mkdir()
    for name in ("Ann1.jpg", "Ann2.png", "Bob1.mp4", "notes.txt"):
        (tmp_path / "flat" / name).write_bytes(b"x")
    with pytest.raises(ConfigError, match="--identity-from-name"):
        prepare.discover_sources(tmp_path / "flat", None)
    flat = prepare.discover_sources(tmp_path / "flat", r"^(.+?)\d+$")
    assert [(s.path.as_posix(), s.identity) for s in flat] == [
        ("Ann1.jpg", "Ann"), ("Ann2.png", "Ann"), ("Bob1.mp4", "Bob")]
    with pytest.raises(ConfigError):
        prepare.discover_sources(tmp_path / "flat", "(")
    nested = tmp_path / "nested"
    (nested / "n0001" / "sub").mkdir(parents=True)
    (nested / "n0002").mkdir()
    (nested / "n0001" / "sub" / "a.jpg").write_bytes(b"x")
    (nested / "n0002" / "b.jpg").write_bytes(b"x")
    found = prepare.discover_sources(nested, None)
    assert [(s.path.as_posix(), s.identity) for s in found] == [("n0001/sub/a.jpg", "n0001"), ("n0002/b.jpg", "n0002")]
    with pytest.raises(InputError):
        prepare.discover_sources(tmp_path / "missing", None)


def _config(src: Path, out: Path, **kw) -> prepare.PrepareConfig:
    return prepare.PrepareConfig(src_dir=src, out_dir=out, resolution=64, **kw)


@needs_family
def test_prepare_family_fixtures_is_complete_and_resumable(tmp_path):
    out = tmp_path / "prepared"
    config = _config(FAMILY, out, workers=2, identity_from_name=r"^(.+?)\d+$")
    first = prepare.prepare_data(config=config)
    assert first.processed == first.sources == 17 and first.already_done == 0
    index = json.loads((out / "index.json").read_text())
    assert [i["name"] for i in index["identities"]] == FAMILY_IDENTITIES
    assert len(index["samples"]) == 16
    for sample in index["samples"]:
        assert cv2.imread(str(out / sample["image"])).shape == (64, 64, 3)
        assert cv2.imread(str(out / sample["crop112"])).shape == (112, 112, 3)
        eyes = np.asarray(sample["landmarks"])[:2]
        assert np.abs(eyes - prepare.align.ffhq_template(64)[:2]).max() < 6  # aligned onto the template
    # the group photo of Family1 is ambiguous: skipped, with the reason
    assert [(s["source"], s["reason"].split(" (")[0]) for s in index["skipped"]] == [
        ("identification1.jpg", "several faces of similar size")]
    second = prepare.prepare_data(config=config)
    assert second.processed == 0 and second.already_done == 17
    assert json.loads((out / "index.json").read_text()) == index
    # another resolution into the same folder is refused rather than mixed in
    with pytest.raises(ConfigError):
        prepare.prepare_data(config=prepare.PrepareConfig(src_dir=FAMILY, out_dir=out, resolution=128,
                                                          identity_from_name=r"^(.+?)\d+$"))


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@needs_family
def test_prepare_reports_unusable_files_and_samples_video_frames(tmp_path):
    src = tmp_path / "src"
    (src / "dad").mkdir(parents=True)
    (src / "lady").mkdir()
    (src / "dad" / "photo.jpg").symlink_to(FAMILY / "Family1-Dad1.jpg")
    (src / "dad" / "broken.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(src / "dad" / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    face = cv2.imread(str(FAMILY / "Family2-Lady1.jpg"))[:, :, ::-1]
    face = cv2.resize(face, (face.shape[1] // 2 * 2, face.shape[0] // 2 * 2))
    _write_video(src / "lady" / "clip.mp4", [face] * 7)
    (src / "lady" / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    summary = prepare.prepare_data(config=_config(src, tmp_path / "out", video_every=3))
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    reasons = {(s["source"], s["frame"]): s["reason"] for s in index["skipped"]}
    assert reasons[("dad/broken.jpg", None)] == "unreadable image"
    assert reasons[("dad/wall.png", None)] == "no face"
    assert reasons[("lady/cut.mp4", None)].startswith("unreadable video")
    frames = sorted(s["frame"] for s in index["samples"] if s["source"] == "lady/clip.mp4")
    assert frames == [0, 3, 6]
    assert [i["name"] for i in index["identities"]] == ["dad", "lady"]
    assert summary.samples == 4 and summary.identities == 2


# --------------------------------------------------------------------------------------------------
# Reading the prepared set


def test_pair_dataset_is_deterministic_and_mixes_same_and_different(tmp_path):
    from tests.test_train_step import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path, identities=3, per_identity=(3, 2, 1), resolution=32)
    index = data.load_index(root)
    assert index.num_identities == 3 and len(index.samples) == 6
    dataset = data.PairDataset(index, resolution=16, same_identity_prob=0.5, seed=7)
    item = dataset[(0, 0)]
    assert item["target"].shape == (3, 16, 16) and item["source112"].shape == (3, 112, 112)
    assert item["target"].min() >= -1 and item["target"].max() <= 1
    assert np.allclose(item["target_landmarks"].numpy(), (np.asarray(index.samples[0].landmarks) + 0.5) / 2 - 0.5)
    again = data.PairDataset(index, resolution=16, same_identity_prob=0.5, seed=7)[(0, 0)]
    assert all(np.array_equal(item[k].numpy(), again[k].numpy()) for k in item)
    sames = [bool(dataset[(e, i)]["same"]) for e in range(20) for i in range(6)]
    assert 0.3 < np.mean(sames) < 0.7
    for e in range(10):
        for i in range(6):
            item = dataset[(e, i)]
            target_identity = index.samples[i].identity
            assert (int(item["identity"]) == target_identity) == bool(item["same"])
    always = data.PairDataset(index, resolution=32, same_identity_prob=1.0, seed=0)
    assert all(bool(always[(0, i)]["same"]) for i in range(6))
    with pytest.raises(InputError):
        data.PairDataset(index, resolution=64, same_identity_prob=0.5, seed=0)


def test_batch_sampler_shards_ranks_and_resumes_mid_epoch():
    make = lambda rank, start=0: data.ResumableBatchSampler(10, batch_size=2, rank=rank, world_size=2, seed=3,  # noqa: E731
                                                             start_step=start)
    it0, it1 = iter(make(0)), iter(make(1))
    first = [next(it0) for _ in range(6)]  # two epochs and a bit: 2 batches per epoch per rank
    other = [next(it1) for _ in range(6)]
    assert all(len(b) == 2 for b in first)
    epoch0 = {i for b in first[:2] for _, i in b} | {i for b in other[:2] for _, i in b}
    assert len(epoch0) == 8  # the two ranks see disjoint parts of the epoch
    assert [e for b in first for e, _ in b] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    resumed = iter(make(0, start=3))
    assert [next(resumed) for _ in range(3)] == first[3:]
    with pytest.raises(InputError):
        data.ResumableBatchSampler(2, batch_size=2, rank=0, world_size=2, seed=0)


def test_records_survive_a_line_cut_short_by_a_crash(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "ann").mkdir(parents=True)
    (src / "ann" / "broken.jpg").write_bytes(b"no image")
    out = tmp_path / "out"
    out.mkdir()
    (out / prepare.RECORDS_NAME).write_text('{"source": "ann/other.jpg", "ident')  # a crash mid-write
    monkeypatch.setattr(prepare, "_init_worker", lambda config: prepare._WORKER.update(config=config, detector=None))
    with pytest.raises(InputError):  # the only source is unreadable: no usable face, but the record is kept
        data.load_index(prepare.prepare_data(config=_config(src, out)).index_path.parent)
    records = prepare.read_records(out / prepare.RECORDS_NAME)
    assert [(r["source"], r["skipped"]) for r in records] == [("ann/broken.jpg", "unreadable image")]
