"""The mempool is shared out, not first come, first served: a flood from one neighbour or one
account delays its own transactions, never an honest sender's; a full pool makes room by evicting the
heaviest lane's newest, never by refusing a lighter newcomer."""
from __future__ import annotations

import itertools

from exchange.chain.mempool.pool import OWN_LANE, Mempool
from exchange.app.txs import NewOrderOp, SignedTx

CHAIN = "ab" * 32
_serial = itertools.count()
OP = (NewOrderOp.parse("BTC-USD", "buy", "limit", "100", "1", None),)


def tx(account: int | None = None, expires: int = 10_000) -> SignedTx:
    """A transaction the pool takes as verified (the pool checks no signatures): unique signature bytes,
    a fresh account unless one is named."""
    n = next(_serial)
    who = (account if account is not None else 1_000_000 + n).to_bytes(32, "big")
    return SignedTx(CHAIN, who, f"n{n}", expires, OP, n.to_bytes(64, "big"))


def test_one_senders_backlog_does_not_starve_anyone_in_the_next_block():
    pool = Mempool()
    for _ in range(3_000):
        assert pool.add(tx(), lane="flooder") is None
    honest = [tx() for _ in range(3)]
    for i, item in enumerate(honest):
        assert pool.add(item, lane=f"follower-{i}") is None
    assert pool.add(own := tx(), lane=OWN_LANE) is None
    block = pool.reap(1_600, 10 ** 9)
    assert {t.id for t in [*honest, own]} <= {t.id for t in block}, "every lane gets a turn in each block"
    assert len(block) == 100 + 4, "a lane fills at most its share of a block (1/16)"


def test_a_lane_and_an_account_hold_at_most_their_share():
    pool = Mempool(max_txs=1_000, lane_share=0.25, account_max_txs=10)
    for _ in range(250):
        assert pool.add(tx(), lane="flooder") is None
    assert pool.add(tx(), lane="flooder") == "sender_quota"
    assert pool.add(tx(), lane="honest") is None
    for _ in range(10):
        assert pool.add(tx(account=7), lane="honest") is None
    assert pool.add(tx(account=7), lane="another") == "account_quota", "an account's quota spans lanes"
    assert pool.refused["sender_quota"] == 1 and pool.refused["account_quota"] == 1


def test_a_full_pool_evicts_the_heaviest_lanes_newest_never_the_lighter_newcomer():
    pool = Mempool(max_txs=100, lane_share=0.5)
    heavy = [tx() for _ in range(50)]
    for item in heavy:
        assert pool.add(item, lane="heavy") is None
    for _ in range(40):
        assert pool.add(tx(), lane="middle") is None
    for _ in range(10):
        assert pool.add(tx(), lane="light") is None
    assert len(pool) == 100
    newcomer = tx()
    assert pool.add(newcomer, lane="light") is None
    assert newcomer.id in pool and heavy[-1].id not in pool and heavy[0].id in pool
    assert pool.evicted == 1 and pool.lanes()["heavy"][0] == 49
    # the heaviest lane itself cannot push others out to grow
    assert pool.add(tx(), lane="heavy") == "mempool_full"


def test_bookkeeping_follows_removal_and_expiry():
    pool = Mempool()
    early, late = tx(account=1, expires=100), tx(account=1, expires=10_000)
    assert pool.add(early, lane="a") is None and pool.add(late, lane="b") is None
    assert pool.expire(100) == 1
    assert pool.lanes() == {"b": (1, pool.bytes)}
    pool.remove([late.id])
    assert pool.lanes() == {} and pool.bytes == 0 and len(pool) == 0
    for _ in range(Mempool().account_max_txs):
        assert pool.add(tx(account=1), lane="a") is None, "a removed transaction frees its account's quota"


def test_the_lane_that_goes_first_rotates():
    pool = Mempool()
    lane_of = {}
    for lane in ("a", "b", "c"):
        for _ in range(5):
            item = tx()
            pool.add(item, lane=lane)
            lane_of[item.id] = lane
    assert {lane_of[pool.reap(1, 10 ** 9)[0].id] for _ in range(3)} == {"a", "b", "c"}


