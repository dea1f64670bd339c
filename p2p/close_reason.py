"""Why a link closed: the reasons this node gives, and the text a peer gave for closing its end.

Our reasons drive decisions (ban or not, redial or not, penalise whom), so they are one closed
vocabulary. What a peer says in its goodbye or refusal is untrusted text: it is cleaned, cut short and
prefixed `remote_`, so a peer can never make us take its words for one of our own verdicts (a goodbye
saying "banned" is `remote_banned`, a fact about the peer's opinion, not a ban here).
"""
from __future__ import annotations

from enum import StrEnum
from typing import NewType


class CloseReason(StrEnum):
    # the peer broke the protocol (the peer is penalised)
    MALFORMED_FRAME = "malformed_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    FRAME_TOO_COMPLEX = "frame_too_complex"     # more arrays and maps, or deeper, than its size allows
    MALFORMED_MESSAGE = "malformed_message"
    BAD_SIGNATURE = "bad_signature"
    SPOOFED_ORIGIN = "spoofed_origin"
    HANDSHAKE_REQUIRED = "handshake_required"
    UNEXPECTED_HANDSHAKE = "unexpected_handshake"
    DUPLICATE_HANDSHAKE = "duplicate_handshake"
    # the encrypted channel could not go on (the path may be at fault, nobody is penalised)
    NOISE_HANDSHAKE_FAILED = "noise_handshake_failed"
    BAD_IDENTITY = "bad_identity"
    DECRYPT_FAILED = "decrypt_failed"
    NONCE_EXHAUSTED = "nonce_exhausted"
    # the handshake found the two nodes should not be linked
    SELF_CONNECTION = "self_connection"
    INCOMPATIBLE_VERSION = "incompatible_version"
    NETWORK_MISMATCH = "network_mismatch"
    IDENTITY_MISMATCH = "identity_mismatch"
    GENESIS_MISMATCH = "genesis_mismatch"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    # admission: no room, or not this peer
    BANNED = "banned"
    TOO_MANY_PEERS = "too_many_peers"
    TOO_MANY_FROM_IP = "too_many_from_ip"
    TOO_MANY_FROM_SUBNET = "too_many_from_subnet"
    TOO_MANY_HANDSHAKES = "too_many_handshakes"     # new connections from that address or subnet came too fast
    ADMISSION_ERROR = "admission_error"
    DUPLICATE_LINK = "duplicate_link"
    DIAL_BACK = "dial_back"              # a reachability check: the dialler only wanted to see who answers
    EVICTED = "evicted"
    # the life of an open link
    SHUTDOWN = "shutdown"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    SEND_BUFFER_OVERFLOW = "send_buffer_overflow"
    INTERNAL_ERROR = "internal_error"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_CLOSED = "connection_closed"
    DIAL_TIMEOUT = "dial_timeout"


class Fault(StrEnum):
    """Who caused a failed link: only PEER is penalised (the path could be anyone; OURS is a bug here)."""
    PEER = "peer"
    PATH = "path"
    OURS = "ours"


RemoteReason = NewType("RemoteReason", str)
# A reason this node closes or refuses a link with: one of ours, or a word a component riding on the links
# chose for a rule of its own (an admission hook refusing a peer, a subscriber rejecting content, a test
# ending a round). Such a word is sent in the goodbye, counted and logged as it is, and p2p's decisions
# (penalty points, bans, redials, quiet closes) give it their defaults, since they key on CloseReason
# members only; so it is a plain str: p2p does not list every component's words.
GivenReason = CloseReason | str
LinkReason = GivenReason | RemoteReason    # why a link closed: a reason given here, or what the peer said

REMOTE_PREFIX = "remote_"
_SAID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_SAID_MAX = 48


def remote_reason(said: object) -> RemoteReason:
    """What a peer said, as a close reason of ours to log and count: lower-cased, letters, digits and
    underscores only, at most 48 of them, `remote_unknown` when nothing is left."""
    text = "".join(c for c in said[:_SAID_MAX].lower() if c in _SAID_CHARS) if isinstance(said, str) else ""
    return RemoteReason(REMOTE_PREFIX + (text or "unknown"))


def with_remote(*reasons: CloseReason) -> frozenset[str]:
    """`reasons` and the same words said by a peer (a set to test either side's close against)."""
    return frozenset(reasons) | {remote_reason(r.value) for r in reasons}
