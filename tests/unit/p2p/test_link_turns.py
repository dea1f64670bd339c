"""A link hands its messages over a few at a time per event-loop turn, and is not read while it has a backlog
or is held: one peer's burst must not hold the loop, and every other link's votes behind it."""
from __future__ import annotations

import asyncio
import collections
import time

import pytest

from p2p.admission import netgroup
from p2p.close_reason import CloseReason, LinkReason
from p2p.connection import HANDSHAKING, OPEN, Direction, PeerLink
from p2p.framing import encode_frame
from p2p.link_reading import SHARED_TURNS_SECONDS, TURN_MESSAGES, TURN_SECONDS, ReadTurns
from p2p.messages import Message


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.resumed = asyncio.Event()
        self.pauses = 0

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True
        self.resumed.set()

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Schemas:
    checks = {"ping": lambda message: None}     # the compiled check of an application type: passes


class _Host:
    """What a PeerLink asks of its host while open: where messages go, and the limits it reads."""
    max_frame_bytes = 1 << 20
    send_buffer_bytes = 1 << 20
    read_rate = 10_000_000.0
    read_burst = 2_000_000.0
    schemas = _Schemas()

    def __init__(self) -> None:
        self.read_turns = ReadTurns()
        self.delivered: list[tuple[int, int]] = []      # (turn, seq)
        self.turn = 0

    def on_message(self, link: PeerLink, message: Message) -> None:
        self.delivered.append((self.turn, message["seq"]))

    def on_closed(self, link: PeerLink, reason: LinkReason, was_open: bool) -> None:
        pass

    def on_internal_error(self, link: PeerLink, where: str, exc: BaseException) -> None:
        raise AssertionError(f"{where}: {exc!r}") from exc


def _open_link(host: _Host) -> tuple[PeerLink, _Transport]:
    link = PeerLink(host, Direction.INBOUND)  # type: ignore[arg-type]  # a host with only what an open link uses
    transport = _Transport()
    link.transport = transport
    link.state = OPEN
    return link, transport


