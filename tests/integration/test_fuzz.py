"""Hypothesis-driven fuzzing of a real node after a real (encrypted, authenticated) handshake: every
registered message type and every RPC service, with fields drawn from the wire's own vocabulary
and values of every msgpack shape. The node must never log an unhandled traceback or an internal
error, keep its honest link (and its honest neighbour must keep it, unpenalised), and hold its
memory (RSS) within bounds. `make soak` runs the long version."""
from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import p2p.discovery.pex
import p2p.router
import p2p.rpc.wire  # noqa: F401  (registers the RPC types and hint)
from node.chain_network import CHAIN_SCHEMAS
from p2p.discovery.pex import PEX_SCHEMAS
from p2p.routing.envelope import ROUTING_SCHEMAS
from p2p.rpc.wire import RPC_SCHEMAS
from node.identity import NodeIdentity
from p2p import messages as m
from tests.harness import Cluster, rss_kib, wait_until
from tests.wire import HandshakeRefused, RawPeer

TYPES = sorted(m.Schemas(ROUTING_SCHEMAS, RPC_SCHEMAS, PEX_SCHEMAS, CHAIN_SCHEMAS).types())   # what a node understands
FIELDS = ["id", "origin", "ts", "hops", "dst", "payload", "body", "pk", "sig", "ids", "origins", "rid", "svc", "p",
          "ttl", "r", "err", "msg", "services", "subject", "status", "latency_ms", "error_rate", "service", "peers",
          "events", "cp", "w", "n", "vec", "cps", "reason", "detail", "links", "echo", "hold", "node_id", "protocol",
          "network", "listen_port", "watermark", "capabilities"]
SERVICES = ["ping", "test.echo", "chain.submit", "chain.genesis", "no.such.service"]


@pytest.fixture(scope="module")
def fuzz_pair(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"))
    try:
        target = cluster.node("target", discovery_pex="false", debug_api="true")
        honest = cluster.node("honest", bootstrap_peers=target.p2p_address, discovery_pex="false")
        wait_until(lambda: honest.node_id in target.connected_ids(), 10)
        yield target, honest
    finally:
        cluster.close()


def node_ids(target: str, honest: str) -> st.SearchStrategy:
    return st.sampled_from([target, honest, "0" * 40, "f" * 40]) | st.text("0123456789abcdef", min_size=40, max_size=40)


scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40) | st.binary(max_size=96))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=24)


def messages(target: str, honest: str) -> st.SearchStrategy:
    ids = node_ids(target, honest)
    field_value = values | ids | st.lists(ids, max_size=4) | st.sampled_from(SERVICES)
    generic = st.builds(lambda kind, fields: {"type": kind, **fields}, st.sampled_from(TYPES),
                        st.dictionaries(st.sampled_from(FIELDS), field_value, max_size=8))
    rpc = st.builds(lambda rid, svc, p, extra: {"type": "rpc_request", "rid": rid, "svc": svc, "p": p, **extra},
                    st.integers(min_value=0, max_value=2 ** 63 - 1), st.sampled_from(SERVICES), values,
                    st.dictionaries(st.sampled_from(["ttl", "dst", "origin", "id", "ts", "hops"]), field_value,
                                    max_size=3))
    hexid = st.text("0123456789abcdef", min_size=1, max_size=40)
    ts = st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=0, max_value=2 ** 40)
    envelope = st.fixed_dictionaries({"id": hexid, "origin": ids, "ts": ts, "hops": st.integers(0, 255)},
                                     optional={"dst": ids, "pk": st.binary(min_size=32, max_size=32),
                                               "sig": st.binary(min_size=64, max_size=64), "payload": values})
    shaped = st.one_of(
        envelope.map(lambda e: {"type": "note", **e}),
        envelope.map(lambda e: {"type": "hint", "subject": e["origin"], "status": "DEGRADED",
                                "pk": bytes(32), "sig": bytes(64), **e}),
        st.builds(lambda kind, n, o: {"type": kind, "ids": n, "origins": o}, st.sampled_from(["ihave", "graft"]),
                  st.lists(hexid, max_size=6), st.lists(ids, max_size=6)),
        ids.map(lambda o: {"type": "prune", "origin": o}),
        st.builds(lambda e, body: {"type": "relay", "body": body, **e, "dst": e.get("dst", target),
                                   "pk": e.get("pk", bytes(32)), "sig": e.get("sig", bytes(64))},
                  envelope, st.binary(min_size=1, max_size=200)),
        st.builds(lambda rid, r, err: {"type": "rpc_response", "rid": rid, **({"err": err} if err else {"r": r})},
                  st.integers(0, 2 ** 20), values, st.none() | st.text(max_size=10)),
        st.integers(0, 2 ** 20).map(lambda rid: {"type": "rpc_cancel", "rid": rid}),
        st.lists(st.text(max_size=20), max_size=5).map(lambda s: {"type": "services", "services": s}),
        st.lists(st.tuples(st.text(max_size=20), st.integers(0, 65535), ids | st.none()).map(list), max_size=5)
        .map(lambda p: {"type": "peerexchange", "peers": p}),
        st.fixed_dictionaries({"ts": ts}, optional={"echo": ts, "hold": ts, "links": st.lists(ids, max_size=5),
                                                    "watermark": values})
        .map(lambda h: {"type": "heartbeat", **h}),
        st.builds(lambda e, events: {"type": "sync_request", "vec": events, **e},
                  envelope, st.dictionaries(ids, values, max_size=3)),
    )
    return generic | rpc | shaped | shaped


