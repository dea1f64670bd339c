"""RecordLog: appends land whole or not at all, a torn tail is told from damage in the middle, damage never
drops the valid records after it, and what is missing is named exactly and can be put back."""
from __future__ import annotations

import errno
import os
import threading

import pytest

from storage import recordlog as recordlog_module
from storage.errors import DAMAGED, FAILED, IO_ERROR, MISSING, NO_SPACE, READ_ONLY, StorageError
from tests.faultyfs import SECTOR, FaultyFS
from storage.frames import DATA_START, FRAME_OVERHEAD, encode_batch
from storage.recordlog import RecordLog

DIR = "/data/log"


def body(index: int) -> bytes:
    return f"record-{index:05d}-".encode() * (1 + index % 5)


def filled(fs: FaultyFS, count: int, *, batch: int = 3, segment_bytes: int = 1024) -> RecordLog:
    log = RecordLog.open(DIR, fs=fs, segment_bytes=segment_bytes)
    index = log.next_index
    while index <= count:
        size = min(batch, count - index + 1)
        assert log.append([body(i) for i in range(index, index + size)]) == index
        index += size
    return log


def reopen(fs: FaultyFS, segment_bytes: int = 1024) -> RecordLog:
    return RecordLog.open(DIR, fs=fs, segment_bytes=segment_bytes)


def contents(log: RecordLog) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    index = log.first_index
    while index < log.next_index:
        try:
            for i, data in log.iterate(index):
                found[i] = data
                index = i + 1
        except StorageError as exc:
            assert exc.kind == MISSING
            index += 1
    return found


def assert_heals(log: RecordLog, fs: FaultyFS, missing: range, count: int, segment_bytes: int) -> None:
    """Repair `missing` with the original records; a reopened log is clean and holds records 1..count."""
    log.repair({i: body(i) for i in missing})
    log.close()
    healed = reopen(fs, segment_bytes)
    assert healed.report.clean and contents(healed) == {i: body(i) for i in range(1, count + 1)}


def segment_files(fs: FaultyFS) -> list[str]:
    return sorted(p for p in fs.files() if p.endswith(".seg"))


def frame_spans(fs: FaultyFS) -> list[tuple[str, int, int, int]]:
    """(segment path, start, end, index) of every record frame on disk, in order."""
    spans = []
    log = reopen(fs)
    for segment in log._segments:
        data = fs.files()[segment.path]
        for index in segment.present():
            start = segment.offset_of(index)
            length = int.from_bytes(data[start + 5:start + 9], "big")
            spans.append((segment.path, start, start + FRAME_OVERHEAD + length, index))
    log.close()
    return spans


# --- appending and reading -------------------------------------------------------------------------
def test_records_round_trip_across_segments_and_a_reopen():
    fs = FaultyFS()
    log = filled(fs, 100)
    assert (log.first_index, log.last_index, log.next_index) == (1, 100, 101)
    assert len(segment_files(fs)) > 3, "small segments roll"
    assert log.get(42) == body(42) and [i for i, _ in log.iterate(98)] == [98, 99, 100]
    log.close()
    again = reopen(fs)
    assert again.report.clean and again.report.torn_bytes == 0
    assert contents(again) == {i: body(i) for i in range(1, 101)}
    assert again.append([b"next"], index=101) == 101


def test_append_checks_the_index_and_an_empty_append_changes_nothing():
    log = filled(FaultyFS(), 5)
    with pytest.raises(ValueError, match="next index is 6"):
        log.append([b"x"], index=9)
    assert log.append([]) == 6 and log.next_index == 6


def test_a_new_log_can_start_at_any_index_and_segments_are_named_by_their_first_index():
    fs = FaultyFS()
    log = RecordLog.open(DIR, fs=fs, start_index=1000)
    assert log.append([b"a", b"b"]) == 1000
    assert segment_files(fs) == [f"{DIR}/{1000:020d}.seg"]