def test_within_a_lane_accounts_take_turns_so_one_accounts_backlog_does_not_queue_ahead_of_another():
    """Two accounts behind one lane (our own API): one with 300 transactions waiting, then another's one. The
    lane's share of a block (100 of 1,600) goes to both in turn, so the later single order is in the next block,
    not three blocks later; oldest first within each account."""
    pool = Mempool()
    backlog = [tx(account=1) for _ in range(300)]
    for item in backlog:
        assert pool.add(item, lane=OWN_LANE) is None
    assert pool.add(single := tx(account=2), lane=OWN_LANE) is None
    block = pool.reap(1_600, 10 ** 9)
    assert len(block) == 100 and block[:2] == [backlog[0], single], [t.nonce for t in block[:3]]
    assert block[2:] == backlog[1:99], "an account's own transactions keep their order"


def test_an_account_served_in_a_block_waits_behind_the_accounts_that_were_not():
    """More accounts wait in a lane than its share of a block holds: the ones a block served go behind, so every
    account is served within a few blocks, not the same first ones each block."""
    pool = Mempool()
    for account in range(300):
        for _ in range(3):
            assert pool.add(tx(account=account), lane="neighbour") is None
    served: list[set[bytes]] = []
    for _ in range(3):
        block = pool.reap(1_600, 10 ** 9)
        assert len(block) == 100
        served.append({t.account for t in block})
        pool.remove(t.id for t in block)
    assert len(served[0] | served[1] | served[2]) == 300, "each of 300 accounts served once in three blocks"
    pool.remove([t.id for t in pool.reap(10 ** 6, 10 ** 9, lane_of=10 ** 7)])
    assert len(pool) == 0 and pool.lanes() == {}


def test_a_block_that_cannot_hold_everything_gives_each_network_its_turns_not_each_key():
    """Eight keys linked from one /24 and one neighbour on another, each with a backlog, and a block paced to
    64: the lone network's lane takes half of it (one network's turns), not a ninth (one key's)."""
    pool = Mempool()
    lane_of = {}
    lanes = [(f"crowd-{i}", "net:10.0.5.0/24") for i in range(8)] + [("lone", "net:10.0.6.0/24")]
    for lane, group in lanes:
        for _ in range(200):
            item = tx()
            assert pool.add(item, lane=lane, group=group) is None
            lane_of[item.id] = lane
    for _ in range(5):
        block = pool.reap(64, 10 ** 9, lane_of=3_000)
        taken = [lane_of[t.id] for t in block]
        assert len(block) == 64 and taken.count("lone") == 32, taken
        crowd = {lane: taken.count(lane) for lane in set(taken) - {"lone"}}
        assert len(crowd) == 8 and max(crowd.values()) - min(crowd.values()) <= 1, crowd
        pool.remove(t.id for t in block)
    # with the group gone quiet, its network's turns are the crowd's: nothing is held back for it
    pool.remove([i for i, lane in lane_of.items() if lane == "lone" and i in pool])
    assert len(pool.reap(64, 10 ** 9, lane_of=3_000)) == 64
    # a lane's share of a block is still its own, whatever its group holds: 187 of crowd-0's 280, the others' 180
    for _ in range(100):
        assert pool.add(tx(), lane="crowd-0") is None
    assert len(pool.reap(3_000, 10 ** 9)) == int(3_000 / 16) + 7 * 180


def test_a_neighbours_budget_refills_with_time_and_is_kept_per_neighbour():
    from exchange.chain.mempool.tx_budget import SHOWN_SENDERS, TxBudget

    budget = TxBudget(rate=10.0, burst=5.0, max_senders=3)
    assert budget.take("flooder", 0.0) and not budget.take("flooder", 0.0), "a newcomer has a tenth of a second's worth"
    assert budget.dropped == {"flooder": 1}
    assert sum(budget.take("flooder", 1.0) for _ in range(10)) == 5, "and earns its burst by waiting"
    assert budget.take("honest", 1.0), "another neighbour's budget is its own"
    assert budget.take("flooder", 1.1), "a tenth of a second at 10/s refills one"
    assert not budget.take("flooder", 1.1)
    for i in range(10):
        budget.take(f"fresh-{i}", 1.0)
    throttled = budget.view()["throttled"]
    assert isinstance(throttled, list)
    assert len(budget._buckets) == 3 and len(throttled) <= SHOWN_SENDERS


