"""Control API (aiohttp, 127.0.0.1 by default): what the CLI and operators' scripts talk to.

Errors are always JSON `{"error": {"code", "message", "field"?}}` with a 4xx/5xx status.
"""
from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("node.api")
NODE_KEY = web.AppKey("node", object)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json_response({"error": error}, self.status)


@web.middleware
async def errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason or code).response()
    except Exception:
        log.exception("control API handler failed: %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error; see the node log").response()


def node_of(request: web.Request) -> Any:
    return request.app[NODE_KEY]


async def get_status(request: web.Request) -> web.Response:
    return json_response(node_of(request).status())


async def get_peers(request: web.Request) -> web.Response:
    return json_response({"peers": node_of(request).peer_list()})


async def get_metrics(request: web.Request) -> web.Response:
    from node.metrics import render_metrics

    body, content_type = render_metrics(node_of(request))
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(node: Any) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=64 * 1024)
    app[NODE_KEY] = node
    from node.auth import install_auth

    install_auth(app, node.settings)
    app.router.add_get("/status", get_status)
    app.router.add_get("/peers", get_peers)
    app.router.add_get("/metrics", get_metrics)
    for extend in getattr(node, "api_extensions", []):
        extend(app)
    return app


async def start_api(node: Any, host: str, port: int) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp keeps the asyncio server here; we need the bound port for port 0
    sockname = server.sockets[0].getsockname() if server and server.sockets else (host, port)
    return runner, (sockname[0], sockname[1])
