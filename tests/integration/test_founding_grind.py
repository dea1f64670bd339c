"""Founding nobody can grind, on real processes (mDNS on 127.0.0.1 under a NETWORK_ID of their own).

An attacker whose node id was ground to sort below every honest node's and that runs with MAX_VALIDATORS=1
starts beside four honest nodes with nothing configured. It used to found the network alone, the four
followed its chain and it held the only seat. Now it founds its own network of one: each honest node saw it
with no chain beside it, refuses a chain founded without it (a WARNING naming the founder) and the four
found their own network jointly, each holding a seat. A newcomer given nothing then sees two networks under
the one NETWORK_ID: it joins neither and says so, naming both (log, /ready, /status, /metrics); restarted
with CHAIN_ID it joins the one named.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.identity import KEY_FILE_NAME, NodeIdentity
from tests.integration.chain_nodes import node_ids, wait_for
from tests.stream_client import StreamClient

pytestmark = pytest.mark.timeout(180)
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def _grind_key(data_dir: Path, below: str) -> tuple[str, int]:
    """Write a node key whose id starts with "00" and sorts below `below`, as an attacker grinds one; returns
    the id and the tries it took."""
    tries = 0
    while True:
        tries += 1
        key = Ed25519PrivateKey.generate()
        node_id = NodeIdentity.node_id_for(key.public_key().public_bytes(*_RAW))
        if node_id.startswith("00") and node_id < below:
            break
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / KEY_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return node_id, tries


async def console_chain(api_url: str) -> dict:
    """The console's chain panel, as the stream's status channel sends it."""
    client = await StreamClient.connect(api_url)
    try:
        chan = await client.subscribe("status")
        await client.wait_for(lambda: bool(client.data.get(chan)))
        return dict(client.data[chan][0]["status"]["chain"])
    finally:
        await client.close()


def test_a_ground_id_with_one_seat_founds_nobody_elses_network(cluster):
    lan = {"discovery_mdns": "true", "mdns_interfaces": "127.0.0.1", "network_id": f"test-grind-{os.getpid()}",
           "found_after": None, "heartbeat_interval": None}         # FOUND_AFTER and heartbeats: the defaults
    honest_names = [f"h{i}" for i in range(4)]
    honest_ids = node_ids(cluster.base, honest_names)
    attacker_id, tries = _grind_key(cluster.base / "attacker", min(honest_ids))
    attacker = cluster.node("attacker", start=False, max_validators=1, **lan)
    honest = [cluster.node(name, start=False, **lan) for name in honest_names]
    everyone = [attacker, *honest]
    for node in [*honest, attacker]:        # the attacker last: its head start is its id, not its timing
        node.start(wait=False)
    for node in everyone:
        node.wait_ready()
    assert attacker.node_id == attacker_id and all(attacker_id < n.node_id for n in honest)

    def honest_network() -> bool:
        views = [n.status() for n in honest]
        chains = {v["chain_id"] for v in views}
        return (len(chains) == 1 and None not in chains and all(v["quorum"] for v in views)
                and all(sorted(v["validators"]) == sorted(honest_ids) for v in views))
    wait_for(honest_network, 60, "the four honest nodes on one chain, holding its four seats", everyone)
    wait_for(lambda: attacker.status()["chain_id"] is not None, 10, "the attacker on a chain", everyone)
    rogue = attacker.status()
    assert rogue["validators"] == [attacker_id], rogue["validators"]      # it founded a network of its own
    views = {n.name: n.status() for n in honest}
    joint = views["h0"]["chain_id"]
    assert rogue["chain_id"] != joint
    for name, view in views.items():
        assert attacker_id not in view["validators"] and view["role"] == "validator", (name, view["validators"])
    refusals = [n.name for n in honest if re.search(
        rf"WARNING exchange\.chain: not joining chain {rogue['chain_id'][:16]} \(founder {attacker_id[:12]}, 1 "
        rf"validator\(s\)\): its founder {attacker_id[:12]} was chain-less beside this node",
        n.log_path.read_text(errors="replace"))]
    assert refusals, "no honest node said why it refused the attacker's chain"
    print(f"\nattacker id {attacker_id[:12]} ground in {tries} tries, MAX_VALIDATORS=1: it founded a network of one; "
          f"the four honest nodes founded theirs jointly (4 seats); {len(refusals)} of them logged the refusal")

    # a newcomer given nothing now sees two networks under the one NETWORK_ID: it joins neither, and says so
    newcomer = cluster.node("newcomer", start=False, **lan)
    newcomer.start()

    def says_two_networks() -> str | None:
        status, ready = newcomer.api("GET", "/ready")
        detail = next((c["detail"] for c in ready["checks"] if c["name"] == "chain"), "")
        return detail if status == 503 and joint[:12] in detail and rogue["chain_id"][:12] in detail else None
    detail = wait_for(says_two_networks, 30, "the newcomer's /ready naming both networks", [newcomer])
    assert "2 networks" in detail and "CHAIN_ID=" in detail, detail
    assert "(4 peer(s))" in detail and "(1 peer(s))" in detail, detail
    seen = newcomer.status()
    assert seen["chain_id"] is None
    assert seen["networks_in_sight"] == [{"chain_id": joint, "peers": 4},
                                         {"chain_id": rogue["chain_id"], "peers": 1}], seen["networks_in_sight"]
    assert newcomer.metric("exchange_node_chain_networks_in_sight") == 2.0
    log = newcomer.log_path.read_text(errors="replace")
    warned = re.findall(r"WARNING exchange\.chain: not joining any network: peers are on 2 networks.*", log)
    assert len(warned) == 1 and joint in warned[0] and rogue["chain_id"] in warned[0], warned
    assert "CHAIN_ID=" in warned[0]
    panel = asyncio.run(console_chain(newcomer.api_url))        # what the console's banner is drawn from
    assert panel["networks_in_sight"] == seen["networks_in_sight"] and "CHAIN_ID=" in panel["founding"], panel

    newcomer.stop()
    newcomer.start(chain_id=joint)
    started = time.monotonic()
    wait_for(lambda: newcomer.status()["chain_id"] == joint, 30, "the newcomer on the chain CHAIN_ID names",
             [newcomer, *honest])
    assert newcomer.status()["role"] == "follower"
    print(f"a newcomer given nothing joined neither network and named both; with CHAIN_ID it followed the honest "
          f"one {time.monotonic() - started:.1f}s after its restart")
