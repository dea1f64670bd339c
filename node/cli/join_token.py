"""Where `exchange-node start` takes a join token from: never its command line, where any local user reads it
with `ps`. JOIN_TOKEN (the environment or the config file), JOIN_TOKEN_FILE / `--join-token-file PATH`, which
start waits for, so a node can be started before a validator has issued its token, or `--join-token -`:
standard input (asked for without echo on a terminal).

A file still being written (empty, or a beginning of a token with no line end yet) is read again until it holds
a whole token; anything else, like an empty or malformed JOIN_TOKEN, is refused with one line (exit 2).
"""
from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Callable, TextIO

from config import parsers as p

log = logging.getLogger("node")

STDIN = "-"
COMMAND_LINE_REFUSED = ("a join token is never given on the command line (any local user reads it with `ps`): use "
                        "--join-token-file PATH (or JOIN_TOKEN_FILE), JOIN_TOKEN in the environment, or "
                        "--join-token - to read it from standard input")
POLL_SECONDS = 0.1
_FORM = "exn1-" + "h" * 64 + "-" + "h" * 64       # h: a lower-case hex digit
_HEX = frozenset("0123456789abcdef")


class TokenRefused(ValueError):
    """A join token that cannot be used, or a conflicting way of giving one; the message is one line."""


class WaitStopped(Exception):
    """SIGINT or SIGTERM while waiting for the token file."""


def could_be_unfinished(text: str) -> bool:
    """Whether `text` is empty or the beginning of a join token with no line end yet: a file still being written."""
    if text.endswith("\n"):
        return False
    body = text.strip()
    return len(body) < len(_FORM) and all(c in _HEX if f == "h" else c == f for c, f in zip(body, _FORM))


def check(text: str, where: str) -> str:
    """The token in `text`, or TokenRefused naming `where` it came from (never the value: it is a secret)."""
    if not text.strip():
        raise TokenRefused(f"the join token {where} is empty (a validator's `exchange-node validators token new` "
                           f"prints one)")
    try:
        token = p.join_token(text)
    except p.InvalidValue as exc:
        raise TokenRefused(f"the join token {where} {exc}") from None
    assert token is not None
    return token


def read_stdin(stream: TextIO | None = None) -> str:
    """One line of standard input (asked for without echo when it is a terminal)."""
    stream = sys.stdin if stream is None else stream
    if stream.isatty():
        import getpass

        text = getpass.getpass("join token (not echoed): ")
    else:
        text = stream.readline()
    return check(text, "read from standard input")


def read_file(path: Path) -> str | None:
    """The token in `path`; None while the file is absent or still being written; TokenRefused otherwise."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise TokenRefused(f"the join token file {path} is a directory") from None
    except OSError as exc:
        raise TokenRefused(f"cannot read the join token file {path}: {exc.strerror or exc}") from None
    if could_be_unfinished(text):
        return None
    return check(text, f"in {path}")


def wait_for_file(path: Path, sleep: Callable[[float], None] = time.sleep) -> str:
    """The token in `path` once the file exists and holds one (logged once while it does not yet); WaitStopped on
    SIGINT or SIGTERM meanwhile."""
    token = read_file(path)
    if token is not None:
        _warn_if_readable_by_others(path)
        return token
    stopped: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:     # noted, acted on between polls (never mid-write)
        stopped.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:                # handlers first: a signal sent once the line is out must find them
        log.info("waiting for the join token at %s", path)
        while token is None and not stopped:
            sleep(POLL_SECONDS)
            token = read_file(path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        raise WaitStopped(stopped[0])
    assert token is not None
    _warn_if_readable_by_others(path)
    log.info("join token read from %s", path)
    return token


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("the join token file %s is readable by other users (mode %o): `chmod 600 %s`", path,
                    stat.S_IMODE(mode), path)


def token_source(flag: object, env_token: str | None, token_file: Path | None) -> str | None:
    """Which one way the token is given: "stdin", "file", "setting" or None; TokenRefused for the command line
    or for two ways at once."""
    if flag is not None and flag != STDIN:
        raise TokenRefused(COMMAND_LINE_REFUSED)
    given = [name for name, on in (("--join-token -", flag == STDIN), ("JOIN_TOKEN", env_token is not None),
                                   ("JOIN_TOKEN_FILE", token_file is not None)) if on]
    if len(given) > 1:
        raise TokenRefused(f"the join token is given {len(given)} ways ({', '.join(given)}): give it one way")
    if flag == STDIN:
        return "stdin"
    if token_file is not None:
        return "file"
    return "setting" if env_token is not None else None
