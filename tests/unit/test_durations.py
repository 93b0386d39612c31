"""Go duration syntax, as Tekton users write it (``time.ParseDuration`` compatible)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customtask_sdk.reconciler import format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        (".5s", timedelta(milliseconds=500)),
        ("1h0m0s", timedelta(hours=1)),
        ("-1m", timedelta(minutes=-1)),
        ("+2s", timedelta(seconds=2)),
        ("1500us", timedelta(microseconds=1500)),
        ("3µs", timedelta(microseconds=3)),
        ("2000ns", timedelta(microseconds=2)),
        ("1m30.5s", timedelta(seconds=90.5)),
    ],
)
def test_parses_like_go(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("5", "a unit is required"),
        ("5 s", "invalid duration"),
        ("1d", "invalid duration"),
        ("s", "invalid duration"),
        ("1h-5m", "invalid duration"),
        ("--1s", "invalid duration"),
    ],
)
def test_rejects_with_a_hint(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        parse_go_duration(text)
    assert "90s, 1h30m" in str(err.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(seconds=-10), "-10s"),
    ],
)
def test_formats_like_go(value: timedelta, text: str) -> None:
    assert format_go_duration(value) == text


@given(
    st.integers(min_value=-(10**12), max_value=10**12).map(lambda ms: timedelta(milliseconds=ms))
)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value