def test_a_record_larger_than_a_read_chunk_reads_back(monkeypatch):
    monkeypatch.setattr(recordlog_module, "READ_CHUNK", 100)
    log = RecordLog.open(DIR, fs=FaultyFS())
    log.append([b"a" * 30, b"b" * 500, b"c" * 30, b"d" * 30])
    assert [len(data) for _, data in log.iterate()] == [30, 500, 30, 30]


def test_readers_in_other_threads_see_only_whole_appended_records():
    log = RecordLog.open(DIR, fs=FaultyFS(), segment_bytes=4096)
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            seen = list(log.iterate())
            if [i for i, _ in seen] != list(range(1, len(seen) + 1)) or any(d != body(i) for i, d in seen):
                problems.append(f"inconsistent read of {len(seen)} records")

    thread = threading.Thread(target=reader)
    thread.start()
    for index in range(1, 301, 3):
        log.append([body(index), body(index + 1), body(index + 2)])
    stop.set()
    thread.join()
    assert not problems and log.next_index == 301


# --- torn tails ------------------------------------------------------------------------------------
def test_every_cut_inside_the_last_batch_is_a_torn_tail_that_drops_the_whole_batch():
    base = FaultyFS()
    log = filled(base, 30, segment_bytes=1 << 20)
    log.append([body(31), body(32), body(33)])  # the batch a crash tears
    log.close()
    path = segment_files(base)[0]
    whole = base.files()[path]
    batch_start = len(whole) - len(encode_batch(31, [body(31), body(32), body(33)], b"\0" * 8))
    for cut in range(batch_start + 1, len(whole)):
        fs = FaultyFS()
        fs.makedirs(DIR)
        for name, data in base.files().items():
            fs.put(name, data)
        fs.put(path, whole[:cut])
        again = reopen(fs)
        report = again.report
        assert report.clean, (cut, report.summary())
        assert report.torn_bytes == cut - batch_start and report.torn_path == path
        assert again.next_index == 31 and contents(again) == {i: body(i) for i in range(1, 31)}
        assert set(report.torn_indexes) <= {31, 32, 33}
        assert len(fs.files()[path]) == batch_start, "the torn bytes are cut from the file"
        again.append([b"again"])
        again.close()
        assert reopen(fs).report.clean and reopen(fs).get(31) == b"again"


