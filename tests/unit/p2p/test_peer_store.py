"""Peer store: round trip, bounded and de-duplicated saves, atomic replace, corruption handling."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from p2p.peer_store import PeerStore, StoredPeer

EXAMPLE = Path(__file__).resolve().parents[3] / ".peers.json.example"


def peer(n: int, **kw) -> StoredPeer:
    fields: dict[str, Any] = dict(node_id=f"{n:040x}", host=f"10.0.0.{n % 250 + 1}", port=7000 + n, source="mdns",
                  first_seen=1000.0 + n, last_seen=2000.0 + n, last_connected=None, failures=0)
    fields.update(kw)
    return StoredPeer(**fields)


@pytest.fixture
def store(tmp_path) -> PeerStore:
    return PeerStore(tmp_path / "data" / ".peers.json")


def test_missing_file_is_empty_and_silent(store, caplog):
    with caplog.at_level(logging.DEBUG, logger="p2p.peer_store"):
        assert store.load() == []
    assert caplog.records == []


def test_round_trip(store):
    peers = [peer(1, last_connected=2001.5, failures=2), peer(2, node_id=None, host="::1", source="bootstrap"),
             peer(3, host="seed.example.org")]
    store.save(peers)
    assert store.load() == sorted(peers, key=lambda p: p.last_seen, reverse=True)
    document = orjson.loads(store.path.read_bytes())
    assert document["version"] == 1 and isinstance(document["saved_at"], float) and len(document["peers"]) == 3
    assert [p.name for p in store.path.parent.iterdir()] == [".peers.json"]  # no temp file left


def test_save_keeps_most_recent_per_address_and_bounds_count(tmp_path):
    store = PeerStore(tmp_path / ".peers.json", max_entries=5)
    old, new = peer(1, last_seen=10.0), peer(1, last_seen=99999.0, failures=7)
    store.save([old, new] + [peer(n) for n in range(2, 20)])
    loaded = store.load()
    assert len(loaded) == 5 and loaded[0] == new
    assert [p.port for p in loaded[1:]] == [7019, 7018, 7017, 7016]


def test_crash_before_rename_leaves_old_file(store, monkeypatch):
    store.save([peer(1)])
    before = store.path.read_bytes()

    def crash(src, dst):
        raise OSError(5, "simulated crash between temp write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.save([peer(2), peer(3)])
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.load() == [peer(1)]
    assert [p.name for p in store.path.parent.iterdir()] == [".peers.json"]


def test_temp_file_is_fsynced_before_rename(store, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(a, b) -> None:
        events.append("replace")
        real_replace(a, b)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.save([peer(1)])
    assert events == ["fsync", "replace", "fsync"]  # file, rename, directory


@pytest.mark.parametrize("content,why", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2]", '"peers" list'),
    (b'{"version": 1, "peers": {}}', '"peers" list'),
    (b'{"version": 2, "peers": []}', "unsupported version 2"),
])
def test_corrupt_file_moved_aside_with_warning(store, caplog, content, why):
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="p2p.peer_store"):
        assert store.load() == []
    aside = list(store.path.parent.glob(".peers.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content and not store.path.exists()
    message = caplog.records[-1].getMessage()
    assert str(store.path) in message and str(aside[0]) in message and why in message
    store.save([peer(1)])  # the next save starts a fresh file
    assert store.load() == [peer(1)]


def test_second_corruption_in_same_second_keeps_both(store):
    store.path.parent.mkdir(parents=True)
    for content in (b"one", b"two"):
        store.path.write_bytes(content)
        assert store.load() == []
    assert sorted(p.read_bytes() for p in store.path.parent.glob(".peers.json.corrupt-*")) == [b"one", b"two"]


def test_unreadable_file_moved_aside(store, caplog):
    store.path.mkdir(parents=True)  # a directory where the file should be: read fails with EISDIR
    with caplog.at_level(logging.WARNING, logger="p2p.peer_store"):
        assert store.load() == []
    assert "unreadable" in caplog.records[-1].getMessage()
    assert len(list(store.path.parent.glob(".peers.json.corrupt-*"))) == 1


def test_bad_entries_skipped_and_logged(store, caplog):
    good = {"node_id": None, "host": "127.0.0.1", "port": 7946, "last_seen": 5.0}
    bad = ["x", {"host": "127.0.0.1"}, {"host": "", "port": 1}, {"host": "h", "port": 70000},
           {"host": "h", "port": True}, {"host": "h", "port": 1, "last_seen": "yesterday"},
           {"host": "h", "port": 1, "failures": -1}, {"host": "h", "port": 1, "node_id": 5},
           {"host": "h", "port": 1, "last_seen": None}, {"host": "h", "port": 1, "last_connected": -1}]
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(orjson.dumps({"version": 1, "saved_at": 0, "peers": [good, *bad]}))
    with caplog.at_level(logging.WARNING, logger="p2p.peer_store"):
        loaded = store.load()
    assert loaded == [StoredPeer(None, "127.0.0.1", 7946, "persisted", 5.0, 5.0, None, 0)]
    assert store.path.exists()  # bad entries do not condemn the file
    assert f"skipped {len(bad)} bad entries" in caplog.records[-1].getMessage()


def test_example_file_loads():
    peers = PeerStore(EXAMPLE).load()
    assert len(peers) == 2 and {p.source for p in peers} == {"mdns", "bootstrap"}


async def test_a_manager_never_overwrites_remembered_peers_it_has_not_read(tmp_path):
    """A start that fails before discovery read .peers.json (or a stop right after start) saves nothing."""
    from config import load_settings
    from node.configs import peer_config
    from node.identity import NodeIdentity
    from p2p.peers import PeerManager

    path = tmp_path / ".peers.json"
    remembered = StoredPeer(node_id="ab" * 20, host="192.0.2.7", port=7946, source="mdns", first_seen=1.0,
                            last_seen=2.0, last_connected=2.0, failures=0)
    PeerStore(path).save([remembered])
    store = PeerStore(path)
    manager = PeerManager(peer_config(load_settings(env={}, cli={})), NodeIdentity.generate(),
                          verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for, peer_store=store)
    before = path.read_bytes()
    await manager.save()
    assert path.read_bytes() == before
    assert store.load() == [remembered]   # discovery reads it (and hands the peers to the address book)
    await manager.save()
    assert orjson.loads(path.read_bytes())["saved_at"] > orjson.loads(before)["saved_at"]
