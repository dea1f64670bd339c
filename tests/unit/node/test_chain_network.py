"""The chain's RPC handlers, as the node offers them: what they cannot serve now and what a caller got wrong
reach the caller as RPC error codes (not as our internal error with a traceback, which a fuzzer found)."""
from __future__ import annotations

import pytest

from exchange.chain.ports import BadRequest, CannotServe
from node.chain_network import P2PChainNetwork
from p2p.rpc.errors import BAD_REQUEST, UNAVAILABLE, RpcError


class Registry:
    def __init__(self) -> None:
        self.handlers: dict = {}

    def register(self, service: str, handler) -> None:
        self.handlers[service] = handler


def offered(handler):
    rpc = Registry()
    P2PChainNetwork(peers=None, router=None, rpc=rpc).offer("chain.x", handler)  # type: ignore[arg-type]  # RPC only
    return rpc.handlers["chain.x"]


def no_chain_yet(payload, peer):
    raise CannotServe("no chain yet")


def bad_offset(payload, peer):
    raise BadRequest("offset must be a non-negative integer")


def our_bug(payload, peer):
    raise KeyError("ours")          # a LookupError, but not a refusal: it must not pass for one


def our_other_bug(payload, peer):
    return int("not a number")      # a ValueError of ours, not the caller's bad request


@pytest.mark.parametrize("handler, code", [(no_chain_yet, UNAVAILABLE), (bad_offset, BAD_REQUEST)])
def test_what_a_handler_cannot_serve_is_an_error_code(handler, code):
    with pytest.raises(RpcError) as raised:
        offered(handler)(None, "peer")
    assert raised.value.code == code and raised.value.message == str(handler_error(handler))


async def test_coroutine_handlers_are_mapped_too():
    async def later(payload, peer):
        raise CannotServe("no snapshot here")
    with pytest.raises(RpcError) as raised:
        await offered(later)(None, "peer")
    assert raised.value.code == UNAVAILABLE


def test_answers_and_our_own_bugs_pass_through():
    assert offered(lambda payload, peer: {"ok": payload})(1, "peer") == {"ok": 1}
    with pytest.raises(KeyError):           # the RPC server reports it as internal, with its traceback
        offered(our_bug)(None, "peer")
    with pytest.raises(ValueError):
        offered(our_other_bug)(None, "peer")


def handler_error(handler) -> Exception:
    try:
        handler(None, "peer")
    except Exception as exc:        # noqa: BLE001 - the error the handler raises, whatever it is
        return exc
    raise AssertionError("the handler did not raise")