def test_a_tail_zero_filled_from_a_sector_boundary_is_torn_too():
    fs = FaultyFS()
    log = filled(fs, 12, segment_bytes=1 << 20)
    log.append([body(i) * 20 for i in range(13, 16)])
    log.close()
    path = segment_files(fs)[0]
    data = bytearray(fs.files()[path])
    start = ((len(data) - 900) // SECTOR + 1) * SECTOR
    data[start:] = bytes(len(data) - start)
    fs.put(path, bytes(data))
    again = reopen(fs)
    assert again.report.clean and again.report.torn_bytes > 0 and again.next_index == 13


# --- damage in the middle ----------------------------------------------------------------------------
def test_a_flipped_byte_anywhere_in_a_record_loses_exactly_that_record_and_says_so():
    base = FaultyFS()
    filled(base, 24, batch=2, segment_bytes=700).close()
    spans = frame_spans(base)
    last_index = spans[-1][3]
    checked = 0
    for path, start, end, index in spans:
        for offset in range(start, end):
            fs = FaultyFS()
            fs.makedirs(DIR)
            for name, data in base.files().items():
                fs.put(name, data)
            fs.damage(path, offset)
            log = reopen(fs, 700)
            report = log.report
            assert not report.clean, (index, offset)
            got = contents(log)
            assert got == {i: body(i) for i in range(1, 25) if i != index}, (index, offset, report.summary())
            if index == last_index:  # the newest record's damage cannot be told from a torn write of it
                assert report.tail_damaged and log.last_index == last_index - 1
                with pytest.raises(StorageError) as refused:
                    log.append([b"x"])
                assert refused.value.kind == DAMAGED
            else:
                assert report.missing == (range(index, index + 1),) and not report.tail_damaged
                assert report.damaged and all(d.path == path and d.start <= offset < d.end for d in report.damaged)
            checked += 1
    assert checked == sum(end - start for _, start, end, _ in spans)


def test_damage_is_kept_as_evidence_until_repaired_and_repair_puts_the_records_back():
    fs = FaultyFS()
    filled(fs, 40, segment_bytes=600).close()
    spans = frame_spans(fs)
    for path, start, _, _index in (spans[5], spans[6], spans[20]):
        fs.damage(path, start + FRAME_OVERHEAD + 1)
    first_open = reopen(fs, 600)
    assert first_open.report.missing == (range(6, 8), range(21, 22))
    first_open.close()
    log = reopen(fs, 600)
    assert log.report.missing == (range(6, 8), range(21, 22)), "a reopen must not forget the damage"
    with pytest.raises(ValueError, match="not missing"):
        log.repair({5: b"x"})
    log.repair({6: body(6), 21: body(21)})
    assert log.missing == (range(7, 8),)
    log.repair({7: body(7)})
    assert log.missing == () and not log.damage
    assert contents(log) == {i: body(i) for i in range(1, 41)}
    log.append([body(41)])
    log.close()
    healed = reopen(fs, 600)
    assert healed.report.clean and contents(healed) == {i: body(i) for i in range(1, 42)}


def test_a_damaged_record_header_does_not_let_a_frame_hidden_in_a_body_through():
    fs = FaultyFS()
    log = RecordLog.open(DIR, fs=fs)
    log.append([body(1)])
    forged = encode_batch(3, [b"forged"], os.urandom(8))  # what an attacker could put in an order's text
    log.append([b"prefix" + forged + b"suffix", body(3)])
    log.close()
    spans = frame_spans(fs)
    fs.damage(spans[1][0], spans[1][1])  # the magic of record 2: the scanner has to search for the next frame
    again = reopen(fs)
    assert again.report.missing == (range(2, 3),)
    assert contents(again) == {1: body(1), 3: body(3)}


def test_lost_segment_files_are_reported_as_exact_missing_ranges():
    fs = FaultyFS()
    filled(fs, 60, segment_bytes=600).close()
    files = segment_files(fs)
    firsts = [int(os.path.basename(p)[:20]) for p in files]
    middle = len(files) // 2
    fs.unlink(files[middle])
    fs.unlink(files[0])
    log = reopen(fs, 600)
    assert log.report.missing == (range(1, firsts[1]), range(firsts[middle], firsts[middle + 1]))
    log.repair({i: body(i) for i in range(1, firsts[1])})
    assert_heals(log, fs, range(firsts[middle], firsts[middle + 1]), 60, 600)


def test_a_lost_newest_segment_is_a_damaged_tail_not_a_shorter_log():
    fs = FaultyFS()
    filled(fs, 60, segment_bytes=600).close()
    newest = segment_files(fs)[-1]
    newest_first = int(os.path.basename(newest)[:20])
    fs.unlink(newest)
    log = reopen(fs, 600)
    assert log.report.tail_damaged and any(d.path == newest for d in log.report.damaged)
    assert log.last_index == newest_first - 1
    with pytest.raises(StorageError):
        log.append([b"x"])
    log.truncate_after(newest_first - 1)  # the caller accepts the loss and will append what peers send
    log.append([body(i) for i in range(newest_first, 61)])
    log.close()
    assert reopen(fs, 600).report.clean and contents(reopen(fs, 600)) == {i: body(i) for i in range(1, 61)}


def test_truncate_after_rewrites_the_tail_so_the_rest_reads_as_complete_batches():
    fs = FaultyFS()
    log = filled(fs, 20, batch=5, segment_bytes=1 << 20)
    log.truncate_after(12)  # mid-batch: record 12 did not end a batch
    assert log.next_index == 13
    log.close()
    again = reopen(fs)
    assert again.report.clean and again.report.torn_bytes == 0 and contents(again) == {
        i: body(i) for i in range(1, 13)}


def test_a_damaged_manifest_is_reported_and_rebuilt():
    fs = FaultyFS()
    filled(fs, 10).close()
    manifest = sorted(p for p in fs.files() if "manifest" in p)[-1]
    fs.damage(manifest, 12)
    log = reopen(fs)
    assert any("manifest" in note for note in log.report.notes) and log.report.clean
    assert contents(log) == {i: body(i) for i in range(1, 11)}


def test_one_damaged_header_copy_is_noted_and_the_records_stay():
    fs = FaultyFS()
    filled(fs, 10, segment_bytes=1 << 20).close()
    fs.damage(segment_files(fs)[0], 3)
    log = reopen(fs)
    assert log.report.clean and any("header copies" in note for note in log.report.notes)
    assert contents(log) == {i: body(i) for i in range(1, 11)}


# --- disk errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, code, expected", [
    ("write", errno.EIO, IO_ERROR), ("fdatasync", errno.EIO, IO_ERROR), ("write", errno.ENOSPC, NO_SPACE),
    ("fdatasync", errno.ENOSPC, NO_SPACE), ("write", errno.EROFS, READ_ONLY)])
