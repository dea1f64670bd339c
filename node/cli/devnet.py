"""`exchange-node devnet N`: a network of N local nodes in one command, a lab for trying things and breaking them.

Node i keeps everything in DIR/node<i> (key, chain, logs), listens on ports of its own, and belongs to a
network of its own (a NETWORK_ID made for this directory, mDNS off, so it never meets another network on
the machine). node0 founds the chain and issues one join token through its API for the others (N-1 joins, kept
in DIR/join-token, mode 0600, handed to each node as JOIN_TOKEN_FILE: never on a command line, where `ps` shows
it); each is granted a seat and the set grows as the seat rule allows (1 -> 4 -> 7). Each node's log lines are
streamed with its name in front; once the set is formed each node's console URL, with its API token in the
fragment so the page can trade at once, and ready-made CLI lines (the full path of this installation's
`exchange-node`) are printed.

A lab: a node that dies (`kill -9`, a crash) is reported and the others keep running; from another terminal
`exchange-node devnet stop I`, `start I` and `kill I` (`--dir DIR`) stop, restart or kill node I, through the
devnet's control socket DIR/control.sock. Ctrl-C stops every node by its PID (SIGTERM, then SIGKILL after a grace
period) and waits for each: nothing is left behind. The nodes keep their seats across a stop (KEEP_SEAT), so
running the same command again resumes the same network from DIR.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, cast

import click

from config import Settings
from node.cli.client import JsonObject, call
from node.cookie import read_cookie

_SETTING_ENVS = frozenset(Settings.env_names().values())
FORM_TIMEOUT = 60.0
CONTROL = "control.sock"
TOKEN_FILE = "join-token"
ACTIONS = ("stop", "start", "kill")


def cli_path() -> str:
    """How to run this installation's `exchange-node` from any directory: the script beside the interpreter (the
    venv's bin), else the interpreter with `-m node.cli`."""
    script = Path(os.path.abspath(sys.executable)).parent / "exchange-node"
    return str(script) if script.exists() else f"{os.path.abspath(sys.executable)} -m node.cli"


def has_chain(data_dir: Path) -> bool:
    """Whether the node of `data_dir` is on a chain already (it needs no join token to come back)."""
    return any((data_dir / "chain" / "genesis").glob("genesis.*"))


class DevnetNode:
    def __init__(self, index: int, data_dir: Path, settings: dict[str, object],
                 on_exit: Callable[["DevnetNode", int], None]) -> None:
        self.index = index
        self.name, self.data_dir, self.settings = f"node{index}", data_dir, settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: JsonObject = {}
        self.env: dict[str, str] = {}               # settings given in the environment (a join token's file)
        self.on_exit = on_exit
        self.expected_exit = False                  # stopped or killed on purpose: not reported as a death

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, out: IO[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "node.json").unlink(missing_ok=True)
        self.info, self.expected_exit = {}, False
        args = [sys.executable, "-m", "node.cli", "start", "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        env = {k: v for k, v in os.environ.items() if k not in _SETTING_ENVS} | {"PYTHONUNBUFFERED": "1"} | self.env
        # a session of its own: Ctrl-C reaches the devnet alone, which then stops each node in turn
        proc = self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._relay, args=(proc, out), daemon=True, name=f"devnet-{self.name}").start()

    def _relay(self, proc: subprocess.Popen[bytes], out: IO[str]) -> None:
        """Stream the node's output with its name in front, then report how it ended."""
        assert proc.stdout is not None
        with (self.data_dir / "node.log").open("ab") as log:
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                out.write(f"[{self.name}] {line.decode(errors='replace')}")
                out.flush()
        self.on_exit(self, proc.wait())

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise click.ClickException(f"{self.name} exited with {self.proc.returncode}; see {self.data_dir}/node.log")
        runtime = self.data_dir / "node.json"
        try:
            info = json.loads(runtime.read_text())
        except (OSError, ValueError):
            return False
        if self.proc is not None and info.get("pid") == self.proc.pid:
            self.info = info
            return True
        return False

    def api(self, method: str, path: str, body: object = None, timeout: float = 5.0) -> JsonObject:
        return cast(JsonObject, call(self.info["api"], method, path, body, timeout=timeout,
                                     token=read_cookie(self.data_dir))[1])

    def status(self) -> JsonObject:
        return self.api("GET", "/status")

    def console_url(self) -> str:
        cookie = read_cookie(self.data_dir)
        return f"{self.info['api']}/" + (f"#token={cookie}" if cookie else "")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.expected_exit = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait(5)


def _network_id(directory: Path) -> str:
    """The devnet's own network name, made once per directory (so a restart rejoins the same network)."""
    path = directory / "network-id"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"devnet-{secrets.token_hex(4)}\n")
    return path.read_text().strip()


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def expected_seats(count: int) -> int:
    """Seats N granted nodes hold under the default seat rule: the largest of 1, 4, 7 ... up to N."""
    return max(n for n in range(1, count + 1) if n % 3 == 1)


