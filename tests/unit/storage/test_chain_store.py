"""ChainStore on FaultyFS: what it does with damage and failed writes, one case at a time (the crash and
real-process tests run them all together)."""
from __future__ import annotations

import asyncio
import errno

import pytest

from exchange.chain.store.block_store import SIGN_FROM_UNKNOWN, WAL_KEEP_BYTES, ChainStore
from storage import StorageError
from tests.faultyfs import FaultyFS
from storage.frames import DATA_START, decode_segment_header, scan
from tests.unit.storage.chain_node import DATA_DIR, ChainNode, Record

OUTBOX = f"{DATA_DIR}/chain/outbox"


def frames(fs: FaultyFS, directory: str) -> list[tuple[str, int, int]]:
    """(segment path, start, end) of every intact frame in a log directory, in order."""
    found = []
    for path, data in sorted(fs.files().items()):
        if path.startswith(directory + "/") and path.endswith(".seg"):
            header = decode_segment_header(data)
            assert header is not None
            result = scan(data, header[1], header[0], DATA_START)
            found += [(path, start, end) for start, end in zip(result.offsets, result.ends)]
    return found


def pending_outbox(count: int) -> tuple[FaultyFS, list[str]]:
    """A store whose outbox holds `count` transactions (no chain ran them), closed."""
    fs = FaultyFS()

    async def fill() -> list[str]:
        node = await ChainNode.boot(fs, Record())
        txs = [node.make_tx(n) for n in range(count)]
        await node.store.outbox_add(txs)
        await node.store.outbox_commit.close()
        node.store.close()
        return [tx.id for tx in txs]
    return fs, asyncio.run(fill())