def test_a_failed_append_leaves_nothing_and_the_next_one_succeeds(kind, code, expected):
    fs = FaultyFS()
    log = filled(fs, 9, segment_bytes=1 << 20)
    size = len(fs.files()[segment_files(fs)[0]])
    fs.fail(kind, code)
    with pytest.raises(StorageError) as caught:
        log.append([b"lost-1", b"lost-2"])
    assert caught.value.kind == expected and caught.value.errno == code and not caught.value.outcome_unknown
    assert "nothing of them was kept" in str(caught.value)
    assert len(fs.files()[segment_files(fs)[0]]) == size and log.next_index == 10
    assert log.append([b"kept"]) == 10
    for image in (fs.after_crash(mode="lose"), fs.after_crash(mode="keep")):
        again = reopen(image)
        assert again.report.clean and contents(again) == {**{i: body(i) for i in range(1, 10)}, 10: b"kept"}


def test_a_short_write_then_a_full_disk_is_undone_and_space_coming_back_is_enough():
    fs = FaultyFS()
    log = filled(fs, 6, segment_bytes=1 << 20)
    fs.set_capacity(fs.used_bytes() + 40)
    for _ in range(3):
        with pytest.raises(StorageError) as caught:
            log.append([b"x" * 100, b"y" * 100])
        assert caught.value.kind == NO_SPACE
    assert log.next_index == 7 and contents(log) == {i: body(i) for i in range(1, 7)}
    fs.set_capacity(None)
    assert log.append([b"x" * 100, b"y" * 100]) == 7
    log.close()
    assert contents(reopen(fs)) == {**{i: body(i) for i in range(1, 7)}, 7: b"x" * 100, 8: b"y" * 100}


def test_when_the_undo_fails_too_the_log_refuses_appends_and_says_the_outcome_is_unknown():
    fs = FaultyFS()
    log = filled(fs, 3)
    fs.fail("fdatasync", errno.EIO)
    fs.fail("truncate", errno.EIO)
    with pytest.raises(StorageError) as caught:
        log.append([b"maybe"])
    assert caught.value.outcome_unknown and caught.value.kind == IO_ERROR and "reopen" in str(caught.value)
    with pytest.raises(StorageError) as refused:
        log.append([b"later"])
    assert refused.value.kind == FAILED
    log.close()
    again = reopen(fs)
    assert again.report.clean and again.next_index in (4, 5)


def test_a_failed_segment_roll_leaves_no_file_and_is_retried():
    fs = FaultyFS()
    log = filled(fs, 6, segment_bytes=300)
    before = segment_files(fs)
    fs.fail("fsync_dir", errno.EIO)
    while len(segment_files(fs)) == len(before):
        try:
            log.append([b"z" * 50])
        except StorageError as exc:
            assert exc.kind == IO_ERROR
            assert segment_files(fs) == before
            break
    log.append([b"after"])
    log.close()
    again = reopen(fs, 300)
    assert again.report.clean and again.get(again.last_index) == b"after"


