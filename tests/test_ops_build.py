"""The lazy kernel build: cache key, atomic publish under concurrency, build logs, and the policy.

This module also owns the session's one compiled build (``kernel_cache``), which the other kernel test
modules import: two subprocesses build ``bias_act`` into a fresh cache at the same time (the
concurrency test) while this process builds ``upfirdn2d``; then this process loads ``bias_act`` from
the cache the subprocesses published.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from styleface_cli.errors import ConfigError, KernelBuildError
from styleface_cli.ops import ENV_VAR, KERNEL_POLICIES, bias_act, bias_act_ref, resolve_policy, upfirdn2d, upfirdn2d_ref
from styleface_cli.ops import build

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class KernelCache:
    root: Path  # what $STYLEFACE_CACHE points at
    kernels: Path  # root / "kernels": the published builds
    concurrent: list[dict]  # the two subprocesses' BuiltKernel records for bias_act
    loaded: dict[str, build.BuiltKernel]  # this process's loads, by kernel name


_SESSION: dict[str, KernelCache] = {}

_BUILD_IN_SUBPROCESS = """
import json, sys
from styleface_cli.ops.build import build_kernel
built, module = build_kernel(sys.argv[1], "cpu", cache_dir=sys.argv[2])
assert callable(module.bias_act)
print(json.dumps(built.as_dict()))
"""


def _session_build(tmp_path_factory) -> KernelCache:
    # Memoised by hand: the other modules import the fixture, and pytest would run it once per module.
    if "cache" in _SESSION:
        return _SESSION["cache"]
    root = tmp_path_factory.mktemp("styleface-cache")
    kernels = root / "kernels"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    racers = [
        subprocess.Popen([sys.executable, "-c", _BUILD_IN_SUBPROCESS, "bias_act", str(kernels)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        for _ in range(2)
    ]
    loaded = {"upfirdn2d": build.build_kernel("upfirdn2d", "cpu", cache_dir=kernels)[0]}
    concurrent = []
    for racer in racers:
        out, err = racer.communicate(timeout=600)
        assert racer.returncode == 0, f"concurrent build failed:\n{err}"
        concurrent.append(json.loads(out.strip().splitlines()[-1]))
    loaded["bias_act"] = build.build_kernel("bias_act", "cpu", cache_dir=kernels)[0]
    _SESSION["cache"] = KernelCache(root, kernels, concurrent, loaded)
    return _SESSION["cache"]


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory) -> KernelCache:
    """The session's compiled CPU kernels, in a fresh cache folder (built once per session)."""
    return _session_build(tmp_path_factory)