def test_one_damaged_copy_of_each_outbox_add_loses_nothing():
    fs, ids = pending_outbox(3)
    records = frames(fs, OUTBOX)
    assert len(records) == 6
    for path, start, end in records[0::2]:          # the first copy of every add
        fs.damage(path, (start + end) // 2)
    store = ChainStore(DATA_DIR, fs=fs)
    assert sorted(tx.id for tx in store.outbox()) == sorted(ids)
    assert store.outbox_lost == 0 and store.outbox_log.first_index > 6       # rewritten past the damage
    store.close()
    again = ChainStore(DATA_DIR, fs=fs)
    assert sorted(tx.id for tx in again.outbox()) == sorted(ids)


def test_both_copies_damaged_are_counted_and_the_outbox_takes_writes_again(caplog):
    fs, ids = pending_outbox(3)
    for path, start, end in frames(fs, OUTBOX)[2:4]:       # both copies of the second add
        fs.damage(path, (start + end) // 2)
    store = ChainStore(DATA_DIR, fs=fs)
    assert sorted(tx.id for tx in store.outbox()) == sorted([ids[0], ids[2]])
    assert store.outbox_lost == 2 and store.stats()["outbox"]["lost"] == 2     # two records, twins of nothing
    assert "is damaged" in caplog.text and OUTBOX in caplog.text
    store.outbox_done([ids[0]])
    store.close()
    caplog.clear()
    again = ChainStore(DATA_DIR, fs=fs)
    assert [tx.id for tx in again.outbox()] == [ids[2]] and again.outbox_lost == 0
    assert "is damaged" not in caplog.text, "the damage was dealt with at the start before"


def test_a_damaged_outbox_tail_is_cut_and_rewritten():
    fs, ids = pending_outbox(2)
    path, start, end = frames(fs, OUTBOX)[-1]
    fs.damage(path, (start + end) // 2)
    store = ChainStore(DATA_DIR, fs=fs)
    assert sorted(tx.id for tx in store.outbox()) == sorted(ids)     # the last one's twin is intact
    assert not store.outbox_log.tail_damaged
    store.outbox_done([ids[0]])
    store.close()
    assert [tx.id for tx in ChainStore(DATA_DIR, fs=fs).outbox()] == [ids[1]]


def test_a_damaged_wal_is_untrusted_until_reset_then_written_again():
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    for round_ in range(3):
        store.wal_append(["signed", [7, round_, -1, None, -1, None], "v", []])
    store.close()
    path, start, end = frames(fs, f"{DATA_DIR}/chain/wal")[1]
    fs.damage(path, start + 30)
    store = ChainStore(DATA_DIR, fs=fs)
    assert not store.wal_trustworthy
    store.wal_reset()
    assert store.wal_trustworthy
    store.wal_append(["signed", [8, 0, -1, None, -1, None], "v", []])
    store.close()
    again = ChainStore(DATA_DIR, fs=fs)
    assert again.wal_trustworthy and again.wal_records() == [["signed", [8, 0, -1, None, -1, None], "v", []]]


def test_blocks_replay_stops_at_the_first_missing_height():
    fs = FaultyFS()

    async def chain() -> None:
        node = await ChainNode.boot(fs, Record())
        for n in range(6):
            await node.place(n)
            node.step(0.2)
        await node.stop()
    asyncio.run(chain())
    path, start, end = frames(fs, f"{DATA_DIR}/chain/blocks")[3]     # height 4
    fs.damage(path, (start + end) // 2)
    store = ChainStore(DATA_DIR, fs=fs)
    assert [block.height for block, _ in store.blocks()] == [1, 2, 3]
    assert store.missing_heights == [range(4, 5)] and store.last_height >= 6
    assert store.get(4) is None and store.get(5) is not None
    assert "checksum mismatch in record 4" in store.blocks_damage[0]


def test_a_write_that_could_not_be_undone_reopens_the_log_before_the_next_one():
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    store.wal_append(["first"])
    fs.fail("fdatasync", errno.EIO, path="/wal/")
    fs.fail("truncate", errno.EIO, path="/wal/")
    with pytest.raises(StorageError) as failed:
        store.wal_append(["second"])
    assert failed.value.outcome_unknown
    store.wal_append(["third"])          # reopened: the torn or whole 'second' was judged at open
    assert store.reopened == 1
    assert store.wal_records()[0] == ["first"] and store.wal_records()[-1] == ["third"]


def test_an_outbox_add_whose_outcome_is_unknown_is_voided():
    fs, _ = pending_outbox(0)

    async def run() -> tuple[str, list[str]]:
        node = await ChainNode.boot(fs, Record())
        tx = node.make_tx(1)
        fs.fail("fdatasync", errno.EIO, path="/outbox/")
        fs.fail("truncate", errno.EIO, path="/outbox/")
        with pytest.raises(StorageError) as failed:
            await node.store.outbox_add([tx])
        assert not failed.value.outcome_unknown and "voided" in str(failed.value)
        await node.stop()
        return tx.id, [t.id for t in ChainStore(DATA_DIR, fs=fs).outbox()]
    tx_id, pending = asyncio.run(run())
    assert tx_id not in pending


def test_the_signing_floor_survives_and_a_damaged_one_means_unknown():
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    assert store.load_sign_from() == 1
    store.save_sign_from(42)
    assert ChainStore(DATA_DIR, fs=fs).load_sign_from() == 42
    path = max(p for p in fs.files() if "/signing/sign_from." in p)
    fs.damage(path, 20)
    assert ChainStore(DATA_DIR, fs=fs).load_sign_from() == SIGN_FROM_UNKNOWN


def test_decided_heights_wal_records_are_dropped_in_bulk_not_a_file_per_height():
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    renames = fs.calls["rename"]
    for height in range(1, 401):
        record = ["signed", [height, 0, -1, None, -1, None], "v", [b"x" * 20_000]]
        store.wal_append(record)
        store.wal_height_done()
    # 400 heights, ~8 MB of records: the WAL was emptied twice (a manifest each), not 400 times
    assert fs.calls["rename"] - renames <= 6, fs.calls
    assert store.wal_log.stats()["bytes"] <= WAL_KEEP_BYTES
    heights = [r[1][0] for r in store.wal_records()]
    assert heights == list(range(heights[0], 401)) and len(heights) > 50   # older heights kept, in order
    store.close()
    again = ChainStore(DATA_DIR, fs=fs)
    assert again.wal_trustworthy and again.wal_records()[-1] == record


@pytest.mark.parametrize("record", [["signed"], ["signed", 7], ["signed", []], ["signed", ["x"]], ["block", b"", "9"],
                                    ["block", b"", 3]])
def test_a_wal_record_of_an_unknown_shape_is_kept_as_heightless_not_a_crash(record):
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    store.wal_append(record)
    store.wal_append(["signed", [5, 0, -1, None, -1, None], "v", []])
    assert store.wal_records()[-1] == ["signed", [5, 0, -1, None, -1, None], "v", []]
    assert len(store.wal_records()) == 2


@pytest.mark.parametrize("record", ["text", [], {"a": 1}, 7])
def test_a_wal_record_that_is_no_list_is_a_gap_at_the_next_start_not_a_record(record):
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    store.wal_append(record)        # what only a bug would write
    store.wal_append(["signed", [5, 0, -1, None, -1, None], "v", []])
    assert store.wal_records() == [["signed", [5, 0, -1, None, -1, None], "v", []]]
    store.close()
    again = ChainStore(DATA_DIR, fs=fs)
    assert not again.wal_trustworthy and len(again.wal_damage().gaps) == 1
