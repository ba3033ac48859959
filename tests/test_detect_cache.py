"""The rewritten detector model cached on disk (``prepared_model``; on a CPU CenterFace's stem and head,
``face/strips.py``) and onnxruntime's optimised copy of it (``_optimized_session``): same detections, no
rewrite on the second load, and a fallback to rewriting when the cache is unwritable or damaged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from styleface_cli.config import DetectConfig
from styleface_cli.errors import WeightsError
from styleface_cli.face import detect
from styleface_cli.face.detect import centerface_model_path, create_detector, model_cache_dir
from tests.test_detect import insightface_photo


def _faces(detector) -> list[tuple]:
    return [(tuple(np.round(d.box, 3)), round(d.score, 5)) for d in detector.detect(insightface_photo())]


def _no_rewrite(path):
    raise AssertionError("the model was rewritten although a cached copy exists")


def _rewritten() -> list:
    """The rewritten models in the cache (not onnxruntime's optimised copies of them)."""
    return sorted(p for p in model_cache_dir().glob("centerface-*.onnx") if "-ort" not in p.name)


def _optimized() -> list:
    return sorted(model_cache_dir().glob("centerface-*-ort*.onnx"))


def test_cached_model_detects_the_same_faces_and_is_not_rewritten_again(tmp_path, monkeypatch):
    monkeypatch.setenv(detect.CACHE_ENV_VAR, str(tmp_path))
    first = create_detector(DetectConfig())
    assert [p.name.split("-")[1] for p in _rewritten()] == ["head", "stem"]
    assert len(_optimized()) == 2 and model_cache_dir() == tmp_path / "detectors"
    assert not list(model_cache_dir().glob(".*partial*"))  # written atomically: no temporary left
    monkeypatch.setattr(detect, "centerface_graph", _no_rewrite)
    loaded = []
    session = detect._session
    monkeypatch.setattr(detect, "_session", lambda model, threads, optimized=False, save_optimized=None:
                        loaded.append((model, optimized, save_optimized)) or session(model, threads, optimized, save_optimized))
    second = create_detector(DetectConfig())
    assert sorted(model for model, _, _ in loaded) == [str(p) for p in _optimized()]  # the optimised copies only
    assert all(optimized and save is None for _, optimized, save in loaded)
    faces = _faces(second)
    assert len(faces) >= 5  # the group photo's faces
    assert faces == _faces(first)


def test_unwritable_cache_falls_back_to_rewriting_every_run(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv(detect.CACHE_ENV_VAR, str(blocker))
    reference = _faces(create_detector(DetectConfig()))
    assert len(reference) >= 5
    assert blocker.read_text() == "a file where the cache folder would go"
    model = detect.prepared_model(centerface_model_path(), "centerface", lambda p: detect.centerface_graph(p)[0])
    assert isinstance(model, bytes)  # in memory, not a cached path


@pytest.mark.parametrize("damaged", ["optimised copies", "both"])
def test_damaged_cache_files_are_made_again(tmp_path, monkeypatch, damaged):
    monkeypatch.setenv(detect.CACHE_ENV_VAR, str(tmp_path))
    reference = _faces(create_detector(DetectConfig()))
    files = _optimized() + (_rewritten() if damaged == "both" else [])
    for path in files:
        path.write_bytes(b"not an onnx file")
    assert _faces(create_detector(DetectConfig())) == reference
    assert all(p.stat().st_size > 10_000 for p in files)  # each replaced by a good copy


def test_a_different_model_file_gets_its_own_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(detect.CACHE_ENV_VAR, str(tmp_path / "cache"))
    copy = tmp_path / "centerface_copy.onnx"
    shutil.copyfile(centerface_model_path(), copy)
    create_detector(DetectConfig(model_path=copy))
    with open(copy, "ab") as handle:  # trailing bytes: still the same graph, but a different file
        handle.write(b"\0")
    with pytest.raises(WeightsError):  # not a loadable model any more: the content changed, so no cache hit
        create_detector(DetectConfig(model_path=copy))
    assert len(_rewritten()) == 2  # the first file's stem and head, nothing for the second
