"""Founding with a pinned validator set: the genesis holds every listed validator's proven key."""
from __future__ import annotations

import asyncio
import os

from exchange.crypto import node_id_for
from exchange.chain.seats.founding import Founding
from exchange.chain.types.validators import ValidatorSet


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


async def test_strangers_claiming_the_highest_heights_cannot_keep_a_new_node_from_the_genesis():
    """Issue 25: holders used to be asked in order of the height they claim, three a round, so three fresh keys
    claiming 2^62 and never answering kept a new node from ever fetching the genesis. Now a claimed height
    decides nothing: holders are asked many at once in random order, those that failed lately last."""
    from types import SimpleNamespace

    from exchange.chain.seats.founding_loop import GENESIS_SERVICE, FoundingLoop
    from exchange.chain.types.genesis import Genesis

    genesis = Genesis("test-net", 1_000, os.urandom(32), (os.urandom(32),))
    honest = node_id_for(os.urandom(32))
    liars = [node_id_for(os.urandom(32)) for _ in range(40)]
    asked: list[str] = []

    class Network:
        async def call(self, service: str, payload: object, timeout: float, peer: str | None = None) -> object:
            assert service == GENESIS_SERVICE and peer is not None
            asked.append(peer)
            if peer != honest:
                await asyncio.sleep(0.01)
                raise TimeoutError("no answer")
            return genesis.wire()

        def penalize(self, node_id: str, points: float, reason: str) -> None:
            raise AssertionError(f"{node_id} penalised: {reason}")

    booted: list[Genesis] = []
    host = SimpleNamespace(genesis=None, founding_status="", trust="", conflicts={}, boot=booted.append)
    store = SimpleNamespace(save_genesis=lambda g: None)
    founding = Founding(node_id_for(os.urandom(32)), os.urandom(32), found_after=0, started=0)
    for liar in liars:
        founding.observe(liar, os.urandom(32), genesis.chain_id, (1 << 62) - 1, 1.0)
    founding.observe(honest, os.urandom(32), genesis.chain_id, 5, 1.0)
    rules = SimpleNamespace(problem_with=lambda g: None, max_validators=7)   # markets are not what this is about
    loop = FoundingLoop(host, rules, founding, Network(), store, os.urandom(32), lambda: 1.0)  # type: ignore[arg-type]
    for _ in range(4):
        await loop._adopt(founding.decide(1.1))
        if booted:
            break
    assert booted == [genesis] and len(asked) <= 41, len(asked)
