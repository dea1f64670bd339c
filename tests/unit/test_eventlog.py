"""EventLog: checksummed records, torn-tail recovery, group commit; a replica rebuilt from its log."""
from __future__ import annotations

import asyncio
import os
import random

import pytest

from exchange.replication.eventlog import EventLog, GroupCommit, decode_records, encode_record
from tests.unit.test_replication import Net, limit, make
from node.identity import NodeIdentity


def test_records_round_trip(tmp_path):
    log = EventLog(tmp_path / "events.log")
    assert log.open() == []
    log.append([["e", [1, b"\x00" * 32, ["n"]]], ["w", 7]])
    log.sync()
    log.close()
    again = EventLog(tmp_path / "events.log")
    assert again.open() == [["e", [1, b"\x00" * 32, ["n"]]], ["w", 7]]
    assert again.dropped_tail == 0


@pytest.mark.parametrize("cut", [1, 3, 8, 9, 11])
def test_torn_last_record_is_detected_and_dropped(tmp_path, cut):
    path = tmp_path / "events.log"
    log = EventLog(path)
    log.open()
    log.append([["w", 1], ["w", 2], ["w", 3]])
    log.close()
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    again = EventLog(path)
    assert again.open() == [["w", 1], ["w", 2]]
    assert again.dropped_tail > 0 and path.stat().st_size == len(data) - len(encode_record(["w", 3]))
    again.append([["w", 4]])
    again.close()
    assert EventLog(path).open() == [["w", 1], ["w", 2], ["w", 4]]


def test_flipped_byte_in_the_tail_fails_its_checksum(tmp_path):
    path = tmp_path / "events.log"
    log = EventLog(path)
    log.open()
    log.append([["w", 1], ["w", 2]])
    log.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    records, valid, problem = decode_records(bytes(data))
    assert records == [["w", 1]] and problem == "checksum mismatch"
    assert EventLog(path).open() == [["w", 1]]


def test_group_commit_batches_and_resolves_after_fsync(tmp_path):
    async def main():
        log = EventLog(tmp_path / "events.log")
        log.open()
        commit = GroupCommit(log)
        commit.start()
        futures = []
        for i in range(50):
            commit.add([["w", i]])
            futures.append(commit.commit())
        await asyncio.gather(*futures)
        assert log.records_written == 50 and log.syncs < 50
        await commit.stop()
    asyncio.run(main())
    assert [r[1] for r in EventLog(tmp_path / "events.log").open()] == list(range(50))


def test_replica_restarts_from_its_log_with_the_same_book(tmp_path):
    identity = NodeIdentity.generate()
    a, b = make(identity=identity), make()
    net = Net(a, b)
    log = EventLog(tmp_path / "events.log")
    log.open()
    rng = random.Random(5)
    for i in range(30):
        limit(rng.choice([a, b]), rng.choice(["buy", "sell"]), rng.randint(98, 102), rng.randint(1, 5),
              rng.choice("xyz"), now=net.now)
        if i % 7 == 0 and a.orders:
            a.submit_cancel(next(iter(a.orders)), None, net.now)
        net.flush(1)
        log.append(a.take_records())
    net.flush(3)
    log.append(a.take_records())
    log.close()
    with open(tmp_path / "events.log", "ab") as handle:      # a crash in the middle of the next write
        handle.write(encode_record(["w", 10**6])[:-2])
    restarted = make(identity=identity)
    records = EventLog(tmp_path / "events.log").open()
    restarted.load(records)
    assert restarted.final_count == a.final_count and restarted.watermark == a.watermark
    assert restarted.digest() == a.digest() and restarted.trade_log_hash == a.trade_log_hash
    assert restarted.own.verified == a.own.verified
    assert os.path.getsize(tmp_path / "events.log") == sum(len(encode_record(r)) for r in records)
