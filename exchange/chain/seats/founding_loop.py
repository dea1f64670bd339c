"""The founding loop of a node with no chain yet: every 200 ms it asks Founding (sans-I/O,
exchange/chain/seats/founding.py) what to do, then founds a chain (its genesis written) or adopts a peer's (its
genesis fetched, checked to be the chain the decision names, to carry our network and markets, and, with no
trust anchor, judged by `Founding.judge`), until a genesis is in place; the service then boots from it.
With two networks in sight and nothing to choose by, it says so in a WARNING at most every SPLIT_WARN_EVERY
seconds.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Callable, NotRequired, Protocol, TypedDict

from exchange.app import ExchangeParams
from exchange.chain.seats.founding import Decision, Founding
from exchange.chain.types.genesis import Genesis
from exchange.chain.ports import ChainNetwork, ChainStore
from exchange.crypto import node_id_for

log = logging.getLogger("exchange.chain")

GENESIS_SERVICE = "chain.genesis"
RETRY = 0.2         # s between founding decisions
GENESIS_ASKED = 16  # holders of the chain asked for its genesis at once ...
GENESIS_RETRY_AFTER = 30.0      # ... of those that have not failed to hand it over in this many seconds
SPLIT_WARN_EVERY = 60.0         # s between WARNINGs that two networks are in sight and none was chosen


@dataclass(frozen=True, slots=True)
class ChainRules:
    """What a chain founded here carries, and what a chain adopted here must match (network, markets)."""
    network_id: str
    markets: str
    order_ttl_ms: int
    max_open_orders: int | None
    fresh_order_ttl_ms: int | None
    max_validators: int
    snapshot_interval: int
    snapshot_lag: int
    snapshot_min_ms: int
    seat_rule: str
    absent: tuple[int, int]         # (blocks, ms) without a signature or proposal that jail a validator

    def problem_with(self, genesis: Genesis) -> str | None:
        """Why this node will not join `genesis`, or None."""
        if genesis.network_id != self.network_id:
            return f"its NETWORK_ID is {genesis.network_id!r}, ours {self.network_id!r}"
        ours = ExchangeParams(markets=self.markets).to_wire().get("markets")
        theirs = genesis.exchange.get("markets")
        if ours != theirs:
            return (f"it trades {theirs!r} but MARKETS here is {ours!r}; set MARKETS to match the network "
                    f"(or use another NETWORK_ID)")
        return None


class Conflict(TypedDict):
    """A peer on another chain than ours (shown in /status as `conflicts`)."""

    chain_id: str
    reason: str
    height: NotRequired[int]        # its height and when we heard it: known from its hello or heartbeat
    seen: NotRequired[float]


class FoundingHost(Protocol):
    """What the loop reads and sets on the chain service."""
    genesis: Genesis | None
    founding_status: str
    trust: str

    def note_conflict(self, node_id: str, conflict: Conflict) -> None:
        """A peer on another chain (shown in /status, bounded by count and age)."""
        ...

    def boot(self, genesis: Genesis) -> None: ...


class FoundingLoop:
    def __init__(self, host: FoundingHost, rules: ChainRules, founding: Founding, network: ChainNetwork,
                 store: ChainStore, founder_key: bytes, clock: Callable[[], float]) -> None:
        self.host = host
        self.rules = rules
        self.founding = founding
        self.network = network
        self.store = store
        self.founder_key = founder_key
        self.clock = clock
        self._failed: dict[str, float] = {}        # holders that did not hand over the genesis -> when
        self._split_warned = float("-inf")
        founding.max_seats = max(1, min(rules.max_validators, founding.max_seats))

    async def run(self) -> None:
        last_reason = ""
        while self.host.genesis is None:
            decision = self.founding.decide(self.clock())
            if decision.reason != last_reason:
                log.info("founding: %s", decision.reason)
                last_reason = decision.reason
            self.host.founding_status = decision.reason
            self._warn_split()
            try:
                if decision.action == "found":
                    self._found_chain(decision)
                elif decision.action in ("adopt", "inspect"):
                    await self._adopt(decision)
            except Exception:     # one bad peer answer must not end the founding loop
                log.exception("founding step failed")
            if self.host.genesis is None:
                await asyncio.sleep(RETRY)

    def _warn_split(self) -> None:
        """Two or more networks under our NETWORK_ID and nothing to choose between them by: said loudly, with
        the whole chain ids an operator needs for CHAIN_ID."""
        networks = self.founding.networks
        now = self.clock()
        if not networks or now - self._split_warned < SPLIT_WARN_EVERY:
            return
        self._split_warned = now
        names = "; ".join(f"chain {chain_id} ({peers} peer(s))" for chain_id, peers in networks)
        log.warning("not joining any network: peers are on %d networks with NETWORK_ID %r: %s. This node has "
                    "no CHAIN_ID or join token to choose by and will not choose by counting nodes; restart it with "
                    "CHAIN_ID=<one of these ids>, or with a join token issued on the network you mean",
                    len(networks), self.rules.network_id, names)

    def _found_chain(self, decision: Decision) -> None:
        rules = self.rules
        params = ExchangeParams(markets=rules.markets, order_ttl_ms=rules.order_ttl_ms,
                                max_open_orders=rules.max_open_orders, fresh_order_ttl_ms=rules.fresh_order_ttl_ms)
        genesis = Genesis(network_id=rules.network_id, created_ms=int(self.clock() * 1000),
                          founder=self.founder_key, validators=tuple(decision.validators),
                          max_validators=rules.max_validators, pinned=decision.pinned, exchange=params.to_wire(),
                          snapshot_interval=rules.snapshot_interval,
                          snapshot_lag=min(rules.snapshot_lag, rules.snapshot_interval // 2),
                          snapshot_min_ms=rules.snapshot_min_ms,
                          admission_key=b"", seat_rule=rules.seat_rule,
                          absent_blocks=rules.absent[0], absent_ms=rules.absent[1])
        self.store.save_genesis(genesis)
        log.warning("founded a new network %s (chain %s) with %d validator(s)%s", rules.network_id,
                    genesis.chain_id[:16], len(genesis.validators), ", pinned" if decision.pinned else
                    "; to seat another node, issue a join token with `exchange-node validators token new`")
        self.host.boot(genesis)

    async def _adopt(self, decision: Decision) -> None:
        """Ask up to GENESIS_ASKED holders at once, in random order, those that failed lately last, and take the
        first answer that is the chain's genesis (its id is its hash): a claimed height decides nothing, and
        strangers claiming the highest heights and never answering must not keep us from the genesis an
        honest holder has."""
        now = self.clock()
        self._failed = {peer: at for peer, at in self._failed.items() if now - at < GENESIS_RETRY_AFTER}
        holders = [peer for peer in decision.peers if peer not in self._failed] or list(decision.peers)
        random.shuffle(holders)
        asks = [asyncio.ensure_future(self._fetch_genesis(peer)) for peer in holders[:GENESIS_ASKED]]
        try:
            for answer in asyncio.as_completed(asks):
                peer, genesis = await answer
                if genesis is not None and self._take(decision, peer, genesis):
                    return
            if decision.action == "inspect" and decision.chain_id is not None:
                self.founding.unanswered(decision.chain_id, self.clock())
        finally:
            for ask in asks:
                ask.cancel()

    async def _fetch_genesis(self, peer: str) -> tuple[str, Genesis | None]:
        try:
            wire = await self.network.call(GENESIS_SERVICE, None, timeout=3.0, peer=peer)
            return peer, Genesis.from_wire(wire)
        except Exception as exc:  # noqa: BLE001 - a peer's failed answer, whatever it raised
            log.info("could not fetch the genesis from %s: %s", peer[:12], exc)
            self._failed[peer] = self.clock()          # asked again only after the others (GENESIS_RETRY_AFTER)
            return peer, None

    def _take(self, decision: Decision, peer: str, genesis: Genesis) -> bool:
        """`peer`'s answer: whether the founding step is over (the genesis adopted, or the chain refused)."""
        if genesis.chain_id != decision.chain_id:
            self.network.penalize(peer, 50.0, "genesis_mismatch")
            return False
        problem = self.rules.problem_with(genesis)
        if problem is not None:
            log.error("not joining chain %s of peer %s: %s", genesis.chain_id[:16], peer[:12], problem)
            self.founding.refused.add(genesis.chain_id)
            self.host.note_conflict(peer, {"chain_id": genesis.chain_id, "reason": problem})
            return True
        verdict = self.founding.judge(genesis.chain_id, genesis.founder, genesis.validators, self.clock())
        if verdict.action == "refuse":
            log.warning("not joining chain %s (founder %s, %d validator(s)): %s", genesis.chain_id[:16],
                        node_id_for(genesis.founder)[:12], len(genesis.validators), verdict.reason)
            self.host.note_conflict(node_id_for(genesis.founder), {"chain_id": genesis.chain_id,
                                                                   "reason": f"refused: {verdict.reason}"})
            return True
        if verdict.action == "later" or decision.action == "inspect":
            if verdict.action == "later":
                log.info("founding: %s; asking again", verdict.reason)
            return True             # judged (or to be): the next decision takes it from here
        self.store.save_genesis(genesis)
        trust = "joint_founding" if verdict.joint and decision.trust == "only_chain" else decision.trust
        self.host.trust = trust or self.host.trust
        if trust == "only_chain":
            log.warning("following network %s (chain %s), the only one in sight, as a follower: nobody chose it "
                        "for this node; set CHAIN_ID or JOIN_TOKEN to pin the chain you mean",
                        genesis.network_id, genesis.chain_id[:16])
        log.info("joined network %s (chain %s) through %s", genesis.network_id, genesis.chain_id[:16], peer[:12])
        self.host.boot(genesis)
        return True
