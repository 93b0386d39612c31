"""The Wait reference controller's logic, with a fake clock."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from customtask_sdk.reconciler.lifecycle import step, succeeded_condition
from customtask_sdk.testing.clock import FakeClock
from customtask_sdk.testing.harness import Harness
from examples.wait.controller import Wait


def wait_run(params: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "w", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "customRef": {"apiVersion": Wait.api_version, "kind": "Wait"},
            "params": [{"name": k, "value": v} for k, v in (params or {}).items()],
            **spec,
        },
    }


async def test_waits_the_duration_from_start_with_a_single_requeue() -> None:
    clock = FakeClock()
    wait = Wait(clock)
    obj = wait_run({"duration": "1m30s"})
    first = await step(wait, obj, clock.now())
    assert first.requeue_after == 90.0
    assert first.status is not None
    obj["status"] = first.status
    clock.advance(60)  # e.g. a restart: the remaining time comes from startTime
    again = await step(wait, obj, clock.now())
    assert again.status is None
    assert again.requeue_after == 30.0
    clock.advance(30)
    done = await step(wait, obj, clock.now())
    cond = succeeded_condition({"status": done.status})
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("True", "DurationElapsed")


async def test_until_a_time() -> None:
    clock = FakeClock()
    until = clock.now() + datetime.timedelta(seconds=20)
    result = await step(Wait(clock), wait_run({"until": until.isoformat()}), clock.now())
    assert result.requeue_after == 20.0


@pytest.mark.parametrize(
    ("params", "spec", "reason", "fragment"),
    [
        ({}, {}, "InvalidParams", "neither was given"),
        (
            {"duration": "1s", "until": "2026-01-01T00:00:00Z"},
            {},
            "InvalidParams",
            "both were given",
        ),
        ({"duration": "ninety"}, {}, "InvalidParams", "such as 90s, 1h30m"),
        ({"duration": "-5s"}, {}, "InvalidParams", "must not be negative"),
        ({"duration": ["1s"]}, {}, "InvalidParams", "got a list"),
        ({"until": "tomorrow"}, {}, "InvalidParams", "'until'"),
        ({"duration": "1s", "extra": "x"}, {}, "InvalidParams", "'extra' is not accepted"),
    ],
)
async def test_bad_input_fails_with_a_reason_and_what_to_write(
    params: dict[str, Any], spec: dict[str, Any], reason: str, fragment: str
) -> None:
    clock = FakeClock()
    result = await step(Wait(clock), wait_run(params, **spec), clock.now())
    cond = succeeded_condition({"status": result.status})
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert fragment in cond["message"]


async def test_a_long_wait_with_an_explicit_timeout_is_fine() -> None:
    clock = FakeClock()
    result = await step(Wait(clock), wait_run({"duration": "2h"}, timeout="3h"), clock.now())
    assert result.requeue_after == 7200.0


async def test_embedded_spec_input() -> None:
    clock = FakeClock()
    obj = wait_run()
    obj["spec"] = {
        "customSpec": {
            "apiVersion": Wait.api_version,
            "kind": "Wait",
            "spec": {"duration": "500ms"},
        }
    }
    result = await step(Wait(clock), obj, clock.now())
    assert result.requeue_after == 0.5


@pytest.mark.parametrize(
    ("written", "message"),
    [("2h", "waiting 2h"), ("1m30s", "waiting 1m30s"), (" 90s", "waiting 90s")],
)
async def test_messages_echo_the_duration_as_written(written: str, message: str) -> None:
    run = Harness(Wait()).custom_run({"duration": written}, timeout="3h")
    await run.step()
    assert run.message == message
    await run.run_until_done()
    assert (run.reason, run.message) == ("DurationElapsed", message.replace("waiting", "waited"))


async def test_a_standalone_run_too_long_for_the_default_timeout_is_told_to_set_spec_timeout() -> (
    None
):
    run = Harness(Wait()).custom_run({"duration": "2h"})
    await run.step()
    assert (run.succeeded, run.reason) == (False, "WaitExceedsDefaultTimeout")
    assert run.message == (
        "waiting 2h is longer than Tekton's default 60-minute timeout, so the run would time "
        "out first; set `spec.timeout` on the CustomRun (e.g. timeout: 3h), or 0 for no timeout"
    )


async def test_a_pipeline_task_too_long_for_the_default_timeout_is_told_to_set_its_timeout() -> (
    None
):
    run = Harness(Wait()).custom_run({"duration": "90m"}, pipeline_run="release")
    await run.step()
    assert run.reason == "WaitExceedsDefaultTimeout"
    assert run.message is not None
    assert "waiting 90m is longer" in run.message
    assert "set `timeout` on the pipeline task (e.g. timeout: 2h)" in run.message
