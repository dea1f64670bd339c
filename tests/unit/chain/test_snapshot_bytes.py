"""The snapshot's bytes and digest built around its pieces: msgpack's bin header written by hand must be what
msgpack writes at every length where its format changes, the chain's snapshot in pieces must join to the value
packed whole, and the digest streamed over the data must be `codec.digest` of it."""
from __future__ import annotations

import msgpack
import pytest

from exchange.chain.types.codec import bin_header, digest, pack
from exchange.chain.state.snapshot_maker import SNAPSHOT_DOMAIN, snapshot_digest
from exchange.chain.state.chainstate import ChainState
from tests.sim.chain_sim import ChainSimulation, Scenario, SimApp

SIZES = [0, 1, 255, 256, 257, 65_535, 65_536, 65_537, 1 << 20, (1 << 24) + 3]


@pytest.mark.parametrize("size", SIZES)
def test_the_bin_header_is_msgpacks(size):
    data = bytes(size)
    assert bin_header(size) + data == msgpack.packb(data, use_bin_type=True)


@pytest.mark.parametrize("size", SIZES)
def test_the_streamed_digest_is_the_packed_digest(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert snapshot_digest(data) == digest(SNAPSHOT_DOMAIN, data)


class BigApp(SimApp):
    """An application whose snapshot is pieces past msgpack's 16-bit bin length."""

    def snapshot(self) -> bytes:
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> list[bytes]:
        return [b"a" * 70_000, b"", b"b" * 10]


@pytest.mark.parametrize("app", [SimApp(), BigApp()])
def test_the_chain_snapshot_in_pieces_joins_to_the_value_packed_whole(app):
    sim = ChainSimulation(3, Scenario(validators=4, snapshot_interval=10, snapshot_lag=2))
    state = ChainState(sim.genesis, app)
    state.last_seen = {b"k" * 32: (3, 4)}
    whole = pack([state.height, state.time_ms, state.last_block_id, state.validators.wire(),
                  state.prev_validators.wire(), list(state.recent_signers),
                  sorted([k, h, t] for k, (h, t) in state.last_seen.items()), state.seats.wire(), app.snapshot()])
    assert b"".join(state.snapshot_parts()) == whole == state.snapshot()
