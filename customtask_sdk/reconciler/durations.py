"""Go duration strings (``90s``, ``1h30m``, ``500ms``), as Tekton users write them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["GoDuration", "format_go_duration", "parse_go_duration"]

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_EXAMPLES = "90s, 1h30m, 500ms or 2h"


def parse_go_duration(text: object) -> timedelta:
    """Parse a Go duration (``time.ParseDuration`` syntax) into a ``timedelta``.

    Raises:
        ValueError: with a message saying what is wrong and what to write instead.
    """
    if not isinstance(text, str):
        kind = "a list" if isinstance(text, list) else type(text).__name__
        raise ValueError(f"expected a duration string such as {_EXAMPLES}, got {kind}")
    raw = text.strip()
    body = raw
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise ValueError(f"empty duration; write a number with a unit, such as {_EXAMPLES}")
    total_ns = 0
    position = 0
    for match in _PART.finditer(body):
        if match.start() != position:
            break
        number, unit = match.groups()
        whole, _, fraction = number.partition(".")
        scale = _UNITS_NS[unit]
        total_ns += int(whole or 0) * scale
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        position = match.end()
    if position != len(body) or position == 0:
        hint = " (a unit is required)" if re.fullmatch(r"\d+(\.\d*)?", body) else ""
        raise ValueError(f"invalid duration {raw!r}{hint}; use a Go duration such as {_EXAMPLES}")
    return timedelta(microseconds=sign * total_ns / 1000)


def format_go_duration(value: timedelta) -> str:
    """Format like Go's ``Duration.String()``: ``1h0m0s``, ``1m30s``, ``500ms``, ``0s``."""
    total_us = round(value.total_seconds() * 1_000_000)
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    if total_us == 0:
        return "0s"
    if total_us < 1_000_000:
        if total_us % 1000 == 0:
            return f"{sign}{total_us // 1000}ms"
        return f"{sign}{_trim(total_us / 1000)}ms" if total_us >= 1000 else f"{sign}{total_us}µs"
    hours, rest = divmod(total_us, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _trim(rest / 1_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _trim(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


def _validate(value: Any) -> timedelta:
    return value if isinstance(value, timedelta) else parse_go_duration(value)


#: A pydantic field type: accepts a Go duration string, holds a ``timedelta``.
GoDuration = Annotated[
    timedelta,
    BeforeValidator(_validate),
    PlainSerializer(format_go_duration, return_type=str),
]
