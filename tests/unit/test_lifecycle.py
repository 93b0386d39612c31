"""The CustomRun contract, step by step, with a fake clock (no I/O)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from pydantic import field_validator

from customtask_sdk.client import ClientConfig, KubeClient
from customtask_sdk.reconciler import (
    CANCELLED,
    TIMED_OUT,
    Failed,
    GoDuration,
    Outcome,
    Params,
    RetryLater,
    Run,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.reconciler.base import Reconciler
from customtask_sdk.reconciler.lifecycle import (
    HookTimeout,
    finalize_run,
    is_done,
    matches,
    step,
    succeeded_condition,
)
from customtask_sdk.reconciler.run import format_time
from customtask_sdk.testing.clock import FakeClock

API = "example.dev/v1"


class TaskParams(Params):
    duration: GoDuration
    label: str = "x"

    @field_validator("label")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("must not contain spaces")
        return value


class Scripted(Reconciler[TaskParams]):
    """Returns whatever the test scripts, recording every call."""

    api_version = API
    kind = "Task"

    def __init__(self, clock: FakeClock, outcome: Outcome | Exception | None = None) -> None:
        super().__init__(clock)
        self.outcome: Outcome | Exception = outcome or Running()
        self.calls: list[str] = []

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        self.calls.append(f"reconcile:{run.attempt}")
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    async def on_cancel(self, run: Run[TaskParams]) -> None:
        self.calls.append("cancel")

    async def on_timeout(self, run: Run[TaskParams]) -> None:
        self.calls.append("timeout")


def custom_run(
    params: dict[str, Any] | None = None, *, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    values = {"duration": "5s"} if params is None else params
    body: dict[str, Any] = {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": "run", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {
            "customRef": {"apiVersion": API, "kind": "Task"},
            "params": [{"name": k, "value": v} for k, v in values.items()],
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def with_status(obj: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    assert status is not None
    return {**obj, "status": status}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def cond(status: dict[str, Any] | None) -> dict[str, Any]:
    found = succeeded_condition({"status": status or {}})
    assert found is not None
    return found


async def test_first_sight_starts_the_run_and_asks_to_come_back(clock: FakeClock) -> None:
    rec = Scripted(clock, Running(requeue_after=datetime.timedelta(seconds=5), message="waiting"))
    result = await step(rec, custom_run(), clock.now())
    assert result.status is not None
    assert result.status["startTime"] == format_time(clock.now())
    assert cond(result.status) | {"lastTransitionTime": None} == {
        "type": "Succeeded",
        "status": "Unknown",
        "reason": "Running",
        "message": "waiting",
        "lastTransitionTime": None,
    }
    assert result.status["observedGeneration"] == 1
    assert result.requeue_after == 5.0
    assert result.error is None
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "Started")]


async def test_an_instant_success_is_one_write_with_results(clock: FakeClock) -> None:
    rec = Scripted(clock, Succeeded(results={"out": "v", "list": ["a", "b"]}, message="done"))
    result = await step(rec, custom_run(), clock.now())
    status = result.status
    assert status is not None
    assert cond(status)["status"] == "True"
    assert cond(status)["reason"] == "Succeeded"
    assert status["startTime"] == status["completionTime"]
    assert status["results"] == [
        {"name": "out", "value": "v"},
        {"name": "list", "value": '["a","b"]'},
    ]
    assert [e.reason for e in result.events] == ["Succeeded"]


async def test_unchanged_running_status_writes_nothing_and_keeps_transition_time(
    clock: FakeClock,
) -> None:
    rec = Scripted(clock, Running(message="waiting"))
    first = await step(rec, custom_run(), clock.now())
    clock.advance(3)
    again = await step(rec, with_status(custom_run(), first.status), clock.now())
    assert again.status is None
    rec.outcome = Running(message="almost")
    changed = await step(rec, with_status(custom_run(), first.status), clock.now())
    assert changed.status is not None
    assert cond(changed.status)["lastTransitionTime"] == format_time(clock.now())
    assert changed.status["startTime"] == first.status["startTime"]  # type: ignore[index]


async def test_the_timeout_wakes_a_run_that_asked_for_nothing(clock: FakeClock) -> None:
    rec = Scripted(clock, Running())
    result = await step(rec, custom_run(timeout="10s"), clock.now())
    assert result.requeue_after == 10.0
    default = await step(rec, custom_run(), clock.now())
    assert default.requeue_after == 3600.0
    none = await step(rec, custom_run(timeout="0s"), clock.now())
    assert none.requeue_after is None


async def test_timeout_fails_the_attempt_after_the_hook(clock: FakeClock) -> None:
    rec = Scripted(clock, Running())
    obj = custom_run(timeout="10s")
    started = await step(rec, obj, clock.now())
    clock.advance(10)
    result = await step(rec, with_status(obj, started.status), clock.now())
    assert rec.calls == ["reconcile:0", "timeout"]
    assert cond(result.status)["status"] == "False"
    assert cond(result.status)["reason"] == TIMED_OUT
    assert cond(result.status)["message"] == "CustomRun 'run' failed to finish within '10s'"
    assert result.status["completionTime"] == format_time(clock.now())  # type: ignore[index]


async def test_timeout_with_retries_archives_the_attempt_and_restarts(clock: FakeClock) -> None:
    rec = Scripted(clock, Running())
    obj = custom_run(timeout="10s", retries=1)
    first = await step(rec, obj, clock.now())
    clock.advance(11)
    retry = await step(rec, with_status(obj, first.status), clock.now())
    status = retry.status
    assert status is not None
    assert cond(status)["status"] == "Unknown"
    assert cond(status)["reason"] == "Retrying"
    assert status["startTime"] == format_time(clock.now())
    assert "completionTime" not in status
    (archived,) = status["retriesStatus"]
    assert cond(archived)["reason"] == TIMED_OUT
    assert archived["startTime"] == first.status["startTime"]  # type: ignore[index]
    assert "retriesStatus" not in archived
    assert retry.requeue_after == 0.0

    clock.advance(11)
    exhausted = await step(rec, with_status(obj, status), clock.now())
    assert cond(exhausted.status)["status"] == "False"
    assert cond(exhausted.status)["reason"] == TIMED_OUT
    assert len(exhausted.status["retriesStatus"]) == 1  # type: ignore[index]


async def test_failure_retries_then_success(clock: FakeClock) -> None:
    rec = Scripted(clock, Failed("Flaky", "try again"))
    obj = custom_run(retries=2)
    status = (await step(rec, obj, clock.now())).status
    assert cond(status)["reason"] == "Retrying"
    rec.outcome = Succeeded()
    done = await step(rec, with_status(obj, status), clock.now())
    assert cond(done.status)["status"] == "True"
    assert rec.calls == ["reconcile:0", "reconcile:1"]
    assert len(done.status["retriesStatus"]) == 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("failure", "state"),
    [
        (RunFailed("Flaky", "try again"), ("Unknown", "Retrying")),
        (Failed("Flaky", "try again"), ("Unknown", "Retrying")),
        (RunFailed("Flaky", "try again", retry=False), ("False", "Flaky")),
        (Failed("Flaky", "try again", retry=False), ("False", "Flaky")),
    ],
)
async def test_raised_and_returned_failures_are_retried_alike_unless_told_not_to(
    clock: FakeClock, failure: Outcome | Exception, state: tuple[str, str]
) -> None:
    rec = Scripted(clock, failure)
    result = await step(rec, custom_run(retries=3), clock.now())
    assert (cond(result.status)["status"], cond(result.status)["reason"]) == state
    assert "try again" in cond(result.status)["message"]


@pytest.mark.parametrize("when", ["before-start", "running"])
async def test_cancellation_calls_the_hook_and_uses_tektons_message(
    clock: FakeClock, when: str
) -> None:
    rec = Scripted(clock, Running())
    obj = custom_run()
    if when == "running":
        obj = with_status(obj, (await step(rec, obj, clock.now())).status)
        rec.calls.clear()
    message = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
    obj["spec"] |= {"status": "RunCancelled", "statusMessage": message}
    obj["metadata"]["generation"] = 2
    result = await step(rec, obj, clock.now())
    assert cond(result.status) | {"lastTransitionTime": None} == {
        "type": "Succeeded",
        "status": "False",
        "reason": CANCELLED,
        "message": message,
        "lastTransitionTime": None,
    }
    assert result.status["observedGeneration"] == 2  # type: ignore[index]
    assert result.status["completionTime"] == format_time(clock.now())  # type: ignore[index]
    assert rec.calls == ([] if when == "before-start" else ["cancel"])


async def test_a_finished_run_is_never_written_again(clock: FakeClock) -> None:
    rec = Scripted(clock, Succeeded())
    obj = custom_run()
    done = with_status(obj, (await step(rec, obj, clock.now())).status)
    assert is_done(done)
    done["spec"] |= {"status": "RunCancelled", "statusMessage": "late cancel"}
    done["metadata"]["generation"] = 2
    rec.calls.clear()
    result = await step(rec, done, clock.now())
    assert result.status is None
    assert rec.calls == []


@pytest.mark.parametrize(
    ("params", "spec", "reason", "fragment"),
    [
        ({}, {}, "InvalidParams", "param 'duration' is required"),
        ({"duration": "soon"}, {}, "InvalidParams", "invalid duration 'soon'"),
        ({"duration": "5"}, {}, "InvalidParams", "a unit is required"),
        ({"duration": ["5s"]}, {}, "InvalidParams", "got a list"),
        (
            {"duration": "5s", "colour": "red"},
            {},
            "InvalidParams",
            "param 'colour' is not accepted",
        ),
        ({"duration": "5s", "label": "a b"}, {}, "InvalidParams", "must not contain spaces"),
        ({"duration": "5s"}, {"timeout": "ten minutes"}, "InvalidTimeout", "spec.timeout"),
        ({"duration": "5s"}, {"timeout": "-1s"}, "InvalidTimeout", "negative"),
    ],
)
async def test_bad_input_fails_the_run_with_an_actionable_message(
    clock: FakeClock, params: dict[str, Any], spec: dict[str, Any], reason: str, fragment: str
) -> None:
    rec = Scripted(clock, Succeeded())
    result = await step(rec, custom_run(params, retries=2, **spec), clock.now())
    assert cond(result.status)["status"] == "False"
    assert cond(result.status)["reason"] == reason
    assert fragment in cond(result.status)["message"]
    assert rec.calls == []


async def test_a_named_custom_ref_is_refused_unless_accepted(clock: FakeClock) -> None:
    rec = Scripted(clock, Succeeded())
    obj = custom_run()
    obj["spec"]["customRef"]["name"] = "my-task"
    result = await step(rec, obj, clock.now())
    assert cond(result.status)["reason"] == "InvalidCustomRef"
    assert "remove customRef.name" in cond(result.status)["message"]


async def test_embedded_spec_is_validated_like_params(clock: FakeClock) -> None:
    rec = Scripted(clock, Succeeded())
    obj = custom_run({})
    obj["spec"] = {"customSpec": {"apiVersion": API, "kind": "Task", "spec": {"duration": "1s"}}}
    assert matches(obj, API, "Task")
    assert cond((await step(rec, obj, clock.now())).status)["status"] == "True"
    obj["spec"]["params"] = [{"name": "duration", "value": "2s"}]
    clash = await step(rec, obj, clock.now())
    assert "both in params and in customSpec.spec" in cond(clash.status)["message"]


@pytest.mark.parametrize(
    ("results", "reason"),
    [
        ({"big": "x" * 2_000_000}, "ResultsTooLarge"),
        ({"bad name": "v"}, "InvalidResults"),
        ({"n": 5}, "InvalidResults"),
    ],
)
async def test_bad_results_fail_the_run_instead_of_the_write(
    clock: FakeClock, results: dict[str, Any], reason: str
) -> None:
    rec = Scripted(clock, Succeeded(results=results))
    result = await step(rec, custom_run(retries=1), clock.now())
    assert cond(result.status)["status"] == "False"
    assert cond(result.status)["reason"] == reason
    assert "results" not in result.status  # type: ignore[operator]


async def test_a_success_without_results_writes_no_results_list(clock: FakeClock) -> None:
    rec = Scripted(clock, Succeeded())
    result = await step(rec, custom_run(), clock.now())
    assert cond(result.status)["status"] == "True"
    assert "results" not in result.status  # type: ignore[operator]


async def test_extra_fields_are_kept_as_they_will_be_stored(clock: FakeClock) -> None:
    fields = {"phase": "a", "gone": None, "pods": ("p1", "p2"), "deep": {"x": None, "y": 1}}
    rec = Scripted(clock, Running(extra_fields=fields))
    result = await step(rec, custom_run(), clock.now())
    stored = {"phase": "a", "pods": ["p1", "p2"], "deep": {"y": 1}}
    assert result.status["extraFields"] == stored  # type: ignore[index]
    again = await step(rec, with_status(custom_run(), result.status), clock.now())
    assert again.status is None  # equal to what is stored: no write


async def test_transient_errors_keep_the_start_and_ask_for_backoff(clock: FakeClock) -> None:
    rec = Scripted(clock, ConnectionError("backend down"))
    result = await step(rec, custom_run(), clock.now())
    assert isinstance(result.error, ConnectionError)
    assert cond(result.status)["status"] == "Unknown"  # the start is still recorded
    rec.outcome = RetryLater("not yet", after=datetime.timedelta(seconds=7))
    later = await step(rec, with_status(custom_run(), result.status), clock.now())
    assert later.status is None
    assert later.retry_after == 7.0


def test_matching_is_exact() -> None:
    obj = custom_run()
    assert matches(obj, API, "Task")
    assert not matches(obj, API, "task")
    assert not matches(obj, "example.dev/v2", "Task")


def test_the_client_is_the_attached_one_and_its_absence_is_explained(clock: FakeClock) -> None:
    reconciler = Scripted(clock)
    with pytest.raises(RuntimeError, match=r"Scripted.client is set when a Controller runs"):
        _ = reconciler.client
    client = KubeClient(ClientConfig(host="https://127.0.0.1:1"))
    reconciler.attach(client)
    assert reconciler.client is client


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (ConnectionError("backend down"), None),
        (RetryLater("not yet", after=datetime.timedelta(hours=2)), 7200.0),
    ],
)
async def test_an_error_comes_back_by_the_deadline_whatever_the_backoff(
    clock: FakeClock, error: Exception, retry_after: float | None
) -> None:
    rec = Scripted(clock, Running())
    obj = custom_run(timeout="1h")
    started = await step(rec, obj, clock.now())
    clock.advance(600)
    rec.outcome = error
    result = await step(rec, with_status(obj, started.status), clock.now())
    assert result.error is error
    assert result.retry_after == retry_after
    assert result.requeue_after == 3000.0  # the deadline, 50 minutes on


async def test_a_failing_timeout_hook_is_paced_by_backoff_alone(clock: FakeClock) -> None:
    rec = Scripted(clock, Running())
    obj = custom_run(timeout="10s")
    started = await step(rec, obj, clock.now())
    clock.advance(11)

    async def broken(run: Run[TaskParams]) -> None:
        raise ConnectionError("cleanup backend down")

    rec.on_timeout = broken  # type: ignore[method-assign]
    result = await step(rec, with_status(obj, started.status), clock.now())
    assert isinstance(result.error, ConnectionError)
    assert result.requeue_after is None  # the deadline has passed: no immediate requeue loop


class Hanging(Scripted):
    """Each hook named in ``hangs`` waits forever (until cancelled)."""

    reconcile_timeout = datetime.timedelta(milliseconds=20)

    def __init__(self, clock: FakeClock, hangs: str) -> None:
        super().__init__(clock, Running())
        self.hangs = hangs
        self.cancelled: list[str] = []

    async def _maybe_hang(self, hook: str) -> None:
        if hook == self.hangs:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(hook)
                raise

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        await self._maybe_hang("reconcile")
        return await super().reconcile(run)

    async def on_cancel(self, run: Run[TaskParams]) -> None:
        await self._maybe_hang("on_cancel")

    async def on_timeout(self, run: Run[TaskParams]) -> None:
        await self._maybe_hang("on_timeout")

    async def finalize(self, run: Run[TaskParams]) -> None:
        await self._maybe_hang("finalize")


@pytest.mark.parametrize("hook", ["reconcile", "on_cancel", "on_timeout"])
async def test_a_hung_hook_is_cancelled_at_its_time_limit_and_counts_as_an_error(
    clock: FakeClock, hook: str
) -> None:
    rec = Hanging(clock, hook)
    obj = custom_run(timeout="10s")
    obj = with_status(obj, (await step(Scripted(clock), obj, clock.now())).status)
    if hook == "on_cancel":
        obj["spec"]["status"] = "RunCancelled"
    if hook == "on_timeout":
        clock.advance(10)
    result = await asyncio.wait_for(step(rec, obj, clock.now()), 5)  # guard: hangs before
    assert isinstance(result.error, HookTimeout)
    assert f"Hanging.{hook} did not return within 20ms" in str(result.error)
    assert rec.cancelled == [hook]
    assert result.status is None  # nothing new: the run is reconciled again


async def test_a_hooks_own_timeout_error_is_not_taken_for_the_time_limit(
    clock: FakeClock,
) -> None:
    own = TimeoutError("the backend timed out")
    result = await step(Scripted(clock, own), custom_run(), clock.now())
    assert result.error is own


async def test_finalize_gets_the_run_or_is_skipped_for_unusable_input(clock: FakeClock) -> None:
    seen: list[Run[TaskParams]] = []

    class Cleaning(Scripted):
        async def finalize(self, run: Run[TaskParams]) -> None:
            seen.append(run)

    rec = Cleaning(clock, Succeeded())
    obj = custom_run({"duration": "5s"})
    done = with_status(obj, (await step(rec, obj, clock.now())).status)
    clock.advance(3)
    assert await finalize_run(rec, done, clock.now())
    (run,) = seen
    assert run.params.duration == datetime.timedelta(seconds=5)
    assert run.elapsed == datetime.timedelta(seconds=3)
    never_started = custom_run({"duration": "5s"})
    assert await finalize_run(rec, never_started, clock.now())
    assert seen[-1].started_at == clock.now()
    assert not await finalize_run(rec, custom_run({"duration": "soon"}), clock.now())
    assert len(seen) == 2


def test_a_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"Never\.reconcile_timeout must be positive"):

        class Never(Scripted):
            reconcile_timeout = datetime.timedelta(0)


async def test_finalize_has_the_time_limit_too(clock: FakeClock) -> None:
    rec = Hanging(clock, "finalize")
    with pytest.raises(HookTimeout):
        await asyncio.wait_for(finalize_run(rec, custom_run(), clock.now()), 5)
    assert rec.cancelled == ["finalize"]
