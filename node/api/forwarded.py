"""Whom a request through a trusted reverse proxy stands for (`API_TRUSTED_PROXIES`).

Behind nginx or a load balancer every client arrives from the proxy's address: the per-client limits would
share one budget among all of them, and a proxy on this machine would make them all look local (exempt from
the public rate). For a request from a trusted proxy, the right-most address its X-Forwarded-For names that is
not a trusted proxy becomes the request's `remote`, so the rate limit, the exemptions and the stream's shares
read it (`p2p.public.sources.forwarded_client`); the header is not read from anyone else, so a client cannot
name itself someone else. A header from a trusted proxy that names no IP address where it is read, or names a
loopback client, gets 400.
"""
from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.base import ApiError
from p2p.public.sources import Networks, forwarded_client


def install_forwarded_client(app: web.Application, proxies: Networks) -> None:
    """Add the middleware that reads a trusted proxy's X-Forwarded-For (nothing, with no proxy trusted); call it
    before the middlewares that read `request.remote`."""
    if not proxies:
        return

    @web.middleware
    async def forwarded_for(request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = request.remote or ""
        try:
            client = forwarded_client(remote, request.headers.getall("X-Forwarded-For", []), proxies)
        except ValueError as exc:
            return ApiError(400, "bad_forwarded_for", f"{exc} (this node trusts the proxy that sent it)").response()
        return await handler(request if client == remote else request.clone(remote=client))

    app.middlewares.append(forwarded_for)
