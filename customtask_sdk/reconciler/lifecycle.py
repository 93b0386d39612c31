"""The CustomRun contract: from a cached run and the reconciler's outcome to its new status.

:func:`step` performs no I/O of its own: it calls the reconciler's hooks and returns the
status to write (only when it changed), when to look again, and the events to record.
The controller turns that into API calls.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from customtask_sdk.client import JSON
from customtask_sdk.reconciler.base import Reconciler, ReconcilerBase
from customtask_sdk.reconciler.durations import format_go_duration
from customtask_sdk.reconciler.outcome import (
    Failed,
    Outcome,
    ResultValue,
    RetryLater,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.reconciler.run import (
    InputError,
    OwnedLookup,
    Run,
    format_time,
    parse_input,
    parse_time,
    parse_timeout,
)

__all__ = [
    "CANCELLED",
    "TIMED_OUT",
    "Event",
    "HookTimeout",
    "Step",
    "finalize_run",
    "is_done",
    "matches",
    "step",
    "succeeded_condition",
]

CANCELLED = "CustomRunCancelled"
TIMED_OUT = "CustomRunTimedOut"
_CANCEL_REQUEST = "RunCancelled"
_RESULT_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

T = TypeVar("T")


class HookTimeout(Exception):
    """A reconciler call ran past ``Reconciler.reconcile_timeout`` and was cancelled."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the run: ``Normal`` or ``Warning``."""

    type: str
    reason: str
    message: str


@dataclass
class Step:
    """What one reconcile decided.

    Attributes:
        status: the complete new status, or ``None`` when nothing changed.
        requeue_after: seconds (from the step's ``now``) by which the run must be looked
            at again, if ever: the sooner of the reconciler's ``requeue_after`` and the
            run's deadline; with an ``error``, the deadline alone (the backoff may come
            sooner).
        error: a transient failure; requeue with backoff (or after ``retry_after``).
        retry_after: the delay ``RetryLater(after=...)`` asked for.
        events: transitions to record.
    """

    status: JSON | None = None
    requeue_after: float | None = None
    error: BaseException | None = None
    retry_after: float | None = None
    events: list[Event] = field(default_factory=list)


