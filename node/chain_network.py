"""The chain's view of the peer-to-peer layer: ChainNetwork over this node's links, router and RPC.

Validators' consensus messages go node to node (`send_to_peer`: the direct link, a relay that checks
the origin's signature, or the hold queue); certified blocks are broadcast to everyone (Plumtree),
each checked before it is forwarded (its quorum certificate, when this node can check it); followers
hand transactions to validators through the adaptive RPC router (`chain.submit`), so its scoring,
breakers and retries carry real order traffic. Each handshake and heartbeat carries our chain id and
height; a peer on another chain with the same NETWORK_ID is refused (`genesis_mismatch`).
"""
from __future__ import annotations

import inspect
import logging
import random
from contextlib import contextmanager
from typing import TYPE_CHECKING, Awaitable, Callable, Iterator, cast

from exchange.chain.ports import BadRequest, CannotServe, Throttled
from exchange.chain.service import MESSAGE_TYPES, ChainService
from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.connection import PeerLink
from p2p.peer_hooks import PeerHooks
from p2p.peers import PeerManager
from p2p.router import MessageRouter
from p2p.rpc.errors import BAD_REQUEST, RATE_LIMITED, UNAVAILABLE, RpcError

if TYPE_CHECKING:
    from node.rpc_component import NodeRpc, RpcValue

log = logging.getLogger("node.chain")

_UNICAST = tuple(t for t in MESSAGE_TYPES if t != "chain_decision")
ANSWER_TYPES = frozenset({"chain_sync_response"})      # sent to whoever asked: never held for later


# The envelope of every chain message: its `body` is checked in depth by the chain itself.
CHAIN_SCHEMAS: m.SchemaTable = {kind: m.schema({"body": m.is_any}) for kind in MESSAGE_TYPES}


