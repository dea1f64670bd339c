"""Real processes: a relay's reservation table, full, makes room for a newcomer from a less crowded network
(p2p/nat/relay_server.py). As filed, 64 reservations from 16 /24s, four each (within the per-/24 cap), held every
slot, and a newcomer from another network got `relay_full` for as long as those links lived."""
from __future__ import annotations

import asyncio
import time

from node.identity import NodeIdentity
from tests.flood import stay_linked
from tests.harness import Cluster, NodeProcess, wait_until
from tests.wire import RawPeer


async def _reserve(relay: NodeProcess, source: str) -> tuple[RawPeer, dict]:
    """A link from a fresh key at `source` (loopback), and the relay's answer to its `relay.reserve`."""
    peer = await RawPeer.connect("127.0.0.1", relay.p2p_port, local_host=source)
    await peer.handshake(NodeIdentity.generate())
    peer.send({"type": "relay.reserve"})
    deadline = time.monotonic() + 10
    while True:
        message = await peer.next_message(max(0.1, deadline - time.monotonic()))
        assert message is not None, f"{source}: the relay closed the link"
        if message["type"] == "relay.reservation":
            return peer, message


def test_a_full_relay_table_makes_room_for_a_newcomer_of_another_network(cluster: Cluster) -> None:
    relay = cluster.node("relay", discovery_pex="false", max_peers=100)
    cluster.node("helper", bootstrap_peers=relay.p2p_address, discovery_pex="false")   # answers its dial-back
    wait_until(lambda: relay.status()["reachability"] == "public", 30, 0.2, "the relay public")

    async def scenario() -> tuple[list[str], dict, list[dict]]:
        crowd: list[RawPeer] = []
        alive: list[asyncio.Task[None]] = []
        try:
            answers = []
            for n in range(16):
                for i in range(1, 5):
                    peer, answer = await _reserve(relay, f"127.0.{60 + n}.{i}")
                    crowd.append(peer)
                    answers.append(answer["status"])
            alive = [asyncio.create_task(stay_linked(peer, interval=0.5)) for peer in crowd]
            _, newcomer = await _reserve(relay, "127.0.99.1")
            status = await asyncio.to_thread(relay.status)
            return answers, newcomer, [status["nat"]["relay_service"]]
        finally:
            for task in alive:
                task.cancel()
            for peer in crowd:
                peer.close()

    answers, newcomer, (service,) = asyncio.run(scenario())
    print(f"\ncrowd {answers.count('ok')} of {len(answers)} reserved; newcomer {newcomer}; relay {service['counters']}")
    assert answers == ["ok"] * 64 and service["reservations"] == 64
    assert newcomer["status"] == "ok", newcomer
    assert service["counters"]["reservations_evicted"] == 1
