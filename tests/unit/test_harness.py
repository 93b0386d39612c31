"""The offline harness: runs built from keywords, stepped on a fake clock, with history."""

from __future__ import annotations

import datetime
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from customtask_sdk import CANCELLED, TIMED_OUT, Outcome, Reconciler, RetryLater, Run
from customtask_sdk.reconciler import Failed, NoParams, Running, Succeeded
from customtask_sdk.testing import FakeClock, Harness
from examples.wait.controller import Wait

DOCS = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def _docs_tests() -> dict[str, Callable[[], Awaitable[None]]]:
    """The test functions of the harness example in docs/testing.md."""
    (block,) = [
        b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S) if "Harness(" in b
    ]
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOCS), "exec"), namespace)
    return {k: v for k, v in namespace.items() if k.startswith("test_")}


@pytest.mark.parametrize("name", sorted(_docs_tests()))
async def test_the_documented_example_passes(name: str) -> None:
    await _docs_tests()[name]()


class Scripted(Reconciler[NoParams]):
    """Returns (or raises) the next scripted outcome on each reconcile."""

    api_version = "test.customtask.dev/v1"
    kind = "Scripted"

    def __init__(self, *script: Outcome | Exception) -> None:
        super().__init__()
        self.script = list(script)
        self.seen: list[Run[NoParams]] = []

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        self.seen.append(run)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def test_a_run_is_built_as_tekton_would_create_it() -> None:
    harness = Harness(Scripted())
    run = harness.custom_run(
        {"a": "1"}, name="r", namespace="ns", timeout="5m", retries=2, pipeline_run="p"
    )
    assert run.obj["metadata"]["name"] == "r"
    assert run.obj["metadata"]["namespace"] == "ns"
    assert run.obj["metadata"]["labels"] == {"tekton.dev/pipelineRun": "p"}
    assert run.obj["spec"] == {
        "customRef": {"apiVersion": Scripted.api_version, "kind": "Scripted"},
        "params": [{"name": "a", "value": "1"}],
        "timeout": "5m",
        "retries": 2,
    }
    embedded = harness.custom_run(embedded_spec={"x": 1}, cancelled=True)
    assert embedded.obj["spec"]["customSpec"]["spec"] == {"x": 1}
    assert embedded.obj["spec"]["status"] == "RunCancelled"


async def test_each_written_status_is_fed_back_and_recorded() -> None:
    reconciler = Scripted(
        Running(message="a", requeue_after=datetime.timedelta(seconds=5)),
        Running(message="a", requeue_after=datetime.timedelta(seconds=5)),
        Succeeded(results={"out": "v"}),
    )
    harness = Harness(reconciler)
    run = harness.custom_run()
    first = await run.step()
    assert first.written is not None
    assert run.status["startTime"] == first.written["startTime"]
    harness.clock.advance(5)
    second = await run.step()
    assert second.written is None  # unchanged: no write
    assert reconciler.seen[1].started_at == harness.clock.now() - datetime.timedelta(seconds=5)
    harness.clock.advance(5)
    await run.step()
    assert (run.done, run.succeeded, run.results) == (True, True, {"out": "v"})
    assert run.requeues == [5.0, 5.0, None]
    assert len(run.writes) == 2
    assert [e.reason for e in run.events] == ["Started", "Succeeded"]
    assert (await run.step()).written is None  # a finished run is never written again


async def test_the_timeout_follows_the_fake_clock_and_retries_archive_attempts() -> None:
    harness = Harness(Wait())
    started = harness.clock.now()
    run = harness.custom_run({"duration": "1h"}, timeout="10m", retries=1)
    await run.run_until_done()
    assert (run.succeeded, run.reason) == (False, TIMED_OUT)
    assert len(run.status["retriesStatus"]) == 1
    assert harness.clock.now() - started == datetime.timedelta(minutes=20)  # two attempts
    assert [e.reason for e in run.events] == ["Started", "Retrying", TIMED_OUT]