def _formed(nodes: list[DevnetNode]) -> bool:
    try:
        views = [node.status() for node in nodes]
    except Exception:  # noqa: BLE001 - a node not answering yet is not formed
        return False
    return len({v["chain_id"] for v in views}) == 1 and views[0]["chain_id"] is not None \
        and all(v["quorum"] and len(v["validators"]) == expected_seats(len(nodes)) for v in views)


def _issue_token(founder: DevnetNode, uses: int, path: Path) -> None:
    """A join token from the founder's API for `uses` joins, its grant final, written to `path` (0600)."""
    issued: JsonObject = {}

    def issue() -> bool:
        try:
            issued.update(founder.api("POST", "/validators/tokens", {"uses": uses, "ttl": 3600}, timeout=20))
        except Exception:  # noqa: BLE001 - not on its chain yet: ask again
            return False
        return True

    _wait(issue, 60, "node0 to found the network and issue a join token")
    if not issued.get("final"):
        _wait(lambda: issued["id"] in {t["id"] for t in founder.api("GET", "/validators/tokens")["tokens"]}, 30,
              "node0's join token to be final")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(issued["token"]) + "\n")
    os.replace(tmp, path)


class Devnet:
    """The running devnet: its nodes, what happens to them, and the control socket other terminals use."""

    def __init__(self, count: int, directory: Path, markets: str | None, out: IO[str]) -> None:
        self.directory, self.out = directory, out
        self.network = _network_id(directory)
        base: dict[str, object] = {"p2p_host": "127.0.0.1", "p2p_port": 0, "api_port": 0, "discovery_mdns": "false",
                                   "network_id": self.network, "keep_seat": "true", "max_validators": min(count, 100)}
        if markets:
            base["markets"] = markets
        self.nodes = [DevnetNode(i, directory / f"node{i}", dict(base), self._exited) for i in range(count)]
        self.nodes[0].settings["found_after"] = 0
        self.lock = threading.Lock()                # one control action at a time
        self.stopping = threading.Event()
        self.cli = cli_path()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _exited(self, node: DevnetNode, code: int) -> None:
        if node.expected_exit or self.stopping.is_set():
            return
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        alive = [n.name for n in self.nodes if n.running()]
        self.say(f"devnet: {node.name} {how}; the others keep running ({', '.join(alive) or 'none'}). "
                 f"`{self.cli} devnet start {node.index} --dir {self.directory}` starts it again")

    def form(self) -> None:
        founder, rest = self.nodes[0], self.nodes[1:]
        fresh = [node for node in rest if not has_chain(node.data_dir)]
        founder.start(self.out)
        _wait(founder.ready, 30, "node0 to start")
        for node in rest:
            if node not in fresh:                   # on the chain already: comes back without a token
                self._start(node)
        if fresh:
            token_file = self.directory / TOKEN_FILE
            _issue_token(founder, len(fresh), token_file)
            for node in fresh:
                node.env = {"JOIN_TOKEN_FILE": str(token_file)}
                self._start(node)
        for node in rest:
            _wait(node.ready, 30, f"{node.name} to start")
        _wait(lambda: _formed(self.nodes), FORM_TIMEOUT, "the nodes to form one network")
        for node in fresh:                          # a token is for the first join alone
            node.env = {}

    def _start(self, node: DevnetNode) -> None:
        """Start `node`, bootstrapping to the nodes running now (their ports are new at every start)."""
        listening = [str(n.info["listen"]) for n in self.nodes if n is not node and n.running() and n.info]
        if listening:
            node.settings["bootstrap_peers"] = ",".join(listening)
        node.start(self.out)

    def banner(self) -> None:
        validators = len(self.nodes[0].status()["validators"])
        self.say(f"\ndevnet ready: {len(self.nodes)} nodes, {validators} validators, network {self.network}, "
                 f"in {self.directory}")
        for node in self.nodes:
            self.say(f"  {node.name}  console {node.console_url()}   cli: DATA_DIR={node.data_dir} {self.cli} status")
        self.say(f"  e.g. DATA_DIR={self.nodes[-1].data_dir} {self.cli} order buy BTC-USD 1 --price 100\n"
                 f"  from another terminal: {self.cli} devnet stop|start|kill I --dir {self.directory}\n"
                 "Ctrl-C stops them all.\n")

    def control(self, action: str, index: int) -> str:
        """One request from `exchange-node devnet ACTION I`: what happened, in one line."""
        if not 0 <= index < len(self.nodes):
            return f"error: no node{index} here: the devnet has node0 to node{len(self.nodes) - 1}"
        node = self.nodes[index]
        with self.lock:
            if action == "start":
                if node.running():
                    return f"error: {node.name} is running already"
                self._start(node)
                try:
                    _wait(node.ready, 30, f"{node.name} to start")
                except click.ClickException as exc:
                    return f"error: {exc.message}"
                self.say(f"devnet: {node.name} started again: console {node.console_url()}")
                return f"ok: {node.name} started (pid {node.info['pid']}, API {node.info['api']})"
            if not node.running():
                return f"error: {node.name} is not running"
            if action == "stop":
                node.stop()
                self.say(f"devnet: {node.name} stopped (`devnet stop {index}`)")
                return f"ok: {node.name} stopped"
            node.kill()
            self.say(f"devnet: {node.name} killed with SIGKILL (`devnet kill {index}`)")
            return f"ok: {node.name} killed"

    def serve_control(self) -> socket.socket:
        path = self.directory / CONTROL
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _at(path, server.bind)
        os.chmod(path, 0o600)
        server.listen(4)
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="devnet-control").start()
        return server

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return                              # closed at the end
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                words = conn.makefile("r").readline().split()
                if len(words) != 2 or words[0] not in ACTIONS or not words[1].isdigit():
                    answer = "error: expected `stop|start|kill I`"
                else:
                    answer = self.control(words[0], int(words[1]))
                conn.sendall((answer + "\n").encode())
            except OSError:
                pass

    def stop_all(self) -> None:
        self.stopping.set()
        self.say("stopping the devnet...")
        with self.lock:
            for node in reversed(self.nodes):
                node.stop()
        self.say("all nodes stopped")


