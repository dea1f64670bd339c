"""STUN binding answers on the browser port (RFC 8489 test vectors' layout, our own values), their limits, and a
node without aiortc refusing WebRTC offers with a reason instead of failing."""
from __future__ import annotations

import asyncio
import os
import struct
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from node.browser.rtc import MISSING, RtcEndpoint, RtcRefused, fingerprint_of
from node.browser.server import STUN_BURST, StunGate
from node.browser.stun import MAGIC, binding_answer, is_stun, mapped_address


def request(transaction: bytes = b"\x01" * 12, attributes: bytes = b"") -> bytes:
    return struct.pack("!HHI", 0x0001, len(attributes), MAGIC) + transaction + attributes


def test_a_binding_request_is_answered_with_the_address_it_came_from() -> None:
    for host, port in (("11.18.102.1", 40000), ("2001:db8::7", 5)):
        answer = binding_answer(request(os.urandom(12)), host, port)
        assert answer is not None and mapped_address(answer) == (host, port)
    tx = bytes(range(12))
    answer = binding_answer(request(tx), "10.0.0.1", 1)
    assert answer is not None and answer[8:20] == tx and struct.unpack_from("!H", answer)[0] == 0x0101


def test_what_is_not_a_binding_request_gets_nothing() -> None:
    quic_initial = bytes([0xC3]) + b"\x00\x00\x00\x01" + b"\x00" * 40
    assert not is_stun(quic_initial) and binding_answer(quic_initial, "10.0.0.1", 1) is None
    indication = struct.pack("!HHI", 0x0011, 0, MAGIC) + b"\x00" * 12
    assert is_stun(indication) and binding_answer(indication, "10.0.0.1", 1) is None
    assert binding_answer(request()[:-1], "10.0.0.1", 1) is None                 # truncated
    assert binding_answer(request(attributes=b"\x00\x06\x00\x01x\x00\x00\x00")[:-2], "10.0.0.1", 1) is None
    assert binding_answer(request(attributes=b"\x00" * 600), "10.0.0.1", 1) is None   # longer than any we answer


def test_stun_answers_are_limited_per_address_then_in_all() -> None:
    now = [0.0]
    gate = StunGate(clock=lambda: now[0])
    answered = [gate.answer(request(), "11.18.2.1", 9) is not None for _ in range(int(STUN_BURST) + 5)]
    assert sum(answered) == STUN_BURST and gate.refused == 5
    assert gate.answer(request(), "11.18.3.1", 9) is not None, "another address has its own share"
    for i in range(400):                                 # many addresses: the total burst runs out
        gate.answer(request(), f"11.19.{i // 250}.{i % 250}", 9)
    assert gate.answer(request(), "11.18.4.1", 9) is None
    now[0] += 1.0
    assert gate.answer(request(), "11.18.4.1", 9) is not None, "and refills"


async def test_without_aiortc_an_offer_is_refused_and_the_node_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiortc" else real(name, *a))
    monkeypatch.setitem(sys.modules, "aiortc", None)
    rtc = RtcEndpoint(lambda *a: None)  # type: ignore[arg-type]
    assert not rtc.available and rtc.why == MISSING
    with pytest.raises(RtcRefused) as refused:
        await rtc.answer("v=0", stun=None, relay="r", page="p")
    assert refused.value.code == "no_webrtc"
    assert rtc.status() | {} == {"available": False, "why": MISSING, "peers": 0, "offers": 1, "answered": 0,
                                 "connected": 0, "refused": 1, "failed": 0}


def test_the_fingerprint_is_read_from_the_answer() -> None:
    digest = bytes(range(32))
    sdp = "v=0\r\na=setup:active\r\na=fingerprint:sha-256 " + ":".join(f"{b:02X}" for b in digest) + "\r\n"
    assert fingerprint_of(sdp) == digest and fingerprint_of("v=0\r\n") is None


class FakeLink:
    def __init__(self, node_id: str) -> None:
        self.remote_id = node_id
        self.remote_addr = ("11.18.101.1", 7946)
        self.sent: list[dict] = []

    def send(self, message: dict) -> bool:
        self.sent.append(message)
        return True


