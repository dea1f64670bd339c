"""Origin signatures: what proves who authored a message that reached us through other nodes.

A link proves only its neighbour's identity. Content that crossed other nodes names its author in
`origin`, and that name is trusted only under the author's Ed25519 signature:

- a broadcast of a type declared `origin_signed` carries `pk` (the origin's public key, whose
  sha256 gives the node id) and `sig` over DOMAIN | network | the message without `id`, `hops`
  and `sig` (msgpack, in the message's own key order: relays change only `hops`). Its `id` is
  derived from the signature, so no one can put another origin's id on different content and have
  the real message dropped as a duplicate;
- a relayed unicast travels in a `relay` wrapper whose `body` (the encoded inner message) the
  origin signed; relays and the target check it before forwarding or handling it.

Both carry the origin's wall-clock `ts`; a message older or newer than `max_age` is refused as
stale, and `max_age` is half the seen-cache TTL, so a replay is either still remembered as a
duplicate or already too old.
"""
from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Callable, Protocol

from p2p.messages import Message
from p2p.framing import encode_body

if TYPE_CHECKING:
    from p2p.peers import Identity


class SigningPeers(Protocol):
    """What origin signatures take from the PeerManager: our identity and the network's checks."""

    @property
    def node_id(self) -> str: ...
    @property
    def network_id(self) -> str: ...
    @property
    def identity(self) -> Identity: ...

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool: ...

    def node_id_for(self, public_key: bytes) -> str: ...

BROADCAST_DOMAIN = b"exchange-node/broadcast/1|"
RELAY_DOMAIN = b"exchange-node/relay/1|"
UNSIGNED_FIELDS = frozenset({"id", "hops", "sig"})


def signed_id(signature: bytes) -> str:
    """The message id of an origin-signed broadcast: 12 bytes of sha256(signature), in hex."""
    return hashlib.sha256(signature).digest()[:12].hex()


class OriginAuth:
    def __init__(self, *, node_id: str, public_key: bytes, sign: Callable[[bytes], bytes],
                 verify: Callable[[bytes, bytes, bytes], bool], node_id_for: Callable[[bytes], str], network: str,
                 max_age: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self._sign = sign
        self._verify = verify
        self._node_id_for = node_id_for
        self._prefix = network.encode() + b"|"
        self.max_age = max_age
        self.clock = clock

    @classmethod
    def for_peers(cls, peers: SigningPeers, max_age: float) -> "OriginAuth":
        return cls(node_id=peers.node_id, public_key=peers.identity.public_key_bytes, sign=peers.identity.sign,
                   verify=peers.verify, node_id_for=peers.node_id_for, network=peers.network_id, max_age=max_age)

    # --- broadcasts -------------------------------------------------------------------------
    def _broadcast_bytes(self, message: Message) -> bytes:
        return BROADCAST_DOMAIN + self._prefix + encode_body(
            {k: v for k, v in message.items() if k not in UNSIGNED_FIELDS})

    def sign_broadcast(self, envelope: Message) -> None:
        """Add pk, sig and the derived id to an envelope of ours (its other fields final)."""
        envelope.pop("id", None)
        envelope["pk"] = self.public_key
        signature = self._sign(self._broadcast_bytes(envelope))
        envelope["sig"] = signature
        envelope["id"] = signed_id(signature)

    def check_broadcast(self, message: Message) -> str | None:
        """None if the origin signed exactly this message, else why not ("bad_signature", "stale")."""
        pk, sig = message.get("pk"), message.get("sig")
        if type(pk) is not bytes or type(sig) is not bytes or len(sig) != 64 or message["id"] != signed_id(sig):
            return "bad_signature"
        if self._node_id_for(pk) != message["origin"] or not self._verify(pk, sig, self._broadcast_bytes(message)):
            return "bad_signature"
        return self.staleness(message)

    def staleness(self, message: Message) -> str | None:
        ts = message.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or abs(self.clock() - ts) > self.max_age:
            return "stale"
        return None

    # --- relayed unicasts -------------------------------------------------------------------
    def sign_relay(self, wrapper: Message) -> None:
        wrapper["pk"] = self.public_key
        wrapper["sig"] = self._sign(RELAY_DOMAIN + self._prefix + wrapper["body"])

    def check_relay(self, wrapper: Message) -> bool:
        pk, sig = wrapper.get("pk"), wrapper.get("sig")
        return (type(pk) is bytes and type(sig) is bytes and self._node_id_for(pk) == wrapper["origin"]
                and self._verify(pk, sig, RELAY_DOMAIN + self._prefix + wrapper["body"]))
