"""What the node refused, typed: the HTTP status, the node's stable code, the field, and when to retry."""
from __future__ import annotations

from exchange_node_client.json_types import Json, JsonObject


class ApiError(Exception):
    """A 4xx/5xx answer: `code` is the node's stable error code (`unknown_market`, `rate_limited`, ...)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None, body: Json = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after
        self.body = body

    @property
    def retryable(self) -> bool:
        """429 and 503 say when to come back (Retry-After); the client retries them itself a few times."""
        return self.status in (429, 503)


class Rejected(Exception):
    """An operation that became final as rejected (the chain refused it): `reason` is its stable code."""

    def __init__(self, what: str, reason: str | None, answer: JsonObject) -> None:
        super().__init__(f"{what} rejected: {reason}")
        self.reason, self.answer = reason, answer
