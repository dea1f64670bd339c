"""kill -9 a real process appending through GroupCommit under load, several times over one log: after each
kill every acknowledged record is there with its bytes, no index twice, no gap, and nothing reported damaged."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from storage.recordlog import RecordLog
from tests.harness import ROOT
from tests.unit.storage.log_writer import SEGMENT_BYTES

pytestmark = pytest.mark.process     # a writer process killed with SIGKILL


def run_and_kill(directory: str, tag: str, acks_before_kill: int) -> dict[int, bytes]:
    """Start the writer, read its acknowledgements, SIGKILL it after `acks_before_kill` of them."""
    writer = subprocess.Popen([sys.executable, "-m", "tests.unit.storage.log_writer", directory, tag], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: dict[int, bytes] = {}
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            if line.startswith("ack "):
                _, index, body = line.rstrip("\n").split(" ", 2)
                acked[int(index)] = body.encode()
                if len(acked) >= acks_before_kill:
                    os.kill(writer.pid, signal.SIGKILL)
                    break
        writer.wait(30)
        for line in writer.stdout:  # acknowledgements printed before the kill landed still count
            if line.startswith("ack "):
                _, index, body = line.rstrip("\n").split(" ", 2)
                acked[int(index)] = body.encode()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read() if writer.stderr else ""
    return acked


def test_kill_9_under_load_never_loses_an_acknowledged_record(tmp_path):
    directory = str(tmp_path / "log")
    rng = random.Random(1919)
    acked: dict[int, bytes] = {}
    for run in range(6):
        acked.update(run_and_kill(directory, f"run{run}", rng.randrange(200, 1500)))
        log = RecordLog.open(directory, segment_bytes=SEGMENT_BYTES)
        report = log.report
        assert report.clean, report.summary()
        stored = dict(log.iterate())
        assert list(stored) == list(range(log.first_index, log.next_index)), "indexes contiguous and unique"
        lost = [index for index, body in acked.items() if stored.get(index) != body]
        assert not lost, f"acknowledged records lost or changed after kill {run}: {lost[:10]}"
        assert len(set(stored.values())) == len(stored), "a record stored twice"
        log.close()
    assert len(acked) > 1200 and log.next_index - 1 >= len(acked)