def test_a_crowd_of_neighbours_shares_the_total_equally_and_a_quiet_one_keeps_its_flow():
    from exchange.chain.mempool.tx_budget import TxBudget

    budget = TxBudget(rate=100.0, burst=100.0, total_rate=200.0)
    assert sum(budget.take("first", 0.0) for _ in range(150)) == 10, "a newcomer: a tenth of a second's worth"
    assert sum(budget.take("first", 0.4) for _ in range(150)) == 40, "alone, a neighbour has its own rate ..."
    assert sum(budget.take("first", 1.5) for _ in range(150)) == 100, "... and its own burst"
    crowd = [f"fresh-{i}" for i in range(19)]
    for key in crowd:
        budget.take(key, 1.5)
    assert budget.share(1.5) == 10.0, "twenty sending: each a twentieth of the total"
    assert all(sum(budget.take(key, 2.0) for _ in range(50)) <= 10 for key in crowd), \
        "a burst of a second's share at most, whatever it was when it came"
    admitted = {key: 0 for key in crowd}
    quiet = 0
    for step in range(1, 101):       # one more second: the crowd sends all it can, the quiet one 5 a second
        now = 2.0 + step / 100
        for key in crowd:
            admitted[key] += sum(budget.take(key, now) for _ in range(5))
        if step % 20 == 0:
            quiet += budget.take("quiet", now)
    assert quiet == 5, "a neighbour sending little is never held back by the crowd"
    assert sum(admitted.values()) <= 200 + 20 * 10, "the total's rate, plus each one's burst at most"
    assert max(admitted.values()) <= 20 and min(admitted.values()) >= 5, admitted
    assert budget.share(3.0) == 200.0 / 21, "the quiet one counts too: twenty-one sending"
    assert budget.share(13.1) == 100.0, "a neighbour silent for ACTIVE_SECONDS has no share"
    assert sum(budget.take("first", 13.1) for _ in range(150)) == 10, "and comes back with a tenth of a second's worth"
    assert budget.view()["total_rate"] == 200.0


def test_the_total_is_shared_by_network_first_so_a_crowd_of_keys_from_one_network_dilutes_only_itself():
    from exchange.chain.mempool.tx_budget import ACTIVE_SECONDS, TxBudget

    budget = TxBudget(rate=200.0, burst=200.0, total_rate=1_000.0)
    crowd = [f"sybil-{i}" for i in range(40)]
    for key in crowd:
        budget.take(key, 0.0, "203.0.113.0/24")
    assert budget.share(0.0, "net:203.0.113.0/24") == 1_000.0 / 40, "alone, one network has the whole total"
    assert budget.take("follower", 0.0, "198.51.100.0/24")
    assert budget.share(0.0, "net:198.51.100.0/24") == 200.0, "a neighbour on another network: half, up to its own rate"
    assert budget.share(0.0, "net:203.0.113.0/24") == 500.0 / 40, "and the crowd's network the other half"
    admitted = {"follower": 0, "crowd": 0}
    for step in range(1, 201):        # two seconds: everyone sends all it can, every 10 ms
        now = 1.0 + step / 100
        admitted["follower"] += sum(budget.take("follower", now, "198.51.100.0/24") for _ in range(5))
        for key in crowd:
            admitted["crowd"] += sum(budget.take(key, now, "203.0.113.0/24") for _ in range(5))
    assert admitted["follower"] >= 2 * 200 - 2, admitted
    assert admitted["crowd"] <= 2 * 500 + 40 * 13, admitted
    view = budget.view()
    assert view["networks_sending"] == 2
    throttled = view["throttled"]
    assert isinstance(throttled, list) and {row["network"] for row in throttled} == {"203.0.113.0/24"}, \
        "the crowd, named with the network it shares"

    rotated = TxBudget(rate=200.0, burst=200.0, total_rate=1_000.0)
    for i in range(400):           # keys rotated through one network faster than ACTIVE_SECONDS: one network still
        rotated.take(f"fresh-{i}", i * ACTIVE_SECONDS / 1_000, "203.0.113.0/24")
    assert rotated.take("follower", 4.0, "198.51.100.0/24") and rotated.share(4.0, "net:198.51.100.0/24") == 200.0
    moved = TxBudget(rate=200.0, burst=200.0, total_rate=1_000.0)
    moved.take("a", 0.0, "203.0.113.0/24")
    moved.take("a", 0.1, "198.51.100.0/24")      # relinked from elsewhere: counted in its new network only
    assert moved.view()["networks_sending"] == 1
    unlinked = TxBudget(rate=200.0, burst=200.0, total_rate=1_000.0)
    for i in range(1_024):          # origins routed to us without a link: any key can claim to be one
        unlinked.take(f"routed-{i}", 0.0)
    unlinked.take("follower", 0.0, "198.51.100.0/24")
    assert unlinked.view()["networks_sending"] == 2, "origins without a link are one network together"
    assert unlinked.share(0.0, "net:198.51.100.0/24") == 200.0 and unlinked.share(0.0) == 500.0 / 1_024
    for i in range(400):            # keys linking from the follower's own /24, sending once and hanging up
        unlinked.take(f"rotating-{i}", 0.1, "198.51.100.0/24")
        unlinked.forget(f"rotating-{i}")
    assert unlinked.share(0.2, "net:198.51.100.0/24") == 200.0, "a key counts while its link is open, no longer"
    assert unlinked.view()["networks_sending"] == 2
    assert budget.share(1.0 + 2.0 + ACTIVE_SECONDS + 0.1) == 200.0, "silent networks are forgotten"
    assert budget.view()["networks_sending"] == 0


