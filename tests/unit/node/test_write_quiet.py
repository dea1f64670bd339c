"""An address answered 429 to a write is quiet for half its Retry-After (node/api/write_quiet.py): the front gate
holds and refuses its writes meanwhile, before their bodies are read; the table is bounded."""
from __future__ import annotations

from node.api.write_quiet import WriteQuiet


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_quiet_for_half_its_retry_after_and_others_are_not() -> None:
    clock = Clock()
    quiet = WriteQuiet(clock)
    assert quiet.wait("10.0.0.1") is None and not quiet
    quiet.refused("10.0.0.1", 2.0)
    assert quiet.wait("10.0.0.1") == (1.0, 2.0) and quiet.wait("10.0.0.2") is None
    clock.now += 0.75
    assert quiet.wait("10.0.0.1") == (0.25, 1.25)
    clock.now += 0.25
    assert quiet.wait("10.0.0.1") is None and len(quiet) == 0, "past half its Retry-After it may ask again"


def test_the_table_forgets_the_least_recently_refused_first() -> None:
    quiet = WriteQuiet(Clock(), max_addresses=3)
    for n in range(5):
        quiet.refused(f"10.0.0.{n}", 1.0)
    quiet.refused("10.0.0.2", 1.0)
    assert len(quiet) == 3 and quiet.wait("10.0.0.0") is None and quiet.wait("10.0.0.1") is None
    assert quiet.wait("10.0.0.2") is not None and quiet.wait("10.0.0.4") is not None
