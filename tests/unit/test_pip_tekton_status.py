"""Tekton's status formats from a Pipeline-in-Pod Pod, and the delegated front door's checks."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from customtask_sdk import PIPELINE_RUNS, NotFoundError, Object
from examples.pipeline_in_pod import taskruns
from examples.pipeline_in_pod.compiler import Images, Plan, StepPlan, TaskPlan
from examples.pipeline_in_pod.delegated import (
    MANAGED_BY,
    DelegatedPipelineRun,
    Invalid,
    check_supported,
    pipeline_timeouts,
)
from examples.pipeline_in_pod.tekton_status import (
    Graceful,
    child_name,
    condition,
    counts,
    pipeline_condition,
    task_run_status,
)

NOW = "2026-01-01T00:00:10.000Z"


@pytest.mark.parametrize(
    ("states", "graceful", "want"),
    [
        (
            ["succeeded", "running", "pending"],
            Graceful(),
            (
                "Unknown",
                "Running",
                "Tasks Completed: 1 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0",
            ),
        ),
        (
            ["succeeded", "skipped"],
            Graceful(),
            ("True", "Completed", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1"),
        ),
        (
            ["succeeded", "timedOut", "skipped"],
            Graceful(),
            ("False", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1"),
        ),
        (
            ["failed", "running"],
            Graceful(),
            (
                "Unknown",
                "PipelineRunStopping",
                "Tasks Completed: 1 (Failed: 1, Cancelled 0), Incomplete: 1, Skipped: 0",
            ),
        ),
        (
            ["failed", "running"],
            Graceful(finally_done=False),
            (
                "Unknown",
                "Running",
                "Tasks Completed: 1 (Failed: 1, Cancelled 0), Incomplete: 1, Skipped: 0",
            ),
        ),
        (
            ["cancelled", "running"],
            Graceful(cancelled=True, finally_done=False),
            (
                "Unknown",
                "CancelledRunningFinally",
                "Tasks Completed: 1 (Failed: 0, Cancelled 1), Incomplete: 1, Skipped: 0",
            ),
        ),
        (
            ["succeeded", "skipped", "succeeded"],
            Graceful(stopped=True),
            ("False", "Cancelled", 'PipelineRun "pr" was cancelled'),
        ),
        (
            ["timedOut", "succeeded"],
            Graceful(tasks_timed_out="1s"),
            (
                "False",
                "PipelineRunTimeout",
                'PipelineRun "pr" failed due to tasks failed to finish within "1s"',
            ),
        ),
        (
            ["timedOut", "running"],
            Graceful(tasks_timed_out="1s", finally_done=False),
            (
                "Unknown",
                "PipelineRunTimeoutRunningFinally",
                "Tasks Completed: 1 (Failed: 1, Cancelled 0), Incomplete: 1, Skipped: 0",
            ),
        ),
    ],
)
def test_the_pipelinerun_condition_is_tektons(
    states: list[str], graceful: Graceful, want: tuple[str, str, str]
) -> None:
    assert pipeline_condition("pr", counts(states), graceful) == want


def test_a_condition_keeps_its_transition_time_until_it_changes() -> None:
    first = condition(None, "Unknown", "Running", "m", "t1")
    assert condition(first, "Unknown", "Running", "m", "t2")["lastTransitionTime"] == "t1"
    assert condition(first, "Unknown", "Running", "n", "t2")["lastTransitionTime"] == "t2"


def test_child_names_are_knatives() -> None:
    assert child_name("run", "-task") == "run-task"
    long = child_name("r" * 60, "-task")
    assert len(long) == 63
    assert long.endswith("-task")
    assert long != child_name("r" * 61, "-task")


def _terminated(code: int, results: dict[str, str], reason: str = "") -> dict[str, object]:
    message = [{"key": "StartedAt", "value": "2026-01-01T00:00:01.000Z", "type": 3}]
    message += [{"key": k, "value": v, "type": 1} for k, v in results.items()]
    if reason:
        message.append({"key": "Reason", "value": reason, "type": 3})
    return {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:02Z",
        "message": json.dumps(message),
    }


TASK = TaskPlan(
    name="build",
    is_finally=False,
    steps=(
        StepPlan("compile", "step-build-compile"),
        StepPlan("unnamed-1", "step-build-unnamed-1"),
    ),
    sidecars=(),
    results=("digest", "list"),
    deps=(),
)


def test_a_taskrun_status_shows_the_shared_pod_its_steps_and_results() -> None:
    pod = {
        "metadata": {"name": "pr-pod"},
        "status": {
            "containerStatuses": [
                {
                    "name": "step-build-compile",
                    "imageID": "img",
                    "state": {"terminated": _terminated(0, {"digest": "abc"})},
                },
                {
                    "name": "step-build-unnamed-1",
                    "state": {"terminated": _terminated(0, {"list": '["a","b"]'})},
                },
                {"name": "step-other", "state": {"running": {}}},
            ]
        },
    }
    entry = {"name": "build", "state": "succeeded", "startTime": "2026-01-01T00:00:01.000Z"}
    status = task_run_status(
        "pr-build", TASK, entry, pod, None, NOW, task_spec={"steps": []}, timeout="1h0m0s"
    )
    assert status["conditions"][0]["reason"] == "Succeeded"
    assert status["conditions"][0]["message"] == "All Steps have completed executing"
    assert status["podName"] == "pr-pod"
    assert [s["container"] for s in status["steps"]] == [
        "step-build-compile",
        "step-build-unnamed-1",
    ]
    assert status["steps"][0]["imageID"] == "img"
    assert status["steps"][0]["terminated"]["startedAt"] == "2026-01-01T00:00:01.000Z"
    assert "message" not in status["steps"][0]["terminated"]
    assert status["steps"][0]["terminationReason"] == "Completed"
    assert status["results"] == [
        {"name": "digest", "type": "string", "value": "abc"},
        {"name": "list", "type": "array", "value": ["a", "b"]},
    ]
    assert status["startTime"] == "2026-01-01T00:00:01.000Z"
    assert status["completionTime"] == NOW


@pytest.mark.parametrize(
    ("state", "codes", "reason", "message"),
    [
        ("failed", (0, 2), "Failed", '"step-build-unnamed-1" exited with code 2'),
        (
            "timedOut",
            (0, 1),
            "TaskRunTimeout",
            'TaskRun "pr-build" failed to finish within "1h0m0s"',
        ),
        ("cancelled", (0, 1), "TaskRunCancelled", 'TaskRun "pr-build" was cancelled. why'),
        ("running", (0, None), "Running", "Not all Steps in the Task have finished executing"),
    ],
)
def test_a_taskrun_condition_is_tektons(
    state: str, codes: tuple[int, int | None], reason: str, message: str
) -> None:
    statuses = [
        {
            "name": plan.container,
            "state": {"terminated": _terminated(code, {})} if code is not None else {"running": {}},
        }
        for plan, code in zip(TASK.steps, codes, strict=True)
    ]
    pod = {"metadata": {"name": "pr-pod"}, "status": {"containerStatuses": statuses}}
    status = task_run_status(
        "pr-build",
        TASK,
        {"name": "build", "state": state},
        pod,
        None,
        NOW,
        task_spec={},
        timeout="1h0m0s",
        cancel_message="why",
    )
    cond = status["conditions"][0]
    assert (cond["reason"], cond["message"]) == (reason, message)
    assert ("completionTime" in status) == (state != "running")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"taskRunSpecs": [{"pipelineTaskName": "a"}]}, "spec.taskRunSpecs"),
        ({"pipelineRef": {"resolver": "git"}}, "spec.pipelineRef.resolver"),
        ({"taskRunTemplate": {"computeResources": {}}}, "spec.taskRunTemplate.computeResources"),
    ],
)
def test_what_one_pod_cannot_do_is_refused_naming_the_field(
    spec: dict[str, object], field: str
) -> None:
    with pytest.raises(Invalid) as caught:
        check_supported(spec)
    assert caught.value.message.startswith(f"{field}:")


def test_timeouts_default_to_an_hour_and_zero_means_none() -> None:
    hour = datetime.timedelta(hours=1)
    assert pipeline_timeouts({}) == {"pipeline": hour}
    assert pipeline_timeouts({"timeouts": {"pipeline": "0"}}) == {}
    assert pipeline_timeouts({"timeouts": {"tasks": "5m"}}) == {
        "pipeline": hour,
        "tasks": datetime.timedelta(minutes=5),
    }
    with pytest.raises(Invalid, match=r"spec.timeouts.finally"):
        pipeline_timeouts({"timeouts": {"finally": "soon"}})


class FakeClient:
    """Answers GETs from ``objects`` (404 otherwise) and records writes."""

    def __init__(self, objects: dict[str, dict[str, object]] | None = None) -> None:
        self.objects = objects or {}
        self.calls: list[tuple[str, str]] = []

    async def get(self, path: str, params: object = None) -> dict[str, object]:
        if path not in self.objects:
            raise NotFoundError(404, "NotFound", path, {})
        return self.objects[path]

    async def create(self, path: str, body: dict[str, object], params: object = None) -> object:
        self.calls.append(("create", path))
        return body

    async def delete(self, path: str, params: object = None) -> object:
        self.calls.append(("delete", path))
        raise NotFoundError(404, "NotFound", path, {})


def pipeline_run(spec: dict[str, object], status: dict[str, object] | None = None) -> Object:
    obj = {
        "apiVersion": "tekton.dev/v1",
        "metadata": {"name": "pr", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"managedBy": MANAGED_BY, **spec},
    }
    if status is not None:
        obj["status"] = status
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return Object(obj, now, PIPELINE_RUNS)


async def reconciled(obj: Object, client: FakeClient | None = None) -> dict[str, object]:
    reconciler = DelegatedPipelineRun(images=Images("ep", "nop", "sh"))
    reconciler.attach(client or FakeClient())  # type: ignore[arg-type]
    result = await reconciler.reconcile(obj)
    assert result.status is not None
    return dict(result.status)


def cond_of(status: dict[str, object]) -> tuple[str, str, str]:
    (cond,) = status["conditions"]  # type: ignore[misc]
    return cond["status"], cond["reason"], cond["message"]


async def test_a_pending_run_waits_without_a_start_time() -> None:
    status = await reconciled(pipeline_run({"status": "PipelineRunPending"}))
    assert cond_of(status) == ("Unknown", "PipelineRunPending", 'PipelineRun "pr" is pending')
    assert "startTime" not in status


async def test_a_run_cancelled_before_it_started_is_cancelled_with_tektons_message() -> None:
    status = await reconciled(pipeline_run({"status": "Cancelled", "pipelineSpec": {}}))
    assert cond_of(status) == ("False", "Cancelled", 'PipelineRun "pr" was cancelled')
    assert status["startTime"] == status["completionTime"]


@pytest.mark.parametrize(
    ("spec", "reason", "field"),
    [
        ({"pipelineRef": {"name": "missing"}}, "CouldntGetPipeline", "Pipeline 'missing'"),
        (
            {"pipelineSpec": {"tasks": [{"name": "a", "taskRef": {"name": "gone"}}]}},
            "CouldntGetTask",
            "tasks[a].taskRef",
        ),
        (
            {"pipelineSpec": {"tasks": [{"name": "a", "taskSpec": {}}]}},
            "PipelineValidationFailed",
            "spec.pipelineSpec.tasks.0.taskSpec.steps",
        ),
        ({"taskRunSpecs": [{"pipelineTaskName": "a"}]}, "InvalidTaskRunSpecs", "spec.taskRunSpecs"),
        (
            {
                "pipelineSpec": {
                    "tasks": [{"name": "a", "taskRef": {"apiVersion": "x.dev/v1", "kind": "X"}}]
                }
            },
            "PipelineValidationFailed",
            "pipelineSpec.tasks[a].taskRef",
        ),
    ],
)
async def test_what_cannot_run_fails_at_once_naming_the_field(
    spec: dict[str, object], reason: str, field: str
) -> None:
    status = await reconciled(pipeline_run(spec))
    state, got, message = cond_of(status)
    assert (state, got) == ("False", reason)
    assert field in message
    assert status["completionTime"]


async def test_the_first_reconcile_freezes_the_pipeline_and_creates_the_pod() -> None:
    client = FakeClient(
        {
            "/apis/tekton.dev/v1/namespaces/ns/tasks/build": {
                "spec": {"steps": [{"image": "busybox", "script": "true"}]}
            }
        }
    )
    spec = {"pipelineSpec": {"tasks": [{"name": "a", "taskRef": {"name": "build"}}]}}
    status = await reconciled(pipeline_run(spec), client)
    assert cond_of(status) == (
        "Unknown",
        "Running",
        "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 1, Skipped: 0",
    )
    assert status["pipelineSpec"] == {
        "tasks": [{"name": "a", "taskSpec": {"steps": [{"image": "busybox", "script": "true"}]}}]
    }
    assert client.calls == [("create", "/api/v1/namespaces/ns/pods")]


class RecordingClient(FakeClient):
    """Creates what it is given (with a resourceVersion) and accepts status patches."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []

    async def create(self, path: str, body: dict[str, Any], params: object = None) -> object:
        self.bodies.append(body)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    async def patch(self, path: str, body: object, *args: object) -> object:
        self.calls.append(("patch", path))
        return body


