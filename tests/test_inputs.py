"""Input expansion and output naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from styleface_cli.errors import ConfigError, InputError, OutputError
from styleface_cli.inputs import expand_inputs, plan_jobs


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_searched_recursively_for_media(tmp_path):
    a = touch(tmp_path / "in" / "a.mp4")
    b = touch(tmp_path / "in" / "sub" / "b.JPG")
    touch(tmp_path / "in" / "notes.txt")
    touch(tmp_path / "in" / ".hidden.mp4")
    assert [p for p, _ in expand_inputs([str(tmp_path / "in")])] == [a, b]


def test_globs_and_duplicates(tmp_path):
    a = touch(tmp_path / "a.mp4")
    b = touch(tmp_path / "b.mov")
    found = [p for p, _ in expand_inputs([str(tmp_path / "*.m*"), str(a)])]
    assert found == [a, b]
    with pytest.raises(InputError, match="no media files match"):
        expand_inputs([str(tmp_path / "*.webm")])


def test_default_output_names(tmp_path):
    a = touch(tmp_path / "in" / "a.mp4")
    touch(tmp_path / "in" / "sub" / "a.mp4")
    jobs = plan_jobs([str(a)], output=None, output_dir=None)
    assert jobs[0].output == tmp_path / "in" / "a_anonymized.mp4"
    jobs = plan_jobs([str(tmp_path / "in")], output=None, output_dir=tmp_path / "out")
    assert [j.output for j in jobs] == [tmp_path / "out" / "a_anonymized.mp4", tmp_path / "out" / "sub" / "a_anonymized.mp4"]


def test_output_option_conflicts(tmp_path):
    a, b = touch(tmp_path / "a.mp4"), touch(tmp_path / "b.mp4")
    with pytest.raises(ConfigError, match="--output-dir"):
        plan_jobs([str(a), str(b)], output=tmp_path / "o.mp4", output_dir=None)
    with pytest.raises(ConfigError, match="not both"):
        plan_jobs([str(a)], output=tmp_path / "o.mp4", output_dir=tmp_path)
    touch(tmp_path / "x" / "a.mp4")
    with pytest.raises(OutputError, match="same output"):
        plan_jobs([str(a), str(tmp_path / "x" / "a.mp4")], output=None, output_dir=tmp_path / "out")


def test_a_missing_plain_file_is_kept_for_a_clear_error_later(tmp_path):
    assert expand_inputs([str(tmp_path / "missing.mp4")]) == [(tmp_path / "missing.mp4", None)]
