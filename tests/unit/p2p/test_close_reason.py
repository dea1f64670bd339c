"""The close-reason vocabulary: ours is closed, a peer's words are always marked as the peer's."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2p.close_reason import REMOTE_PREFIX, CloseReason, remote_reason, with_remote
from p2p.peers import BENIGN, NO_REDIAL, QUIET


@given(st.one_of(st.text(max_size=200), st.binary(max_size=50), st.integers(), st.none(),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
def test_whatever_a_peer_says_is_never_one_of_our_reasons(said):
    reason = remote_reason(said)
    assert reason.startswith(REMOTE_PREFIX)
    assert reason not in set(CloseReason)
    assert len(reason) <= len(REMOTE_PREFIX) + 48
    assert set(reason) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


def test_a_peer_saying_one_of_our_verdicts_is_reported_as_its_opinion():
    assert remote_reason("banned") == "remote_banned" != CloseReason.BANNED
    assert remote_reason("Banned; DROP TABLE") == "remote_banneddroptable"
    assert remote_reason("") == remote_reason(None) == "remote_unknown"


def test_reason_sets_hold_both_sides_words_and_only_known_ones():
    assert with_remote(CloseReason.SHUTDOWN) == {"shutdown", "remote_shutdown"}
    ours = {r.value for r in CloseReason}
    for table in (NO_REDIAL, BENIGN, QUIET):
        for reason in table:
            assert reason in ours or (reason.startswith(REMOTE_PREFIX) and reason[len(REMOTE_PREFIX):] in ours), reason
    # a peer saying "banned" or "self_connection" neither stops our redials nor reads as benign
    assert remote_reason("self_connection") not in NO_REDIAL
    assert remote_reason("banned") not in BENIGN