class P2PChainNetwork:
    def __init__(self, peers: PeerManager, router: MessageRouter, rpc: NodeRpc) -> None:
        self.peers = peers
        self.router = router
        self.rpc = rpc
        self.chain: ChainService | None = None

    # ------------------------------------------------------------------ ChainNetwork
    def send(self, node_id: str, message: m.Message) -> None:
        """To one node; an answer (`ANSWER_TYPES`) goes now, never held for long (MessageRouter.send_to_peer):
        held for a requester nobody reaches, it would be held for whoever asked, and the requester asks again."""
        try:
            self.router.send_to_peer(node_id, message, answer=message.get("type") in ANSWER_TYPES)
        except ValueError as exc:   # e.g. a proposal over MAX_FRAME_BYTES
            log.warning("could not send %s to %s: %s", message.get("type"), node_id[:12], exc)

    def broadcast(self, message: m.Message) -> None:
        try:
            self.router.broadcast(message)
        except ValueError as exc:
            log.warning("could not broadcast %s: %s", message.get("type"), exc)

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        self.peers.penalize(node_id, points, reason)

    def hold_reading(self, node_id: str, seconds: float) -> None:
        self.peers.hold_reading(node_id, seconds)

    def network_of(self, node_id: str) -> str | None:
        return self.peers.network_of(node_id)

    def keep_linked(self, node_ids: set[str]) -> None:
        self.peers.keep_linked(node_ids)

    def offer(self, service: str, handler: Callable[[RpcValue, str], object]) -> None:
        """The chain's handlers raise CannotServe for what they cannot serve now and BadRequest for a bad
        request: both reach the caller as RPC error codes; anything else is our bug (reported as internal).
        A handler answers with what msgpack packs, or with an awaitable of it when it is a coroutine function."""
        if inspect.iscoroutinefunction(handler):
            async def serve_async(payload: RpcValue, peer: str) -> object:
                with _as_rpc_errors():
                    return await cast(Awaitable[object], handler(payload, peer))
            self.rpc.register(service, serve_async)
            return

        def serve(payload: RpcValue, peer: str) -> object:
            with _as_rpc_errors():
                return handler(payload, peer)
        self.rpc.register(service, serve)

    def withdraw(self, service: str) -> None:
        self.rpc.unregister(service)

    def linked_providers(self, service: str) -> list[str]:
        return list(self.rpc.service.providers(service))

    async def call(self, service: str, payload: object, timeout: float, peer: str | None = None) -> RpcValue:
        """The chain's RPC; a peer's `rate_limited` answer (its serving budget for us is spent) raises Throttled."""
        try:
            return await self._call(service, payload, timeout, peer)
        except RpcError as exc:
            if exc.code == RATE_LIMITED:
                raise Throttled(str(exc), exc.retry_after if exc.retry_after is not None else 1.0) from None
            raise

    async def _call(self, service: str, payload: object, timeout: float, peer: str | None) -> RpcValue:
        if peer is not None:
            return await self.rpc.request_peer(peer, service, payload, timeout)
        if self.rpc.service.providers(service) or self.chain is None or self.chain.core is None:
            return await self.rpc.request(service, payload, timeout)
        # no linked peer offers it (a Grenache-only node): ask a validator by name, over whatever path reaches it
        core = self.chain.core
        validators = [v for v in core.state.validators.node_ids if v != core.node_id]
        if not validators:
            raise ConnectionError(f"no peer offers {service}")
        return await self.rpc.request_peer(random.choice(validators), service, payload, timeout)

    def grenache_members(self) -> set[str]:
        """Nodes met through the Grape that we have no link to (they hear from us over Grenache)."""
        grenache = self.router.grenache
        if grenache is None:
            return set()
        return set(grenache.members) - set(self.peers.links)

    # ------------------------------------------------------------------ wiring
    def attach(self, chain: ChainService) -> None:
        """Deliver the chain's messages to `chain`: its unicast types and its decisions from the router.
        Its link hooks are `peer_hooks`, which the composition root attaches to the PeerManager."""
        self.chain = chain
        for kind in _UNICAST:
            self.router.subscribe(kind, chain.on_message)
        self.router.declare_broadcast("chain_decision", validator=self._check_decision)
        self.router.subscribe("chain_decision", chain.on_message)

    def peer_hooks(self) -> PeerHooks:
        """The chain id and height in hellos and heartbeats; a peer on another chain refused at admission;
        what peers say of their chain heard on links opening and in heartbeats."""
        return PeerHooks("chain", schemas=CHAIN_SCHEMAS, hello_fields=(self._chain_fields,),
                         heartbeat_fields=(self._chain_fields,), admit=(self._admit,),
                         on_heartbeat=(self._on_heartbeat,), on_open=(self._on_open,), on_close=(self._on_close,))

    def _on_close(self, link: PeerLink) -> None:
        if self.chain is not None and link.remote_id:
            self.chain.peer_chains.on_peer_gone(link.remote_id)
            self.chain.link_closed(link.remote_id)

    def _chain_fields(self) -> dict[str, object]:
        assert self.chain is not None
        info = self.chain.peer_chains.chain_info()
        return {"chain": [info["chain_id"], info["height"]]}

    def _peer_chain(self, node_id: str | None, public_key: object, fields: object, *,
                    linked: bool = False) -> CloseReason | None:
        if self.chain is None or not node_id:
            return None
        chain = fields.get("chain") if isinstance(fields, dict) else None
        if not (isinstance(chain, list) and len(chain) == 2 and isinstance(chain[0], str) and len(chain[0]) in (0, 64)
                and isinstance(chain[1], int) and 0 <= chain[1] < (1 << 62)):
            return None
        key = public_key if isinstance(public_key, bytes) else b""
        linkable = self.chain.peer_chains.on_peer_info(node_id, key, chain[0] or None, chain[1], linked=linked)
        return None if linkable else CloseReason.GENESIS_MISMATCH

    def _admit(self, hello: m.Message) -> CloseReason | None:
        return self._peer_chain(hello.get("node_id"), None, hello)

    def _on_open(self, link: PeerLink) -> None:
        self._peer_chain(link.remote_id, link.remote_public_key, link.remote_hello or {}, linked=True)

    def _on_heartbeat(self, link: PeerLink, message: m.Message) -> None:
        refusal = self._peer_chain(link.remote_id, link.remote_public_key, message, linked=True)
        if refusal is not None:
            link.close(refusal, "the peer's chain changed to another network's")

    def _check_decision(self, message: m.Message, sender: str) -> bool | None:
        assert self.chain is not None
        return self.chain.check_decision(message.get("body"))


@contextmanager
def _as_rpc_errors() -> Iterator[None]:
    try:
        yield
    except CannotServe as exc:
        raise RpcError(UNAVAILABLE, str(exc)) from None
    except BadRequest as exc:
        raise RpcError(BAD_REQUEST, str(exc)) from None