@pytest.fixture
def no_turn_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns end at TURN_MESSAGES only: the tests that count messages per turn are about the order of turns, and
    on a busy test worker 64 messages took longer than TURN_SECONDS (a turn of 16 now and then)."""
    monkeypatch.setattr("p2p.connection.TURN_SECONDS", 60.0)
    monkeypatch.setattr("p2p.link_reading.SHARED_TURNS_SECONDS", 60.0)


async def _next_turn() -> None:
    await asyncio.sleep(0)


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_burst_is_handed_over_a_turn_at_a_time_with_reading_paused_until_it_is_through() -> None:
    host = _Host()
    link, transport = _open_link(host)
    burst = 3 * TURN_MESSAGES + 5
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(burst)])
    assert len(host.delivered) == TURN_MESSAGES and not transport.reading
    other: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: other.append(len(host.delivered)))     # another link's callback
    link.reading.deliver([{"type": "ping", "seq": burst}])     # arrives while behind: queued after the backlog, in order
    turns = 0
    while not transport.reading:
        host.turn += 1
        turns += 1
        await _next_turn()
        assert turns < 10, "the backlog never drained"
    assert [seq for _, seq in host.delivered] == list(range(burst + 1))
    assert other == [2 * TURN_MESSAGES], "another callback ran between two turns of the burst"
    per_turn = [sum(1 for turn, _ in host.delivered if turn == t) for t in range(turns + 1)]
    assert max(per_turn) <= TURN_MESSAGES and transport.pauses == 1


async def test_a_turn_of_costly_messages_ends_once_it_took_turn_seconds_and_others_go_between() -> None:
    """Messages that each cost work (a fresh-key hint's signature check) end a link's turn after TURN_SECONDS,
    however few: another link's vote waits behind one link's turn, not behind TURN_MESSAGES such checks."""
    cost = TURN_SECONDS * 0.3

    class _Costly(_Host):
        def on_message(self, link: PeerLink, message: Message) -> None:
            super().on_message(link, message)
            done = time.perf_counter() + cost
            while time.perf_counter() < done:       # the work a message costs, on the event loop
                pass

    host = _Costly()
    link, transport = _open_link(host)
    burst = 40
    others: list[int] = []
    loop = asyncio.get_running_loop()

    def other_link() -> None:       # another link's callback: it runs between this link's turns
        others.append(len(host.delivered))
        if len(others) < burst:
            loop.call_soon(other_link)
    loop.call_soon(other_link)
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(burst)])
    assert 1 <= len(host.delivered) <= 4 and not transport.reading
    turns = 0
    while not transport.reading:
        host.turn += 1
        turns += 1
        await _next_turn()
        assert turns < burst, "the backlog never drained"
    assert [seq for _, seq in host.delivered] == list(range(burst)), "in order, nothing lost"
    per_turn = [sum(1 for turn, _ in host.delivered if turn == t) for t in range(turns + 1)]
    assert max(per_turn) <= 4, f"a turn ran past TURN_SECONDS: {per_turn}"
    assert len(set(others)) >= turns // 2, "the other link's callbacks did not run between this link's turns"


async def test_a_small_read_is_handed_over_at_once_without_pausing() -> None:
    host = _Host()
    link, transport = _open_link(host)
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(TURN_MESSAGES)])
    assert len(host.delivered) == TURN_MESSAGES and transport.reading and transport.pauses == 0


async def test_a_hold_stops_reading_for_its_time_and_a_later_hold_only_extends_it() -> None:
    host = _Host()
    link, transport = _open_link(host)
    loop = asyncio.get_running_loop()
    started = loop.time()
    link.hold_reading(0.05)
    link.hold_reading(0.01)     # shorter: no effect
    assert link.reading.held and not transport.reading
    await asyncio.wait_for(transport.resumed.wait(), 2)
    assert loop.time() - started >= 0.05 and not link.reading.held and transport.pauses == 1


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_held_links_backlog_waits_for_the_holds_end_and_then_goes_on_in_order() -> None:
    """A budget spent mid-backlog holds the link: what was read already is not handed over (to be dropped)
    until the hold ends, and then in order, nothing lost."""
    host = _Host()
    link, transport = _open_link(host)
    loop = asyncio.get_running_loop()
    burst = 3 * TURN_MESSAGES
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(burst)])
    assert len(host.delivered) == TURN_MESSAGES
    held_at = loop.time()
    link.hold_reading(0.05)
    link.reading.deliver([{"type": "ping", "seq": burst}])      # frames of the same read, arriving while held
    for _ in range(5):
        await _next_turn()
    assert len(host.delivered) == TURN_MESSAGES, "a held link's backlog was handed over during the hold"
    await asyncio.wait_for(transport.resumed.wait(), 2)
    assert loop.time() - held_at >= 0.05
    assert [seq for _, seq in host.delivered] == list(range(burst + 1)), "in order, nothing lost"


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_hold_begun_by_a_message_leaves_the_rest_of_its_turn_unread_until_the_hold_ends() -> None:
    """The message that spends a budget holds the link while its turn is handed over: the messages after it in
    that turn go back to the front of the backlog instead of being handed over (to be dropped), in order."""
    class _Budgeted(_Host):
        def on_message(self, link: PeerLink, message: Message) -> None:
            super().on_message(link, message)
            if message["seq"] == 9:
                link.hold_reading(0.05)

    host = _Budgeted()
    link, transport = _open_link(host)
    loop = asyncio.get_running_loop()
    held_at = loop.time()
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(20)])      # one small read, handed over at once
    assert [seq for _, seq in host.delivered] == list(range(10)) and not transport.reading
    assert [message["seq"] for message in link.reading.backlog] == list(range(10, 20))
    await asyncio.wait_for(transport.resumed.wait(), 2)
    assert loop.time() - held_at >= 0.05
    assert [seq for _, seq in host.delivered] == list(range(20)), "after the hold, in order, nothing lost"


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_closed_link_drops_its_backlog_and_its_hold() -> None:
    host = _Host()
    link, transport = _open_link(host)
    link.reading.deliver([{"type": "ping", "seq": i} for i in range(2 * TURN_MESSAGES)])
    link.hold_reading(5.0)
    link._finish(CloseReason.CONNECTION_CLOSED, "")
    await _next_turn()
    assert len(host.delivered) == TURN_MESSAGES and not link.reading.backlog and not link.reading.held



async def test_a_relayed_link_behind_stops_its_carrier_being_read_until_it_catches_up_or_closes() -> None:
    from p2p.nat.circuit import CircuitTransport

    carrier, socket = _open_link(_Host())
    closed: list[CircuitTransport] = []
    one, other = (CircuitTransport(carrier, n, "relay", closed.append) for n in (1, 3))
    one.pause_reading()
    other.pause_reading()
    assert not socket.reading and not one.is_reading()
    one.resume_reading()
    assert not socket.reading, "another circuit on the carrier is still behind"
    other.remote_closed()
    assert socket.reading and closed == [other], "a circuit that is gone blocks nothing"


@pytest.mark.usefixtures("no_turn_deadline")     # one turn takes the whole batch however busy the worker
async def test_a_hold_on_a_relayed_link_never_stops_its_carrier_being_read() -> None:
    """The budget that holds a flooder is keyed by the node at the far end of a circuit; its carrier is our
    link to the relay (often a validator, relaying its votes too): holding the circuit must not stop that."""
    from p2p.nat.circuit import CircuitTransport

    carrier, socket = _open_link(_Host())
    relayed, _ = _open_link(_Host())
    circuit = CircuitTransport(carrier, 1, "relay", lambda transport: None)
    relayed.transport, relayed.via = circuit, "relay"
    relayed.hold_reading(1.0)
    assert socket.reading and socket.pauses == 0, "the relay's own link stopped being read"
    relayed.reading.deliver([{"type": "ping", "seq": i} for i in range(2 * TURN_MESSAGES)])
    assert not socket.reading, "a relayed link behind still stops its carrier while it catches up"
    await _next_turn()
    assert socket.reading


async def test_a_peer_past_its_byte_budget_is_not_read_until_the_deficit_has_refilled() -> None:
    host = _Host()
    link, transport = _open_link(host)
    link.reading.charge(1_500_000)                 # within the burst: read on
    assert transport.reading and link.reading.read_holds == 0
    started = asyncio.get_running_loop().time()
    link.reading.charge(1_000_000)                 # 500 KB past it: 0.05 s at 10 MB/s
    assert not transport.reading and link.reading.read_holds == 1
    transport.resumed.clear()
    await asyncio.wait_for(transport.resumed.wait(), 1.0)
    waited = asyncio.get_running_loop().time() - started
    assert 0.04 <= waited < 0.5, waited
    link.reading.charge(400_000)                   # refilled only by what the wait brought: past it again
    assert link.reading.read_holds == 2


@pytest.mark.usefixtures("no_turn_deadline")
async def test_messages_read_with_the_handshake_ack_are_handed_over_as_an_open_links_held_and_in_turns() -> None:
    """A peer may send its first messages right behind its handshake ack (a flooder does), so one socket read can
    bring the ack and a burst after it. Once the ack has opened the link they are an open link's messages: handed
    over a turn at a time, and none past a hold that one of them began. (Handed over one by one past the hold, they
    reached the chain's transaction budget, which takes one transaction on credit after a hold and drops the next:
    the flood test's "held, never dropped" failed now and then on one validator: the one linked last, whose ack
    the flood follows at once, read late by a busy loop.)"""
    class _Plain:
        """The secure channel, already set up: these bytes are the plaintext."""

        def open(self, data: bytes) -> bytes:
            return data

    class _Validating(_Schemas):
        def validate(self, message: Message) -> bool:       # the general path's check, for any message
            return True

    class _Handshaking(_Host):
        schemas = _Validating()

        def claim(self, link: PeerLink) -> None:
            return None

        def on_open(self, link: PeerLink) -> None:
            pass

        def on_message(self, link: PeerLink, message: Message) -> None:
            super().on_message(link, message)
            if message["seq"] == 9:
                link.hold_reading(0.05)         # the budget it spent

    host = _Handshaking()
    link, transport = _open_link(host)
    link.state = HANDSHAKING
    link.remote_hello = {"type": "handshake"}
    link._secure = _Plain()  # type: ignore[assignment]
    burst = 2 * TURN_MESSAGES
    link.data_received(encode_frame({"type": "handshake_ack"})
                       + b"".join(encode_frame({"type": "ping", "seq": i}) for i in range(burst)))
    assert link.is_open
    assert [seq for _, seq in host.delivered] == list(range(10)), "handed over past the hold"
    assert [message["seq"] for message in link.reading.backlog] == list(range(10, burst))
    assert not transport.reading
    await asyncio.wait_for(transport.resumed.wait(), 2)
    assert [seq for _, seq in host.delivered] == list(range(burst)), "after the hold, in order, nothing lost"
    assert link.msgs_in == burst + 1


@pytest.mark.usefixtures("no_turn_deadline")
async def test_links_behind_take_turns_by_network_so_a_crowd_of_keys_from_one_network_gets_one_networks_turns():
    """Eight links from one /24 and one from another, each with a backlog the node cannot read at once: every
    event-loop turn gives each network one link's turn, so the lone link is read as fast as the whole crowd
    (by link, it would get a ninth of the reading); within the crowd, its links take their turns in order. The
    crowd's first read is its network's turn in that event-loop turn: its other links' first reads wait."""
    class _Counting(_Host):
        def __init__(self) -> None:
            super().__init__()
            self.read: collections.Counter[str] = collections.Counter()     # messages handed over, by address

        def on_message(self, link: PeerLink, message: Message) -> None:
            self.read[link.remote_addr[0] if link.remote_addr else ""] += 1

    host = _Counting()
    links = []
    for address in [f"10.0.5.{i}" for i in range(1, 9)] + ["10.0.6.1"]:
        link, _ = _open_link(host)
        link.remote_addr = (address, 7000)
        links.append(link)
    backlog = 40 * TURN_MESSAGES
    for link in links:
        link.reading.deliver([{"type": "ping", "seq": i} for i in range(backlog)])
    asked = time.monotonic()
    assert host.read == {"10.0.5.1": TURN_MESSAGES, "10.0.6.1": TURN_MESSAGES}, "one turn per network at once"
    assert host.read_turns.waiting() == {"10.0.5.0/24": 8, "10.0.6.0/24": 1}
    for _ in range(16):
        await _next_turn()
    lone = host.read["10.0.6.1"]
    crowd = {address: count for address, count in host.read.items() if address != "10.0.6.1"}
    assert lone == 17 * TURN_MESSAGES, "the lone network's link had a turn in every event-loop turn"
    assert sum(crowd.values()) == lone, f"the crowd's network had as many turns, shared by its links: {crowd}"
    assert crowd == {"10.0.5.1": 3 * TURN_MESSAGES} | {f"10.0.5.{i}": 2 * TURN_MESSAGES for i in range(2, 9)}, \
        f"the crowd's links took their turns in order: {crowd}"
    looked = time.monotonic()
    view = host.read_turns.view()
    assert {key: view[key] for key in ("given", "waiting")} == {"given": 32, "waiting": {"10.0.5.0/24": 8,
                                                                                         "10.0.6.0/24": 1}}, \
        "/status counts the turns handed out and shows who waits now"
    assert view["behind_s"].keys() == {"10.0.5.0/24", "10.0.6.0/24"}
    assert min(view["behind_s"].values()) >= looked - asked, \
        f"... and how long each network has waited since it first did: every turn left it a backlog {view}"


@pytest.mark.usefixtures("no_turn_deadline")
async def test_links_that_each_send_less_than_a_turn_between_reads_still_share_their_networks_turns():
    """A crowd whose links each send a few messages between reads never falls behind on any one link; read at
    once per link, eight keys from one /24 would be read eight times as fast as a neighbour from another. Each
    event-loop turn, each network's first read is its turn; the crowd's other reads wait with their sockets
    paused (so a real peer's next bytes wait in its TCP window) and take the network's later turns."""
    host = _Host()
    read: collections.Counter[str] = collections.Counter()
    host.on_message = lambda link, message: read.update([netgroup(link.remote_addr[0])])  # type: ignore[method-assign,index]
    links = []
    for address in [f"10.0.5.{i}" for i in range(1, 9)] + ["10.0.6.1"]:
        link, transport = _open_link(host)
        link.remote_addr = (address, 7000)
        links.append((link, transport))
    small, turns = 4, 200
    for _ in range(turns):
        for link, transport in links:
            if transport.reading:       # a paused socket is not read: its peer's bytes wait in TCP
                link.reading.deliver([{"type": "ping", "seq": i} for i in range(small)])
        await _next_turn()
    lone, crowd = read["10.0.6.0/24"], read["10.0.5.0/24"]
    assert lone == turns * small, "the lone neighbour was read every event-loop turn"
    assert lone - 2 * small <= crowd <= lone + 2 * small, f"the crowd of eight read as one network: {read}"


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_network_whose_link_caught_up_in_its_turn_still_gives_its_other_links_theirs():
    """Two links from one network behind: the first's turn empties its backlog, so it asks for no other; the
    second still waits, and gets its turn in the next event-loop turn (nothing else would ever ask for one)."""
    host = _Host()
    first, first_transport = _open_link(host)
    second, second_transport = _open_link(host)
    for link in (first, second):
        link.remote_addr = ("10.0.5.1", 7000)
    first.reading.deliver([{"type": "ping", "seq": i} for i in range(TURN_MESSAGES + 1)])
    second.reading.deliver([{"type": "ping", "seq": i} for i in range(3 * TURN_MESSAGES)])
    for _ in range(4):
        await _next_turn()
    assert first_transport.reading and second_transport.reading, host.read_turns.waiting()
    assert len(host.delivered) == 4 * TURN_MESSAGES + 1


@pytest.mark.usefixtures("no_turn_deadline")
async def test_a_node_we_keep_linked_has_turns_of_its_own_whoever_shares_its_network():
    """A validator's link from the /24 of a crowd (or, in a test, from the machine every node is on) is read as a
    network of its own: its votes do not wait for the crowd's turns."""
    validator_id = "v" * 40
    host = _Host()
    host.read_turns = ReadTurns(lambda: {validator_id})
    read: collections.Counter[str] = collections.Counter()
    host.on_message = lambda link, message: read.update([str(link.remote_id)])  # type: ignore[method-assign]
    for index in range(9):
        link, _ = _open_link(host)
        link.remote_addr, link.remote_id = (f"10.0.5.{index + 1}", 7000), validator_id if index == 8 else f"k{index}"
        link.reading.deliver([{"type": "ping", "seq": i} for i in range(40 * TURN_MESSAGES)])
    assert host.read_turns.waiting() == {"10.0.5.0/24": 8, f"kept:{validator_id}": 1}
    for _ in range(16):
        await _next_turn()
    crowd = sum(count for who, count in read.items() if who != validator_id)
    assert read[validator_id] == crowd == 17 * TURN_MESSAGES, read


async def test_networks_turns_together_stop_at_the_shared_time_and_those_left_go_first_next_while_kept_nodes_go_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Six networks behind, each message costing a third of the shared time: one event-loop turn serves the
    networks in line until their turns together passed SHARED_TURNS_SECONDS (the third of them), and a kept node
    (a validator) whatever the time; the next serves the networks left first, and the validator again."""
    monkeypatch.setattr("p2p.connection.TURN_SECONDS", 60.0)     # a turn ends at one message: see `cost` below
    monkeypatch.setattr("p2p.link_reading.TURN_MESSAGES", 1)
    cost = SHARED_TURNS_SECONDS / 3 * 1.2
    validator_id = "v" * 40
    host = _Host()
    host.read_turns = ReadTurns(lambda: {validator_id})
    turns: list[list[str]] = []

    def on_message(link: PeerLink, message: Message) -> None:
        turns[-1].append(str(link.remote_id))
        done = time.perf_counter() + cost
        while time.perf_counter() < done:      # the work a message costs, on the event loop
            pass
    host.on_message = on_message  # type: ignore[method-assign]
    names = [f"net{index}" for index in range(6)] + [validator_id]
    turns.append([])
    for index, name in enumerate(names):
        link, _ = _open_link(host)
        link.remote_addr, link.remote_id = (f"10.0.{index + 1}.1", 7000), name
        link.reading.deliver([{"type": "ping", "seq": i} for i in range(10)])
    assert turns[0] == names, "each network's first read is its turn at once"
    for _ in range(2):
        turns.append([])
        await _next_turn()
    first, second = turns[1], turns[2]
    served = len(first) - 1         # three unless the worker was descheduled mid-turn: then fewer, never more
    assert 1 <= served <= 3 and first == [*names[:served], validator_id], first
    left = names[served:6]
    # the next turn serves those left first, in line, as many as fit in the shared time (all three unless the
    # worker was descheduled mid-turn again), and the validator
    networks = [name for name in second if name != validator_id]
    assert networks and networks == left[:len(networks)] and validator_id in second, f"those left went first: {second}"
