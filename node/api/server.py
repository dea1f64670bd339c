"""Control API (aiohttp, 127.0.0.1 by default): what the CLI and operators' scripts talk to.

Every route is guarded by node/api/auth.py; components add theirs through `node.api_extensions`. Connections
pass p2p/public/guard.py first (caps per address, per network and in all; deadlines for every request's headers
and body); an idle keep-alive connection is closed after API_KEEPALIVE_TIMEOUT (aiohttp's own default is an
hour).
"""
from __future__ import annotations

import asyncio
from typing import Iterator, NamedTuple, cast

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node.api.base import ApiNode, NODE_KEY, errors_as_json, json_response, node_of
from p2p.public.guard import ConnectionGuard, GuardedSite, install_guard
from node.api.rate import RATE_LIMIT, FrontGate, PublicRateLimit, install_public_rate_limit
from node.api.auth import install_auth
from node.api.forwarded import install_forwarded_client
from p2p.public.sources import parse_networks
from node.metrics import render_metrics


FRONT_GATE = web.AppKey("front_gate", FrontGate)


async def get_status(request: web.Request) -> web.Response:
    return json_response(node_of(request).status())


async def get_peers(request: web.Request) -> web.Response:
    return json_response({"peers": node_of(request).peer_list()})


async def get_metrics(request: web.Request) -> web.Response:
    body, content_type = render_metrics(node_of(request))
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(node: ApiNode) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=64 * 1024)
    app[NODE_KEY] = node
    api = node.configs.api
    install_forwarded_client(app, parse_networks(api.trusted_proxies))
    auth = install_auth(app, api.data_dir, api.token)
    limit = PublicRateLimit(api.public_rate, api.public_rate_total, api.rate_exempt, refusals=node.public_refusals)
    install_public_rate_limit(app, limit, auth)
    gate = app[FRONT_GATE] = FrontGate(limit, auth, api.connection_rate)
    node.metric_sources.append(lambda: gate_metrics(gate))
    app[RATE_LIMIT] = limit
    node.metric_sources.append(lambda: rate_metrics(limit))
    app.router.add_get("/status", get_status)
    app.router.add_get("/peers", get_peers)
    app.router.add_get("/metrics", get_metrics)
    for extend in node.api_extensions:
        extend(app)
    return app


def install_front_gate(app: web.Application, server: web.Server | None) -> None:
    """Put the app's FrontGate (rate.py) in front of routing: the server's handler of every request."""
    assert server is not None, "set the runner up first"
    server.request_handler = app[FRONT_GATE].wrap(server.request_handler)


def guard_metrics(guard: ConnectionGuard) -> Iterator[Metric]:
    yield GaugeMetricFamily("exchange_node_api_connections", "Open control API connections",
                            value=guard.open.held)
    refused = CounterMetricFamily("exchange_node_api_connections_refused",
                                  "API connections closed by the guard, by reason (over a cap, too slow, idle)",
                                  labels=["reason"])
    for reason, count in guard.counters.items():
        refused.add_metric([reason], count)
    yield refused
    yield GaugeMetricFamily("exchange_node_api_slow_answer_bytes",
                            "Unsent answer bytes of slow readers kept past the write deadline (API_SLOW_ANSWER_BYTES)",
                            value=guard.slow_answers.held)


def rate_metrics(limit: PublicRateLimit) -> Iterator[Metric]:
    refused = CounterMetricFamily("exchange_node_api_rate_limited",
                                  "Public API requests without a token answered 429, by the limit that refused them",
                                  labels=["limit"])
    for name, count in limit.refused.items():
        refused.add_metric([name], count)
    yield refused


def gate_metrics(gate: FrontGate) -> Iterator[Metric]:
    refused = CounterMetricFamily("exchange_node_api_refused_before_routing",
                                  "API requests answered 429 before routing: over the public rate (public), over "
                                  "a connection's rate (connection), asked again before a 429's Retry-After (early)",
                                  labels=["reason"])
    for reason, count in gate.refused.items():
        refused.add_metric([reason], count)
    yield refused
    yield CounterMetricFamily("exchange_node_api_connections_closed_by_gate",
                              "Keep-alive API connections the front gate closed for asking past their refusals",
                              value=gate.closed)


class ApiServer(NamedTuple):
    """A listening control API: its runner (cleaned up to stop it), where it listens, its public rate limit and
    its connection guard (the node's /status shows both)."""

    runner: web.AppRunner
    address: tuple[str, int]
    rate_limit: PublicRateLimit
    guard: ConnectionGuard


async def start_api(node: ApiNode, host: str, port: int) -> ApiServer:
    api = node.configs.api
    app = build_app(node)
    install_guard(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=api.keepalive_timeout)
    await runner.setup()
    install_front_gate(app, runner.server)
    guard = ConnectionGuard(api.max_connections_per_address, api.max_connections_per_subnet, api.max_connections,
                            api.header_timeout, api.body_timeout, refusals=node.public_refusals,
                            write_timeout=api.write_timeout, write_min_rate=api.write_min_rate,
                            slow_answer_bytes=api.slow_answer_bytes, proxies=parse_networks(api.trusted_proxies),
                            shut=app[FRONT_GATE].shut)
    node.metric_sources.append(lambda: guard_metrics(guard))
    site = GuardedSite(runner, host, port, guard)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()   # the cookie written at setup goes too
        raise
    server = cast("asyncio.Server | None", site._server)  # aiohttp keeps it here; we need the bound port for port 0
    sockname = server.sockets[0].getsockname() if server and server.sockets else (host, port)
    return ApiServer(runner, (sockname[0], sockname[1]), app[RATE_LIMIT], guard)