# --- compaction and memory ---------------------------------------------------------------------------
def test_truncate_before_deletes_whole_segments_and_the_index_shrinks_with_them():
    fs = FaultyFS()
    log = filled(fs, 3000, batch=10, segment_bytes=4096)
    full = log.stats()
    assert full["index_bytes"] == 4 * 3000
    log.truncate_before(2900)
    small = log.stats()
    assert small["segments"] < 4 and small["index_bytes"] < 4 * 400 and log.first_index == 2900
    assert all(int(os.path.basename(p)[:20]) <= 2900 for p in segment_files(fs)[:1])
    with pytest.raises(StorageError) as caught:
        log.get(2899)
    assert caught.value.kind == MISSING and "compacted" in str(caught.value)
    assert [i for i, _ in log.iterate()][0] == 2900
    log.close()
    again = reopen(fs, 4096)
    assert again.report.clean and again.first_index == 2900 and again.next_index == 3001


def test_truncate_before_past_the_end_empties_the_log_and_moves_its_start():
    fs = FaultyFS()
    log = filled(fs, 50)
    log.truncate_before(500)  # joined from a snapshot at height 499
    assert (log.first_index, log.next_index) == (500, 500) and segment_files(fs) == []
    assert log.append([b"h500"]) == 500
    log.close()
    again = reopen(fs)
    assert again.report.clean and (again.first_index, again.last_index) == (500, 500)


def test_compacting_past_a_damaged_tail_leaves_a_clean_empty_log():
    fs = FaultyFS()
    filled(fs, 20, segment_bytes=1 << 20).close()
    spans = frame_spans(fs)
    fs.damage(spans[-1][0], spans[-1][2] - 2)
    log = reopen(fs)
    assert log.tail_damaged
    log.truncate_before(100)  # the node joins from a snapshot at 99 instead
    assert not log.tail_damaged and not log.damage and log.append([b"h100"]) == 100
    log.close()
    assert reopen(fs).report.clean


def test_a_missing_record_stops_iteration_with_a_clear_error():
    fs = FaultyFS()
    filled(fs, 10, segment_bytes=1 << 20).close()
    spans = frame_spans(fs)
    fs.damage(spans[4][0], spans[4][2] - 1)
    log = reopen(fs)
    with pytest.raises(StorageError) as caught:
        list(log.iterate())
    assert caught.value.kind == MISSING and "record 5" in str(caught.value)
    assert [i for i, _ in log.iterate(6)] == list(range(6, 11))