def service() -> Any:
    from node.browser.config import BrowserConfig
    from node.browser.service import BrowserService

    peers = SimpleNamespace(links={})
    svc = BrowserService(BrowserConfig(), node_id="00" * 20, public_key=b"\0" * 32, sign=lambda d: b"",
                         network_id="n", chain=None, peers=peers, markets=lambda: [])  # type: ignore[arg-type]
    svc.server = SimpleNamespace(port=7946)  # type: ignore[assignment]
    return svc


async def test_a_relayed_offer_reaches_the_node_and_only_its_answer_comes_back() -> None:
    svc = service()
    a, b = FakeLink("aa" * 20), FakeLink("bb" * 20)
    assert (await svc.rtc_offer(a.remote_id, "v=0", "10.0.0.9"))["error"]["code"] == "not_linked"
    svc.peers.links = {a.remote_id: a, b.remote_id: b}
    svc._heard(a, {"browser_rtc": [1]})
    svc._heard(b, {"browser_rtc": ["x"]})             # malformed: not believed
    assert svc.rtc_peers == {a.remote_id: True}
    waiting = asyncio.ensure_future(svc.rtc_offer(a.remote_id, "v=0 offer", "10.0.0.9"))
    await asyncio.sleep(0)
    offer = a.sent[-1]
    assert offer == {"type": "browser_rtc_offer", "id": offer["id"], "sdp": "v=0 offer", "stun_port": 7946,
                     "page": "10.0.0.9"}
    svc._on_rtc_answer(b, {"type": "browser_rtc_answer", "id": offer["id"], "sdp": "forged"})   # not the one asked
    await asyncio.sleep(0)
    assert not waiting.done()
    svc._on_rtc_answer(a, {"type": "browser_rtc_answer", "id": offer["id"], "sdp": "v=0 answer"})
    assert await waiting == {"sdp": "v=0 answer"} and svc._rtc_waiting == {}
    svc._link_closed(a)
    assert svc.rtc_peers == {}


async def test_an_offer_nobody_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.browser.service as service_module

    monkeypatch.setattr(service_module, "RTC_WAIT", 0.01)
    svc = service()
    a = FakeLink("aa" * 20)
    svc.peers.links = {a.remote_id: a}
    svc.rtc_peers[a.remote_id] = True
    assert (await svc.rtc_offer(a.remote_id, "v=0", "p"))["error"]["code"] == "timeout" and svc._rtc_waiting == {}


async def test_a_node_without_webrtc_answers_a_relayed_offer_with_its_reason() -> None:
    svc = service()
    svc.rtc.why = MISSING
    a = FakeLink("aa" * 20)
    svc._on_rtc_offer(a, {"type": "browser_rtc_offer", "id": 3, "sdp": "v=0", "stun_port": 7946, "page": "p"})
    await asyncio.gather(*svc._rtc_tasks)
    assert a.sent == [{"type": "browser_rtc_answer", "id": 3, "error": ["no_webrtc", MISSING]}]
    assert svc._rtc_field() == {}, "it announces no WebRTC to its peers"


def test_a_long_write_goes_as_several_channel_messages() -> None:
    from node.browser.rtc import MESSAGE_CHARS, ChannelPipe

    sent: list[str] = []
    channel = SimpleNamespace(readyState="open", bufferedAmount=0, send=sent.append)
    line = ('{"event":"chain","x":"' + "é" * (2 * MESSAGE_CHARS) + '"}\n').encode()
    ChannelPipe(channel, lambda: None).write(line)
    assert len(sent) == 3 and all(len(m) <= MESSAGE_CHARS for m in sent) and "".join(sent).encode() == line
    channel.readyState = "closing"
    ChannelPipe(channel, lambda: None).write(b"late\n")
    assert len(sent) == 3, "nothing is sent on a channel that is not open"


async def test_an_aiortc_that_cannot_be_imported_turns_webrtc_off(monkeypatch: pytest.MonkeyPatch) -> None:
    rtc = RtcEndpoint(lambda *a: None)  # type: ignore[arg-type]
    rtc.why = None                              # as if find_spec had found it
    monkeypatch.setitem(sys.modules, "aiortc", None)      # importing it now raises ImportError
    with pytest.raises(RtcRefused) as refused:
        await rtc.answer("v=0", stun=None, relay="r", page="p")
    assert refused.value.code == "no_webrtc" and not rtc.available and "cannot be imported" in str(rtc.why)
    assert rtc.peers == {}