async def test_each_matrix_instance_is_a_taskrun_of_its_pipeline_task() -> None:
    step = StepPlan("s", "step-m-0-s")
    plan = Plan(
        pod_spec={},
        tasks=(TaskPlan("m-0", False, (step,), (), (), ()),),
        results={},
        waits_for_ready=False,
        matrices={"m": ("m-0",)},
    )
    pod = {"metadata": {"name": "pr-pod"}, "status": {"containerStatuses": []}}
    owner = taskruns.Owner("pr", "ns", {"kind": "PipelineRun", "uid": "u"}, {}, MANAGED_BY)
    client = RecordingClient()
    ptasks = {"m": {"name": "m", "taskSpec": {"steps": [{"image": "busybox"}]}}}
    entries = [{"name": "m-0", "state": "running"}, {"name": "other", "state": "running"}]
    refs = await taskruns.sync(client, owner, plan, pod, entries, {}, ptasks, NOW)  # type: ignore[arg-type]
    assert refs == [
        {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "name": "pr-m-0",
            "pipelineTaskName": "m",
        }
    ]
    (body,) = client.bodies
    assert body["metadata"]["labels"]["tekton.dev/pipelineTask"] == "m"
    assert body["metadata"]["ownerReferences"][0]["controller"] is False
    assert body["spec"]["taskSpec"]["steps"][0]["name"] == "unnamed-0"
    assert client.calls == [("patch", "/apis/tekton.dev/v1/namespaces/ns/taskruns/pr-m-0/status")]
