"""Where `exchange-node start` takes a join token from (node/cli/join_token.py): never the command line, one way
at a time, a token file waited for while it is absent or still being written, and every unusable token refused
with one line that never shows it."""
from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest

from config import SettingsError, load_settings
from node.cli import join_token as token_input

TOKEN = "exn1-" + "ab" * 32 + "-" + "cd" * 32


def test_the_command_line_is_refused_but_standard_input_is_taken() -> None:
    with pytest.raises(token_input.TokenRefused, match="never given on the command line.*--join-token-file"):
        token_input.token_source(TOKEN, None, None)
    with pytest.raises(token_input.TokenRefused, match="never given on the command line"):
        token_input.token_source("", None, None)
    assert token_input.token_source("-", None, None) == "stdin"
    assert token_input.token_source(None, None, Path("/x")) == "file"
    assert token_input.token_source(None, TOKEN, None) == "setting"
    assert token_input.token_source(None, None, None) is None


def test_two_ways_at_once_are_refused() -> None:
    with pytest.raises(token_input.TokenRefused, match="2 ways .*JOIN_TOKEN, JOIN_TOKEN_FILE"):
        token_input.token_source(None, TOKEN, Path("/x"))
    with pytest.raises(token_input.TokenRefused, match="--join-token -, JOIN_TOKEN"):
        token_input.token_source("-", TOKEN, None)


@pytest.mark.parametrize("value, says", [("", "is empty"), ("  ", "is empty"), ("exn1-abc", "is not a join token"),
                                         (TOKEN.upper(), "is not a join token")])
def test_an_empty_or_malformed_join_token_setting_is_refused_without_showing_it(value: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env={"JOIN_TOKEN": value})
    assert says in str(refused.value) and "\n" not in str(refused.value)
    if value.strip():
        assert value not in str(refused.value)
    assert load_settings(env={"JOIN_TOKEN": f" {TOKEN}\n"}).join_token == TOKEN


def test_standard_input_gives_one_line() -> None:
    assert token_input.read_stdin(io.StringIO(TOKEN + "\nmore\n")) == TOKEN
    with pytest.raises(token_input.TokenRefused, match="read from standard input is empty"):
        token_input.read_stdin(io.StringIO(""))
    with pytest.raises(token_input.TokenRefused, match="read from standard input is not a join token"):
        token_input.read_stdin(io.StringIO("exn1-zz\n"))


@pytest.mark.parametrize("text, unfinished", [("", True), ("exn1-", True), (TOKEN[:70], True), (TOKEN[:70] + "\n", False),
                                              ("hello", False), ("exn1-XY", False), (TOKEN, False), (TOKEN + "x", False)])
def test_a_file_still_being_written_is_told_from_a_wrong_one(text: str, unfinished: bool) -> None:
    assert token_input.could_be_unfinished(text) is unfinished


def test_the_file_is_waited_for_until_it_holds_a_whole_token(tmp_path: Path, caplog) -> None:
    path = tmp_path / "token"
    writes = iter(["", TOKEN[:40], TOKEN + "\n"])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:              # each poll sees the file's next state
        sleeps.append(seconds)
        path.write_text(next(writes))

    caplog.set_level("INFO", logger="node")
    assert token_input.wait_for_file(path, sleep=sleep) == TOKEN
    assert len(sleeps) == 3
    waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for the join token")]
    assert [r.getMessage() for r in waiting] == [f"waiting for the join token at {path}"]
    assert TOKEN not in caplog.text and TOKEN[50:] not in caplog.text


def test_a_file_holding_something_else_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("not a token\n")
    with pytest.raises(token_input.TokenRefused, match=f"the join token in {path} is not a join token"):
        token_input.wait_for_file(path, sleep=lambda _: pytest.fail("no wait for a file that is wrong"))
    with pytest.raises(token_input.TokenRefused, match="is a directory"):
        token_input.read_file(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_wait_between_polls_and_the_handlers_are_put_back(tmp_path: Path, sig) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(token_input.WaitStopped, match=sig.name):
        token_input.wait_for_file(tmp_path / "never", sleep=lambda _: os.kill(os.getpid(), sig))
    assert signal.getsignal(sig) is before
