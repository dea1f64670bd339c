"""SnapshotStore keeps the last K snapshots and falls back past a damaged newest one, naming it; an
AtomicDocument reports a damaged newest version instead of quietly returning an older value."""
from __future__ import annotations

import errno
import logging
import os
import threading

import pytest

from storage.atomic import AtomicDocument
from storage.errors import DAMAGED, NO_SPACE, StorageError
from tests.faultyfs import FaultyFS
from storage.snapshots import SYNC_EVERY, SnapshotStore


def test_snapshots_round_trip_streamed_and_only_the_last_k_are_kept(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", keep=3)
    for height in range(1, 8):
        store.save(height * 10, [b"state-", str(height).encode() * 1000])
    assert store.heights() == [70, 60, 50]
    newest = store.load_newest()
    assert newest is not None and (newest.height, newest.data) == (70, b"state-" + b"7" * 1000)
    assert store.load(50).data == b"state-" + b"5" * 1000
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == [
        f"snapshot-{h:020d}.snap" for h in (50, 60, 70)]
    assert store.stats() == {"count": 3, "newest_height": 70,
                             "bytes": sum(p.stat().st_size for p in (tmp_path / "snaps").iterdir())}


def test_stats_do_not_fail_when_a_save_in_another_thread_prunes_a_listed_file(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path, keep=2)
    store.save(10, b"x" * 100)
    store.save(20, b"y" * 100)
    listed = store.heights()
    monkeypatch.setattr(store, "heights", lambda: listed)      # listed, then pruned before it is opened
    os.remove(store.path_for(10))
    stats = store.stats()
    assert stats["count"] == 1 and stats["newest_height"] == 20 and stats["bytes"] > 100


def test_stats_while_a_thread_saves_and_prunes(tmp_path):
    store = SnapshotStore(tmp_path, keep=1)
    store.save(1, b"z" * 1000)
    done = threading.Event()

    def saving() -> None:
        for height in range(2, 300):
            store.save(height, b"z" * 1000)
        done.set()

    worker = threading.Thread(target=saving)
    worker.start()
    while not done.is_set():
        assert store.stats()["count"] >= 0     # never raises for a file pruned under it
    worker.join()
    assert store.stats()["newest_height"] == 299


def test_a_damaged_newest_snapshot_falls_back_to_the_previous_with_a_warning_naming_it(caplog):
    fs = FaultyFS()
    store = SnapshotStore("/data/snaps", keep=2, fs=fs)
    store.save(1, b"one" * 100)
    store.save(2, b"two" * 100)
    fs.damage(store.path_for(2), 150)
    with caplog.at_level(logging.WARNING, logger="storage.snapshots"):
        loaded = store.load_newest()
    assert loaded is not None and (loaded.height, loaded.data) == (1, b"one" * 100)
    assert loaded.skipped == (store.path_for(2),)
    assert store.path_for(2) in caplog.text and "checksum" in caplog.text
    with pytest.raises(StorageError) as caught:
        store.load(2)
    assert caught.value.kind == DAMAGED


@pytest.mark.parametrize("damage", ["truncated", "renamed height", "bad magic"])
def test_every_kind_of_bad_snapshot_file_is_refused(damage):
    fs = FaultyFS()
    store = SnapshotStore("/data/snaps", fs=fs)
    store.save(5, b"x" * 50)
    raw = fs.files()[store.path_for(5)]
    if damage == "truncated":
        fs.put(store.path_for(5), raw[:-3])
    elif damage == "renamed height":
        fs.rename(store.path_for(5), store.path_for(6))
    else:
        fs.put(store.path_for(5), b"Y" + raw[1:])
    assert store.load_newest() is None


class _SyncRecordingFS(FaultyFS):
    """Records the size of the file at each fdatasync."""

    def __init__(self) -> None:
        super().__init__()
        self.synced_at: list[int] = []

    def fdatasync(self, handle):
        self.synced_at.append(self.size(handle))
        super().fdatasync(handle)


def test_a_big_snapshot_is_synced_as_it_is_written_not_only_at_the_end():
    """Synced once at the end, a big file makes the node's WAL and block fsyncs (before its votes leave) wait
    for all of its data on a journalled file system; synced every SYNC_EVERY bytes, for one piece at most."""
    fs = _SyncRecordingFS()
    store = SnapshotStore("/data/snaps", keep=2, fs=fs)
    body = os.urandom(SYNC_EVERY * 5 // 2)
    store.save(7, body)
    assert fs.synced_at == [SYNC_EVERY, 2 * SYNC_EVERY]
    assert fs.calls["fsync"] >= 1                        # the whole file, once it is all written
    assert store.load(7).data == body
    small = _SyncRecordingFS()
    SnapshotStore("/data/snaps", keep=2, fs=small).save(8, b"tiny")
    assert small.synced_at == []


def test_a_failed_snapshot_save_keeps_the_old_ones_and_leaves_no_temporary_file():
    fs = FaultyFS()
    store = SnapshotStore("/data/snaps", keep=2, fs=fs)
    store.save(1, b"one")
    fs.set_capacity(fs.used_bytes() + 10)
    with pytest.raises(StorageError) as caught:
        store.save(2, b"two" * 100)
    assert caught.value.kind == NO_SPACE
    assert list(fs.files()) == [store.path_for(1)]
    fs.set_capacity(None)
    store.save(2, b"two" * 100)
    assert store.heights() == [2, 1]


def test_a_document_is_replaced_whole_and_keeps_one_older_version():
    fs = FaultyFS()
    document = AtomicDocument("/data", "vote", fs=fs)
    assert document.load() is None
    for n in range(5):
        stored = document.store(f"v{n}".encode())
        assert stored.generation == n + 1
    loaded = document.load()
    assert loaded is not None and loaded.value == b"v4" and loaded.generation == 5
    assert sorted(fs.files()) == [document.path_for(4), document.path_for(5)]
    assert AtomicDocument("/data", "vote", fs=fs).store(b"v5").generation == 6, "generations continue"


def test_a_damaged_newest_document_is_reported_not_guessed():
    fs = FaultyFS()
    document = AtomicDocument("/data", "vote", fs=fs)
    document.store(b"height=7 round=0 locked=none")
    document.store(b"height=7 round=1 locked=B")
    fs.damage(document.path_for(2), 30)
    with pytest.raises(StorageError) as caught:
        document.load()
    assert caught.value.kind == DAMAGED and document.path_for(2) in str(caught.value)
    older = document.load(allow_previous=True)
    assert older is not None and older.value == b"height=7 round=0 locked=none"
    assert older.skipped == (document.path_for(2),)
    document.store(b"height=8 round=0 locked=none")  # a new version supersedes the damaged one
    newer = document.load()
    assert newer is not None and newer.value == b"height=8 round=0 locked=none"


def test_a_failed_document_store_keeps_the_previous_value():
    fs = FaultyFS()
    document = AtomicDocument("/data", "genesis", fs=fs)
    document.store(b"genesis-1")
    fs.fail("fsync", errno.EIO)
    with pytest.raises(StorageError):
        document.store(b"genesis-2")
    kept = document.load()
    assert kept is not None and kept.value == b"genesis-1" and len(fs.files()) == 1


def test_document_names_must_be_plain_words():
    with pytest.raises(ValueError):
        AtomicDocument("/data", "a.b")
