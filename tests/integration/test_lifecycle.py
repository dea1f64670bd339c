"""A node's start and stop on real processes: a start that fails at any step (busy peer port, busy API port,
bad DATA_DIR, a component that raises) exits non-zero with a one-line reason and leaves no listening socket,
no runtime file, no cookie and no DATA_DIR lock behind; a stop with a hanging component still ends within
the stated bound, and a second signal ends it at once. In-process, a failed start leaves no task running."""
from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import load_settings
from node.app import EXIT_FORCED, STOP_STEP_TIMEOUT, STOP_TIMEOUT, ExchangeNode
from node.lifecycle import StartFailed
from storage.lock import DataDirLock
from tests.harness import ROOT, NodeProcess, free_ports, wait_until


class FaultyNode(NodeProcess):
    """A node whose one component misbehaves (tests/integration/faulty_node.py), on fixed ports."""

    def __init__(self, base: Path, name: str, fault: str | None = None, **settings: object) -> None:
        p2p_port, api_port = free_ports(2)
        super().__init__(base, name, p2p_port=p2p_port, api_port=api_port, found_after=0.0, **settings)
        if fault is not None:
            self.env_extra["FAULTY"] = fault

    def command(self) -> list[str]:
        args = super().command()
        if "FAULTY" in self.env_extra:
            args[args.index("node.cli")] = "tests.integration.faulty_node"
        return args

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def last_line(self) -> str:
        lines = [line for line in self.log_path.read_text().splitlines() if line.strip()]
        return lines[-1] if lines else ""


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def assert_left_nothing(node: FaultyNode) -> None:
    for port in (node.settings["p2p_port"], node.settings["api_port"]):
        assert port_is_free(int(port)), f"port {port} still bound"
    assert not (node.data_dir / "node.json").exists()
    assert not (node.data_dir / ".cookie").exists()
    with DataDirLock.acquire(node.data_dir):
        pass


def assert_one_line_reason(node: FaultyNode, *needles: str) -> None:
    text = node.log_path.read_text()
    assert "Traceback" not in text, text
    line = node.last_line()
    assert line.startswith("exchange-node: "), text
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize("busy", ["p2p_port", "api_port"])
def test_a_busy_port_stops_the_start_with_one_line_and_leaves_nothing_behind(tmp_path, busy: str) -> None:
    node = FaultyNode(tmp_path, "busy")
    port = int(node.settings[busy])
    with listener(port):
        node.start(wait=False)
        status = node.wait_exit(60)
    assert status == 1, node.log_tail()
    step = "peer listener" if busy == "p2p_port" else "control API"
    assert_one_line_reason(node, f"cannot start the {step}", "in use")
    assert_left_nothing(node)


def test_a_component_that_raises_at_start_stops_what_had_started(tmp_path) -> None:
    node = FaultyNode(tmp_path, "raises", fault="operator.start.raise", browser_webtransport="true")   # every part on
    node.start(wait=False)
    status = node.wait_exit(60)
    assert status == 1, node.log_tail()
    assert_one_line_reason(node, "cannot start the operator surface", "operator start broke (injected)")
    log = node.log_path.read_text()
    assert "stopping what had started (peer listener, browser endpoint, message router, reachability, discovery, rpc, " \
           "chain, control API, runtime file)" in log, log
    assert_left_nothing(node)


def test_a_data_dir_that_is_a_file_exits_2_naming_it(tmp_path) -> None:
    bad = tmp_path / "not-a-dir"
    bad.write_text("a file where DATA_DIR should be")
    p2p_port, api_port = free_ports(2)
    done = subprocess.run([sys.executable, "-m", "node.cli", "start", "--data-dir", str(bad), "--p2p-host",
                           "127.0.0.1", "--p2p-port", str(p2p_port), "--api-port", str(api_port),
                           "--discovery-mdns", "false"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("exchange-node: ") and str(bad) in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert port_is_free(p2p_port) and port_is_free(api_port)


def test_a_hanging_stop_still_ends_within_the_bound(tmp_path) -> None:
    node = FaultyNode(tmp_path, "hangs", fault="chain.stop.hang")
    node.start()
    assert node.proc is not None
    began = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    status = node.wait_exit(STOP_TIMEOUT + 30)
    took = time.monotonic() - began
    log = node.log_path.read_text()
    assert "FAULT chain.stop hanging" in log
    assert took < STOP_TIMEOUT + 10, took
    assert took >= STOP_STEP_TIMEOUT - 0.5, took  # it did wait for the step, then went on
    assert status == 1, log
    assert "stopping chain did not finish within" in log
    assert_one_line_reason(node, "shutdown did not finish cleanly (chain)")
    assert_left_nothing(node)   # the steps after the hanging one (API, peers, runtime file) all ran


def test_a_second_signal_exits_at_once(tmp_path) -> None:
    node = FaultyNode(tmp_path, "forced", fault="chain.stop.hang")
    node.start()
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "FAULT chain.stop hanging" in node.log_path.read_text(), 30, message="the stop to hang")
    began = time.monotonic()
    node.proc.send_signal(signal.SIGINT)
    status = node.wait_exit(30)
    assert time.monotonic() - began < STOP_STEP_TIMEOUT - 1, "the second signal waited for the hanging step"
    assert status == EXIT_FORCED
    assert_one_line_reason(node, "forced exit on a second signal")


# --- in process: a failed start leaves no task behind ------------------------------------------------
def node_in_process(tmp_path: Path, p2p_port: int, api_port: int) -> ExchangeNode:
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "n"), "p2p_host": "127.0.0.1",
                                          "p2p_port": p2p_port, "api_port": api_port, "discovery_mdns": "false",
                                          "found_after": 0.0})
    return ExchangeNode(settings)


async def failed_start(node: ExchangeNode) -> StartFailed:
    with pytest.raises(StartFailed) as failed:
        await node.start()
    await asyncio.sleep(0)   # let cancelled tasks finish their last step
    return failed.value


def left_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


@pytest.mark.parametrize("busy", ["peer listener", "control API"])
async def test_in_process_a_busy_port_leaves_no_task(tmp_path, busy: str) -> None:
    p2p_port, api_port = free_ports(2)
    node = node_in_process(tmp_path, p2p_port, api_port)
    with listener(p2p_port if busy == "peer listener" else api_port):
        failure = await failed_start(node)
    assert failure.step == busy
    assert left_tasks() == set()
    assert port_is_free(p2p_port) and port_is_free(api_port)
    assert not (node.configs.data_dir / ".cookie").exists()


@pytest.mark.parametrize("step,component", [("rpc", "rpc"), ("chain", "chain"), ("operator surface", "operator")])
async def test_in_process_a_component_that_raises_leaves_no_task(tmp_path, step: str, component: str) -> None:
    p2p_port, api_port = free_ports(2)
    node = node_in_process(tmp_path, p2p_port, api_port)

    async def broken() -> None:
        raise RuntimeError("injected")

    getattr(node, component).start = broken
    failure = await failed_start(node)
    assert failure.step == step and str(failure.cause) == "injected"
    assert left_tasks() == set()
    assert port_is_free(p2p_port) and port_is_free(api_port)
    assert not (node.configs.data_dir / "node.json").exists()
