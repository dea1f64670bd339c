"""One account's operations admitted per window of blocks: every window must pass, refusals are not counted,
the next block starts afresh, 0 turns a window off, and the map of accounts stays bounded."""
from __future__ import annotations

from exchange.chain.mempool import account_rate
from exchange.chain.mempool.account_rate import TX_WEIGHT, AccountRate

A, B = b"a" * 32, b"b" * 32


def admit(rate: AccountRate, account: bytes, ops: int, height: int) -> bool:
    if not rate.allows(account, ops, height):
        return False
    rate.record(account, ops, height)
    return True


def test_each_block_has_its_allowance_and_a_refusal_costs_nothing():
    rate = AccountRate(((1, 10), (100, 1_000)))
    assert [admit(rate, A, 4, 5) for _ in range(4)] == [True, True, False, False]
    assert admit(rate, A, 2, 5) and not admit(rate, A, 1, 5)          # 10 exactly, then nothing more
    assert admit(rate, B, 10, 5)                                       # another account is not held up
    assert admit(rate, A, 10, 6)                                       # the next block starts afresh
    assert not admit(rate, A, 11, 7)                                   # one transaction larger than a block


def test_the_long_window_binds_a_steady_sender():
    rate = AccountRate(((1, 10), (100, 300)))
    admitted = sum(admit(rate, A, 10, height) for height in range(1, 200))
    assert admitted == 60          # blocks 1-30 fill the window; from 101 on, each block frees one as it slides
    assert not rate.allows(A, 10, 130) and rate.allows(A, 10, 230)


def test_zero_turns_a_window_off_and_no_windows_allow_everything():
    assert AccountRate(((1, 0), (100, 5))).windows == ((100, 5),)
    free = AccountRate(((1, 0), (100, 0)))
    assert all(admit(free, A, 250, 1) for _ in range(1000)) and len(free) == 0


def test_the_map_of_accounts_is_bounded():
    rate = AccountRate(((1, 10),), max_accounts=100)
    for n in range(1_000):
        admit(rate, n.to_bytes(32, "big"), 1, 1)
    assert len(rate) == 100


def _admit_at(rate: AccountRate, account: bytes, ops: int, time_ms: int, group: str | None = None) -> str | None:
    """At block time `time_ms`, a block every 50 ms."""
    why = rate.why_not(account, ops, time_ms // 50, time_ms, group)
    if why is None:
        rate.record(account, ops, time_ms // 50, time_ms, group)
    return why


def test_an_accounts_bucket_runs_on_block_time_whatever_the_number_of_blocks():
    """Twenty blocks a second do not give twenty allowances: 100 a second of block time, bursts of 1,000, and a
    transaction weighs one operation more than it holds."""
    rate = AccountRate((), rate=100, burst=1_000)
    whole = 1_000 - TX_WEIGHT                                        # one transaction of this many: the burst
    assert _admit_at(rate, A, whole, 0) is None and _admit_at(rate, A, 0, 0) == "account_time"
    assert _admit_at(rate, A, 2, 50) == "account_time" and _admit_at(rate, A, 1, 50) is None    # 50 ms: 5 more
    assert _admit_at(rate, A, 100 - TX_WEIGHT, 1_050) is None and _admit_at(rate, A, 0, 1_050) == "account_time"
    assert _admit_at(rate, B, whole, 1_050) is None                  # another account has its own
    assert _admit_at(rate, A, 0, 1_000) == "account_time"           # an older block time refills nothing


def test_past_half_of_a_groups_bucket_its_heaviest_accounts_are_refused_first():
    """Below half, an account goes on only while it spent no more than an equal part of what the group spent: ten
    accounts refilling 250 orders and cancelling them as fast as they may leave room for a light one."""
    rate = AccountRate((), rate=1_000, burst=1_000, group_rate=500, group_burst=5_000)
    heavy = [bytes([n]) * 32 for n in range(10)]
    light_refused, heavy_refused = 0, []
    for step in range(200):                                         # 20 s of block time, a block every 100 ms
        time_ms = step * 100
        heavy_refused += [_admit_at(rate, account, ops, time_ms, "own") for account in heavy for ops in (249, 1)]
        if step % 2 == 0:
            light_refused += _admit_at(rate, A, 4, time_ms, "own") is not None
    assert light_refused <= 2, light_refused     # of 100 (without the fair share: 83)
    assert heavy_refused.count("group_time") > 3_000 and heavy_refused.count(None) < 900    # 10,000 ops of 20 s
    assert _admit_at(rate, heavy[5], 249, 20_000, "other") is None  # another group is not held up


def test_the_last_tenth_of_a_groups_bucket_is_kept_for_light_transactions(monkeypatch):
    """Ten accounts sending 250-order batches as fast as they may took the bucket, batch by batch, down to nothing
    (an account whose spending was forgotten when the bucket stood at half passes the fair share): a light
    account's next order then met an empty bucket until the refill (on real processes the validator's own trader
    had an order refused 429). The last tenth is kept for transactions no bigger than it."""
    def run() -> int:
        rate = AccountRate((), rate=1_000, burst=1_000, group_rate=200, group_burst=1_000)
        heavy = [bytes([n]) * 32 for n in range(10)]
        refused = 0
        for step in range(400):                                     # 20 s of block time, a block every 50 ms
            time_ms = step * 50
            for account in heavy:
                _admit_at(rate, account, 250, time_ms, "own")
            if step % 4 == 0:                                       # five orders a second
                refused += _admit_at(rate, A, 1, time_ms, "own") is not None
        return refused
    assert run() == 0
    monkeypatch.setattr(account_rate, "LIGHT_SHARE", 10**9)     # nothing kept: 14 of 100 refused
    assert run() > 5


def test_the_same_blocks_give_the_same_refusals_on_every_node():
    """Two validators seeing the same sequence of (block time, transaction) refuse the same ones, whatever
    their clocks: the buckets read only block time."""
    sequence = [(t * 37, bytes([t % 5]) * 32, 1 + (t * 7) % 250, f"g{t % 3}") for t in range(2_000)]

    def refusals() -> list[str | None]:
        rate = AccountRate(((1, 600),), rate=100, burst=1_000, group_rate=300, group_burst=1_500)
        return [_admit_at(rate, account, ops, time_ms, group) for time_ms, account, ops, group in sequence]

    first, second = refusals(), refusals()
    assert first == second and {"account_time", "group_time"} <= set(first) and None in first


def test_exempt_accounts_are_never_counted():
    rate = AccountRate(((1, 10),), rate=1, burst=1, group_rate=1, group_burst=1, exempt=frozenset({A}))
    assert all(_admit_at(rate, A, 250, 0, "own") is None for _ in range(100)) and len(rate) == 0
    assert _admit_at(rate, B, 2, 0, "own") == "account_time"
