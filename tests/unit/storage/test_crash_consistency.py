"""Crash at every write/fsync/rename point of the record log, the snapshot store and the document store (with
failed writes, a full disk, a reopen and a compaction along the way) and check what every possible disk image
holds: every acknowledged record there, nothing that was reported failed, no index twice, no gap, and a crash
never reported as damage."""
from __future__ import annotations

import errno

from storage.atomic import AtomicDocument
from storage.errors import StorageError
from tests.faultyfs import FaultyFS
from storage.group_commit import GroupCommit
from storage.recordlog import RecordLog
from storage.snapshots import SnapshotStore
from tests.unit.storage.crashpoints import CrashStats, History, enumerate_crashes

LOG_DIR = "/data/log"
SEGMENT = 420  # a few records per segment, so rolls (new file, directory fsync, manifest) happen often


def payload(n: int) -> bytes:
    return f"order-{n:04d}|".encode() * (1 + n % 4)


def log_workload(fs: FaultyFS, history: History) -> None:
    """Twenty rounds of 1-3 record appends; an fsync failure, a full disk, an undo that fails (then a
    reopen), a plain reopen, and a compaction on the way."""
    log = RecordLog.open(LOG_DIR, fs=fs, segment_bytes=SEGMENT)
    made = 0
    for round_no in range(20):
        batch = [payload(made + k) for k in range(1 + round_no % 3)]
        made += len(batch)
        if round_no == 4:
            fs.fail("fdatasync", errno.EIO)
        if round_no == 7:
            fs.set_capacity(fs.used_bytes() + 30)
        if round_no == 12:
            fs.fail("fdatasync", errno.EIO)
            fs.fail("truncate", errno.EIO)
        history.attempted.append(batch)
        try:
            first = log.append(batch)
        except StorageError as exc:
            (history.unknown if exc.outcome_unknown else history.failed).append(batch)
            if exc.outcome_unknown:
                log.close()
                log = RecordLog.open(LOG_DIR, fs=fs, segment_bytes=SEGMENT)
            fs.set_capacity(None)
            continue
        history.acked.append((first, batch))
        if round_no == 9:
            log.close()
            log = RecordLog.open(LOG_DIR, fs=fs, segment_bytes=SEGMENT)
        if round_no == 15:
            history.attempted.append(("compact", first))
            log.truncate_before(first)
            history.acked.append(("compact", first))
    log.close()


def check_log(disk: FaultyFS, history: History, stats: CrashStats) -> None:
    disk.set_capacity(None)  # the crash may have come while the disk was full; the check appends afterwards
    log = RecordLog.open(LOG_DIR, fs=disk, segment_bytes=SEGMENT)
    report = log.report
    assert report.clean, report.summary()
    if report.torn_bytes:
        stats.note("torn tail cut")
    present = list(log.iterate())
    indexes = [index for index, _ in present]
    assert indexes == list(range(log.first_index, log.next_index)), "indexes strictly increasing, no gap"
    bodies = dict(present)
    compacted_to = max([b[1] for b in history.acked if b[0] == "compact"], default=1)
    tried_to = max([b[1] for b in history.attempted if b[0] == "compact"], default=1)
    assert compacted_to <= log.first_index <= tried_to
    batches = [b for b in history.attempted if b[0] != "compact"]
    order = {body: n for n, batch in enumerate(batches) for body in batch}
    for first, batch in (a for a in history.acked if a[0] != "compact"):
        for offset, body in enumerate(batch):
            if first + offset >= log.first_index:
                assert bodies.get(first + offset) == body, f"acknowledged record {first + offset} lost"
    failed = {body for batch in history.failed for body in batch}
    assert not failed & set(bodies.values()), "a record reported failed came back"
    assert set(bodies.values()) <= set(order), "a record nobody wrote"
    positions = [order[body] for _, body in present]
    assert positions == sorted(positions) and len(set(bodies.values())) == len(bodies), "order kept, no repeat"
    for batch in batches:
        there = sum(body in bodies.values() for body in batch)
        if there and batch[0] in bodies.values() and min(order[b] for b in batch) >= min(positions):
            assert there == len(batch), "a batch landed in part"
    log.append([b"after-recovery"])
    log.close()
    again = RecordLog.open(LOG_DIR, fs=disk, segment_bytes=SEGMENT)
    assert again.report.clean and again.get(again.last_index) == b"after-recovery"


def test_record_log_survives_a_crash_at_every_point():
    stats = enumerate_crashes(log_workload, check_log, seeds=range(6))
    run = stats.clean_run
    assert len(run.failed) == 2 and len(run.unknown) == 1 and any(a[0] == "compact" for a in run.acked)
    assert stats.runs == (stats.points + 1) * 8 and stats.crashes == stats.points * 8
    assert stats.findings.get("torn tail cut", 0) > stats.points // 4