async def fuzz_once(port: int, batch: list[dict], hello_extra: dict | None) -> None:
    identity = NodeIdentity.generate()
    peer = await RawPeer.connect("127.0.0.1", port)
    try:
        if hello_extra is None:
            await peer.handshake(identity)
        else:
            await peer.secure(identity)
            peer.send(peer.hello(identity) | hello_extra)
        for message in batch:
            try:
                peer.send(message)
            except (TypeError, ValueError, OverflowError):
                continue  # not encodable: nothing to send
        try:
            await peer.until_goodbye(0.15)
        except TimeoutError:
            pass
    except (HandshakeRefused, ConnectionError, TimeoutError):
        pass
    finally:
        peer.close()


def run_fuzz(fuzz_pair, examples: int) -> None:
    target, honest = fuzz_pair
    before = rss_kib(target.proc.pid)
    batches = st.lists(messages(target.node_id, honest.node_id), min_size=1, max_size=8)
    hellos = st.none() | st.none() | st.none() | st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(batch=batches, hello_extra=hellos)
    def fuzz(batch: list[dict], hello_extra: dict | None) -> None:
        asyncio.run(fuzz_once(target.p2p_port, batch, hello_extra))

    fuzz()
    after = rss_kib(target.proc.pid)
    status = target.status()
    print(f"\nfuzz: {examples} batches, RSS {before} -> {after} KiB, close reasons {status['p2p']['close_reasons']}")
    for node in (target, honest):
        text = node.log_path.read_text(errors="replace")
        assert "Traceback" not in text and "Fatal error" not in text, node.log_tail(80)
        assert node.status()["p2p"]["internal_errors"] == {}
    assert honest.node_id in target.connected_ids() and target.node_id in honest.connected_ids()
    for node, other in ((target, honest), (honest, target)):
        row = next(p for p in node.peers() if p["node_id"] == other.node_id)
        assert row["penalty"] == 0
    assert after - before < 64 * 1024, f"RSS grew by {(after - before) / 1024:.1f} MiB"


def test_fuzz_every_message_type_and_rpc_service_after_a_real_handshake(fuzz_pair):
    run_fuzz(fuzz_pair, int(os.environ.get("FUZZ_EXAMPLES", "150")))


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_fuzz_soak(fuzz_pair):
    run_fuzz(fuzz_pair, int(os.environ.get("FUZZ_SOAK_EXAMPLES", "5000")))
