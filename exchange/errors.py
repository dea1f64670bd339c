"""Typed errors with stable reason codes, so the API layer can map any of them to a 422 body.

Every error carries `code` (machine-readable, stable), `message` (for humans) and
`field` (the input it is about, when there is one).
"""
from __future__ import annotations


class ExchangeError(ValueError):
    """Base of every input error raised by the exchange core."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidPrice(ExchangeError):
    """A price that is not a usable decimal, not a tick multiple, or outside the band."""


class InvalidQuantity(ExchangeError):
    """A quantity that is not a usable decimal, not a lot multiple, or outside the limits."""


class InvalidMarketSpec(ExchangeError):
    """The `MARKETS` setting (or one market's config) cannot be understood."""


class UnknownMarket(ExchangeError):
    """A symbol that is not in the market registry."""


class InvalidCommand(ExchangeError):
    """A command (or its plain-dict form) with a missing or unusable field."""


class InvalidSnapshot(ExchangeError):
    """A snapshot that does not belong to this market or is malformed."""
