"""Writing the commitment's maps with Python's cycle collector paused.

The maps' nodes form trees (a branch refers to its two children, nothing refers back), so they are freed by
reference counting alone and the cycle collector can never find garbage among them. Yet each node is an
object the collector tracks, and a block's or a restore's writes allocate enough of them to start collections
of every generation, each scanning the whole heap, maps included, for nothing. Paused while the maps are
written, the collector runs at most once after, over the same objects.
"""
from __future__ import annotations

import gc
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def cycle_collection_paused(write: Callable[P, R]) -> Callable[P, R]:
    """`write` run with the cycle collector paused (and left as it was found: a caller that paused it keeps it
    paused). Only for code that builds no reference cycles of its own and never waits."""
    @wraps(write)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        if not gc.isenabled():
            return write(*args, **kwargs)
        gc.disable()
        try:
            return write(*args, **kwargs)
        finally:
            gc.enable()
    return paused
