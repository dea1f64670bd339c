"""Real processes: agent keys, as a desk runs a trading bot with a key that cannot do everything.

- The owner approves an agent key on its node (`agent add --markets BTC-USD --cap 1000 --operations
  place,cancel --out FILE`); the bot places and cancels with that key through another node (`order ... --key
  FILE`, and the Python client with `Signer.agent_from_file`), for the owner's account. Everything outside
  the scope is refused with its reason by both nodes: another market, over the cap, a replace, a credit grant,
  approving a key, after the approval expired, after it was revoked.
- A Byzantine validator puts out-of-scope agent transactions into the blocks it proposes (no mempool takes
  them): every node's state machine refuses each with the same reason, and nothing else of the account moves.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange_node_client import ApiError, AsyncClient, Signer
from exchange.app.txs import ApproveAgentOp, GrantOp, NewOrderOp, Op, ReplaceOp, SignedTx, sign_tx
from exchange.crypto import SigningKey
from node.cli.agents import load_key
from tests.harness import Cluster, NodeProcess, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "markets": "BTC-USD,ETH-USD"}


def _agent_tx(node: NodeProcess, key_file: Path, ops: list[Op], signer: SigningKey | None = None) -> SignedTx:
    key, account = load_key(str(key_file))
    signer = signer or key
    return sign_tx(signer.sign, signer.public_key, node.status()["chain_id"], f"t{time.time_ns()}",
                   int(time.time() * 1000) + 30_000, ops, account)


def _refusal(node: NodeProcess, tx: SignedTx) -> str:
    """The code a node refuses a signed transaction with (the batch route answers each op's error in its result)."""
    status, body = node.api("POST", "/orders/batch?wait=5", {"signed": tx.as_json()})
    error = body["error"] if status >= 400 else body["results"][0]["error"]
    return str(error["code"])


def _agents(node: NodeProcess, account: str) -> list[dict]:
    return node.get(f"/agents?account={account}")["agents"]


def test_an_agent_trades_within_its_scope_on_another_node_and_nothing_more(cluster: Cluster, tmp_path: Path):
    owner_node, other = cluster.chain(2, **FAST)
    key_file = tmp_path / "bot.json"
    added = owner_node.cli("agent", "add", "--markets", "BTC-USD", "--cap", "1000", "--operations", "place,cancel",
                           "--out", str(key_file), "--json")
    assert added.returncode == 0, added.stderr
    assert os.stat(key_file).st_mode & 0o077 == 0, "the key file is the owner's only"
    _, owner = load_key(str(key_file))
    agent = json.loads(key_file.read_text())["agent"]
    assert owner.hex() == owner_node.get("/accounts/default")["account"]
    listed = owner_node.cli("agent", "list")
    assert listed.returncode == 0 and agent in listed.stdout and "place,cancel" in listed.stdout, listed.stdout
    wait_until(lambda: [a["agent"] for a in _agents(other, owner.hex())] == [agent], 10)

    placed = other.cli("order", "buy", "BTC-USD", "1", "--price", "90", "--key", str(key_file), "--json")
    assert placed.returncode == 0, placed.stderr
    order = json.loads(placed.stdout)["order"]
    assert (order["account"], order["status"]) == (owner.hex(), "open")           # the owner's order
    gone = other.cli("cancel", order["id"], "--key", str(key_file), "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["order"]["status"] == "cancelled"

    async def bot() -> None:      # the Python client library with the agent's key file, through the other node
        async with AsyncClient(other.api_url, other.api_token, Signer.agent_from_file(key_file)) as client:
            placed = await client.place("BTC-USD", "sell", "1", "160", client_id="bot-1")
            assert placed.final and placed.order and placed.order["account"] == owner.hex(), placed.body
            gone = await client.cancel_by_client_id("bot-1")
            assert gone.final and gone.order and gone.order["status"] == "cancelled", gone.body

    async def owner_client() -> None:    # the owner approves, lists and revokes through the Python client too
        helper = SigningKey(os.urandom(32)).public_key.hex()
        async with AsyncClient(owner_node.api_url, owner_node.api_token) as client:
            approved = await client.approve_agent(helper, markets=["ETH-USD"], operations=["cancel"], cap="10")
            assert approved.final and approved.body["approve_agent"]["status"] == "approved", approved.body
            listed = {a["agent"]: a for a in await client.agents(owner.hex())}
            assert (listed[helper]["markets"], listed[helper]["operations"]) == (["ETH-USD"], ["cancel"])
            assert (await client.revoke_agent(helper)).final
            with pytest.raises(ApiError) as again:           # the node refuses it before the chain does
                await client.revoke_agent(helper)
            assert (again.value.status, again.value.code) == (422, "unknown_agent")

    asyncio.run(bot())
    asyncio.run(owner_client())
    for args, reason in ((["buy", "ETH-USD", "1", "--price", "5"], "market_not_allowed"),
                         (["buy", "BTC-USD", "20", "--price", "90"], "over_notional_cap")):
        refused = other.cli("order", *args, "--key", str(key_file))
        assert refused.returncode != 0 and reason in refused.stderr, refused.stderr
    resting = owner_node.cli("order", "sell", "BTC-USD", "1", "--price", "150", "--json")
    resting_id = json.loads(resting.stdout)["order"]["id"]
    stranger = SigningKey(os.urandom(32))
    refusals: list[tuple[Op, str]] = [
        (ReplaceOp.parse("BTC-USD", resting_id, "151", "1"), "operation_not_allowed"),
        (GrantOp.parse(agent, "USD", "1000"), "agent_cannot_grant"),
        (ApproveAgentOp.parse(stranger.public_key.hex(), None, "place", None, None), "agent_cannot_approve"),
    ]
    for node in (owner_node, other):
        for op, reason in refusals:
            assert _refusal(node, _agent_tx(node, key_file, [op])) == reason, (node.name, op.line())
        unknown = _agent_tx(node, key_file, [NewOrderOp.parse("BTC-USD", "buy", "limit", "1", "1", None)], stranger)
        assert _refusal(node, unknown) == "agent_not_approved"

    brief_file = tmp_path / "brief.json"
    brief = owner_node.cli("agent", "add", "--expires", "1s", "--out", str(brief_file))
    assert brief.returncode == 0, brief.stderr
    brief_agent = json.loads(brief_file.read_text())["agent"]
    wait_until(lambda: any(a["agent"] == brief_agent and a["expired"] for a in _agents(other, owner.hex())), 10,
               message="block time passes the approval's expiry")
    expired = other.cli("order", "buy", "BTC-USD", "1", "--price", "90", "--key", str(brief_file))
    assert expired.returncode != 0 and "agent_expired" in expired.stderr, expired.stderr

    revoked = owner_node.cli("agent", "revoke", agent)
    assert revoked.returncode == 0 and "revoke revoked" in revoked.stdout, revoked.stdout + revoked.stderr
    wait_until(lambda: agent not in [a["agent"] for a in _agents(other, owner.hex())], 10)
    after = other.cli("order", "buy", "BTC-USD", "1", "--price", "90", "--key", str(key_file))
    assert after.returncode != 0 and "agent_not_approved" in after.stderr, after.stderr
    wait_until(lambda: converged([owner_node, other]), 10)
    for node in (owner_node, other):
        assert {o["id"] for o in node.get(f"/orders?account={owner.hex()}&status=open")["orders"]} == {resting_id}


class SmugglingNode(NodeProcess):
    """A validator running tests/integration/byzantine_node.py with the `smuggle` behaviour."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.integration.byzantine_node", *super().command()[3:]]


def test_out_of_scope_agent_transactions_a_byzantine_proposer_smuggles_in_are_refused_by_every_node(
        cluster: Cluster, tmp_path: Path):
    smuggled = tmp_path / "smuggled.jsonl"
    proposer = SmugglingNode(cluster.base, "byz", found_after=0, **FAST)
    proposer.env_extra = {"BYZANTINE": "smuggle", "SMUGGLE_FILE": str(smuggled)}
    cluster.nodes.append(proposer)
    proposer.start()
    wait_until(lambda: proposer.status()["chain_id"], 10, message="the Byzantine node founds a chain")
    follower = cluster.node("follower", bootstrap_peers=proposer.p2p_address, **FAST)
    key_file = tmp_path / "bot.json"
    added = proposer.cli("agent", "add", "--markets", "BTC-USD", "--cap", "1000", "--out", str(key_file))
    assert added.returncode == 0, added.stderr
    _, owner = load_key(str(key_file))
    wait_until(lambda: converged([proposer, follower]) and _agents(follower, owner.hex()), 20)

    stranger = SigningKey(os.urandom(32))
    other_market = _agent_tx(proposer, key_file, [NewOrderOp.parse("ETH-USD", "buy", "limit", "5", "1", None)])
    over_cap = _agent_tx(proposer, key_file, [NewOrderOp.parse("BTC-USD", "buy", "limit", "90", "20", None)])
    unapproved = _agent_tx(proposer, key_file, [NewOrderOp.parse("BTC-USD", "buy", "limit", "90", "1", None)], stranger)
    assert _refusal(follower, other_market) == "market_not_allowed"        # no honest node takes them
    assert _refusal(proposer, unapproved) == "agent_not_approved"
    tmp = smuggled.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(tx.as_json()) + "\n" for tx in (other_market, over_cap, unapproved)))
    tmp.replace(smuggled)

    def judged(node: NodeProcess, tx: SignedTx) -> tuple[str, str] | None:
        status, body = node.api("GET", f"/orders/{tx.order_id(0)}")
        return (body["order"]["status"], body["order"]["reason"]) if status == 200 else None

    for node in (proposer, follower):
        wait_until(lambda: judged(node, other_market) is not None, 15, message=f"{node.name} applies the block")
        assert judged(node, other_market) == ("rejected", "market_not_allowed")
        assert judged(node, over_cap) == ("rejected", "over_notional_cap")
        assert judged(node, unapproved) is None, "a transaction refused whole leaves no order"
        assert node.get(f"/orders?account={owner.hex()}&status=open")["orders"] == []
        assert not any(Decimal(v) for v in node.get(f"/accounts/{owner.hex()}")["positions"].values())
    wait_until(lambda: converged([proposer, follower]), 10)
