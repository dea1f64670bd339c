"""The commitment's writes pause the cycle collector and leave it as they found it."""
from __future__ import annotations

import gc

import pytest

from exchange.commitments.gcpause import cycle_collection_paused


@cycle_collection_paused
def _state_inside() -> bool:
    return gc.isenabled()


@cycle_collection_paused
def _fails() -> None:
    raise RuntimeError("a write that fails")


def test_paused_inside_and_enabled_again_after() -> None:
    assert gc.isenabled()
    assert _state_inside() is False
    assert gc.isenabled()


def test_enabled_again_when_the_write_raises() -> None:
    with pytest.raises(RuntimeError):
        _fails()
    assert gc.isenabled()


def test_a_caller_that_paused_it_keeps_it_paused() -> None:
    gc.disable()
    try:
        assert _state_inside() is False
        assert not gc.isenabled()
    finally:
        gc.enable()
