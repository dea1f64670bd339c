"""Founding with a pinned validator set: the genesis holds every listed validator's proven key."""
from __future__ import annotations

import os

from exchange.crypto import node_id_for
from exchange.chain.founding import Founding
from exchange.chain.validators import ValidatorSet


def _keys(n: int) -> list[bytes]:
    keys = [os.urandom(32) for _ in range(n)]
    return sorted(keys, key=node_id_for)     # the first has the smallest node id: it founds


def test_a_hello_without_a_key_does_not_erase_the_key_a_link_proved():
    # A second connection from an already-linked validator (a simultaneous or duplicate dial) is judged on
    # its hello, which carries no key; the founder must still found with the key the open link proved.
    keys = _keys(3)
    ids = [node_id_for(k) for k in keys]
    founding = Founding(ids[0], keys[0], found_after=0, started=0, pinned=tuple(ids))
    for node_id, key in zip(ids[1:], keys[1:]):
        founding.observe(node_id, key, None, 0, 1.0)       # link open: key proven
        founding.observe(node_id, b"", None, 0, 1.1)       # a duplicate link's hello
    decision = founding.decide(1.2)
    assert decision.action == "found"
    assert sorted(decision.validators) == sorted(keys)
    ValidatorSet(0, decision.validators)                  # what booting the genesis does


def test_the_founder_waits_for_a_validator_known_only_from_its_hello():
    keys = _keys(2)
    ids = [node_id_for(k) for k in keys]
    founding = Founding(ids[0], keys[0], found_after=0, started=0, pinned=tuple(ids))
    founding.observe(ids[1], b"", None, 0, 1.0)
    assert founding.decide(1.1).action == "wait"
    founding.observe(ids[1], keys[1], None, 0, 1.2)
    assert founding.decide(1.3).action == "found"
