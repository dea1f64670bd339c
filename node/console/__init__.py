"""The web console: static files served by the node itself at `/` (no CDN: nodes often have no internet).

Plain HTML, CSS and JavaScript modules with SVG drawing, no framework and no build step, so what
ships in the package is what runs in the browser. It reads the same control API and `/ws` stream
as any other client; a strict Content-Security-Policy keeps it to this origin.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from node.api.base import Handler

STATIC = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@web.middleware
async def console_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers.update(SECURITY_HEADERS)
    return response


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def install_console(app: web.Application) -> None:
    app.middlewares.append(console_headers)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