def test_record_log_keeps_acknowledged_records_through_hostile_page_writeback():
    """Reordered writeback can leave holes in an unsynced batch: that may be reported as damage (a false alarm
    the operator sees), but an acknowledged record is never lost and no record is made up."""
    def check(disk: FaultyFS, history: History, stats: CrashStats) -> None:
        log = RecordLog.open(LOG_DIR, fs=disk, segment_bytes=SEGMENT)
        if not log.report.clean:
            stats.note("damage reported")
        compacted_to = max([b[1] for b in history.acked if b[0] == "compact"], default=1)
        for first, batch in (a for a in history.acked if a[0] != "compact"):
            for offset, body in enumerate(batch):
                if first + offset >= max(compacted_to, log.first_index):
                    assert log.get(first + offset) == body

    stats = enumerate_crashes(log_workload, check, seeds=range(8), hostile=True)
    assert stats.runs == (stats.points + 1) * 10 and stats.findings.get("damage reported", 0) > 0


async def group_commit_workload(fs: FaultyFS, history: History) -> None:
    """Concurrent submitters through GroupCommit, with a full disk in the middle that then frees up."""
    import asyncio

    log = RecordLog.open(LOG_DIR, fs=fs, segment_bytes=SEGMENT)
    commit: GroupCommit[bytes, int] = GroupCommit(log.write_batch)

    async def submitter(n: int) -> None:
        body = payload(n)
        history.attempted.append([body])
        try:
            (index,) = await commit.submit([body])
        except StorageError:
            history.failed.append([body])
            return
        history.acked.append((index, [body]))

    for wave in range(6):  # each wave's submitters share a batch or two
        if wave == 3:
            fs.set_capacity(fs.used_bytes() + 10)
        await asyncio.gather(*(submitter(wave * 3 + k) for k in range(3)))
        fs.set_capacity(None)
    await commit.close()
    log.close()


def test_group_commit_over_the_log_survives_a_crash_at_every_point():
    stats = enumerate_crashes(group_commit_workload, check_log, seeds=range(4))
    assert len(stats.clean_run.failed) == 3 and len(stats.clean_run.acked) == 15
    assert stats.crashes == stats.points * 6 and stats.findings["torn tail cut"] > 0


SNAP_DIR = "/data/snapshots"


def snapshot_workload(fs: FaultyFS, history: History) -> None:
    store = SnapshotStore(SNAP_DIR, keep=2, fs=fs)
    for height in range(1, 7):
        if height == 4:
            fs.fail("rename", errno.EIO)
        state = payload(height) * 30
        history.attempted.append((height, state))
        try:
            store.save(height, [state[:40], state[40:]])
        except StorageError:
            history.failed.append((height, state))
            continue
        history.acked.append((height, state))


def check_snapshots(disk: FaultyFS, history: History, stats: CrashStats) -> None:
    snapshot = SnapshotStore(SNAP_DIR, keep=2, fs=disk).load_newest()
    newest_acked = history.acked[-1][0] if history.acked else 0
    if snapshot is None:
        assert newest_acked == 0, "an acknowledged snapshot vanished"
        return
    assert not snapshot.skipped, f"a crash left a damaged snapshot: {snapshot.skipped}"
    assert snapshot.height >= newest_acked, "went back behind an acknowledged snapshot"
    assert (snapshot.height, snapshot.data) in history.attempted
    assert (snapshot.height, snapshot.data) not in history.failed
    if snapshot.height > newest_acked:
        stats.note("in-flight snapshot survived")


def test_snapshots_survive_a_crash_at_every_point():
    stats = enumerate_crashes(snapshot_workload, check_snapshots, seeds=range(6))
    assert stats.points > 30 and stats.findings.get("in-flight snapshot survived", 0) > 0


def document_workload(fs: FaultyFS, history: History) -> None:
    document = AtomicDocument("/data", "vote", fs=fs)
    for n in range(6):
        if n == 3:
            fs.fail("fsync", errno.ENOSPC)
        value = f"height={n} round=0 step=precommit".encode()
        history.attempted.append(value)
        try:
            document.store(value)
        except StorageError:
            history.failed.append(value)
            continue
        history.acked.append(value)


def check_document(disk: FaultyFS, history: History, stats: CrashStats) -> None:
    loaded = AtomicDocument("/data", "vote", fs=disk).load()  # a crash is never reported as damage
    if loaded is None:
        assert not history.acked
        return
    assert loaded.value in history.attempted and loaded.value not in history.failed
    assert history.attempted.index(loaded.value) >= (history.attempted.index(history.acked[-1])
                                                     if history.acked else 0), "went back behind an acked value"


def test_documents_survive_a_crash_at_every_point():
    stats = enumerate_crashes(document_workload, check_document, seeds=range(6))
    assert stats.points > 30
