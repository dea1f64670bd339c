"""A halt is loud: a validator that stops hearing a quorum logs a WARNING naming the silent validators and
how long they have been silent within 10 s, repeats it at most once a minute with the halt's duration, and
says when the quorum is back. Driven by a real ChainCore (4 pinned validators, we are one) on a
deterministic clock: validator 1 keeps voting, 2 and 3 fall silent."""
from __future__ import annotations

import logging
import re

from exchange.chain.types.blocks import PREVOTE, Vote
from exchange.chain.consensus.halt_watch import HaltWatch
from tests.unit.chain.test_core_liveness import _validator_core
from tests.sim.chain_sim import BASE_TIME

TICK = 0.25


def _vote(core, genesis, signer, now):
    vote = Vote.create(genesis.chain_id, PREVOTE, 1, 0, None, signer.public_key, signer.sign)
    core.on_message("chain_vote", vote.wire(), signer.node_id, now)


def _run(core, genesis, watch, talking, start, seconds):
    """Tick every TICK s for `seconds`; the validators in `talking` vote each second. Returns (time, level, text)."""
    said = []
    steps = int(seconds / TICK)
    for step in range(steps):
        now = start + step * TICK
        if step % int(1 / TICK) == 0:
            for signer in talking:
                _vote(core, genesis, signer, now)
        out = watch.observe(now, core.quorum_present(now), core.validator_liveness(now), core.role,
                            core.state.validators.quorum)
        if out is not None:
            said.append((now, *out))
    return said, start + steps * TICK


def test_halt_warning_names_the_silent_validators_repeats_once_a_minute_and_ends():
    core, keys, genesis = _validator_core(4)
    watch = HaltWatch()
    said, now = _run(core, genesis, watch, keys[1:], BASE_TIME, 5.0)
    assert said == [] and watch.reason(now) is None        # everyone heard: no halt
    last_heard = now - TICK * 4                             # the last second's votes of 2 and 3

    said, now = _run(core, genesis, watch, keys[1:2], now, 200.0)
    assert said, "no WARNING in 200 s without a quorum"
    first_at, level, text = said[0]
    assert level == logging.WARNING
    assert first_at - last_heard <= 10.0, f"first WARNING {first_at - last_heard:.2f} s after the quorum was lost"
    for silent in keys[2:]:
        assert silent.node_id in text
    assert keys[1].node_id not in text and keys[0].node_id not in text     # heard from, and us
    silences = [int(s) for s in re.findall(r"silent (\d+) s", text)]
    assert len(silences) == 2 and all(abs(s - (first_at - last_heard)) <= 1 for s in silences), text
    assert "3 of 4 needed, 2 heard" in text
    times = [t for t, _, _ in said]
    assert all(b - a >= 60.0 for a, b in zip(times, times[1:])), times
    assert len(said) == 4, times            # at ~7 s, then once a minute in 200 s
    durations = [int(re.search(r"halted for (\d+) s", t).group(1)) for _, _, t in said]   # type: ignore[union-attr]
    assert [round(d - durations[0]) for d in durations] == [0, 60, 120, 180], durations
    assert watch.halted_seconds(now) > 190

    lost_at = first_at - watch.warn_after
    back_at = now
    said, now = _run(core, genesis, watch, keys[1:3], now, 2.0)   # 2 is back: 3 of 4
    assert [(t, level, text.split(":")[0]) for t, level, text in said] == [
        (back_at, logging.WARNING, f"chain quorum is back after {back_at - lost_at:.0f} s")]
    assert watch.reason(now) is None and watch.halted_seconds(now) == 0.0


def test_a_short_loss_of_quorum_is_not_warned_about_nor_its_end():
    core, keys, genesis = _validator_core(4)
    watch = HaltWatch()
    _, now = _run(core, genesis, watch, keys[1:], BASE_TIME, 2.0)
    said, now = _run(core, genesis, watch, keys[1:2], now, 5.0)     # quorum lost after 3 s, for about 2 s
    assert watch.halted_seconds(now) > 0
    said_back, _ = _run(core, genesis, watch, keys[1:], now, 1.0)
    assert said == [] and said_back == []


def test_a_validator_never_heard_since_start_is_named_so():
    core, keys, genesis = _validator_core(4)
    watch = HaltWatch()
    said, _ = _run(core, genesis, watch, keys[1:2], BASE_TIME, 10.0)
    assert said and f"{keys[3].node_id} (never heard since start)" in said[0][2]


def test_a_follower_names_the_validators_it_has_not_heard_from_even_those_that_signed_the_last_block():
    # kill -9 of two of four: all four signed the last block, the two alive go on sending heartbeats to the
    # follower's links; the two killed fall silent (this used to name "none": they had signed the last block)
    watch = HaltWatch()
    liveness = [("a" * 40, 0.5, False), ("b" * 40, 1.0, False), ("c" * 40, 6.0, False), ("d" * 40, 6.0, False)]
    assert watch.observe(100.0, False, liveness, "follower", 3) is None
    level, text = watch.observe(105.0, False, liveness, "follower", 3) or (0, "")
    assert level == logging.WARNING and "halted for 5 s" in text and "none" not in text, text
    assert f"not heard from: {'c' * 40} (silent 6 s), {'d' * 40} (silent 6 s)" in text, text
    assert "a" * 40 not in text and "b" * 40 not in text and "3 of 4 needed, 2 heard" in text, text
    assert watch.view(105.0)["silent"] == [{"node_id": "c" * 40, "silent_s": 6.0},
                                           {"node_id": "d" * 40, "silent_s": 6.0}]
    never = [*liveness[:3], ("d" * 40, None, False)]      # one not in the last block, nor heard since start
    watch.observe(106.0, False, never, "follower", 3)
    assert f"{'d' * 40} (never heard since start)" in (watch.reason(106.0) or "")