@pytest.fixture
def compiled(kernel_cache, monkeypatch) -> KernelCache:
    """Point the default cache ($STYLEFACE_CACHE) at the session's build for this test."""
    monkeypatch.setenv(build.CACHE_ENV_VAR, str(kernel_cache.root))
    return kernel_cache


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty $STYLEFACE_CACHE; returns its kernels/ folder (not created)."""
    monkeypatch.setenv(build.CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels"


def broken_sources(tmp_path: Path, *kernels: str) -> Path:
    """A copy of the kernel sources where each ``<kernel>.cpp`` named starts with a syntax error."""
    target = tmp_path / "broken-src"
    shutil.copytree(build.KERNEL_SOURCE_DIR, target)
    for kernel in kernels:
        source = target / f"{kernel}.cpp"
        source.write_text("this is not C++ (deliberately broken) ;\n" + source.read_text())
    return target


# --- the session build and concurrency ---------------------------------------------------------


def test_two_processes_building_at_once_publish_one_build(kernel_cache):
    first, second = kernel_cache.concurrent
    assert first["key"] == second["key"]
    assert first["path"] == second["path"]
    published = [p for p in kernel_cache.kernels.iterdir() if p.name.startswith("bias_act-cpu-")]
    assert [p.name for p in published] == [Path(first["path"]).name]
    assert not [p for p in kernel_cache.kernels.iterdir() if p.name.startswith(".tmp-")], "a private build leaked"
    assert (published[0] / "build.json").is_file() and (published[0] / "build.log").is_file()
    assert Path(first["library"]).is_file()
    assert first["compiled"] or second["compiled"]  # at least one of them really built it


def test_a_published_build_is_loaded_not_rebuilt(kernel_cache):
    assert kernel_cache.loaded["bias_act"].compiled is False  # the racers published it
    assert kernel_cache.loaded["upfirdn2d"].compiled is True
    manifest = json.loads((kernel_cache.loaded["upfirdn2d"].path / "build.json").read_text())
    assert manifest["torch"] == torch.__version__ and manifest["device_kind"] == "cpu"
    assert "build succeeded" in (kernel_cache.loaded["upfirdn2d"].path / "build.log").read_text()


def test_compiled_ops_use_the_cpu_build(compiled):
    x = torch.randn(2, 3, 4, 4)
    b = torch.randn(3)
    torch.testing.assert_close(bias_act(x, b, act="lrelu", impl="compiled"), bias_act_ref(x, b, act="lrelu"))
    assert build.plugin_for("bias_act", "cpu", "compiled").__file__.startswith(str(compiled.kernels))


# --- cache key ---------------------------------------------------------------------------------


def test_cache_key_depends_on_source_bytes_and_device_kind(tmp_path):
    files = build.source_files("bias_act", "cpu")
    key = build.cache_key(files, "cpu")
    assert key == build.cache_key(files, "cpu")
    assert key != build.cache_key(files, "cuda-sm80")
    copy = tmp_path / "src"
    shutil.copytree(build.KERNEL_SOURCE_DIR, copy)
    assert build.cache_key(build.source_files("bias_act", "cpu", copy), "cpu") == key  # content, not path
    (copy / "common.h").write_text((copy / "common.h").read_text() + "\n// changed\n")
    assert build.cache_key(build.source_files("bias_act", "cpu", copy), "cpu") != key


def test_cuda_builds_include_the_cu_file_and_cpu_builds_do_not():
    assert [p.suffix for p in build.source_files("upfirdn2d", "cpu")] == [".h", ".h", ".cpp"]
    assert [p.name for p in build.source_files("upfirdn2d", "cuda-sm80")][-1] == "upfirdn2d.cu"


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(build.CACHE_ENV_VAR, str(tmp_path))
    assert build.default_cache_dir() == tmp_path / "kernels"
    monkeypatch.delenv(build.CACHE_ENV_VAR)
    assert build.default_cache_dir() == Path.home() / ".cache" / "styleface" / "kernels"


def test_missing_sources_are_a_kernel_build_error(tmp_path):
    with pytest.raises(KernelBuildError, match="not found"):
        build.build_kernel("bias_act", "cpu", source_dir=tmp_path, cache_dir=tmp_path / "cache")


# --- policy ------------------------------------------------------------------------------------


def test_resolve_policy_precedence(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert KERNEL_POLICIES == ("auto", "compiled", "ref")
    assert resolve_policy(None) == "auto"
    monkeypatch.setenv(ENV_VAR, "ref")
    assert resolve_policy(None) == "ref"  # env var over the default
    assert resolve_policy("compiled") == "compiled"  # command line over env var
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ConfigError, match=ENV_VAR):
        resolve_policy(None)
    assert resolve_policy("auto") == "auto"  # a valid CLI value wins over a bad env var
    with pytest.raises(ConfigError, match="--kernels"):
        resolve_policy("cuda")


def test_importing_the_ops_compiles_nothing(tmp_path):
    code = (
        "import sys, styleface_cli.ops, styleface_cli.ops.build;"
        "assert 'torch.utils.cpp_extension' not in sys.modules, 'cpp_extension imported at import time'"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), STYLEFACE_CACHE=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
    assert not (tmp_path / "cache").exists()


def test_policy_ref_never_builds(fresh_cache, monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("policy 'ref' compiled a kernel")

    monkeypatch.setattr(build, "_compile", no_compiling)
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(bias_act(x, act="relu", impl="ref"), bias_act_ref(x, act="relu"))
    torch.testing.assert_close(upfirdn2d(x, None, up=2, impl="ref"), upfirdn2d_ref(x, None, up=2))
    assert build.plugin_for("upfirdn2d", "cpu", "ref") is None
    assert not fresh_cache.exists()


def test_policy_compiled_with_a_broken_source_names_the_build_log(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.setattr(build, "KERNEL_SOURCE_DIR", broken_sources(tmp_path, "bias_act"))
    x = torch.randn(2, 3)
    for _ in range(2):  # the failure is remembered: the second call raises the same error without a rebuild
        with pytest.raises(KernelBuildError) as error:
            bias_act(x, act="relu", impl="compiled")
        log_path = Path(str(error.value).rsplit("build log ", 1)[1])
        assert log_path.is_file() and log_path.parent == fresh_cache
        assert "deliberately broken" in log_path.read_text()  # the compiler's complaint is in the log
    assert not [p for p in fresh_cache.iterdir() if p.is_dir()]  # nothing published, no private folder left


def test_policy_auto_with_a_broken_source_warns_once_and_falls_back(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.setattr(build, "KERNEL_SOURCE_DIR", broken_sources(tmp_path, "upfirdn2d"))
    x = torch.randn(1, 2, 5, 5)
    f = torch.tensor([1.0, 2.0, 1.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [upfirdn2d(x, f, up=2, padding=1, impl="auto") for _ in range(3)]
    fallbacks = [w for w in caught if issubclass(w.category, build.KernelFallbackWarning)]
    assert len(fallbacks) == 1
    assert "build log" in str(fallbacks[0].message)
    for result in results:
        torch.testing.assert_close(result, upfirdn2d_ref(x, f, up=2, padding=1))


def test_plugin_for_rejects_unknown_policies():
    with pytest.raises(ValueError, match="impl"):
        build.plugin_for("bias_act", "cpu", "cuda")
