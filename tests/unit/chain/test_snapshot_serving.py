"""Serving our snapshot to joining peers: one check and read of the snapshot file per snapshot, not per
request (a request for offset 0 costs ~50 bytes and made a node read and checksum its whole snapshot); kept in
memory up to a byte cap, a bigger one read a chunk at a time; a joiner waits out a peer's `rate_limited`."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from exchange.chain.types.blocks import Block, Commit, Header
from exchange.chain.ports import CannotServe, Throttled
from exchange.chain.sync.statesync import SNAPSHOT_CHUNK, SnapshotServer, fetch_snapshot
from exchange.chain.store.block_store import ChainStore


def _block(height: int) -> tuple[Block, Commit]:
    items: list = []
    header = Header("c" * 64, height, 1_000 + height, os.urandom(32), bytes(32), bytes(32), bytes(32),
                    Block.txs_hash(items), None)
    block = Block(header, items)
    return block, Commit(height, 0, block.id, ((0, bytes(64)),))


class CountingStore(ChainStore):
    """The real store, counting how often the snapshot is checked and how many of its bytes are read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checks = 0
        self.bytes_read = 0

    def checked_snapshot_at(self, height: int) -> int | None:
        self.checks += 1
        return super().checked_snapshot_at(height)

    def read_snapshot(self, height: int, offset: int, size: int) -> bytes:
        data = super().read_snapshot(height, offset, size)
        self.bytes_read += len(data)
        return data


def _store(tmp_path: Path, heights: int) -> CountingStore:
    store = CountingStore(tmp_path)
    for height in range(1, heights + 1):
        store.append_block(*_block(height))
    return store


def _fetch_all(server: SnapshotServer) -> bytes:
    first = server.serve({"offset": 0})
    parts, size = [first["chunk"]], len(first["chunk"])
    while size < first["total"]:
        more = server.serve({"offset": size})
        assert more["height"] == first["height"]
        parts.append(more["chunk"])
        size += len(more["chunk"])
    return b"".join(parts)


def test_a_snapshot_is_read_once_however_often_it_is_asked_for(tmp_path):
    store = _store(tmp_path, 6)
    data = os.urandom(3 * SNAPSHOT_CHUNK + 100)
    store.save_snapshot(5, data)
    server = SnapshotServer(store, cache_bytes=64 << 20)
    for _ in range(50):
        first = server.serve({"offset": 0})
        assert first["height"] == 5 and first["total"] == len(data) and len(first["proof"]) == 4
    assert _fetch_all(server) == data
    assert store.checks == 1 and store.bytes_read == len(data)
    store.append_block(*_block(7))
    newer = os.urandom(1000)
    store.save_snapshot(6, newer)                   # a newer snapshot: read once more
    assert _fetch_all(server) == newer and store.checks == 2


def test_a_snapshot_bigger_than_the_cache_is_read_a_chunk_at_a_time(tmp_path):
    store = _store(tmp_path, 6)
    data = os.urandom(3 * SNAPSHOT_CHUNK + 100)
    store.save_snapshot(5, data)
    server = SnapshotServer(store, cache_bytes=SNAPSHOT_CHUNK)
    for _ in range(20):
        assert len(server.serve({"offset": 0})["chunk"]) == SNAPSHOT_CHUNK
    assert store.checks == 1 and store.bytes_read == 20 * SNAPSHOT_CHUNK, "never the whole of it per request"
    assert _fetch_all(server) == data
    assert server.serve({"offset": len(data) + 5})["chunk"] == b""


def test_no_proof_yet_is_said_and_a_damaged_newest_snapshot_falls_back(tmp_path):
    store = _store(tmp_path, 5)
    store.save_snapshot(5, b"not certified yet")        # the block after it is not stored yet
    server = SnapshotServer(store)
    with pytest.raises(CannotServe):
        server.serve({"offset": 0})
    store.append_block(*_block(6))
    assert server.serve({"offset": 0})["chunk"] == b"not certified yet" and store.checks == 1
    store.save_snapshot(3, b"older")
    store.append_block(*_block(7))
    store.save_snapshot(6, b"newest")
    path = store.snapshots.path_for(6)
    raw = bytearray(Path(path).read_bytes())
    raw[20] ^= 0xFF                                     # a flipped bit in the newest one's body
    Path(path).write_bytes(bytes(raw))
    first = server.serve({"offset": 0})
    assert (first["height"], first["chunk"]) == (5, b"not certified yet")
    assert store.checks == 3            # the damaged newest, then the one before it
    server.serve({"offset": 0})
    assert store.checks == 3, "the damaged newest one is not checked again for every request"


class _ThrottlingNet:
    """A peer that says wait twice before each chunk."""

    def __init__(self, server: SnapshotServer) -> None:
        self.server = server
        self.calls = 0

    async def call(self, service: str, payload: dict, timeout: float, peer: str | None = None) -> dict:
        self.calls += 1
        if self.calls % 3:
            raise Throttled("rate_limited: wait", 0.01)
        return dict(self.server.serve(payload))


def test_a_joiner_waits_out_the_peers_budget_and_gets_every_chunk(tmp_path):
    store = _store(tmp_path, 6)
    data = os.urandom(2 * SNAPSHOT_CHUNK + 7)
    store.save_snapshot(5, data)
    net = _ThrottlingNet(SnapshotServer(store))
    fetched = asyncio.run(fetch_snapshot(net, "p" * 40))      # type: ignore[arg-type]
    assert fetched.data == data and fetched.height == 5 and net.calls == 9


def test_on_a_lagged_network_the_newest_snapshot_is_served_once_its_certificate_is_stored(tmp_path):
    store = _store(tmp_path, 4)
    store.save_snapshot(2, b"older")
    store.save_snapshot(4, b"newest")
    certified: dict[int, list] = {2: [2 + 1, b"id", b"app", [], b"seats"]}
    server = SnapshotServer(store, lag=lambda: 1, preimage=certified.get)
    first = server.serve({"offset": 0})                 # 4 needs block 6 and its preimage: not yet
    assert (first["height"], first["chunk"]) == (2, b"older") and len(first["proof"]) == 5
    store.append_block(*_block(5))
    store.append_block(*_block(6))
    assert server.serve({"offset": 0})["height"] == 2     # block 6 is stored, the preimage of 5 is not known yet
    certified[4] = [4 + 1, b"id", b"app", [], b"seats"]
    newest = server.serve({"offset": 0})
    assert (newest["height"], newest["chunk"]) == (4, b"newest")
    certifying = store.get(6)
    assert certifying is not None and newest["proof"][4][1] == certifying[0].wire()     # the block after 4 + lag
