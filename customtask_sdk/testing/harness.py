"""Unit-test a reconciler without a cluster: step a CustomRun through it with a fake clock.

::

    harness = Harness(Wait())
    run = harness.custom_run({"duration": "90s"})
    first = await run.step()            # Running, requeue in 90 s
    await run.run_until_done()          # advances the clock to each requeue
    assert (run.succeeded, run.reason) == (True, "DurationElapsed")

Each step calls the SDK's own lifecycle (the code a controller runs), writes the status it
returns back into the run as the apiserver would, and records what happened.
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from customtask_sdk.client import JSON
from customtask_sdk.reconciler.base import Reconciler
from customtask_sdk.reconciler.lifecycle import Event, is_done, step, succeeded_condition
from customtask_sdk.reconciler.run import OwnedLookup, format_time
from customtask_sdk.testing.clock import FakeClock

__all__ = ["Harness", "SimulatedRun", "StepRecord"]

_PIPELINE_RUN_LABEL = "tekton.dev/pipelineRun"


@dataclass(frozen=True)
class StepRecord:
    """What one reconcile did.

    Attributes:
        at: the fake time it ran at.
        written: the status written (``None``: nothing changed, no write).
        requeue_after: seconds until the controller would look again, if it would.
        error: the exception a controller would retry with backoff, if any.
        retry_after: the delay that exception asked for (``RetryLater(after=...)``).
        events: Kubernetes Events the controller would record.
    """

    at: datetime.datetime
    written: JSON | None
    requeue_after: float | None
    error: BaseException | None
    retry_after: float | None
    events: list[Event] = field(default_factory=list)


class SimulatedRun:
    """One CustomRun held in memory, stepped through a :class:`Harness`'s reconciler."""

    def __init__(self, harness: Harness, obj: JSON) -> None:
        self.harness = harness
        #: The object as the apiserver would hold it (status written back after each step).
        self.obj = obj
        #: Every step so far, oldest first.
        self.steps: list[StepRecord] = []

    async def step(self) -> StepRecord:
        """Reconcile once at the clock's current time; write any new status back."""
        clock = self.harness.clock
        result = await step(
            self.harness.reconciler, copy.deepcopy(self.obj), clock.now(), self.harness.owned
        )
        if result.status is not None:
            self.obj["status"] = copy.deepcopy(result.status)
            metadata = self.obj["metadata"]
            metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        record = StepRecord(
            clock.now(),
            result.status,
            result.requeue_after,
            result.error,
            result.retry_after,
            list(result.events),
        )
        self.steps.append(record)
        return record

    async def run_until_done(self, max_steps: int = 100, error_delay: float = 1.0) -> StepRecord:
        """Step, advancing the clock to each requeue, until the run is done.

        An error without its own delay is retried after ``error_delay`` seconds (a
        controller backs off exponentially; the outcome is the same).

        Raises:
            AssertionError: the run is not done after ``max_steps`` steps, or nothing would
                wake it (no requeue, no error): it waits for a change from outside.
        """
        for _ in range(max_steps):
            record = await self.step()
            if self.done:
                return record
            delays = [d for d in (record.requeue_after, record.retry_after) if d is not None]
            if record.error is not None and record.retry_after is None:
                delays.append(error_delay)
            if not delays:
                raise AssertionError(
                    f"{self.name} is not done and nothing requeues it "
                    f"(condition: {self.condition}); it waits for a change from outside"
                )
            self.harness.clock.advance(min(delays))
        raise AssertionError(f"{self.name} is not done after {max_steps} steps: {self.condition}")

    def cancel(self, message: str | None = None) -> None:
        """Request cancellation, as Tekton does (``spec.status: RunCancelled``)."""
        self.obj["spec"]["status"] = "RunCancelled"
        if message is not None:
            self.obj["spec"]["statusMessage"] = message

    @property
    def name(self) -> str:
        """``metadata.name``."""
        name: str = self.obj["metadata"]["name"]
        return name

    @property
    def status(self) -> JSON:
        """The status as last written (``{}`` before the first write)."""
        status: JSON = self.obj.get("status") or {}
        return status

    @property
    def condition(self) -> JSON | None:
        """The ``Succeeded`` condition, or ``None``."""
        return succeeded_condition(self.obj)

    @property
    def done(self) -> bool:
        """Whether the run has finished (it is never written again)."""
        return is_done(self.obj)

    @property
    def succeeded(self) -> bool | None:
        """True or False once done, ``None`` while running."""
        cond = self.condition or {}
        return {"True": True, "False": False}.get(cond.get("status", ""))

    @property
    def reason(self) -> str | None:
        """The ``Succeeded`` condition's reason."""
        return (self.condition or {}).get("reason")

    @property
    def message(self) -> str | None:
        """The ``Succeeded`` condition's message."""
        return (self.condition or {}).get("message")

    @property
    def results(self) -> dict[str, str]:
        """The results written, by name."""
        return {r["name"]: r["value"] for r in self.status.get("results") or ()}

    @property
    def writes(self) -> list[JSON]:
        """Every status written, in order (steps that changed nothing wrote nothing)."""
        return [s.written for s in self.steps if s.written is not None]

    @property
    def requeues(self) -> list[float | None]:
        """Each step's ``requeue_after``, in order."""
        return [s.requeue_after for s in self.steps]

    @property
    def events(self) -> list[Event]:
        """Every event the steps produced, in order."""
        return [event for s in self.steps for event in s.events]


