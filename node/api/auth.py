"""Control API authentication the way bitcoind does it: a bearer token that is either this run's cookie
(DATA_DIR/.cookie, see node/cookie.py) or the configured API_TOKEN, on every route except a short,
explicit list of public read-only ones.

Whether a request is public is decided on the route aiohttp matched, not on the raw path, so no path
spelling (`//status`, `/book/../peers`, percent-encoding) can reach a private handler unauthenticated;
a request that matches no route is private too. A bearer header (not a browser cookie or a query
parameter) also means another web site cannot make a browser send it: no CSRF.
"""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.base import ApiError
from node.cookie import remove_cookie, write_cookie

# What anyone who can reach the port may do. "/x/*" also covers a prefix resource at /x (static files).
PUBLIC_ROUTES: tuple[str, ...] = (
    "GET /status", "GET /health", "GET /ready", "GET /metrics",
    "GET /book/*", "GET /trades/*", "GET /candles/*",
    "GET /chain/*",             # certified headers and proofs for light clients: checked by them, not believed
    "GET /", "GET /static/*",   # the web console's page and assets
    "GET /ws",                  # the market data stream; its private channels call `check_token` themselves
)
_READ_METHODS = frozenset({"GET", "HEAD"})
_PUBLIC_EXACT = frozenset(r.split(" ", 1)[1] for r in PUBLIC_ROUTES if not r.endswith("/*"))
_PUBLIC_PREFIXES = tuple(r.split(" ", 1)[1][:-1] for r in PUBLIC_ROUTES if r.endswith("/*"))


def is_public(method: str, canonical_path: str | None) -> bool:
    """True if (method, route) is in PUBLIC_ROUTES. `canonical_path` is the route's pattern, e.g.
    `/book/{market}`; None (no route matched) is never public."""
    if method not in _READ_METHODS or canonical_path is None:
        return False
    if canonical_path in _PUBLIC_EXACT:
        return True
    return (canonical_path.rstrip("/") + "/").startswith(_PUBLIC_PREFIXES)


def _digest(token: str) -> bytes:
    """Tokens are compared as SHA-256 digests so the comparison takes the same time whatever the length."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class ApiAuth:
    """The tokens this node accepts and the middleware that enforces them."""

    def __init__(self, data_dir: Path, api_token: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._cookie: str | None = None
        self._accepted: list[bytes] = [_digest(api_token)] if api_token else []
        self.refused = 0

    def check_token(self, token: object) -> bool:
        """True if `token` is the cookie or API_TOKEN. Constant time with respect to the token's content."""
        if not isinstance(token, str) or not token:
            return False
        presented = _digest(token)
        accepted = False
        for digest in self._accepted:       # no early exit: which token matched is not observable either
            accepted |= hmac.compare_digest(presented, digest)
        return accepted

    def bearer_token(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if is_public(request.method, resource.canonical if resource is not None else None):
            return await handler(request)
        token = self.bearer_token(request)
        if self.check_token(token):
            return await handler(request)
        self.refused += 1
        return self._unauthorized(token is not None)

    @staticmethod
    def _unauthorized(presented: bool) -> web.Response:
        if presented:
            message = "the bearer token was not accepted"
            challenge = 'Bearer realm="exchange-node", error="invalid_token"'
        else:
            message = ("this endpoint needs `Authorization: Bearer <token>`: the node's cookie (DATA_DIR/.cookie, "
                       "read by the exchange-node CLI) or its API_TOKEN")
            challenge = 'Bearer realm="exchange-node"'
        response = ApiError(401, "unauthorized", message).response()
        response.headers["WWW-Authenticate"] = challenge
        return response

    async def write_cookie(self, _app: web.Application | None = None) -> None:
        self._cookie = write_cookie(self.data_dir)
        self._accepted.append(_digest(self._cookie))

    async def remove_cookie(self, _app: web.Application | None = None) -> None:
        if self._cookie is not None:
            remove_cookie(self.data_dir, self._cookie)


AUTH_KEY = web.AppKey("auth", ApiAuth)


def install_auth(app: web.Application, data_dir: Path, token: str | None) -> ApiAuth:
    """Guard every route of `app` (added before or after this call); the cookie in `data_dir` lives while
    the app runs; `token` (API_TOKEN) is accepted besides it."""
    auth = ApiAuth(data_dir, token)
    app[AUTH_KEY] = auth
    app.middlewares.insert(0, auth.middleware)
    app.on_startup.append(auth.write_cookie)
    app.on_cleanup.append(auth.remove_cookie)
    return auth


def check_token(app: web.Application, token: object) -> bool:
    """For code that authenticates inside a connection (the /ws private channels)."""
    return app[AUTH_KEY].check_token(token)
