"""A page's session, without QUIC: request lines in, JSON lines out through a StreamSession, the proof, the
limits, and what odd input gets."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nacl.signing import SigningKey

from node.api.base import Json, JsonObject
from node.browser.binding import proof_message
from node.browser.protocol import MAX_IN_FLIGHT, MAX_LINE, MAX_OFFERS, REQUEST_BURST, SESSION_IDLE, BrowserSession, LineTransport
from node.marketdata.session import StreamSession
from node.marketdata.wsframe import text_frame

CERT = b"\x07" * 32


class FakeNode:
    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.stream_requests: list[str] = []
        self.closed: list[StreamSession] = []
        self.release = asyncio.Event()
        self.following: set[BrowserSession] = set()

    def identity(self) -> JsonObject:
        return {"node_id": "ab" * 20, "public_key": bytes(self.key.verify_key).hex()}

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data).signature

    def stream_request(self, session: StreamSession, text: str) -> None:
        self.stream_requests.append(text)

    def stream_closed(self, session: StreamSession) -> None:
        self.closed.append(session)

    async def submit(self, signed: Json) -> JsonObject:
        await self.release.wait()
        if signed == "boom":
            raise RuntimeError("a bug")
        return {"final": True, "tx_id": "t"}

    def nodes(self) -> list[JsonObject]:
        return [{"node_id": "cd" * 20}]

    def follow_headers(self, session: BrowserSession, on: bool) -> None:
        (self.following.add if on else self.following.discard)(session)

    def chain_proofs(self) -> JsonObject:
        return {"chain_id": "c" * 64, "genesis": "", "proofs": []}

    async def rtc_offer(self, to: str, sdp: str, page: str) -> JsonObject:
        await self.release.wait()
        return {"sdp": f"answer to {sdp} for {page}"}


class Wire:
    def __init__(self) -> None:
        self.out = b""
        self.aborted = False

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.split(b"\n") if line]


def session(node: FakeNode | None = None) -> tuple[BrowserSession, Wire, list[tuple[int, str]]]:
    wire = Wire()
    closes: list[tuple[int, str]] = []

    def write(data: bytes) -> None:
        wire.out += data

    def abort() -> None:
        wire.aborted = True
    transport = LineTransport(write, lambda: 0, abort)
    stream = StreamSession(transport, 1 << 20, peer="127.0.0.1")
    return BrowserSession(node or FakeNode(), stream, CERT, peer="127.0.0.1",
                          close=lambda code, why: closes.append((code, why))), wire, closes


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_line_transport_takes_websocket_frames_apart_into_lines() -> None:
    out: list[bytes] = []
    transport = LineTransport(out.append, lambda: 0, lambda: None)
    payloads = [b"{}", b"x" * 200, b"y" * 70_000]
    transport.write(b"".join(text_frame(p) for p in payloads))
    assert out == [b"\n".join(payloads) + b"\n"]


async def test_hello_signs_the_served_certificate_and_the_nonce() -> None:
    node = FakeNode()
    s, wire, _ = session(node)
    nonce = bytes(range(32))
    s.data_received(b'{"event":"hello","nonce":"' + nonce.hex().encode() + b'","req":1}\n')
    await settle()
    [welcome] = wire.lines()
    assert welcome["event"] == "welcome" and welcome["req"] == 1 and welcome["cert_sha256"] == CERT.hex()
    node.key.verify_key.verify(proof_message(CERT, nonce), bytes.fromhex(welcome["sig"]))


async def test_requests_split_across_reads_and_odd_input_get_errors_not_a_crash() -> None:
    node = FakeNode()
    s, wire, closes = session(node)
    for chunk in (b'{"event":"sub', b'scribe","channel":"book"}\n{"event":"nodes","req":"n"}\nnot json\n',
                  b'[1]\n{"event":"hello","nonce":"zz"}\n{"event":"what"}\n{"event":"nodes","req":true}\n'):
        s.data_received(chunk)
    await settle()
    assert node.stream_requests == ['{"event":"subscribe","channel":"book"}']
    codes = [line.get("code") or line["event"] for line in wire.lines()]
    assert codes == ["nodes", "invalid_json", "invalid_request", "bad_nonce", "unknown_event", "invalid_req"]
    assert closes == []


async def test_a_line_longer_than_the_limit_ends_the_session() -> None:
    s, _, closes = session()
    s.data_received(b"x" * (MAX_LINE + 1))
    assert closes and "longer" in closes[0][1]
    s.data_received(b'{"event":"nodes"}\n')          # nothing more is read


async def test_a_page_asking_too_fast_is_cut_off() -> None:
    s, _, closes = session()
    s.data_received(b'{"event":"ping"}\n' * int(REQUEST_BURST + 1))
    assert closes and "too many requests" in closes[0][1]


async def test_submissions_in_flight_are_bounded_and_a_bug_is_an_answer() -> None:
    node = FakeNode()
    s, wire, _ = session(node)
    s.data_received(b"".join(b'{"event":"submit","signed":{},"req":%d}\n' % i for i in range(MAX_IN_FLIGHT + 1)))
    await settle()
    assert [line["code"] for line in wire.lines()] == ["too_many_in_flight"]
    node.release.set()
    await settle()
    assert sum(line["event"] == "submitted" for line in wire.lines()) == MAX_IN_FLIGHT
    s.data_received(b'{"event":"submit","signed":"boom","req":"b"}\n')
    await settle()
    assert wire.lines()[-1] == {"event": "submitted", "error": {"code": "internal",
                                "msg": "the node could not take this transaction"}, "req": "b"}


async def test_closing_forgets_the_headers_and_the_stream_once() -> None:
    node = FakeNode()
    s, _, closes = session(node)
    s.data_received(b'{"event":"headers"}\n')
    assert node.following == {s}
    s.close(1000, "bye")
    s.close(1000, "again")
    assert node.following == set() and node.closed == [s.stream] and closes == [(1000, "bye")]



async def test_a_page_that_asks_nothing_for_a_while_is_idle() -> None:
    now = [100.0]
    stream = StreamSession(LineTransport(lambda d: None, lambda: 0, lambda: None), 1 << 20, peer="127.0.0.1")
    s = BrowserSession(FakeNode(), stream, CERT, peer="127.0.0.1", close=lambda c, w: None, clock=lambda: now[0])
    assert not s.idle(now[0] + SESSION_IDLE)
    now[0] += SESSION_IDLE / 2
    s.request(b'{"event":"nodes"}')          # a request (the page's ping) keeps it alive
    assert not s.idle(now[0] + SESSION_IDLE) and s.idle(now[0] + SESSION_IDLE + 0.1)


async def test_webrtc_offers_are_carried_a_few_at_a_time_and_odd_ones_refused() -> None:
    node = FakeNode()
    s, wire, _ = session(node)
    s.data_received(b'{"event":"rtc_offer","to":"x","sdp":"o","req":0}\n')
    for i in range(1, MAX_OFFERS + 2):
        s.data_received(b'{"event":"rtc_offer","to":"' + b"cd" * 20 + b'","sdp":"o%d","req":%d}\n' % (i, i))
    await settle()
    assert [(line["req"], line["code"]) for line in wire.lines()] == [(0, "invalid_offer"),
                                                                       (MAX_OFFERS + 1, "too_many_in_flight")]
    node.release.set()
    await settle()
    assert wire.lines()[-1] == {"event": "rtc_answer", "sdp": f"answer to o{MAX_OFFERS} for 127.0.0.1",
                                "req": MAX_OFFERS}
    s.data_received(b'{"event":"rtc_offer","to":"' + b"cd" * 20 + b'","sdp":"o9","req":9}\n')
    await settle()
    assert wire.lines()[-1]["sdp"] == "answer to o9 for 127.0.0.1", "the next offer once the others are answered"
