"""Tekton's status formats from a Pipeline-in-Pod Pod, and the delegated front door's checks."""

from __future__ import annotations

import datetime
import json

import pytest

from examples.pipeline_in_pod.compiler import StepPlan, TaskPlan
from examples.pipeline_in_pod.delegated import Invalid, check_supported, pipeline_timeouts
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
        (
            {"workspaces": [{"name": "w", "volumeClaimTemplate": {}}]},
            "spec.workspaces[0].volumeClaimTemplate",
        ),
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