def test_intact_reads_every_intact_record_around_the_gaps_and_only_those():
    fs = FaultyFS()
    filled(fs, 40, segment_bytes=600).close()
    spans = frame_spans(fs)
    files = segment_files(fs)
    for _, start, _, index in spans:
        if index in (1, 9, 10, 25):
            fs.damage(next(p for p, s, _, i in spans if i == index), start + FRAME_OVERHEAD + 1)
    fs.unlink(files[len(files) // 2])       # a whole segment of the middle lost too
    log = reopen(fs, 600)
    lost = {i for r in log.missing for i in r}
    assert {1, 9, 10, 25} <= lost and len(lost) > 4, log.report.summary()
    assert list(log.intact()) == [(i, body(i)) for i in range(1, 41) if i not in lost]
    assert list(log.intact(9, 27)) == [(i, body(i)) for i in range(9, 27) if i not in lost]
    assert list(log.intact(2, 3)) == [(2, body(2))] and list(log.intact(9, 11)) == []
    assert list(log.intact(41)) == [] and list(log.intact(0, 1)) == []
    with pytest.raises(StorageError):       # what iterate does at the first gap, which intact steps over
        list(log.iterate())


def test_bytes_damaged_after_open_are_caught_on_read():
    fs = FaultyFS()
    log = filled(fs, 10, segment_bytes=1 << 20)
    spans = frame_spans(fs)
    fs.damage(spans[2][0], spans[2][2] - 1)
    with pytest.raises(StorageError) as caught:
        log.get(3)
    assert caught.value.kind == DAMAGED and spans[2][0] in str(caught.value)


def test_a_segment_whose_header_is_unreadable_is_reported_whole():
    fs = FaultyFS()
    filled(fs, 40, segment_bytes=600).close()
    files = segment_files(fs)
    target = files[1]
    data = bytearray(fs.files()[target])
    data[0:DATA_START] = os.urandom(DATA_START)
    fs.put(target, bytes(data))
    log = reopen(fs, 600)
    first, following = (int(os.path.basename(p)[:20]) for p in files[1:3])
    assert log.report.missing == (range(first, following),)
    assert any(d.path == target and "header" in d.reason for d in log.report.damaged)
    assert_heals(log, fs, range(first, following), 40, 600)


def test_a_segment_the_disk_cannot_read_is_damage_to_recover_not_a_failed_start():
    fs = FaultyFS()
    filled(fs, 40, segment_bytes=600).close()
    files = segment_files(fs)
    fs.fail("read", errno.EIO, path=files[1])
    log = reopen(fs, 600)
    first, following = (int(os.path.basename(p)[:20]) for p in files[1:3])
    assert log.report.missing == (range(first, following),)
    assert any(d.path == files[1] and "Input/output error" in d.reason for d in log.report.damaged)
    assert contents(log) == {i: body(i) for i in range(1, 41) if not first <= i < following}
    assert_heals(log, fs, range(first, following), 40, 600)  # rewritten to a new file, off the bad sectors


# --- appends without fdatasync (a follower's refetchable blocks) --------------------------------------
def test_unsynced_appends_are_lost_only_from_the_end_and_a_sync_or_a_segment_roll_makes_them_durable():
    outcomes = set()
    for seed in range(120):
        fs = FaultyFS()
        log = filled(fs, 10, segment_bytes=600)
        first_unsynced = log.next_index
        for index in range(first_unsynced, first_unsynced + 12):      # rolls past at least one segment
            log.append([body(index)], sync=False)
        rolled_past = [s.first for s in log._segments][-1]
        for index in range(log.next_index, log.next_index + 3):
            log.append([body(index)], sync=False)
        top = log.next_index - 1
        after = fs.after_crash(seed, hostile=seed % 2 == 1)
        again = RecordLog.open(DIR, fs=after, segment_bytes=600)
        kept = contents(again)
        # everything before the newest segment is durable (synced at the roll); only its records may go
        assert all(kept.get(i) == body(i) for i in range(1, rolled_past)), seed
        assert set(kept) <= set(range(1, top + 1))
        if again.report.clean:
            assert sorted(kept) == list(range(1, again.next_index))     # a prefix: never a hole
        outcomes.add("all" if len(kept) == top else "cut")
        log.sync()
        synced = RecordLog.open(DIR, fs=fs.after_crash(seed, hostile=True), segment_bytes=600)
        assert contents(synced) == {i: body(i) for i in range(1, top + 1)}
    assert outcomes == {"all", "cut"}


def test_sync_counts_only_real_fdatasyncs_and_close_syncs_what_is_left():
    fs = FaultyFS()
    log = filled(fs, 3, batch=1, segment_bytes=1 << 20)
    assert log.syncs == 3
    log.append([body(4)], sync=False)
    log.append([body(5)], sync=False)
    assert log.syncs == 3
    log.sync()
    log.sync()
    assert log.syncs == 4
    log.append([body(6)], sync=False)
    log.close()
    assert contents(RecordLog.open(DIR, fs=fs.after_crash(0, mode="lose"), segment_bytes=1 << 20)) == \
        {i: body(i) for i in range(1, 7)}


def test_a_failed_sync_is_reported_keeps_the_log_usable_and_the_next_sync_makes_the_records_durable():
    fs = FaultyFS()
    log = filled(fs, 3, batch=1, segment_bytes=1 << 20)
    for index in (4, 5):
        log.append([body(index)], sync=False)
    fs.fail("fdatasync", errno.EIO)
    with pytest.raises(StorageError) as caught:
        log.sync()
    assert caught.value.kind == IO_ERROR
    log.sync()                      # the failed one did not count the records as synced
    again = reopen(fs.after_crash(3, mode="lose"))
    assert again.report.clean and contents(again) == {i: body(i) for i in range(1, 6)}
    assert log.append([body(6)]) == 6
