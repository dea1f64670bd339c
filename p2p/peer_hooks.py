"""What a component riding on the links hears from PeerManager and adds to what it says, in one value.

Each such component (the message router, RPC, NAT traversal, peer exchange, the DHT, discovery, the
chain's network) declares its whole wiring in one method, `peer_hooks()`, and the composition root
(node/app.py) hands the components to `PeerManager.attach` in one place. So what a frame reaches can be
read off one list: the message types each component accepts and handles, the listeners it wants, the
fields it adds to hellos and heartbeats. A message type has one handler in a node; attaching a second is
an error at start, never a silent override.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import GivenReason

if TYPE_CHECKING:
    from p2p.connection import PeerLink

MessageHandler = Callable[["PeerLink", Message], None]
LinkListener = Callable[["PeerLink"], None]
Fields = Callable[[], dict[str, Any]]             # fields added to every hello or heartbeat we send
Admission = Callable[[Message], GivenReason | None]      # the remote's proven hello -> a reason to refuse it, or None
Gate = Callable[["PeerLink", Message], bool]             # False drops the message
DialResult = Callable[[str, bool], None]          # (the discovery source that named the address, linked?)


class Identified(Protocol):
    @property
    def remote_id(self) -> str | None: ...


def proven_id(link: Identified) -> str:
    """The node id of a link a hook hears from: PeerManager runs the hooks of a link (its handlers, open and
    close listeners, gate) only once its Noise handshake proved the id, so it is set there."""
    return cast("str", link.remote_id)


@dataclass(frozen=True, slots=True)
class PeerHooks:
    owner: str                                                   # named when two components claim one type
    schemas: m.SchemaTable = field(default_factory=dict)         # link message types it accepts
    handlers: Mapping[str, MessageHandler] = field(default_factory=dict)   # link-local types it handles
    ungated: frozenset[str] = frozenset()      # of those, types the gate never drops (limited elsewhere)
    application: MessageHandler | None = None  # every message no handler took: the message router's alone
    gate: Gate | None = None                   # asked before any handler (the router's per-peer rate limit)
    on_open: tuple[LinkListener, ...] = ()
    on_close: tuple[LinkListener, ...] = ()
    on_heartbeat: tuple[MessageHandler, ...] = ()
    hello_fields: tuple[Fields, ...] = ()
    heartbeat_fields: tuple[Fields, ...] = ()
    admit: tuple[Admission, ...] = ()
    on_dial_result: tuple[DialResult, ...] = ()
    capabilities: tuple[str, ...] = ()         # what our hello says we offer ("relay", ...)

    def peer_hooks(self) -> PeerHooks:
        """Hooks are a component of their own (a test listening to links, a tool)."""
        return self

    def __add__(self, other: PeerHooks) -> PeerHooks:
        """One component's hooks with those of a part it owns (NAT traversal and its dial-back service)."""
        clash = (set(self.handlers) & set(other.handlers)) | (set(self.schemas) & set(other.schemas))
        if clash or (self.application and other.application) or (self.gate and other.gate):
            raise ValueError(f"{self.owner} and {other.owner} both claim {sorted(clash) or 'the application path'}")
        return PeerHooks(
            owner=self.owner, schemas={**self.schemas, **other.schemas}, handlers={**self.handlers, **other.handlers},
            ungated=self.ungated | other.ungated, application=self.application or other.application,
            gate=self.gate or other.gate, on_open=self.on_open + other.on_open, on_close=self.on_close + other.on_close,
            on_heartbeat=self.on_heartbeat + other.on_heartbeat, hello_fields=self.hello_fields + other.hello_fields,
            heartbeat_fields=self.heartbeat_fields + other.heartbeat_fields, admit=self.admit + other.admit,
            on_dial_result=self.on_dial_result + other.on_dial_result,
            capabilities=self.capabilities + other.capabilities)


class PeerComponent(Protocol):
    """A component PeerManager.attach takes: it says what it hears and adds, and wires nothing itself."""

    def peer_hooks(self) -> PeerHooks: ...
