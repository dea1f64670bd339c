"""A validator's transaction total is shared by network first, then by neighbour (issue 25; exchange/chain/mempool/tx_budget.py):
on real processes, eight fresh keys linked from one /24 of loopback (127.0.5.x) and one from another (127.0.6.1)
each hand a lone validator 150 one-order transactions at once, every link kept open. The crowd's network and the
other neighbour's each get half of PEER_TX_TOTAL_RATE (400 here): the lone neighbour its own rate (200 a second),
the crowd's keys an eighth of 200 each, so the lone one's last order is final long before any of the crowd's.
Shared by key instead, all nine would get a ninth of the total and finish together. The total is lower than the
default so that the validator reads every link at its budget's pace even on a busy machine: where it cannot keep
up, its reading paces the links instead (by network too: p2p/link_reading.py ReadTurns), not the budgets.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from node.identity import NodeIdentity
from tests.flood import attacker_links, send_paced, spam_orders
from tests.harness import Cluster, NodeProcess, wait_until
from tests.redteam.attacker import envelope

CROWD = 8
PER_KEY = 150
BUDGETS: dict[str, Any] = {"peer_tx_rate": 200, "peer_tx_total_rate": 400}
CROWD_NETWORK = "loopback/127.0.5.0/24"


def test_a_crowd_of_keys_on_one_network_shares_that_networks_part_and_a_neighbour_elsewhere_keeps_its_own(
        cluster: Cluster) -> None:
    validator = cluster.node("solo", found_after=0, **BUDGETS)   # the only validator: it meters every other neighbour
    wait_until(lambda: validator.status()["chain_id"], 10)
    chain_id = validator.status()["chain_id"]
    keys = [NodeIdentity.generate() for _ in range(CROWD + 1)]
    sources = [f"127.0.5.{1 + i % 4}" for i in range(CROWD)] + ["127.0.6.1"]
    txs = [spam_orders(chain_id, PER_KEY) for _ in keys]
    done, seen = asyncio.run(_flood(validator, chain_id, keys, sources, txs))
    lone, crowd = done[-1], done[:-1]
    print(f"\nlast order final after: lone {lone:.1f} s, crowd {min(crowd):.1f}-{max(crowd):.1f} s; "
          f"networks sending {seen['networks']}, {len(seen['rows'])} held rows name a network")
    assert lone < 0.6 * statistics.median(crowd), f"the lone network's neighbour took {lone:.1f} s, the crowd {crowd}"
    assert seen["networks"] == 2, seen
    # the rows of held links name the network whose part they share. A validator that reads the crowd no faster than
    # its budgets (in CI at load 3.4 its last orders were final after 7.3-7.8 s, the budgets' pace being 6) holds
    # none: nothing to name, and no key had more than its budget (a budget takes nothing past itself)
    crowd_ids = {key.node_id for key in keys[:-1]}
    assert all(row["network"] == CROWD_NETWORK for row in seen["rows"] if row["peer"] in crowd_ids), seen
    budget = validator.status()["exchange"]["tx_budget"]
    held = [row["peer"][:12] for row in budget["throttled"] if row["peer"] in crowd_ids and row.get("held")]
    assert not held or any(row["peer"] in crowd_ids for row in seen["rows"]), \
        f"crowd links {held} were held, and no row seen while they sent named their network: {seen}"
    assert budget["dropped_total"] == 0, f"a held link's transactions are read later, never dropped: {budget}"
    # 150 at once on each link is more than a turn's 64: the links waited for turns, and the node says so
    turns = validator.status()["p2p"]["read_turns"]["given"]
    assert turns > 0 and validator.metric("exchange_node_p2p_read_turns_total") >= turns, turns


async def _flood(validator: NodeProcess, chain_id: str, keys: list[NodeIdentity], sources: list[str],
                 txs: list[list]) -> tuple[list[float], dict]:
    """Every key's transactions at once over its link; returns seconds until each key's last order was final, and
    what /status showed meanwhile (the most networks sending, the held rows naming their network)."""
    seen: dict = {"networks": 0, "rows": []}
    async with attacker_links([(key, validator) for key in keys], chain_id, sources) as peers:
        batches = [[envelope("chain_tx", key.node_id, validator.node_id, tx.wire()) for tx in key_txs]
                   for key, key_txs in zip(keys, txs)]
        started = time.monotonic()
        sending = asyncio.create_task(send_paced(peers, batches, rate=1e9))
        last = [key_txs[-1].order_id(0) for key_txs in txs]
        done: list[float | None] = [None] * len(keys)

        def look() -> bool:
            budget = validator.status()["exchange"]["tx_budget"]
            seen["networks"] = max(seen["networks"], budget["networks_sending"])
            seen["rows"] = [row for row in budget["throttled"] if row.get("network")] or seen["rows"]
            for index, order_id in enumerate(last):
                if done[index] is None and validator.api("GET", f"/orders/{order_id}")[0] == 200:
                    done[index] = time.monotonic() - started
            return all(t is not None for t in done)

        await asyncio.to_thread(wait_until, look, 60, 0.1, "every key's last order final")
        await sending
    return [t for t in done if t is not None], seen
