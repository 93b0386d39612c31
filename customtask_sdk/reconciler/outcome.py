"""What a reconcile returns (an outcome) or raises (an error that says what to do next)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = [
    "Failed",
    "Outcome",
    "ResultValue",
    "RetryLater",
    "RunFailed",
    "Running",
    "Succeeded",
]

#: A result value: a string, or a list of strings / a string map (published as JSON, which
#: Tekton turns into an array or object parameter downstream).
ResultValue = str | list[str] | dict[str, str]


@dataclass(frozen=True)
class Running:
    """Still working: reconcile again after ``requeue_after`` (or on the next change).

    The SDK also wakes the run when its timeout expires, so never poll for that.
    ``extra_fields``, when given, replaces ``status.extraFields`` (free-form JSON) as a
    whole: a key left out is removed from the stored status, and a ``None`` value in a map
    means "no such key" (a JSON merge patch cannot store a null).
    """

    requeue_after: timedelta | None = None
    message: str = ""
    reason: str = "Running"
    extra_fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Succeeded:
    """Done: ``Succeeded=True`` with ``results`` published for later pipeline tasks.

    No results means no ``status.results`` at all, as Tekton's own controllers write.
    """

    results: Mapping[str, ResultValue] = field(default_factory=dict)
    message: str = ""
    reason: str = "Succeeded"
    extra_fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """This attempt failed: retried while ``spec.retries`` allows, else ``Succeeded=False``.

    ``spec.retries`` is the pipeline author's choice, and Tekton retries a failed TaskRun
    whatever the reason, so a failure is retried by default; pass ``retry=False`` for
    failures no retry can fix (bad input, a missing object): the run then fails at once.
    """

    reason: str
    message: str
    results: Mapping[str, ResultValue] = field(default_factory=dict)
    retry: bool = True
    extra_fields: Mapping[str, Any] | None = None


Outcome = Running | Succeeded | Failed


class RunFailed(Exception):
    """Raise from ``reconcile`` to fail this attempt, as returning :class:`Failed` does.

    The ``message`` is shown to people on the CustomRun, so say what to do. Retried
    while ``spec.retries`` allows unless ``retry=False`` (the same default as
    :class:`Failed`: pass ``retry=False`` for errors a person must fix first).
    """

    def __init__(self, reason: str, message: str, *, retry: bool = True) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry = retry


class RetryLater(Exception):
    """Raise from ``reconcile`` for a transient problem: reconcile again later.

    Without ``after``, the run is requeued with per-run exponential backoff. Any other
    exception is treated the same way (and logged with its traceback). Either way the
    run is looked at again by its deadline at the latest, so its timeout still holds.
    """

    def __init__(self, message: str, *, after: timedelta | None = None) -> None:
        super().__init__(message)
        self.after = after
