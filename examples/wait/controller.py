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
from typing import Any

from pydantic import AwareDatetime, ModelWrapValidatorHandler, PrivateAttr, model_validator

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
from customtask_sdk.reconciler import format_go_duration

_HOW = (
    "give exactly one of `duration` (a Go duration such as 90s, 1h30m or 500ms) "
    "or `until` (an RFC 3339 time such as 2026-01-01T12:00:00Z)"
)


class WaitParams(Params):
    """What to wait for: a ``duration`` from the start of the attempt, or an ``until`` time."""

    duration: GoDuration | None = None
    until: AwareDatetime | None = None
    _duration_text: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_duration_text(
        cls, data: Any, handler: ModelWrapValidatorHandler[WaitParams]
    ) -> WaitParams:
        params = handler(data)
        if isinstance(data, dict) and isinstance(data.get("duration"), str):
            params._duration_text = data["duration"].strip()
        return params

    def describe(self) -> str:
        """What the run waits for, as the user wrote it: ``2h``, ``until 2026-...``."""
        if self.until is not None:
            return f"until {self.until.isoformat()}"
        assert self.duration is not None
        return self._duration_text or format_go_duration(self.duration)

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
        else:
            assert params.until is not None
            end = params.until
        what = params.describe()
        wait = end - run.started_at
        if run.obj["spec"].get("timeout") is None and wait > DEFAULT_TIMEOUT:
            enough = f"{wait // datetime.timedelta(hours=1) + 1}h"
            where = (
                "set `timeout` on the pipeline task"
                if run.pipeline_run is not None
                else "set `spec.timeout` on the CustomRun"
            )
            raise RunFailed(
                "WaitExceedsDefaultTimeout",
                f"waiting {what} is longer than Tekton's default 60-minute timeout, so the run "
                f"would time out first; {where} (e.g. timeout: {enough}), or 0 for no timeout",
                retry=False,  # no retry can fix the task's input
            )
        remaining = end - run.now
        if remaining > datetime.timedelta(0):
            return Running(requeue_after=remaining, message=f"waiting {what}")
        return Succeeded(reason="DurationElapsed", message=f"waited {what}")
