"""Storage you can trust: the durable building blocks the chain store is made of. Imports nothing of ours.

What each piece promises, and how they fit:

- `DataDirLock.acquire(data_dir)` first of all: one process per DATA_DIR (a second one gets `DataDirInUse`,
  kind `locked`, naming the holder's PID); the directory is made 0700.
- `RecordLog.open(dir)` is an append-only log of byte records at consecutive indexes (block heights, or an
  outbox's sequence). `append(bodies, index=None)` is durable on return and all-or-nothing; `iterate(a, b)` /
  `get(i)` read; `truncate_before(i)` compacts behind a snapshot (whole segment files go); `.report`
  (`RecoveryReport`) says what opening found: a torn tail it cut (never acknowledged), damage it kept as
  evidence, the exact `missing` indexes, and `tail_damaged` when the newest records are damaged rather than
  torn. Recover: fetch the missing records from peers, verify them, `repair({index: body})`; for a damaged
  tail, `truncate_after(last_index)` then append what peers supply.
  `stats()` gives segments, bytes, records and the index's memory (4 bytes per live record) for /status.
- `GroupCommit(log.write_batch)`: `await commit.submit(bodies)` from many coroutines shares one write and
  one fdatasync per batch in a worker thread and returns the indexes. A failed batch raises `StorageError` to
  all of its callers and leaves nothing behind; the next batch tries again. Check record sizes before
  submitting: an item the writer refuses fails its whole batch.
- `SnapshotStore(dir, keep=K)`: `save(height, bytes or chunks)`, `load_newest()` (a damaged newest falls back
  to the previous one with a warning naming the file), `stats()`.
- `AtomicDocument(dir, name)`: tiny values replaced whole (genesis, a validator's last signed
  height/round/step and locks, the log's manifest). `store(value)` is durable on return; `load()` returns the
  newest version and raises kind `damaged` rather than guess when it is damaged.
- `StorageError.kind`: `no_space` (answer 507), `io_error` / `read_only` / `failed` (503 with `retry_after`),
  `damaged` / `missing` (history to recover from peers), `locked`, `closed`, `permission`, `not_found`.
  `outcome_unknown` marks a write that could not be undone and may reappear after a restart.
- `FileSystem` is the seam every store takes as `fs=`: `OsFileSystem` by default, `FaultyFS` in tests (tests/faultyfs.py)
  (failures, short writes, a full disk, and crashes that leave what a real crash could).

Record log layout (one directory): `<first index>.seg` segment files (`storage.frames` has the byte format),
`manifest.<generation>` documents. Nothing here is thread-safe for two writers; readers may run alongside
the one writer.
"""
from storage.atomic import AtomicDocument, Document
from storage.errors import StorageError
from storage.fs import FileSystem, OsFileSystem
from storage.group_commit import GroupCommit
from storage.lock import DataDirInUse, DataDirLock
from storage.recordlog import RecordLog
from storage.recovery import Damage, RecoveryReport
from storage.snapshots import Snapshot, SnapshotStore

__all__ = ["AtomicDocument", "Damage", "DataDirInUse", "DataDirLock", "Document",
           "FileSystem", "GroupCommit", "OsFileSystem", "RecordLog", "RecoveryReport", "Snapshot",
           "SnapshotStore", "StorageError"]
