"""Garbage-collector set-up of the engine process.

The engine is one long-running process whose start-up leaves some 200,000 long-lived objects (modules,
classes, SQLAlchemy metadata and compiled statements, the HTTP stack). CPython's full collections walk
all of them every time, and an entry fan-out over a hundred accounts allocates enough to trigger one or
two: measured on the 2-core machine, one full collection in the middle of a fan-out took 0.24–0.68 s,
several times the whole run's network floor (docs/benchmarks.md). :func:`freeze_startup_heap` moves
what start-up built into the collector's permanent generation, so later collections only look at
objects made since.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> bool:
    """Collect once, then freeze every object alive now (``gc.freeze``): they are never examined by the
    collector again (nor freed if they become cyclic garbage, so call it once, after start-up, not
    per request). Returns False when it had already run in this process."""
    global _frozen
    if _frozen:
        return False
    gc.collect()
    gc.freeze()
    _frozen = True
    return True


__all__ = ["freeze_startup_heap"]
