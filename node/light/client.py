"""The light client: ask several nodes, verify each answer (`verify.py`), never return an unverified one.

The first node given is the primary and the rest are witnesses; every one is checked the same way, a node whose
answer fails is named and dropped, and the first that verifies answers. Every pair that verified is compared at
the lower of their two heights: two certified headers for one height are a fork, kept as evidence, and the client
stops. The trust root is the chain id: pinned by the caller, or learnt from the first use (only when every node
that answers names the same chain) and kept in a file; it is never replaced without the caller saying so.
"""
from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from node.light.verify import Conflict, Proven, Refused, VerifiedHeader, compare, fingerprint, proven, verified_header

Fetch = Callable[[str, str], object]          # (node URL, path) -> the decoded JSON answer; raises on failure


class NoneVerified(Exception):
    """No node's answer verified; `refused` says why, node by node."""

    def __init__(self, refused: list[Refused]) -> None:
        super().__init__("; ".join(str(r) for r in refused) or "no node given")
        self.refused = refused


class TrustChanged(Exception):
    """The nodes serve another chain than the trusted one, or disagree on first use: the caller must choose."""


@dataclass
class TrustRoot:
    """The chain id this client trusts, kept in `path` (JSON) once learnt or pinned."""

    path: Path
    chain_id: str | None = None
    learnt_from: str | None = None

    @classmethod
    def load(cls, path: Path) -> "TrustRoot":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise TrustChanged(f"cannot read the trust file {path}: {exc}") from None
        chain_id = data.get("chain_id") if isinstance(data, dict) else None
        if not (isinstance(chain_id, str) and len(chain_id) == 64):
            raise TrustChanged(f"the trust file {path} holds no chain id; move it aside to learn one again")
        return cls(path, chain_id, data.get("learnt_from"))

    def save(self, chain_id: str, source: str) -> None:
        self.chain_id, self.learnt_from = chain_id, source
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"chain_id": chain_id, "fingerprint": fingerprint(chain_id),
                                         "learnt_from": source, "at_ms": int(time.time() * 1000)}, indent=1))
        os.replace(temporary, self.path)


@dataclass
class LightStatus:
    verified: VerifiedHeader
    chain_id: str
    agreeing: list[VerifiedHeader] = field(default_factory=list)     # witnesses checked at a common height
    refused: list[Refused] = field(default_factory=list)
    learnt: bool = False

    def as_json(self) -> dict[str, object]:
        return {**self.verified.as_json(), "chain_id": self.chain_id, "fingerprint": fingerprint(self.chain_id),
                "trust_learnt_now": self.learnt, "witnesses_agreeing": [w.node for w in self.agreeing],
                "refused": [{"node": r.node, "reason": r.reason, "message": r.message} for r in self.refused]}


def ask(fetch: Fetch, node: str, path: str) -> object:
    try:
        return fetch(node, path)
    except Refused:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the transport raised: the node is named and dropped
        raise Refused(node, "unreachable", f"{path}: {exc}") from None


def proven_chains(nodes: list[str], trust: TrustRoot, fetch: Fetch,
                  pin: str | None = None) -> tuple[list[tuple[str, Proven]], list[Refused], bool]:
    """Every node's chain proven from its genesis and epoch proofs against the trust root (learnt now when there is
    none, and only when every node that answers names one chain): ([(node, chain)], refused, learnt now)."""
    if pin is not None and trust.chain_id is not None and pin != trust.chain_id:
        raise TrustChanged(f"--trust {fingerprint(pin)} differs from the trusted chain {fingerprint(trust.chain_id)} "
                           f"in {trust.path}; move that file aside to trust another chain")
    trusted = pin or trust.chain_id
    refused: list[Refused] = []
    chains: list[tuple[str, Proven]] = []
    for node in nodes:
        try:
            chains.append((node, proven(node, trusted, ask(fetch, node, "/chain/genesis"),
                                        ask(fetch, node, "/chain/epochs"))))
        except Refused as exc:
            refused.append(exc)
    learnt = False
    if trusted is None:
        named = {chain.chain_id for _, chain in chains}
        if len(named) > 1:
            raise TrustChanged("the nodes serve different chains (" + ", ".join(sorted(fingerprint(c) for c in named))
                               + "): pass --trust CHAIN_ID to choose one")
        if chains:
            trust.save(chains[0][1].chain_id, chains[0][0])
            learnt = True
    elif pin is not None and trust.chain_id is None:
        trust.save(pin, "pinned")
    return chains, refused, learnt


def status(nodes: list[str], trust: TrustRoot, fetch: Fetch, *, pin: str | None = None,
           now_ms: Callable[[], int] = lambda: int(time.time() * 1000), max_age_ms: int = 30_000,
           evidence_dir: Path | None = None) -> LightStatus:
    """The newest header a node serves that verifies, cross-checked with every other node that verifies."""
    chains, refused, learnt = proven_chains(nodes, trust, fetch, pin)
    headers: list[tuple[Proven, VerifiedHeader]] = []
    for node, chain in chains:
        try:
            headers.append((chain, verified_header(node, chain, ask(fetch, node, "/chain/headers/latest"),
                                                   now_ms=now_ms(), max_age_ms=max_age_ms)))
        except Refused as exc:
            refused.append(exc)
    if not headers:
        raise NoneVerified(refused)
    first_chain, first = headers[0]
    agreeing = []
    for chain, other in headers[1:]:
        low, high = (first, (chain, other)) if first.height <= other.height else (other, (first_chain, first))
        if compared(fetch, low, high[1].node, high[0], refused, evidence_dir):
            agreeing.append(other)
    return LightStatus(first, first_chain.chain_id, agreeing, refused, learnt)


def compared(fetch: Fetch, seen: VerifiedHeader, node: str, chain: Proven, refused: list[Refused],
             evidence_dir: Path | None) -> bool:
    """Whether `node` serves, verified, the same header at `seen`'s height; raises Conflict (the evidence kept in
    `evidence_dir`) when it serves another. A node that cannot answer is not compared; one that lies is refused."""
    try:
        at = verified_header(node, chain, ask(fetch, node, f"/chain/headers/{seen.height}"))
    except Refused as exc:
        if exc.reason != "unreachable":
            refused.append(exc)
        return False
    try:
        compare(seen, at)
    except Conflict as conflict:
        if evidence_dir is not None:
            keep_evidence(evidence_dir, conflict)
        raise
    return True


def keep_evidence(directory: Path, conflict: Conflict) -> Path:
    """Both certified headers and commits of a conflicting height, as served, in a file of their own."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"conflict-{conflict.height}-{int(time.time())}.json"
    sides = [{"node": side.node, "header": base64.b64encode(side.header).decode(),
              "commit": base64.b64encode(side.commit).decode()} for side in (conflict.a, conflict.b)]
    path.write_text(json.dumps({"height": conflict.height, "headers": sides}, indent=1))
    return path
