"""Wait, end to end through Tekton's own PipelineRun controller.

The five scenarios of Tekton's ``TestWaitCustomTask_V1_PipelineRun`` (with the canonical
reasons), cancellation, a matrix fan-out, a controller crash mid-wait, and 1,000
concurrent waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, KubeClient
from customtask_sdk.testing import ControlPlane, condition, wait_for
from customtask_sdk.testing.controllers import controller_process, create_custom_run
from examples.wait.controller import Wait

# The serve_waits fixture (conftest.py): async with serve_waits(namespace) as manager.
Serve = Callable[..., contextlib.AbstractAsyncContextManager[Any]]
ROOT = Path(__file__).resolve().parents[2]


def parse(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def state(obj: JSON) -> tuple[str, str]:
    cond = condition(obj) or {}
    return cond.get("status", ""), cond.get("reason", "")


def wait_task(name: str = "wait", duration: str = "1s", **extra: Any) -> JSON:
    return {
        "name": name,
        "taskRef": {"apiVersion": Wait.api_version, "kind": "Wait"},
        "params": [{"name": "duration", "value": duration}],
        **extra,
    }


async def run_pipeline(kube: KubeClient, namespace: str, tasks: list[JSON], **spec: Any) -> str:
    name = f"pr-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": {"tasks": tasks}, **spec},
    }
    await kube.create(PIPELINE_RUNS.path(namespace), body)
    return name


async def wait_child_listed(kube: KubeClient, namespace: str, pr: str, child: str) -> None:
    """Tekton cancels only the children its PipelineRun status lists; wait until it does."""

    def listed(obj: JSON) -> bool:
        return any(c["name"] == child for c in obj.get("status", {}).get("childReferences") or [])

    await wait_for(kube, PIPELINE_RUNS, namespace, pr, listed)


def pr_state(status: str, reason: str) -> Any:
    return lambda obj: state(obj) == (status, reason)


@pytest.mark.parametrize(
    ("scenario", "duration", "task", "pr_timeout", "want_pr", "want_run", "generation", "retries"),
    [
        ("succeeds", "1s", {}, "1m", ("True", "Succeeded"), ("True", "DurationElapsed"), 1, 0),
        ("still running", "2s", {}, "5s", ("Unknown", "Running"), ("Unknown", "Running"), 1, 0),
        (
            "pipelinerun timeout",
            "2s",
            {},
            "1s",
            ("False", "PipelineRunTimeout"),
            ("False", "CustomRunCancelled"),
            2,
            0,
        ),
        (
            "task timeout",
            "2s",
            {"timeout": "1s"},
            "1m",
            ("False", "Failed"),
            ("False", "CustomRunTimedOut"),
            1,
            0,
        ),
        (
            "task timeout with a retry",
            "2s",
            {"timeout": "1s", "retries": 1},
            "1m",
            ("False", "Failed"),
            ("False", "CustomRunTimedOut"),
            1,
            1,
        ),
    ],
)
async def test_tekton_wait_scenarios(
    serve_waits: Serve,
    kube: KubeClient,
    namespace: str,
    scenario: str,
    duration: str,
    task: JSON,
    pr_timeout: str,
    want_pr: tuple[str, str],
    want_run: tuple[str, str],
    generation: int,
    retries: int,
) -> None:
    async with serve_waits(namespace):
        pr = await run_pipeline(
            kube,
            namespace,
            [wait_task(duration=duration, **task)],
            timeouts={"pipeline": pr_timeout},
        )
        await wait_for(kube, PIPELINE_RUNS, namespace, pr, pr_state(*want_pr), timeout=60)
        run = await wait_for(
            kube, CUSTOM_RUNS, namespace, f"{pr}-wait", lambda o: state(o) == want_run, timeout=30
        )
    assert run["status"]["observedGeneration"] == generation
    archived = run["status"].get("retriesStatus") or []
    assert [state({"status": a}) for a in archived] == [("False", "CustomRunTimedOut")] * retries
    if want_run[1] == "CustomRunCancelled":
        assert run["status"]["conditions"][0]["message"] == (
            "CustomRun cancelled as the PipelineRun it belongs to has timed out."
        )


async def test_cancelling_a_pipelinerun_cancels_its_waits(
    serve_waits: Serve, kube: KubeClient, namespace: str
) -> None:
    async with serve_waits(namespace):
        pr = await run_pipeline(kube, namespace, [wait_task(duration="30s")])
        await wait_for(kube, CUSTOM_RUNS, namespace, f"{pr}-wait", pr_state("Unknown", "Running"))
        await wait_child_listed(kube, namespace, pr, f"{pr}-wait")
        await kube.patch(PIPELINE_RUNS.path(namespace, pr), {"spec": {"status": "Cancelled"}})
        run = await wait_for(
            kube, CUSTOM_RUNS, namespace, f"{pr}-wait", pr_state("False", "CustomRunCancelled")
        )
        await wait_for(kube, PIPELINE_RUNS, namespace, pr, pr_state("False", "Cancelled"))
    assert run["status"]["conditions"][0]["message"] == (
        "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
    )


async def test_matrix_fan_out_of_waits(
    serve_waits: Serve, kube: KubeClient, namespace: str
) -> None:
    fan_out = {
        "name": "fan",
        "taskRef": {"apiVersion": Wait.api_version, "kind": "Wait"},
        "matrix": {"params": [{"name": "duration", "value": ["1s", "2s", "500ms"]}]},
    }
    async with serve_waits(namespace):
        pr = await run_pipeline(kube, namespace, [fan_out])
        done = await wait_for(kube, PIPELINE_RUNS, namespace, pr, pr_state("True", "Succeeded"), 60)
    runs = await kube.get(
        CUSTOM_RUNS.path(namespace), {"labelSelector": f"tekton.dev/pipelineRun={pr}"}
    )
    assert sorted(r["metadata"]["name"] for r in runs["items"]) == [
        f"{pr}-fan-{i}" for i in range(3)
    ]
    assert {state(r) for r in runs["items"]} == {("True", "DurationElapsed")}
    assert len(done["status"]["childReferences"]) == 3


async def test_a_crashed_controller_restarts_and_the_wait_still_ends_on_time(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    controller = controller_process(
        control_plane, "examples.wait.controller:Wait", namespace=namespace, app_dir=ROOT
    )
    await controller.start()
    try:
        pr = await run_pipeline(kube, namespace, [wait_task(duration="6s")])
        started = await wait_for(
            kube, CUSTOM_RUNS, namespace, f"{pr}-wait", pr_state("Unknown", "Running"), 30
        )
        await controller.kill()  # SIGKILL mid-wait
        await asyncio.sleep(2)  # a real outage, part of the wait: the end must still be on time
        await controller.start()
        done = await wait_for(
            kube, CUSTOM_RUNS, namespace, f"{pr}-wait", pr_state("True", "DurationElapsed"), 30
        )
        await wait_for(kube, PIPELINE_RUNS, namespace, pr, pr_state("True", "Succeeded"), 30)
    finally:
        await controller.stop()
    assert done["status"]["startTime"] == started["status"]["startTime"]
    waited = parse(done["status"]["completionTime"]) - parse(done["status"]["startTime"])
    assert datetime.timedelta(seconds=6) <= waited < datetime.timedelta(seconds=7)


async def test_a_thousand_concurrent_waits(
    serve_waits: Serve, kube: KubeClient, namespace: str
) -> None:
    count = 1000
    async with serve_waits(namespace, events=False) as manager:
        created_at = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await create_custom_run(
                    kube, namespace, Wait.api_version, "Wait", {"duration": "5s"}, name=f"w-{i:04d}"
                )

        await asyncio.gather(*(create(i) for i in range(count)))
        create_seconds = time.monotonic() - created_at

        async def all_done() -> JSON:
            while True:
                page = await kube.list_all(CUSTOM_RUNS.path(namespace))
                if sum(1 for r in page["items"] if state(r)[0] == "True") == count:
                    return page
                await asyncio.sleep(0.5)  # polls for completion (cheaper than 1,000 watches)

        page = await asyncio.wait_for(all_done(), 120)
    writes = (
        None
        if manager is None
        else manager.metrics.status_writes.labels(controller=Wait().name)._value.get()
    )
    waited = [
        (parse(r["status"]["completionTime"]) - parse(r["status"]["startTime"])).total_seconds()
        for r in page["items"]
    ]
    ends = sorted(parse(r["status"]["completionTime"]) for r in page["items"])
    spread = (ends[-1] - ends[0]).total_seconds()
    sys.stderr.write(
        f"\n[1000 waits] created in {create_seconds:.1f}s; completion spread {spread:.2f}s; "
        f"wait min/max {min(waited):.2f}/{max(waited):.2f}s; status writes {writes} "
        f"(per run: {writes / count if writes else 'n/a'})\n"
    )
    assert {state(r) for r in page["items"]} == {("True", "DurationElapsed")}
    assert min(waited) >= 5.0
    if writes is not None:  # known when the controller runs in this process
        assert writes == 2 * count


class TektonTestKindWait(Wait):
    """Wait serving Tekton's own test kind (WAIT_API_VERSION does this for the CLI)."""

    api_version = "wait.testing.tekton.dev/v1beta1"


async def test_drop_in_for_tektons_test_kind_with_an_embedded_spec(
    serve_waits: Serve, kube: KubeClient, namespace: str
) -> None:
    task = {
        "name": "wait",
        "taskSpec": {
            "apiVersion": TektonTestKindWait.api_version,
            "kind": "Wait",
            "spec": {"duration": "1s"},
        },
    }
    async with serve_waits(namespace, reconciler=TektonTestKindWait()):
        pr = await run_pipeline(kube, namespace, [task])
        await wait_for(kube, PIPELINE_RUNS, namespace, pr, pr_state("True", "Succeeded"), 60)
    run = await kube.get(CUSTOM_RUNS.path(namespace, f"{pr}-wait"))
    assert run["spec"]["customSpec"]["spec"] == {"duration": "1s"}
    assert state(run) == ("True", "DurationElapsed")
