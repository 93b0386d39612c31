"""A controllable clock for deterministic unit tests of reconcilers."""

from __future__ import annotations

import datetime

__all__ = ["FakeClock"]


class FakeClock:
    """A :class:`~customtask_sdk.reconciler.Clock` that moves only when told to."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)

    def now(self) -> datetime.datetime:
        """The current fake time."""
        return self._now

    def advance(self, delta: datetime.timedelta | float) -> datetime.datetime:
        """Move forward by ``delta`` (seconds or a ``timedelta``) and return the new time."""
        if not isinstance(delta, datetime.timedelta):
            delta = datetime.timedelta(seconds=delta)
        self._now += delta
        return self._now