async def test_errors_are_recorded_and_retried_after_their_delay() -> None:
    clock = FakeClock()
    started = clock.now()
    reconciler = Scripted(
        RetryLater("not yet", after=datetime.timedelta(seconds=30)),
        RuntimeError("a bug"),
        Failed("Broken", "it broke", retry=False),
    )
    run = Harness(reconciler, clock).custom_run(timeout="1h")
    await run.run_until_done(error_delay=2)
    errors = [(type(s.error).__name__, s.retry_after) for s in run.steps]
    assert errors == [("RetryLater", 30.0), ("RuntimeError", None), ("NoneType", None)]
    assert clock.now() - started == datetime.timedelta(seconds=32)
    assert (run.succeeded, run.reason, run.message) == (False, "Broken", "it broke")


async def test_cancelling_a_waiting_run() -> None:
    run = Harness(Wait()).custom_run({"duration": "1m"}, cancelled=True)
    await run.step()
    assert (run.succeeded, run.reason) == (False, CANCELLED)


class Steps(Reconciler[NoParams]):
    """Keeps per-step states in ``extraFields``; cancel and timeout mark the open ones."""

    api_version = "test.customtask.dev/v1"
    kind = "Steps"

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        fields = {"steps": {"a": "done", "b": "running"}}
        return Running(message="b", extra_fields=fields, requeue_after=datetime.timedelta(1))

    @staticmethod
    def _ended(run: Run[NoParams], state: str) -> dict[str, Any]:
        steps = dict(run.extra_fields["steps"])
        return {"steps": {k: state if v == "running" else v for k, v in steps.items()}}

    async def on_cancel(self, run: Run[NoParams]) -> dict[str, Any]:
        return self._ended(run, "cancelled")

    async def on_timeout(self, run: Run[NoParams]) -> dict[str, Any]:
        return self._ended(run, "timedOut")


async def test_cancel_and_timeout_hooks_can_write_the_final_extra_fields() -> None:
    harness = Harness(Steps())
    cancelled = harness.custom_run(timeout="1h")
    await cancelled.step()
    cancelled.cancel()
    await cancelled.step()
    assert (cancelled.succeeded, cancelled.reason) == (False, CANCELLED)
    assert cancelled.status["extraFields"] == {"steps": {"a": "done", "b": "cancelled"}}

    timed_out = harness.custom_run(timeout="10m", retries=1)
    await timed_out.run_until_done()
    assert (timed_out.succeeded, timed_out.reason) == (False, TIMED_OUT)
    final = {"steps": {"a": "done", "b": "timedOut"}}
    assert timed_out.status["extraFields"] == final
    assert timed_out.status["retriesStatus"][0]["extraFields"] == final  # the first attempt's


async def test_hooks_returning_nothing_keep_the_stored_extra_fields() -> None:
    class Quiet(Steps):
        async def on_cancel(self, run: Run[NoParams]) -> None:
            return None

    run = Harness(Quiet()).custom_run(timeout="1h")
    await run.step()
    run.cancel()
    await run.step()
    assert (run.succeeded, run.reason) == (False, CANCELLED)
    assert run.status["extraFields"] == {"steps": {"a": "done", "b": "running"}}


async def test_a_run_nothing_would_wake_is_reported() -> None:
    run = Harness(Scripted(Running(message="forever"))).custom_run(timeout="0")
    with pytest.raises(AssertionError, match="nothing requeues it"):
        await run.run_until_done()


async def test_a_run_that_never_finishes_is_reported_after_max_steps() -> None:
    looping = Scripted(*[Running(requeue_after=datetime.timedelta(seconds=1))] * 3)
    run = Harness(looping).custom_run(timeout="0")
    with pytest.raises(AssertionError, match="not done after 3 steps"):
        await run.run_until_done(max_steps=3)


def test_the_reconciler_reads_the_harness_clock() -> None:
    clock = FakeClock()
    wait = Wait()
    harness = Harness(wait, clock)
    assert wait.clock is clock
    assert Harness(Wait(clock)).clock is clock
    assert harness.clock is clock