def _at(path: Path, operation: Callable[[str], None]) -> None:
    """bind or connect a Unix socket at `path`, whatever its length (a socket's path may hold only ~107 bytes): from
    inside its directory, by a short relative name."""
    if len(str(path)) < 100:
        operation(str(path))
        return
    here = os.getcwd()
    os.chdir(path.parent)
    try:
        operation(path.name)
    finally:
        os.chdir(here)


def run_devnet(count: int, directory: Path, markets: str | None, out: IO[str] = sys.stdout) -> None:
    directory = directory.resolve()
    devnet = Devnet(count, directory, markets, out)
    signal.signal(signal.SIGTERM, lambda *_: devnet.stopping.set())
    # Ctrl-C stops the devnet even when whoever started us ignores SIGINT (a shell's background job does, and
    # Python then leaves it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server: socket.socket | None = None
    try:
        devnet.form()
        server = devnet.serve_control()
        devnet.banner()
        while not devnet.stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.close()
            (directory / CONTROL).unlink(missing_ok=True)
        devnet.stop_all()


def send_control(directory: Path, action: str, index: int) -> str:
    """Ask the devnet running in `directory` to stop, start or kill node `index`; its one-line answer."""
    path = directory.resolve() / CONTROL
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        try:
            _at(path, conn.connect)
        except (FileNotFoundError, ConnectionRefusedError):
            raise click.ClickException(f"no devnet is running in {directory.resolve()} (nothing answers on {path}); "
                                       f"start one with `exchange-node devnet N --dir {directory}`") from None
        conn.sendall(f"{action} {index}\n".encode())
        return conn.makefile("r").readline().strip()


def register(cli: click.Group) -> None:
    @cli.command()
    @click.argument("what", metavar="N | stop I | start I | kill I")
    @click.argument("index", type=click.IntRange(0, 19), required=False, metavar="")
    @click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("devnet"),
                  show_default=True, help="Node i keeps its data in DIR/node<i>; the same DIR resumes the network.")
    @click.option("--markets", default=None, metavar="MARKETS", help="The network's markets [default: BTC-USD].")
    def devnet(what: str, index: int | None, directory: Path, markets: str | None) -> None:
        """Start N local nodes as one network of their own (all granted seats), stream their logs, print each
        console URL and CLI lines; a node that dies is reported and the others keep running; Ctrl-C stops them
        all. From another terminal, `devnet stop I`, `devnet start I` and `devnet kill I` (with the same --dir)
        stop, restart or kill node I."""
        if what in ACTIONS:
            if index is None:
                raise click.UsageError(f"`devnet {what}` needs the node's number I, e.g. `devnet {what} 1`")
            from node.cli.main import fail

            try:
                answer = send_control(directory, what, index)
            except click.ClickException as exc:
                fail(exc.message)
            if not answer.startswith("ok: "):
                fail(answer.removeprefix("error: ") or "the devnet did not answer")
            click.echo(answer.removeprefix("ok: "))
            return
        if not what.isdigit() or not 1 <= int(what) <= 20 or index is not None:
            raise click.UsageError(f"expected `devnet N` (N from 1 to 20 nodes) or `devnet stop|start|kill I`, not "
                                   f"{' '.join([what] + ([str(index)] if index is not None else []))!r}")
        run_devnet(int(what), directory, markets)
