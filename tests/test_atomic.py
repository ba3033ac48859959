"""Outputs appear whole or not at all, and never over the input."""

from __future__ import annotations

import os

import pytest

from styleface_cli.errors import OutputError
from styleface_cli.atomic import atomic_output, check_output_path


def test_success_renames_the_hidden_temporary_onto_the_output(tmp_path):
    output = tmp_path / "out.mp4"
    with atomic_output(output) as temp:
        assert temp.parent == tmp_path
        assert temp.name.startswith(".") and temp.suffix == ".mp4"
        assert not temp.exists()
        temp.write_bytes(b"data")
        assert not output.exists()
    assert output.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_an_exception_removes_the_temporary_and_keeps_the_old_output(tmp_path):
    output = tmp_path / "out.png"
    output.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(output) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert output.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "out.mkv") as temp:
            temp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_block_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="nothing was written"):
        with atomic_output(tmp_path / "out.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_two_temporaries_for_one_output_do_not_collide(tmp_path):
    with atomic_output(tmp_path / "a.mp4") as first, atomic_output(tmp_path / "a.mp4") as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.mp4"
    path.write_bytes(b"video")
    return path


def test_a_fresh_output_in_a_writable_folder_is_fine(tmp_path, input_file):
    check_output_path(input_file, tmp_path / "out.mp4", overwrite=False)


def test_the_output_may_not_be_the_input(tmp_path, input_file):
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(input_file, input_file, overwrite=True)
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(input_file, tmp_path / "." / "sub" / ".." / "in.mp4", overwrite=True)


def test_the_output_may_not_reach_the_input_through_a_symlink_or_hard_link(tmp_path, input_file):
    (tmp_path / "link.mp4").symlink_to(input_file)
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(input_file, tmp_path / "link.mp4", overwrite=True)
    os.link(input_file, tmp_path / "hard.mp4")
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(input_file, tmp_path / "hard.mp4", overwrite=True)
    (tmp_path / "folder_link").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="is the input"):
        check_output_path(input_file, tmp_path / "folder_link" / "in.mp4", overwrite=True)


def test_an_existing_output_needs_overwrite(tmp_path, input_file):
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        check_output_path(input_file, existing, overwrite=False)
    check_output_path(input_file, existing, overwrite=True)


def test_the_output_folder_must_exist_and_be_a_folder(tmp_path, input_file):
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(input_file, tmp_path / "missing" / "out.mp4", overwrite=False)
    with pytest.raises(OutputError, match="not a folder"):
        check_output_path(input_file, input_file / "out.mp4", overwrite=False)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(input_file, tmp_path / "dir.mp4", overwrite=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_the_output_folder_must_be_writable(tmp_path, input_file):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_output_path(input_file, locked / "out.mp4", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_an_unwritable_folder_is_refused_even_when_checked_as_root(tmp_path, input_file, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="not writable"):
        check_output_path(input_file, tmp_path / "out.mp4", overwrite=False)


def test_error_messages_are_one_line(tmp_path, input_file):
    with pytest.raises(OutputError) as error:
        check_output_path(input_file, input_file, overwrite=False)
    assert "\n" not in str(error.value)


def test_temporaries_carry_the_pid_and_stale_ones_are_found(tmp_path):
    import subprocess
    import sys

    from styleface_cli.atomic import is_partial, remove_stale_partials, stale_partials

    with atomic_output(tmp_path / "clip.mp4") as temp:
        assert f".{os.getpid()}-" in temp.name and is_partial(temp)
        temp.write_bytes(b"x")
        assert stale_partials(tmp_path / "clip.mp4") == []  # ours, and we are alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".clip.{dead.pid}-deadbeef.partial.mp4"
    other = tmp_path / f".clip2.{dead.pid}-deadbeef.partial.mp4"  # another output's: not ours to judge
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    assert stale_partials(tmp_path / "clip.mp4") == []  # the folder was listed once, before they existed
    assert stale_partials(tmp_path / "clip.mp4", refresh=True) == [stale]
    assert remove_stale_partials(tmp_path / "clip.mp4") == 1
    assert not stale.exists() and other.exists()


def test_append_line_adds_whole_lines(tmp_path):
    from styleface_cli.atomic import append_line

    log = tmp_path / "run.jsonl"
    append_line(log, '{"a": 1}')
    append_line(log, '{"b": "é"}\n')
    assert log.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "é"}\n'
    with pytest.raises(OutputError):
        append_line(tmp_path / "missing" / "run.jsonl", "{}")
