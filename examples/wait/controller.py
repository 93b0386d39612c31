"""Wait: pause a pipeline for a duration, or until a time, without holding a pod.

    customtask-sdk run examples.wait.controller:Wait

Serves ``wait.customtask.dev/v1alpha1`` ``Wait`` (set ``WAIT_API_VERSION`` to serve
another group, e.g. Tekton's test kind ``wait.testing.tekton.dev/v1beta1``). Input, as
params or as an embedded ``spec``: ``duration`` (``90s``, ``1h30m``, ``500ms``) or
``until`` (an RFC 3339 time), exactly one.
"""

from __future__ import annotations

import datetime
import os

from pydantic import AwareDatetime, model_validator

from customtask_sdk import (
    DEFAULT_TIMEOUT,
    GoDuration,
    Outcome,
    Params,
    Reconciler,
    Run,
    RunFailed,
    Running,
    Succeeded,
)

_HOW = (
    "give exactly one of `duration` (a Go duration such as 90s, 1h30m or 500ms) "
    "or `until` (an RFC 3339 time such as 2026-01-01T12:00:00Z)"
)


class WaitParams(Params):
    """What to wait for: a ``duration`` from the start of the attempt, or an ``until`` time."""

    duration: GoDuration | None = None
    until: AwareDatetime | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitParams:
        if (self.duration is None) == (self.until is None):
            given = "both were given" if self.duration is not None else "neither was given"
            raise ValueError(f"{_HOW}; {given}")
        if self.duration is not None and self.duration < datetime.timedelta(0):
            raise ValueError("`duration` must not be negative; write e.g. 30s")
        return self


class Wait(Reconciler[WaitParams]):
    """Succeeds (``DurationElapsed``) once the wait is over; one requeue, no polling."""

    api_version = os.environ.get("WAIT_API_VERSION", "wait.customtask.dev/v1alpha1")
    kind = "Wait"

    async def reconcile(self, run: Run[WaitParams]) -> Outcome:
        params = run.params
        if params.duration is not None:
            end = run.started_at + params.duration
            what = f"{params.duration.total_seconds():g}s"
        else:
            assert params.until is not None
            end = params.until
            what = f"until {end.isoformat()}"
        if run.obj["spec"].get("timeout") is None and end - run.started_at > DEFAULT_TIMEOUT:
            raise RunFailed(
                "WaitExceedsDefaultTimeout",
                f"waiting {what} is longer than Tekton's default 60-minute timeout, so the run "
                "would time out first; set `timeout` on the pipeline task (e.g. timeout: 2h), "
                "or 0 for no timeout",
                retry=False,  # no retry can fix the task's input
            )
        remaining = end - run.now
        if remaining > datetime.timedelta(0):
            return Running(requeue_after=remaining, message=f"waiting {what}")
        return Succeeded(reason="DurationElapsed", message=f"waited {what}")
