"""Real processes in test mode (DEBUG_API on): honest nodes relaying a fresh-key broadcast flood do not flood-ban
each other, and the production defences stay on.

As filed, with DEBUG_API on (diagnostic notes carried) honest nodes flood-banned each other: 10 bans, one follower
banned all four validators. Reproduced here: the relayed copies filled the one bucket a neighbour's messages
shared, and its next own messages (votes, prunes: one per duplicate copy, and every fresh key's copy is a
duplicate somewhere) started a throttling episode that banned it. A neighbour's own messages now have a bucket of
their own, and prunes to one neighbour are paced (p2p/routing/control_pace.py).

Two validators and two followers, each neighbour allowed ROUTER_RATE_LIMIT (lowered here so that a flood one
process can sign reaches it); an attacker on a /24 of its own sends fresh-key notes and hints to both validators
at several times that rate for FLOOD_SECONDS. Pass: no flood ban anywhere, the relays' excess was dropped
(`throttled_relay`), hints met their open-type budgets as in production, and the chain kept committing.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.flood import attacker_links, fresh_hint, fresh_note, send_paced
from node.identity import NodeIdentity
from tests.harness import converged, wait_until

pytestmark = [pytest.mark.timeout(120)]

RATE_LIMIT = 300            # messages a second one neighbour may send (ROUTER_RATE_LIMIT), and twice that at once
NODE: dict[str, Any] = {"heartbeat_interval": 0.2, "debug_api": "true", "router_rate_limit": RATE_LIMIT,
                        "router_rate_burst": 2 * RATE_LIMIT}
FLOOD_SECONDS = 3.0
FLOOD_RATE = 1_500          # notes a second to each validator, and as many hints
SOURCE = "127.0.20.1"


def test_honest_nodes_in_test_mode_relaying_a_fresh_key_flood_do_not_ban_each_other(cluster):
    validators = cluster.chain(2, seat_rule="any", **NODE)
    followers = [cluster.node(f"f{n}", role="follower", bootstrap_peers=validators[n].p2p_address, **NODE)
                 for n in range(2)]
    nodes = [*validators, *followers]
    wait_until(lambda: converged(nodes), 20)
    status = validators[0].status()
    chain_id, network, subject = status["chain_id"], status["network_id"], validators[1].node_id
    height_before = status["height"]
    count = int(FLOOD_RATE * FLOOD_SECONDS)
    attacker = NodeIdentity.generate()
    flood = [[message for _ in range(count) for message in (fresh_note(network, "n" * 200), fresh_hint(network, subject))]
             for _ in validators]

    async def run() -> float:
        async with attacker_links([(attacker, node) for node in validators], chain_id, [SOURCE] * 2) as peers:
            took = await send_paced(peers, flood, 2 * FLOOD_RATE)
            await asyncio.sleep(1.0)        # linked while the validators read the last of it
            return took
    took = asyncio.run(run())
    time.sleep(1.0)
    routers = {node.name: node.status()["router"] for node in nodes}
    bans = {name: router["events"]["flood_bans"] for name, router in routers.items()}
    relayed = {name: router["dropped"].get("throttled_relay", 0) for name, router in routers.items()}
    notes = {name: router["received"].get("note", 0) for name, router in routers.items()}
    print(f"\n{2 * count} notes and hints to each validator in {took:.1f} s; notes received {notes}; relayed copies "
          f"dropped over a neighbour's rate {relayed}; flood bans {bans}")
    assert sum(notes[f.name] for f in followers) > 0, "no note reached a follower: nothing was relayed"
    assert sum(relayed.values()) > 0, f"no relay went over a neighbour's rate: the flood tested nothing {relayed}"
    assert set(bans.values()) == {0}, f"honest nodes flood-banned each other: {bans}"
    for node in validators:     # the production budgets of an open type hold in test mode
        assert routers[node.name]["dropped"].get("neighbour_budget", 0) > 0, routers[node.name]["dropped"]
    wait_until(lambda: validators[0].status()["height"] > height_before + 5, 10, message="the chain commits on")