def test_a_neighbour_past_its_budget_is_held_until_a_tenth_of_a_second_refills_once_per_hold():
    from exchange.chain.mempool.tx_budget import TxBudget

    budget = TxBudget(rate=100.0, burst=5.0)
    assert all(budget.take("flooder", 0.0) for _ in range(5))
    assert not budget.take("flooder", 0.0)
    assert budget.hold_for("flooder", 0.0) == 0.05, "until its bucket holds min(burst, a tenth of a second's worth)"
    assert abs(budget.hold_for("flooder", 0.03) - 0.02) < 1e-9, "within a hold: the rest of it, not a new one"
    assert budget.hold_for("flooder", 0.05) == 0.05, "once the hold is over, a new excess holds it again"
    paced = TxBudget(rate=500.0, burst=2_000.0)
    while paced.take("b", 0.0):
        pass
    assert paced.hold_for("b", 0.0) == 0.1, "a short hold: read again in small steps at the budget's pace"
    fast = TxBudget(rate=10_000.0, burst=100.0)
    fast.take("a", 0.0)
    assert fast.hold_for("a", 0.0) == 0.05, "never shorter than the floor (a hold per frame would cost more)"
    slow = TxBudget(rate=1.0, burst=1.0)
    assert slow.take("b", 0.0) and not slow.take("b", 0.0)
    assert slow.hold_for("b", 0.0) == 1.0, "until one transaction's worth: not ten holds that each admit nothing"
    assert budget.view()["holds"] == 2


