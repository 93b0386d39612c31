"""The kopf baseline of the customtask-sdk benchmark: the "Wait" custom task controller.

Run it with kopf's own runner (``kopf`` pinned in ``bench/requirements.txt``)::

    KUBECONFIG=/path/to/kubeconfig kopf run bench/baselines/kopf_wait.py \\
        --standalone --namespace bench

It reconciles ``tekton.dev/v1beta1`` CustomRuns whose ``spec.customRef`` (else
``spec.customSpec``) is ``wait.customtask.dev/v1alpha1`` ``Wait``: once the ``duration``
param (a Go duration string) has elapsed since ``status.startTime``, it writes
startTime, completionTime, observedGeneration and ``Succeeded=True/DurationElapsed`` in
ONE merge-patch of the ``/status`` subresource.

Why ``@kopf.on.event`` and not ``@kopf.on.create``/``on.resume``: kopf's change-detecting
handlers persist a diff-base (the ``kopf.zalando.org/last-handled-configuration``
annotation, a PATCH of the main resource, since CustomRuns have a status subresource)
and handler progress (``status.kopf.progress`` and ``kopf.zalando.org/<handler>``
annotations) besides the handler's own status patch: at least 2 writes per run. Raw
event handlers (``on.event``) have neither diff-base nor progress storage, so the only
write is the handler's ``patch``, which kopf sends to ``/status`` because the CRD has
that subresource. The ``when=`` filter skips done runs, so kopf never calls the handler
(nor writes) again for them, even for the MODIFIED event caused by its own patch.

A duration that has not elapsed yet: the first event writes ``Succeeded=Unknown/Running``
with startTime (write 1); the MODIFIED event that write causes finds the run started,
so the handler sleeps the remaining time in that object's worker (kopf handles each
object's events serially; other objects go on) and writes the completion (write 2).
Raw-event handlers cannot be retried or delayed by kopf itself.

Environment (all optional):

``KOPF_WAIT_WORKER_LIMIT``
    ``settings.queueing.worker_limit``: objects processed at once. Unset: kopf's
    default, unlimited. NB: a kopf worker stays bound to its object for
    ``idle_timeout`` seconds after its last event, holding its slot; with a limit,
    lower ``KOPF_WAIT_IDLE_TIMEOUT`` too, or the limit caps throughput at
    limit / idle_timeout runs per second.
``KOPF_WAIT_IDLE_TIMEOUT``
    ``settings.queueing.idle_timeout`` in seconds. Unset: kopf's default (5.0).
``KOPF_WAIT_SERVER_TIMEOUT``
    ``settings.watching.server_timeout`` (seconds a watch request lasts). Default 600.
``KOPF_WAIT_HANDLER``
    ``event`` (default): the tuned ``@kopf.on.event`` handler above, one write per run.
    ``create``: the same logic as kopf's documentation teaches it, ``@kopf.on.create``
    plus ``@kopf.on.resume`` with the default storages (a PATCH of the object for the
    diff-base annotation besides the status patch: 2 writes per run); a wait that has not
    elapsed asks kopf to call again later (``kopf.TemporaryError(delay=...)``).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
from typing import Any

import kopf

WAIT_API_VERSION = "wait.customtask.dev/v1alpha1"
WAIT_KIND = "Wait"
HANDLER = os.environ.get("KOPF_WAIT_HANDLER", "event")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (time.ParseDuration's syntax: "1h2m3.5s", "-1s", "0")."""
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    """metav1.Time's wire format: RFC 3339 in UTC, whole seconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _is_wait(spec: Any) -> bool:
    ref = spec.get("customRef") or spec.get("customSpec") or {}
    return ref.get("apiVersion") == WAIT_API_VERSION and ref.get("kind") == WAIT_KIND


def _succeeded(status: Any) -> dict[str, Any] | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Succeeded":
            return dict(condition)
    return None


def _is_done(status: Any) -> bool:
    condition = _succeeded(status)
    return condition is not None and condition.get("status") in ("True", "False")


def pending_wait(spec: Any, status: Any, type: str | None = None, **_: Any) -> bool:
    """``when=`` filter: an existing Wait run that is not done."""
    return type != "DELETED" and _is_wait(spec) and not _is_done(status)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # No Kubernetes Events (on.event handlers post none anyway; this covers kopf.info()).
    settings.posting.enabled = False
    # Bounded watch requests, renewed by kopf; the client timeout a bit above them.
    # An integer: kopf sends it as the watch request's timeoutSeconds.
    server_timeout = int(os.environ.get("KOPF_WAIT_SERVER_TIMEOUT", "600"))
    settings.watching.server_timeout = server_timeout
    settings.watching.client_timeout = server_timeout + 60
    limit = os.environ.get("KOPF_WAIT_WORKER_LIMIT")
    if limit:
        settings.queueing.worker_limit = int(limit)
    idle = os.environ.get("KOPF_WAIT_IDLE_TIMEOUT")
    if idle:
        settings.queueing.idle_timeout = float(idle)
    # settings.persistence.progress_storage / diffbase_storage stay at their defaults:
    # raw event handlers never use them, so they write nothing (see the module docstring).


def _condition(status: str, reason: str, previous: dict[str, Any] | None, now: str) -> dict:
    transition = now
    if previous is not None and previous.get("status") == status:
        transition = previous.get("lastTransitionTime") or now
    return {
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": transition,
    }


async def wait(spec: Any, status: Any, meta: Any, patch: kopf.Patch, **_: Any) -> None:
    generation = meta.get("generation")
    previous = _succeeded(status)

    def finish(condition_status: str, reason: str, started: str | None) -> None:
        now = _rfc3339(_now())
        if started or status.get("startTime"):
            patch.status["startTime"] = started or status.get("startTime")
        patch.status["completionTime"] = now
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = [_condition(condition_status, reason, previous, now)]

    param = next((p for p in spec.get("params") or () if p.get("name") == "duration"), None)
    value = (param or {}).get("value")
    if not isinstance(value, str) or not value:
        finish("False", "MissingDuration", None)
        return
    try:
        duration = parse_go_duration(value)
    except ValueError:
        finish("False", "InvalidDuration", None)
        return

    now = _now()
    started_text = status.get("startTime")
    started = _parse_time(started_text) if started_text else now
    remaining = duration - (now - started).total_seconds()
    if remaining <= 0:
        finish("True", "DurationElapsed", started_text or _rfc3339(now))
        return
    if not started_text:
        # Mark it Running (one write); the MODIFIED event this causes brings us back here.
        stamp = _rfc3339(now)
        patch.status["startTime"] = stamp
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = [_condition("Unknown", "Running", previous, stamp)]
        if HANDLER == "create":  # no MODIFIED event brings a change handler back
            raise kopf.TemporaryError("waiting", delay=remaining)
        return
    if HANDLER == "create":
        raise kopf.TemporaryError("waiting", delay=remaining)
    # Started earlier: wait out the rest in this object's worker, then complete.
    await asyncio.sleep(remaining)
    finish("True", "DurationElapsed", started_text)


if HANDLER == "create":
    kopf.on.resume("tekton.dev", "v1beta1", "customruns", when=pending_wait)(wait)
    kopf.on.create("tekton.dev", "v1beta1", "customruns", when=pending_wait)(wait)
else:
    kopf.on.event("tekton.dev", "v1beta1", "customruns", when=pending_wait)(wait)
