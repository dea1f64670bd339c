"""/ready says a stall: a quorum of validators is heard, yet no block has become final here for a while
(a flood that outran the chain once kept /ready at 200 for minutes). Even an idle chain makes a block
a second, so silence this long is never normal."""
from __future__ import annotations

from types import SimpleNamespace

from exchange.chain.config import CoreConfig
from config import Settings
from node.chain_feed import ChainBridge

STALL_AFTER = Settings().finality_stall_after


class FakeSync:
    def network_height(self, now: float) -> None:
        return None


class FakeCore:
    height = 7
    role = "validator"
    state = SimpleNamespace(validators=SimpleNamespace(epoch=1))
    halted = None

    def __init__(self) -> None:
        self.sync = FakeSync()

    def quorum_present(self, now: float) -> bool:
        return True


def _bridge() -> tuple[ChainBridge, list[float]]:
    clock = [1_000.0]
    chain = SimpleNamespace(core=FakeCore(), fatal=None, halted=None, recovering=None, storage_problem=None,
                            finality_observers=[], block_listeners=[], config=CoreConfig(),
                            founding_status="founded", halt_watch=None)
    bridge = ChainBridge(chain, None, SimpleNamespace(observe_finality=lambda *a: None),  # type: ignore[arg-type]
                         STALL_AFTER, clock=lambda: clock[0])
    return bridge, clock


def test_ready_turns_stalled_when_no_block_is_final_for_a_while_with_a_quorum_heard():
    bridge, clock = _bridge()
    assert bridge.ready()[0]
    clock[0] += STALL_AFTER + 1
    ready, reason = bridge.ready()
    assert not ready and reason.startswith("finality stalled"), reason
    for listener in bridge.chain.block_listeners:      # a block becomes final: ready again
        listener(object(), object())  # type: ignore[arg-type]  # the readiness listener reads neither
    assert bridge.ready()[0]
