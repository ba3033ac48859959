"""The malloc arena limit set at start-up (``tools.limit_malloc_arenas``)."""

from __future__ import annotations

import pytest


def test_malloc_arena_limit_is_set_on_glibc_unless_the_environment_says(monkeypatch):
    import platform

    from styleface_cli.tools import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the user's setting stands
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert limit_malloc_arenas() is True
