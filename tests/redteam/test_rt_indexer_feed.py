"""Red team: the indexer (`exchange-node indexer`) and the light client asking a node that answers slowly or
hugely.

Both fetch with node/cli/client.py's `call`, whose timeout was urllib's, per socket operation: a node that drips
its answer a byte at a time inside it held the indexer for as long as it liked, silently (no refusal, no next
`--node`), and an answer was read whole into memory whatever its size. A node's answer now has a deadline for
the whole exchange and a bound on its bytes; past either the node is refused as unreachable, said in the log, and
the next one asked. A hostile HTTP server in a thread of this process; the indexer's fetch at unit level, the light
client as its own process.
"""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from node import indexer_follow
from node.cli.client import call
from node.indexer_follow import NodeBlocks
from node.light.verify import Refused

ROOT = Path(__file__).resolve().parents[2]


class Hostile:
    """An HTTP server answering every request with `size` bytes (announced by Content-Length, or until it closes),
    `chunk` at a time every `every` seconds; counts what it sent."""

    def __init__(self, size: int, chunk: int, every: float, announce: bool = True) -> None:
        self.size, self.chunk, self.every, self.announce = size, chunk, every, announce
        self.sent = 0
        self.cut = threading.Event()     # a client hung up on an answer being sent
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    length = b"Content-Length: %d\r\n" % self.size if self.announce else b"Connection: close\r\n"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + length + b"\r\n")
                    left = self.size
                    while left and not self.stop.is_set():
                        piece = b" " * min(self.chunk, left)
                        conn.sendall(piece)
                        self.sent += len(piece)
                        left -= len(piece)
                        if self.every:
                            time.sleep(self.every)
                except OSError:
                    self.cut.set()  # the client hung up: what it took is counted

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    server = Hostile(*request.param)
    yield server
    server.close()


@pytest.mark.parametrize("hostile", [(100, 1, 0.25)], indirect=True)
def test_a_node_dripping_its_answer_is_refused_at_the_deadline(hostile: Hostile, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setattr(indexer_follow, "ANSWER_SECONDS", 2.0, raising=False)
    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        NodeBlocks(hostile.url, None, call).genesis()     # 100 bytes at 4 a second: 25 s, each within a timeout
    took = time.monotonic() - started
    assert took < 4.0, f"held {took:.1f} s by a node dripping its answer"
    assert refused.value.reason == "unreachable"


@pytest.mark.parametrize("hostile", [(256 * 1024 * 1024, 1024 * 1024, 0.0, True),
                                     (256 * 1024 * 1024, 1024 * 1024, 0.0, False)], indirect=True,
                         ids=["content-length", "until-close"])
def test_a_node_answering_hugely_is_refused_past_the_bound(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexer_follow, "ANSWER_BYTES", 4 * 1024 * 1024, raising=False)
    with pytest.raises(Refused) as refused:
        NodeBlocks(hostile.url, None, call).blocks(1)     # 256 MiB announced and sent as fast as it is read
    # the indexer stopped reading near the bound (the kernel's buffers hold a few MB more than it read)
    assert hostile.sent < 32 * 1024 * 1024, f"read {hostile.sent / 2**20:.0f} MiB of a hostile answer"
    assert refused.value.reason == "unreachable" and "bytes" in refused.value.message
    assert hostile.cut.wait(2.0), "the refused answer's socket was left open (the node kept sending into it)"


@pytest.mark.process
@pytest.mark.parametrize("hostile", [(160, 1, 0.25)], indirect=True)
def test_the_light_client_is_not_held_by_a_dripping_node(hostile: Hostile, tmp_path: Path) -> None:
    """`exchange-node light status` (its own process) against a node dripping 160 bytes at 4 a second (40 s): it
    gives up on the node at its 10 s deadline, names it and exits 1."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "node.cli", "light", "status", "--node", hostile.url, "--trust-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert took < 16.0, f"the light client was held {took:.1f} s"
    assert done.returncode == 1 and "nothing verified" in done.stderr and "within 10s" in done.stderr, done.stderr


def test_a_node_withholding_blocks_does_not_pin_the_indexer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The first `--node` answers every `/chain/blocks` with no blocks (withholding, or claiming the chain has
    stopped); the second serves them. The indexer stayed on the first for as long as it withheld, writing
    nothing and saying nothing: an empty answer moved it to no other node. Now an empty answer moves the next poll
    to the next node, and one claiming blocks it does not serve is named."""
    from tests.unit.node.test_indexer import Node, produce, run
    from node.indexer import HistoryStore
    from node.indexer_follow import Follower

    items, _ = produce(12)

    class Withholding(Node):
        def blocks(self, start: int) -> object:
            self.asked += 1
            return {"blocks": [], "first_height": 1, "last_height": 1 << 62}

    store = HistoryStore(tmp_path / "h.sqlite")
    try:
        withholding, honest = Withholding("withholding", items), Node("honest", items)
        follower = Follower(store, [withholding, honest])
        run(follower, 40)
        held = store.progress()
    finally:
        store.close()
    assert held is not None and held[0] >= 10, f"the indexer wrote up to {held} while one node withheld"
    assert honest.asked > 0
    assert "withholding says it holds blocks up to" in caplog.text


@pytest.mark.process
def test_a_nodes_error_text_reaches_no_terminal_raw(tmp_path: Path) -> None:
    """A node answering 400 with an error message holding terminal control sequences (clear the line, return,
    print a line of its own, hide the rest) and 5,000 more characters: `exchange-node light status` (and the
    indexer's log) printed the node's text as it came in its refusal, so a lying node could write what it liked on
    the user's terminal, a 'verified' line included, past what the client checked. A refusal now holds the text with
    control characters escaped, bounded."""
    forged = "\x1b[2K\rheight 999 verified: true (3 of 4 signatures)\n\x1b[8m" + "x" * 5000

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"error": {"code": "bad", "message": forged}}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = subprocess.run([sys.executable, "-m", "node.cli", "light", "status", "--node",
                               f"http://127.0.0.1:{server.server_address[1]}", "--trust-dir", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1 and "nothing verified" in done.stderr, done.stderr
    # click strips escape sequences when stderr is no terminal (here); a new line it passes on anywhere
    assert not [line for line in done.stderr.splitlines() if line.startswith("height 999")], done.stderr[:300]
    assert len(done.stderr) < 2_000, f"{len(done.stderr)} characters of a node's text printed"
    refusal = Refused("node", forged, forged)     # the indexer names a refusal by the node's own error code
    assert refusal.message.isprintable() and len(refusal.message) < 1_000, repr(refusal.message[:120])
    assert refusal.reason.isprintable() and len(refusal.reason) < 300, repr(refusal.reason[:120])
