"""What WAL damage costs a validator: records lost between intact records of decided heights cost
nothing, and only damage that may hide a record of a height not decided yet skips that height. The decision
on its own (`WalDamage.verdict`), then on a real ChainStore on FaultyFS with bytes flipped in its WAL, then
through the start check (`exchange/chain/boot.py`, `check_history`) with a validator of four: the signing
floor it stores, the one the consensus gets, and the log line naming the heights it covers.

Each case states both sides, so a floor applied always fails the harmless cases and a floor never applied
fails the others."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from exchange.chain.boot import check_history
from exchange.chain.store.block_store import ChainStore, WalDamage, WalGap
from exchange.chain.consensus.tendermint import wal_record_height
from tests.faultyfs import FaultyFS
from tests.unit.storage.chain_node import DATA_DIR
from tests.unit.storage.test_chain_store import frames

WAL = f"{DATA_DIR}/chain/wal"
DECIDED = 7        # stored blocks 1..7; records of height 8 are the height in progress


def signed(height: int, round_: int = 0) -> list:
    return ["signed", [height, round_, -1, None, -1, None], "v", [height, round_]]


# heights 3..8, three records each: a block record (its height third), then two signed ones
HEIGHTS = [h for h in range(3, DECIDED + 2) for _ in range(3)]
RECORDS = [["block", [], h] if n % 3 == 0 else signed(h, n % 3) for n, h in enumerate(HEIGHTS)]


def stored(records: list[list] = RECORDS, blocks: int = DECIDED) -> FaultyFS:
    """A closed store: `blocks` stored blocks (raw bodies: only their heights matter here) and a WAL of
    `records`, each appended alone (one frame each, as the service appends a vote's records)."""
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    if blocks:
        store.blocks_log.append([b"block %d" % h for h in range(1, blocks + 1)])
    for record in records:
        store.wal_append(record)
    store.close()
    return fs


def flip_three(fs: FaultyFS, *records: int) -> None:
    """Three bytes flipped in the middle of each given WAL record (0-based position in the log)."""
    spans = frames(fs, WAL)
    for n in records:
        path, start, end = spans[n]
        middle = (start + end) // 2
        for offset in (middle - 1, middle, middle + 1):
            fs.damage(path, offset, 0x5A)


class FakeCore:
    """What `check_history` reads of a core: its height, whether it is the only validator, and where the
    consensus' signing floor goes."""

    def __init__(self, height: int, validators: int = 4) -> None:
        keys = tuple(bytes([n]) * 32 for n in range(validators))
        self.height = height
        self.public_key = keys[0]
        self.state = SimpleNamespace(validators=SimpleNamespace(keys=keys))
        self.consensus = SimpleNamespace(sign_from=1)


def start_check(fs: FaultyFS, height: int = DECIDED, validators: int = 4) -> tuple[ChainStore, FakeCore, list | None]:
    """Open the store and run the service's start check as `_boot` does: (store, core, WAL handed to the core)."""
    store = ChainStore(DATA_DIR, fs=fs)
    core = FakeCore(height, validators)
    wal: list | None = store.wal_records()
    check_history(store, core, 1000.0, wal)  # type: ignore[arg-type]
    if not store.wal_trustworthy:
        wal = None
        store.wal_reset()
    return store, core, wal


# --- the decision on its own ------------------------------------------------------------------------
def gap(start: int, stop: int | None, below: int | None, above: int | None) -> WalGap:
    return WalGap(start, stop, below, above)


def test_no_gaps_cost_nothing():
    assert WalDamage((), True).verdict(DECIDED).sign_from == 1


@pytest.mark.parametrize("gaps", [
    (gap(4, 6, 3, 4),),                                 # inside decided heights
    (gap(1, 3, None, 3),),                              # at the start: nothing before, a decided height after
    (gap(4, 5, 3, 3), gap(9, 12, 5, DECIDED)),          # several, the last just before a decided height's record
], ids=["middle", "start", "several"])
def test_gaps_before_a_record_of_a_decided_height_cost_nothing(gaps):
    verdict = WalDamage(gaps, True).verdict(DECIDED)
    assert verdict.sign_from == 1, verdict.text       # a floor applied always fails here
    assert "signing as before" in verdict.text and f"up to {DECIDED}" in verdict.text


@pytest.mark.parametrize("gaps, ordered", [
    ((gap(18, None, DECIDED + 1, None),), True),                  # a damaged tail: the newest records
    ((gap(15, 17, DECIDED, None),), True),                        # no intact record after the gap
    ((gap(16, 17, DECIDED + 1, DECIDED + 1),), True),             # between records of the height in progress
    ((gap(4, 5, 3, 3), gap(15, 16, DECIDED, DECIDED + 1)),  True),  # one harmless gap, one not
    ((gap(4, 5, 3, 3),), False),                                  # heights out of order: nothing is bounded
], ids=["tail", "end", "undecided", "one-of-two", "unordered"])
def test_gaps_that_may_hide_a_record_of_the_undecided_height_skip_it(gaps, ordered):
    verdict = WalDamage(gaps, ordered).verdict(DECIDED)
    assert verdict.sign_from == DECIDED + 2, verdict.text     # a floor never applied fails here
    assert f"covers height {DECIDED + 1} only" in verdict.text and f"from height {DECIDED + 2}" in verdict.text


# --- on a real store: what the record log proves about the lost records --------------------------------
def test_the_store_places_each_gap_between_the_heights_of_the_intact_records_around_it():
    fs = stored()
    flip_three(fs, 4, 5, 10)       # records 5-6 (height 4) and 11 (height 6), 1-based
    store = ChainStore(DATA_DIR, fs=fs)
    assert not store.wal_trustworthy
    damage = store.wal_damage()
    assert damage.ordered
    assert damage.gaps == (WalGap(5, 7, 4, 5), WalGap(11, 12, 6, 6))
    assert store.wal_records() == [r for r in RECORDS if wal_record_height(r) == DECIDED + 1]


def test_a_damaged_newest_record_is_an_open_gap():
    fs = stored()
    flip_three(fs, len(RECORDS) - 1)
    damage = ChainStore(DATA_DIR, fs=fs).wal_damage()
    assert damage.gaps == (WalGap(len(RECORDS), None, DECIDED + 1, None),)


def test_heights_out_of_order_are_noticed():
    fs = stored([signed(5), signed(6), signed(4), signed(4), signed(8)])
    flip_three(fs, 3)
    assert not ChainStore(DATA_DIR, fs=fs).wal_damage().ordered


# --- through the service's start check, a validator of four ------------------------------------------
def test_damage_only_in_records_of_decided_heights_costs_no_height(caplog):
    fs = stored()
    flip_three(fs, 4, 5, 10)
    caplog.set_level(logging.WARNING)
    store, core, wal = start_check(fs)
    assert store.load_sign_from() == 1 and core.consensus.sign_from == DECIDED + 1    # signs at 8 as before
    assert wal == store.wal_records() and wal and all(r[1][0] == DECIDED + 1 for r in wal if r[0] == "signed")
    assert "signing as before" in caplog.text and "records 5..6 after a record of height 4" in caplog.text
    assert "not signing" not in caplog.text
    # the damage stays (evidence) until the height in progress is decided, then the WAL is dropped whole
    assert store.wal_log.missing
    store.wal_height_done()
    assert not store.wal_log.missing and not store.wal_records()
    store.wal_append(signed(DECIDED + 2))
    store.close()
    assert ChainStore(DATA_DIR, fs=fs).wal_trustworthy


@pytest.mark.parametrize("damaged", [
    [len(RECORDS) - 1],                 # the tail: the newest record, of the height in progress
    [len(RECORDS) - 2],                 # between two records of the height in progress
    [4, len(RECORDS) - 3],              # one gap of a decided height, one of the height in progress
], ids=["tail", "in-progress", "both"])
def test_damage_that_may_hide_a_record_of_the_height_in_progress_skips_that_height(damaged, caplog):
    fs = stored()
    flip_three(fs, *damaged)
    caplog.set_level(logging.WARNING)
    store, core, wal = start_check(fs)
    assert store.load_sign_from() == DECIDED + 2 and core.consensus.sign_from == DECIDED + 2
    assert wal is None and not store.wal_records()          # what it implied is in the floor; the WAL is reset
    assert f"not signing at heights {DECIDED + 1}..{DECIDED + 1} (signing from height {DECIDED + 2})" in caplog.text
    assert f"covers height {DECIDED + 1} only" in caplog.text


def test_damage_in_records_above_the_stored_blocks_skips_the_last_intact_records_height(caplog):
    """Stored blocks reach 5 only (the disk cut the block log short), the WAL reaches 8: heights up to 7 are
    decided (we signed at 8), so damage among the records of 8 skips 8, and damage before a record of 6
    costs nothing (the node fetches 6 and 7 from peers and signs from 8 on, with its WAL)."""
    fs = stored(blocks=5)
    flip_three(fs, len(RECORDS) - 2)
    caplog.set_level(logging.WARNING)
    store, core, _ = start_check(fs, height=5)
    assert store.load_sign_from() == DECIDED + 2 and core.consensus.sign_from == DECIDED + 2
    assert f"not signing at heights {DECIDED + 1}..{DECIDED + 1}" in caplog.text
    fs = stored(blocks=5)
    flip_three(fs, 7)
    caplog.clear()
    store, core, wal = start_check(fs, height=5)
    assert store.load_sign_from() == DECIDED + 1 and core.consensus.sign_from == DECIDED + 1
    assert wal and "signing as before" in caplog.text and f"heights {DECIDED + 1}.." not in caplog.text


def test_the_only_validator_signs_the_height_in_progress_afresh_even_when_damage_may_hide_a_vote(caplog):
    fs = stored()
    flip_three(fs, len(RECORDS) - 1)
    caplog.set_level(logging.WARNING)
    store, core, wal = start_check(fs, validators=1)
    assert store.load_sign_from() == 1 and core.consensus.sign_from == 1 and wal is None
    assert "this node is the only validator" in caplog.text


@pytest.mark.parametrize("body", [b"\xc1", b"\x93\x01\x02", b"\xa4text"], ids=["not-msgpack", "truncated", "not-a-list"])
def test_a_record_whose_checksum_holds_but_whose_body_is_no_record_is_a_gap(body, caplog):
    """Only a bug writes one; what it said is as lost as a record whose bytes flipped. Among the records of the
    height in progress it skips that height, and it never reaches the consensus as a record."""
    fs = FaultyFS()
    store = ChainStore(DATA_DIR, fs=fs)
    store.blocks_log.append([b"block %d" % h for h in range(1, DECIDED + 1)])
    for record in RECORDS[:-1]:
        store.wal_append(record)
    store.wal_log.append([body])
    store.wal_append(RECORDS[-1])
    store.close()
    caplog.set_level(logging.WARNING)
    reopened = ChainStore(DATA_DIR, fs=fs)
    assert not reopened.wal_trustworthy and "do not decode" in caplog.text
    assert reopened.wal_damage().gaps == (WalGap(len(RECORDS), len(RECORDS) + 1, DECIDED + 1, DECIDED + 1),)
    assert all(type(r) is list for r in reopened.wal_records())
    reopened.close()
    store, core, wal = start_check(fs)
    assert store.load_sign_from() == DECIDED + 2 and core.consensus.sign_from == DECIDED + 2 and wal is None
