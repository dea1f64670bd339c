"""Red team: whose rate an agent's transactions spend, on one real validator. The chain's account rate
(exchange/chain/mempool/account_rate.py: ACCOUNT_OPS_BURST, 1,000 operations at once, then ACCOUNT_OPS_RATE, 100 a
second) is one account's; an agent trades for the account that approved it. One owner sends 250-op transactions
itself; another sends the same through eight agent keys it approved; both at once, through one node whose own
API group rate is set high (as for an operator serving many accounts) so only the account rate is measured.
This was a finding: counted under each signing key, the account through eight agents was admitted 24 of 36
where the one signing itself got 4; the intake now charges the account an agent acts for.
"""
from __future__ import annotations

import asyncio
import os

import pytest

from exchange.app.txs import ApproveAgentOp, NewOrderOp, SignedTx
from exchange.crypto import SigningKey
from tests.harness import Cluster, NodeProcess, wait_until
from tests.redteam.rt_honest import post_signed, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AGENTS, TXS = 8, 36           # 36 transactions of 250 operations from each owner, nine times its burst


def _admitted(node: NodeProcess, txs: list[SignedTx]) -> int:
    """How many of `txs`, sent at once, the node admitted (the rest are refused: account_rate)."""
    return asyncio.run(post_signed(node, txs, wait=0)).count(200)


def test_an_owners_agents_share_its_account_rate(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        (node,) = cluster.chain(1, group_ops_rate=1_000_000, group_ops_burst=1_000_000)
        chain_id = node.status()["chain_id"]
        alone, owner = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
        agents = [SigningKey(os.urandom(32)) for _ in range(AGENTS)]
        approvals = signed(chain_id, owner, [ApproveAgentOp.parse(a.public_key.hex(), None, "place", None, None)
                                          for a in agents])
        assert _admitted(node, [approvals]) == 1
        wait_until(lambda: len(node.get(f"/agents?account={owner.public_key.hex()}")["agents"]) == AGENTS, 10)
        ops = [NewOrderOp.parse("BTC-USD", "buy", "ioc", "1", "0.01", None)] * 250
        by_itself = [signed(chain_id, alone, ops) for _ in range(TXS)]
        through_agents = [signed(chain_id, agents[i % AGENTS], ops, owner.public_key) for i in range(TXS)]

        async def both() -> list[list[int]]:
            return list(await asyncio.gather(post_signed(node, by_itself, wait=0),
                                             post_signed(node, through_agents, wait=0)))
        itself, agented = (answers.count(200) for answers in asyncio.run(both()))
        report = (f"of {TXS} 250-op transactions sent at once: {itself} admitted from an account signing itself, "
                  f"{agented} from an account through {AGENTS} agents")
        print(report)
        assert itself >= 1, report
        assert agented <= max(itself + 1, 2 * itself), report
    finally:
        cluster.close()
