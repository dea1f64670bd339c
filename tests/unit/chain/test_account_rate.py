"""One account's operations admitted per window of blocks: every window must pass, refusals are not counted,
the next block starts afresh, 0 turns a window off, and the map of accounts stays bounded."""
from __future__ import annotations

from exchange.chain.account_rate import AccountRate

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
