"""EventRecorder: events are posted in the background; failures are dropped, counted in
/metrics and logged once, and never end the recorder."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from customtask_sdk.client import JSON, ForbiddenError, KubeClient
from customtask_sdk.runtime.events import EventRecorder
from customtask_sdk.runtime.metrics import ControllerMetrics

RUN: JSON = {
    "apiVersion": "tekton.dev/v1beta1",
    "kind": "CustomRun",
    "metadata": {"name": "run-1", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
}


def forbidden() -> ForbiddenError:
    message = 'events is forbidden: User "ctl" cannot create resource "events"'
    return ForbiddenError(403, "Forbidden", message, {})


class FakeEventsApi:
    """Answers each POST with the next scripted exception, or accepts it."""

    def __init__(self, *failures: BaseException | None) -> None:
        self.failures = list(failures)
        self.posted: list[tuple[str, JSON]] = []

    async def create(self, path: str, body: JSON) -> JSON:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        self.posted.append((path, body))
        return body


@pytest.fixture
async def recorder_for() -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    def start(api: FakeEventsApi, **options: Any) -> EventRecorder:
        recorder = EventRecorder(
            cast(KubeClient, api), "customtask-sdk", "pod-a", metrics=ControllerMetrics(), **options
        )
        tasks.append(asyncio.create_task(recorder.run()))
        return recorder

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def dropped_series(recorder: EventRecorder) -> dict[str, float]:
    assert recorder.metrics is not None
    text = recorder.metrics.exposition().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("customtask_events_dropped_total{"):
            labels, value = line.split(" ")
            found[labels.split('"')[1]] = float(value)
    return found


async def test_an_event_is_posted_about_the_run(recorder_for: Any) -> None:
    api = FakeEventsApi()
    recorder = recorder_for(api)
    recorder.record(RUN, "Warning", "Failed", "x" * 2000)
    await recorder.flush()
    ((path, event),) = api.posted
    assert path == "/api/v1/namespaces/ns/events"
    assert event["involvedObject"] == {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": "run-1",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "Failed", 1024)
    assert event["reportingInstance"] == "pod-a"
    assert event["metadata"] == {"generateName": "run-1.", "namespace": "ns"}


async def test_forbidden_events_are_logged_once_at_warning_and_counted(
    recorder_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api = FakeEventsApi(forbidden(), forbidden(), forbidden())
    recorder = recorder_for(api)
    with caplog.at_level(logging.DEBUG, logger="customtask_sdk.events"):
        for _ in range(3):
            recorder.record(RUN, "Normal", "Started", "started")
        await recorder.flush()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "403" in warnings[0].getMessage()
    assert "grant create on events" in warnings[0].getMessage()
    assert recorder.dropped == 3
    assert dropped_series(recorder) == {"rejected": 3.0}
    recorder.record(RUN, "Normal", "Succeeded", "done")  # once allowed, events flow again
    await recorder.flush()
    assert [e["reason"] for _, e in api.posted] == ["Succeeded"]


async def test_an_unexpected_error_does_not_end_the_recorder(
    recorder_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    garbled = json.JSONDecodeError("Expecting value", "<html>", 0)  # a 200 that is not JSON
    api = FakeEventsApi(garbled, RuntimeError("a bug"))
    recorder = recorder_for(api)
    with caplog.at_level(logging.WARNING, logger="customtask_sdk.events"):
        for reason in ("One", "Two", "Three"):
            recorder.record(RUN, "Normal", reason, "m")
        await recorder.flush()
    assert [e["reason"] for _, e in api.posted] == ["Three"]
    assert dropped_series(recorder) == {"error": 2.0}
    assert len(caplog.records) == 2  # two kinds of failure, one warning each


async def test_a_full_buffer_drops_the_newest_events_without_blocking(recorder_for: Any) -> None:
    api = FakeEventsApi()
    recorder = recorder_for(api, buffer=2)
    for reason in ("One", "Two", "Three", "Four"):
        recorder.record(RUN, "Normal", reason, "m")  # the sender has not run yet
    await recorder.flush()
    assert [e["reason"] for _, e in api.posted] == ["One", "Two"]
    assert recorder.dropped == 2
    assert dropped_series(recorder) == {"buffer_full": 2.0}
