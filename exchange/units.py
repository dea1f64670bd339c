"""Exact conversion between decimal strings and integer units (ticks, lots); never floats.

A step such as a tick of "0.01" is held as an integer mantissa and a decimal scale
(1, 2), so "100.05" / "0.01" is computed as 10005 * 10**2 // (1 * 10**2) with an
exactness check, and formatting multiplies back. Inputs are capped in length so
a hostile string cannot make the integer arithmetic expensive.
"""
from __future__ import annotations

import re
from typing import Type, cast

from exchange.errors import ExchangeError

MAX_DECIMAL_CHARS = 32
_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
_NAN_WORDS = frozenset({"nan", "+nan", "-nan", "snan", "+snan", "-snan"})
_INF_WORDS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


class Step:
    """A positive decimal increment (tick or lot size) as mantissa * 10**-scale."""

    __slots__ = ("text", "mantissa", "scale")

    def __init__(self, mantissa: int, scale: int, text: str) -> None:
        self.mantissa = mantissa
        self.scale = scale
        self.text = text

    def __repr__(self) -> str:
        return f"Step({self.text!r})"


def parse_decimal(value: object, field: str, error: Type[ExchangeError] = ExchangeError) -> tuple[int, int]:
    """Parse a plain decimal string (or an int) into (mantissa, scale); raise `error` with a reason code."""
    if isinstance(value, bool):
        raise error("invalid_type", f"{field} must be a decimal string, not a boolean", field)
    if isinstance(value, int):
        if value < 0:
            raise error("negative", f"{field} must be positive", field)
        return value, 0
    if isinstance(value, float):
        raise error("float_not_allowed", f"{field} must be a decimal string; floats lose precision", field)
    if not isinstance(value, str):
        raise error("invalid_type", f"{field} must be a decimal string", field)
    if len(value) > MAX_DECIMAL_CHARS:
        raise error("too_long", f"{field} is longer than {MAX_DECIMAL_CHARS} characters", field)
    match = _DECIMAL.fullmatch(value)
    if match is None:
        lowered = value.strip().lower()
        if lowered in _NAN_WORDS:
            raise error("not_a_number", f"{field} is not a number", field)
        if lowered in _INF_WORDS:
            raise error("not_finite", f"{field} must be finite", field)
        if not value:
            raise error("empty", f"{field} is empty", field)
        raise error("malformed", f"{field} {value!r} is not a plain decimal like '12.34'", field)
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    mantissa = int(whole + fraction)
    if sign and mantissa:
        raise error("negative", f"{field} must be positive", field)
    return mantissa, len(fraction)


def parse_step(text: object, field: str, error: Type[ExchangeError] = ExchangeError) -> Step:
    """Parse a tick or lot size; it must be a positive decimal."""
    mantissa, scale = parse_decimal(text, field, error)
    if mantissa == 0:
        raise error("zero", f"{field} must be greater than zero", field)
    while scale and mantissa % 10 == 0:
        mantissa //= 10
        scale -= 1
    return Step(mantissa, scale, format_scaled(mantissa, scale))


def to_units(value: object, step: Step, field: str, error: Type[ExchangeError], not_multiple_code: str) -> int:
    """Convert a positive decimal to a whole number of `step`s, exactly, or raise `error`."""
    mantissa, scale = parse_decimal(value, field, error)
    if mantissa == 0:
        raise error("zero", f"{field} must be greater than zero", field)
    numerator = mantissa * 10 ** step.scale
    denominator = step.mantissa * 10 ** scale
    units, leftover = divmod(numerator, denominator)
    if leftover:
        raise error(not_multiple_code, f"{field} {value} is not a multiple of {step.text}", field)
    return cast("int", units)


def format_units(units: int, step: Step) -> str:
    """The decimal string of `units` steps, with exactly the step's number of decimals."""
    return format_scaled(units * step.mantissa, step.scale)


def format_scaled(mantissa: int, scale: int) -> str:
    """mantissa * 10**-scale as a plain decimal string."""
    sign = "-" if mantissa < 0 else ""
    digits = str(abs(mantissa))
    if scale == 0:
        return sign + digits
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"
