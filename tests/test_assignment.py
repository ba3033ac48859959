"""The tracker's assignment solver against its reference twin, ``scipy.optimize.linear_sum_assignment``,
and the anonymize path importing neither scipy nor onnx (their memory is what the solver and the model
cache save)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from styleface_cli.face.track import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]


def _shapes():
    rng = np.random.default_rng(11)
    for _ in range(400):
        yield tuple(int(n) for n in rng.integers(1, 9, size=2))


@pytest.mark.parametrize("kind", ["uniform", "integers", "iou_like"])
def test_assignment_matches_scipy_on_random_rectangular_matrices(kind):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng({"uniform": 0, "integers": 1, "iou_like": 2}[kind])
    for rows, cols in _shapes():
        if kind == "uniform":
            cost = rng.normal(0, 10, (rows, cols))
        elif kind == "integers":  # many ties: several optimal assignments
            cost = rng.integers(0, 4, (rows, cols)).astype(np.float64)
        else:  # what the tracker passes: -IoU, mostly zeros with a few overlaps
            cost = -np.where(rng.random((rows, cols)) < 0.3, rng.random((rows, cols)), 0.0)
        want_rows, want_cols = scipy_optimize.linear_sum_assignment(cost)
        got_rows, got_cols = linear_sum_assignment(cost)
        assert got_rows.dtype == np.int64 and got_cols.dtype == np.int64
        assert len(got_rows) == min(rows, cols)
        assert got_rows.tolist() == sorted(set(got_rows.tolist()))  # rows ascending, each once
        assert len(set(got_cols.tolist())) == len(got_cols)  # each column at most once
        assert cost[got_rows, got_cols].sum() == pytest.approx(cost[want_rows, want_cols].sum(), abs=1e-9)
        if kind == "uniform":  # a unique optimum: the very same pairs
            assert got_rows.tolist() == want_rows.tolist() and got_cols.tolist() == want_cols.tolist()


def test_assignment_small_cases_by_hand():
    rows, cols = linear_sum_assignment(np.array([[4.0, 1, 3], [2, 0, 5], [3, 2, 2]]))
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]  # 1 + 2 + 2
    rows, cols = linear_sum_assignment(np.array([[5.0], [1.0], [3.0]]))  # tall: one pair, the cheapest row
    assert rows.tolist() == [1] and cols.tolist() == [0]
    for shape in [(0, 0), (0, 3), (3, 0)]:
        rows, cols = linear_sum_assignment(np.zeros(shape))
        assert rows.shape == cols.shape == (0,)
    with pytest.raises(ValueError):
        linear_sum_assignment(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError):
        linear_sum_assignment(np.zeros(3))


def test_anonymize_imports_neither_scipy_nor_onnx(tmp_path):
    """Whole ``anonymize`` runs in fresh processes, then a look at what they imported: the first run
    rewrites the detector model (with ``onnx``) into the cache, the second only reads it back."""
    from tests import media

    clip = tmp_path / "clip.mp4"
    media.make_video(clip, width=96, height=64, frames=4)
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from styleface_cli.cli.app import app\n"
        f"result = CliRunner().invoke(app, ['anonymize', {str(clip)!r}, '-o', {str(tmp_path / 'out.mp4')!r}, "
        "'--overwrite', '--quiet'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'onnx'}))\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STYLEFACE_CACHE": str(cache)}
    imported = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        imported.append(out.stdout.strip().splitlines()[-1])
    assert imported == ["['onnx']", "[]"]
    assert len([p for p in (cache / "detectors").glob("centerface-*.onnx") if "-ort" not in p.name]) == 2  # stem, head
    assert (tmp_path / "out.mp4").is_file()

