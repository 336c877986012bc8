"""The engine's start-up heap freeze runs once per process (a second call would freeze later garbage)."""

from __future__ import annotations

import gc

import pytest

from algomirror.engine import gc_tuning


def test_freeze_startup_heap_freezes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc_tuning, "_frozen", False)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))

    assert gc_tuning.freeze_startup_heap() is True
    assert gc_tuning.freeze_startup_heap() is False
    assert calls == ["freeze"]