def succeeded_condition(obj: Mapping[str, Any]) -> JSON | None:
    """The ``Succeeded`` condition of a run, or ``None``."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "Succeeded":
            found: JSON = cond
            return found
    return None


def is_done(obj: Mapping[str, Any]) -> bool:
    """True once the run is ``Succeeded=True`` or ``False``: it is never written again."""
    cond = succeeded_condition(obj)
    return cond is not None and cond.get("status") in ("True", "False")


def matches(obj: Mapping[str, Any], api_version: str, kind: str) -> bool:
    """Whether a run is served by ``api_version``/``kind`` (``customRef``, else ``customSpec``)."""
    spec = obj.get("spec") or {}
    ref = spec.get("customRef") or spec.get("customSpec") or {}
    return bool(ref.get("apiVersion") == api_version and ref.get("kind") == kind)


def _condition(status: str, reason: str, message: str, now: str, previous: JSON | None) -> JSON:
    cond = {"type": "Succeeded", "status": status, "reason": reason, "message": message}
    if previous is not None and all(previous.get(k) == v for k, v in cond.items()):
        cond["lastTransitionTime"] = previous.get("lastTransitionTime") or now
    else:
        cond["lastTransitionTime"] = now
    return cond


class _Status:
    """The status being built for one step (a shallow copy; nested values are replaced)."""

    def __init__(self, obj: JSON, now: datetime.datetime) -> None:
        self.original: JSON = obj.get("status") or {}
        self.data: JSON = dict(self.original)
        self.now = now
        self.stamp = format_time(now)
        self.events: list[Event] = []
        self.first_start = False

    def set(self, status: str, reason: str, message: str) -> None:
        previous = succeeded_condition({"status": self.data})
        others = [c for c in self.data.get("conditions") or () if c.get("type") != "Succeeded"]
        self.data["conditions"] = [
            *others,
            _condition(status, reason, message, self.stamp, previous),
        ]

    def start(self, reason: str = "Started", message: str = "") -> None:
        self.data["startTime"] = self.stamp
        self.data.pop("completionTime", None)
        self.set("Unknown", reason, message)

    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.set("True" if succeeded else "False", reason, message)
        self.data["completionTime"] = self.stamp
        self.events.append(Event("Normal" if succeeded else "Warning", reason, message))

    def result(self, generation: int | None, requeue_after: float | None = None) -> Step:
        if generation is not None:
            self.data["observedGeneration"] = generation
        changed = self.data != self.original
        return Step(self.data if changed else None, requeue_after, events=self.events)


def _encode_results(results: Mapping[str, ResultValue], limit: int) -> list[JSON]:
    encoded = []
    size = 0
    for name, value in results.items():
        if not isinstance(name, str) or not _RESULT_NAME.match(name):
            raise InputError(
                "InvalidResults",
                f"result name {name!r} is invalid: use letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit",
            )
        if isinstance(value, str):
            text = value
        elif isinstance(value, list | dict):
            text = json.dumps(value, separators=(",", ":"))
        else:
            raise InputError(
                "InvalidResults",
                f"result {name!r} is a {type(value).__name__}; results are strings "
                "(or lists / maps of strings, published as JSON)",
            )
        size += len(name) + len(text.encode())
        encoded.append({"name": name, "value": text})
    if size > limit:
        raise InputError(
            "ResultsTooLarge",
            f"results total {size} bytes, over the {limit}-byte limit; publish a reference "
            "(a URL, an object name) instead of the data itself",
        )
    return encoded


def _seconds_until(moment: datetime.datetime, now: datetime.datetime) -> float:
    return max(0.0, (moment - now).total_seconds())


def _stored_form(value: Any) -> Any:
    """``value`` as a JSON merge patch leaves it stored: no null map values, lists for
    tuples. Comparing this with the stored status is what makes an unchanged status
    write nothing."""
    if isinstance(value, Mapping):
        return {k: _stored_form(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_stored_form(v) for v in value]
    return value


async def _limited(reconciler: ReconcilerBase, hook: str, call: Awaitable[T]) -> T:
    """Await ``call`` within ``reconciler.reconcile_timeout``.

    Raises:
        HookTimeout: the limit passed; ``call`` was cancelled.
    """
    limit = reconciler.reconcile_timeout
    scope = asyncio.timeout(limit.total_seconds())
    try:
        async with scope:
            return await call
    except TimeoutError as exc:
        if not scope.expired():
            raise  # the hook's own TimeoutError
        raise HookTimeout(  # chained: the traceback shows where the hook was stuck
            f"{type(reconciler).__name__}.{hook} did not return within "
            f"{format_go_duration(limit)} (reconcile_timeout); it was cancelled"
        ) from exc


async def step(
    reconciler: Reconciler[Any],
    obj: JSON,
    now: datetime.datetime,
    owned: OwnedLookup | None = None,
) -> Step:
    """Reconcile one CustomRun once: the whole contract around ``reconciler``'s logic.

    ``owned`` lets ``Run.owned`` read the cached objects the run owns.
    """
    if is_done(obj):
        return Step()  # terminal: never modified again (Tekton still patches cancels onto it)
    spec = obj.get("spec") or {}
    generation = obj.get("metadata", {}).get("generation")
    status = _Status(obj, now)
    cancel_message = spec.get("statusMessage") or (
        f"CustomRun {obj['metadata']['name']!r} was cancelled"
    )
    started_text = status.data.get("startTime")
    if not started_text or succeeded_condition({"status": status.data}) is None:
        if spec.get("status") == _CANCEL_REQUEST:
            status.finish(False, CANCELLED, cancel_message)
            return status.result(generation)
        status.start()
        status.first_start = True
        started_at = now
    else:
        try:
            started_at = parse_time(started_text)
        except ValueError:
            status.start(message=f"startTime {started_text!r} was unreadable; restarted")
            started_at = now

    cancelling = spec.get("status") == _CANCEL_REQUEST
    try:
        run = _parse_run(reconciler, obj, spec, started_at, now, owned)
    except InputError as exc:
        if cancelling:  # nothing can have started with unusable input: just cancel
            status.finish(False, CANCELLED, cancel_message)
        else:
            status.finish(False, exc.reason, exc.message)
        return status.result(generation)

    timed_out = run.deadline is not None and now >= run.deadline
    try:
        if cancelling:
            fields = await _limited(reconciler, "on_cancel", reconciler.on_cancel(run))
            if fields is not None:
                status.data["extraFields"] = _stored_form(fields)
            status.finish(False, CANCELLED, cancel_message)
            return status.result(generation)
        if timed_out:
            fields = await _limited(reconciler, "on_timeout", reconciler.on_timeout(run))
            outcome: Outcome = Failed(
                TIMED_OUT,
                f"CustomRun {run.name!r} failed to finish within {run.describe_timeout()!r}",
                extra_fields=fields,
            )
        else:
            outcome = await _limited(reconciler, "reconcile", reconciler.reconcile(run))
    except RunFailed as exc:
        outcome = Failed(exc.reason, exc.message, retry=exc.retry)
    except Exception as exc:  # RetryLater, the integrator's bug, a transient failure
        # Whatever the backoff, come back by the deadline (once it has passed, the
        # timeout is what keeps failing: the backoff alone paces it).
        by_deadline = (
            None if timed_out or run.deadline is None else _seconds_until(run.deadline, now)
        )
        pending = status.result(generation, by_deadline)
        pending.error = exc
        if isinstance(exc, RetryLater) and exc.after is not None:
            pending.retry_after = exc.after.total_seconds()
        return pending
    return _apply(reconciler, run, outcome, status, generation)


async def finalize_run(
    reconciler: Reconciler[Any],
    obj: JSON,
    now: datetime.datetime,
    owned: OwnedLookup | None = None,
) -> bool:
    """Call ``reconciler.finalize`` on ``obj`` as a :class:`Run`, within its time limit.

    Returns False, without calling it, for a run whose input does not validate: such a
    run failed (``InvalidParams``...) before ``reconcile`` could see it, so nothing of it
    was made. A run deleted before it started gets ``started_at == now``.

    Raises:
        HookTimeout: ``finalize`` ran past ``reconcile_timeout``; or whatever it raised.
    """
    spec = obj.get("spec") or {}
    started_text = (obj.get("status") or {}).get("startTime")
    try:
        started_at = parse_time(started_text) if started_text else now
    except ValueError:
        started_at = now
    try:
        run = _parse_run(reconciler, obj, spec, started_at, now, owned)
    except InputError:
        return False
    await _limited(reconciler, "finalize", reconciler.finalize(run))
    return True


def _parse_run(
    reconciler: Reconciler[Any],
    obj: JSON,
    spec: JSON,
    started_at: datetime.datetime,
    now: datetime.datetime,
    owned: OwnedLookup | None,
) -> Run[Any]:
    timeout = parse_timeout(spec)
    ref_name = (spec.get("customRef") or {}).get("name")
    if ref_name and not reconciler.accepts_named_ref:
        raise InputError(
            "InvalidCustomRef",
            f"{reconciler.kind} takes its input from params or an embedded spec, not a named "
            f"object: remove customRef.name ({ref_name!r}) from the task",
        )
    params = parse_input(spec, reconciler.params_model)
    return Run(obj, params, started_at, timeout, now, owned)


def _apply(
    reconciler: Reconciler[Any],
    run: Run[Any],
    outcome: Outcome,
    status: _Status,
    generation: int | None,
) -> Step:
    if outcome.extra_fields is not None:  # replaced as a whole: see status_patch
        status.data["extraFields"] = _stored_form(outcome.extra_fields)
    if isinstance(outcome, Running):
        status.set("Unknown", outcome.reason, outcome.message)
        if status.first_start:  # an instant run records only its outcome
            status.events.append(Event("Normal", "Started", outcome.message or "started"))
        wake = [run.deadline] if run.deadline is not None else []
        if outcome.requeue_after is not None:
            wake.append(status.now + outcome.requeue_after)
        requeue = _seconds_until(min(wake), status.now) if wake else None
        return status.result(generation, requeue)
    try:
        results = _encode_results(outcome.results, reconciler.max_result_bytes)
    except InputError as exc:
        outcome = Failed(exc.reason, exc.message, retry=False)
        results = []
    if results:  # none: no `results: []` (Tekton's own controllers write nothing)
        status.data["results"] = results
    if isinstance(outcome, Succeeded):
        status.finish(True, outcome.reason, outcome.message)
        return status.result(generation)
    retried = list(status.data.get("retriesStatus") or [])
    if outcome.retry and len(retried) < run.retries:
        status.finish(False, outcome.reason, outcome.message)
        archived = {k: v for k, v in status.data.items() if k != "retriesStatus"}
        if generation is not None:
            archived["observedGeneration"] = generation
        attempt = len(retried) + 1
        status.data = {"retriesStatus": [*retried, archived]}
        status.start(
            "Retrying",
            f"attempt {attempt} failed ({outcome.reason}: {outcome.message}); "
            f"retry {attempt} of {run.retries}",
        )
        status.events[-1] = Event("Warning", "Retrying", status.data["conditions"][0]["message"])
        return status.result(generation, 0.0)
    status.finish(False, outcome.reason, outcome.message)
    return status.result(generation)