class Harness:
    """Runs a reconciler's CustomRuns in memory, on a :class:`FakeClock`.

    Args:
        reconciler: the reconciler under test. Its clock becomes the harness's clock, so
            ``reconciler.clock``, ``Run.now`` and the SDK's timeouts agree.
        clock: the fake clock (default: the reconciler's, if a ``FakeClock``, else a new one).
        owned: how ``Run.owned`` finds owned objects: ``(resource, owner uid) -> objects``.
    """

    def __init__(
        self,
        reconciler: Reconciler[Any],
        clock: FakeClock | None = None,
        owned: OwnedLookup | None = None,
    ) -> None:
        if clock is None:
            clock = reconciler.clock if isinstance(reconciler.clock, FakeClock) else FakeClock()
        self.reconciler = reconciler
        self.clock = clock
        self.owned = owned
        reconciler.clock = clock

    def custom_run(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        namespace: str = "default",
        timeout: str | None = None,
        retries: int | None = None,
        cancelled: bool = False,
        pipeline_run: str | None = None,
        embedded_spec: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        **spec: Any,
    ) -> SimulatedRun:
        """A new CustomRun for the reconciler, as Tekton would create it.

        Args:
            params: ``spec.params`` (name to value).
            timeout: ``spec.timeout`` as a Go duration (``"10m"``; ``"0"``: none); unset:
                Tekton's 60-minute default.
            retries: ``spec.retries``.
            cancelled: created already cancelled (``spec.status: RunCancelled``).
            pipeline_run: the owning PipelineRun's name (its ``tekton.dev/pipelineRun``
                label); unset: a standalone run.
            embedded_spec: a ``customSpec.spec`` instead of a ``customRef``.
            spec: any other ``spec`` field.
        """
        reconciler = self.reconciler
        ref = {"apiVersion": reconciler.api_version, "kind": reconciler.kind}
        body: JSON = dict(spec)
        if embedded_spec is not None:
            body["customSpec"] = {**ref, "spec": dict(embedded_spec)}
        else:
            body["customRef"] = ref
        if params:
            body["params"] = [{"name": k, "value": v} for k, v in params.items()]
        if timeout is not None:
            body["timeout"] = timeout
        if retries is not None:
            body["retries"] = retries
        if cancelled:
            body["status"] = "RunCancelled"
        all_labels = dict(labels or {})
        if pipeline_run is not None:
            all_labels[_PIPELINE_RUN_LABEL] = pipeline_run
        metadata: JSON = {
            "name": name or f"{reconciler.kind.lower()}-{uuid.uuid4().hex[:8]}",
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": format_time(self.clock.now()),
            "labels": all_labels,
        }
        obj = {"apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun", "metadata": metadata}
        return SimulatedRun(self, {**obj, "spec": body})