def test_a_held_link_loses_nothing_when_its_share_falls_during_the_hold_or_its_clock_ends_the_hold_early():
    """A link we hold is read again when its hold ends; if more neighbours began sending meanwhile, its share
    (and so its refill) fell, and its first transaction is taken on credit, not dropped: its next hold is longer
    instead, so its rate is still its share."""
    from exchange.chain.mempool.tx_budget import TxBudget

    budget = TxBudget(rate=100.0, burst=100.0, total_rate=200.0)
    now, admitted, earned, growth = 0.0, 0, 0.0, iter(range(400))
    while now < 6.0:            # a link read only between holds, sending all it can; the crowd grows meanwhile
        assert budget.take("held", now), f"dropped at {now:.3f} s: it was read only once its hold was over"
        admitted += 1
        if budget.spent("held"):
            hold = budget.hold_for("held", now)
            for _ in range(20 if now < 3.0 else 0):      # twenty more keys send one each during every hold
                budget.take(f"crowd-{next(growth)}", now + hold / 2)
            earned += hold * budget.share(now + hold)    # what the hold refilled, at the share it ended with
            now += hold
    assert budget.dropped.get("held", 0) == 0 and budget.share(now) < 2.0, "the crowd took the total"
    assert admitted <= 10 + earned + 1, f"its share and no more: {admitted} taken, {earned:.1f} earned"
    assert admitted >= earned - 1, f"and all of its share: {admitted} taken, {earned:.1f} earned"

    early = TxBudget(rate=10.0, burst=10.0)        # a tenth of a second's worth is one transaction here
    assert early.take("a", 0.0) and early.spent("a")
    hold = early.hold_for("a", 0.0)
    assert early.take("a", hold - 0.002), "the loop's clock ended the hold 2 ms before ours: taken on credit"
    assert abs(early.hold_for("a", hold - 0.002) - 0.102) < 1e-9, "and held until the debt and a token are back"
    assert early.take("a", hold + 0.1) and early.dropped == {}
    unheld = TxBudget(rate=10.0, burst=1.0)
    assert unheld.take("rpc", 0.0) and not unheld.take("rpc", 0.05), "never held: no credit, dropped"


def test_a_validator_holds_a_flooding_neighbours_link_and_never_its_own_transactions():
    from exchange.chain.core import ChainCore
    from exchange.chain.config import CoreConfig
    from exchange.chain.effects import HoldReading
    from exchange.chain.types.genesis import Genesis
    from exchange.crypto import node_id_for
    from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify

    me, other = FakeKeys("held-validator"), FakeKeys("other-validator")
    genesis = Genesis("t", int(BASE_TIME * 1000), me.public_key, (me.public_key, other.public_key))
    core = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=CoreConfig(peer_tx_rate=10.0, peer_tx_burst=5.0), now=BASE_TIME)
    core.take_effects()
    for _ in range(40):
        core.on_message("chain_tx", ["not", "a", "tx"], "flooder", BASE_TIME + 1)
    holds = [e for e in core.take_effects() if isinstance(e, HoldReading)]
    assert holds[0] == HoldReading("flooder", 0.1), "held on its last whole transaction"
    # handed over past its budget anyway (no link here to stop): each one asks for what is left of that hold
    assert all(h.node_id == "flooder" and h.seconds <= 0.1 for h in holds) and core.intake.tx_budget.holds == 1
    for _ in range(40):
        core.on_message("chain_tx", ["not", "a", "tx"], None, BASE_TIME + 1)     # our own: never metered
    assert not [e for e in core.take_effects() if isinstance(e, HoldReading)]
    validator = node_id_for(other.public_key)
    assert validator in core.state.validators.node_ids
    for _ in range(40):
        core.on_message("chain_tx", ["not", "a", "tx"], validator, BASE_TIME + 1)   # a validator's relays
    assert not [e for e in core.take_effects() if isinstance(e, HoldReading)]


def test_the_transaction_that_empties_a_neighbours_budget_holds_it_at_once_and_nothing_is_dropped():
    """Held on its last whole transaction, before any excess is read: the driver takes the hold out of turn
    (`take_holds`) to stop the link before its next message, and every validator reading the same stream
    admits the same transactions from it."""
    from exchange.chain.core import ChainCore
    from exchange.chain.config import CoreConfig
    from exchange.chain.effects import HoldReading
    from exchange.chain.types.genesis import Genesis
    from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify

    me = FakeKeys("budgeted-validator")
    genesis = Genesis("t", int(BASE_TIME * 1000), me.public_key, (me.public_key,))
    core = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=CoreConfig(peer_tx_rate=100.0, peer_tx_burst=5.0), now=BASE_TIME)
    core.take_effects()
    for sent in range(1, 6):
        core.on_message("chain_tx", ["not", "a", "tx"], "flooder", BASE_TIME + 1)
        holds = core.take_holds()
        assert holds == ([HoldReading("flooder", 0.05)] if sent == 5 else []), f"after transaction {sent}"
    assert core.intake.tx_budget.view()["dropped_total"] == 0
    assert not core.holds_waiting and not [e for e in core.take_effects() if isinstance(e, HoldReading)], \
        "a hold taken out of turn is not carried out twice"
