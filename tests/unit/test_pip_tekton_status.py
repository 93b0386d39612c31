"""Tekton's status formats from a Pipeline-in-Pod Pod, and the delegated front door's checks."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from customtask_sdk import PIPELINE_RUNS, NotFoundError, Object
from customtask_sdk.client import CUSTOM_RUNS
from examples.pipeline_in_pod import taskruns
from examples.pipeline_in_pod.compiler import (
    Images,
    Plan,
    RunContext,
    StepPlan,
    TaskPlan,
    compile_pipeline,
)
from examples.pipeline_in_pod.customruns import CANCELLED, TIMED_OUT, custom_run_body
from examples.pipeline_in_pod.customtasks import CustomTask
from examples.pipeline_in_pod.delegated import (
    MANAGED_BY,
    DelegatedPipelineRun,
    Invalid,
    check_supported,
    pipeline_timeouts,
)
from examples.pipeline_in_pod.model import PipelineSpec
from examples.pipeline_in_pod.pods import PODS
from examples.pipeline_in_pod.tekton_status import (
    Graceful,
    child_name,
    condition,
    counts,
    pipeline_condition,
    succeeded,
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


#: A PipelineRun ``pr``'s Pod (nothing started), its TaskRuns' owner, and its context.
PR_POD: dict[str, Any] = {"metadata": {"name": "pr-pod"}, "status": {"containerStatuses": []}}
PR_OWNER = taskruns.Owner("pr", "ns", {"kind": "PipelineRun", "uid": "u"}, {}, MANAGED_BY)
PR_CTX = RunContext(name="pr", namespace="ns", uid="u", pipeline="p", pipeline_run="pr")


class RecordingClient(FakeClient):
    """Creates what it is given (with a resourceVersion) and accepts status patches."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []
        self.patched: dict[str, object] = {}

    async def create(self, path: str, body: dict[str, Any], params: object = None) -> object:
        self.bodies.append(body)
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    async def patch(self, path: str, body: object, *args: object) -> object:
        self.calls.append(("patch", path))
        self.patched[path] = body
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
    pod = PR_POD
    owner = PR_OWNER
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


async def test_a_matrix_instances_taskrun_has_its_combination_first_then_the_tasks_params() -> None:
    spec = PipelineSpec.model_validate(
        {
            "params": [{"name": "greeting", "default": "hi"}],
            "tasks": [
                {"name": "a", "taskSpec": {"results": [{"name": "out"}], "steps": [SH]}},
                {
                    "name": "m",
                    "params": [
                        {"name": "g", "value": "$(params.greeting)"},
                        {"name": "r", "value": "$(tasks.a.results.out)"},
                    ],
                    "matrix": {
                        "params": [
                            {"name": "os", "value": ["linux", "mac"]},
                            {"name": "arch", "value": ["arm"]},
                        ]
                    },
                    "taskSpec": {
                        "params": [{"name": n} for n in ("g", "r", "os", "arch")],
                        "steps": [SH],
                    },
                },
            ],
        }
    )
    specs = {p.name: p.taskSpec for p in spec.tasks if p.taskSpec is not None}
    plan = compile_pipeline(spec, specs, {}, [], PR_CTX, Images("ep", "nop", "sh"))
    # Tekton's createTaskRun: the combination (sorted by name), then the task's params.
    assert plan.task("m-1").params == (
        {"name": "arch", "value": "arm"},
        {"name": "os", "value": "mac"},
        {"name": "g", "value": "hi"},
        {"name": "r", "value": "$(tasks.a.results.out)"},
    )
    pod = PR_POD
    owner = PR_OWNER
    client = RecordingClient()
    frozen = spec.model_dump(by_alias=True, exclude_unset=True)
    ptasks = {p["name"]: p for p in frozen["tasks"]}
    entries = [{"name": "m-1", "state": "running"}]
    results = {"a": {"out": "made"}}
    await taskruns.sync(client, owner, plan, pod, entries, {}, ptasks, NOW, results=results)  # type: ignore[arg-type]
    (body,) = client.bodies
    assert body["metadata"]["name"] == "pr-m-1"
    assert body["spec"]["params"] == [
        {"name": "arch", "value": "arm"},
        {"name": "os", "value": "mac"},
        {"name": "g", "value": "hi"},
        {"name": "r", "value": "made"},
    ]


WAIT = {"apiVersion": "wait.customtask.dev/v1alpha1", "kind": "Wait"}
SH = {"image": "busybox", "script": "true"}
WITH_WAIT = {
    "tasks": [
        {"name": "a", "taskSpec": {"steps": [SH]}},
        {
            "name": "w",
            "taskRef": WAIT,
            "runAfter": ["a"],
            "params": [{"name": "duration", "value": "1s"}],
        },
        {"name": "b", "taskSpec": {"steps": [SH]}, "runAfter": ["w"]},
    ],
    "finally": [{"name": "f", "taskRef": WAIT, "params": [{"name": "duration", "value": "0s"}]}],
}


async def test_a_custom_task_is_frozen_as_its_ref_and_runs_as_a_stand_in_in_the_pod() -> None:
    client = RecordingClient()
    status = await reconciled(pipeline_run({"pipelineSpec": WITH_WAIT}), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    frozen = status["pipelineSpec"]
    assert frozen["tasks"][1] == WITH_WAIT["tasks"][1]  # type: ignore[index]
    (pod,) = client.bodies
    names = {c["name"] for c in pod["spec"]["containers"]}
    assert {"step-w-start", "step-w-wait", "step-f-start", "step-f-wait"} <= names


def custom_run_owner(**spec: Any) -> Object:
    obj = pipeline_run({"pipelineSpec": WITH_WAIT, **spec})
    obj.obj["metadata"]["labels"] = {"team": "x"}
    obj.obj["metadata"]["annotations"] = {"note": "n", "chains.tekton.dev/signed": "true"}
    return obj


def test_a_custom_tasks_custom_run_is_named_labelled_and_owned_as_tekton_makes_it() -> None:
    obj = custom_run_owner(taskRunTemplate={"serviceAccountName": "builder"})
    reconciler = DelegatedPipelineRun(images=Images("ep", "nop", "sh"))
    parent = reconciler._parent(obj)
    task = CustomTask(name="f", ref=WAIT, is_finally=True)
    body = custom_run_body(parent, task, [{"name": "duration", "value": "0s"}], None)
    meta = body["metadata"]
    # kmeta.ChildName(<run>, "-<task>"), as Tekton's getNewRunNames
    assert meta["name"] == "pr-f" == child_name("pr", "-f")
    assert meta["labels"] == {
        "team": "x",
        "app.kubernetes.io/managed-by": "pipeline-in-pod",
        "tekton.dev/pipeline": "pr",
        "tekton.dev/pipelineRun": "pr",
        "tekton.dev/pipelineRunUID": "u",
        "tekton.dev/pipelineTask": "f",
        "tekton.dev/memberOf": "finally",
    }
    assert meta["annotations"] == {"note": "n"}  # Chains' are not copied
    (owner,) = meta["ownerReferences"]
    # Not as its controller: Tekton's PipelineRun controller would write the run's status.
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("PipelineRun", "u", False)
    assert body["apiVersion"] == "tekton.dev/v1beta1"
    assert body["spec"] == {
        "customRef": WAIT,
        "params": [{"name": "duration", "value": "0s"}],
        "serviceAccountName": "builder",
    }
    # No service account named: Tekton's default-service-account.
    unnamed = custom_run_body(reconciler._parent(custom_run_owner()), task, [], None)
    assert unnamed["spec"]["serviceAccountName"] == "default"


async def test_a_custom_task_has_a_custom_run_child_reference_and_no_taskrun() -> None:
    step = StepPlan("s", "step-a-s")
    plan = Plan(
        pod_spec={},
        tasks=(TaskPlan("a", False, (step,), (), (), ()),),
        results={},
        waits_for_ready=False,
        custom={"w": CustomTask(name="w", ref=WAIT)},
    )
    pod = PR_POD
    owner = PR_OWNER
    client = RecordingClient()
    ptasks = {p["name"]: p for p in WITH_WAIT["tasks"]}  # type: ignore[attr-defined]
    ptasks["w"] = {**ptasks["w"], "when": [{"input": "a", "operator": "in", "values": ["a"]}]}
    entries = [{"name": "a", "state": "succeeded"}, {"name": "w", "state": "running"}]
    refs = await taskruns.sync(
        client,  # type: ignore[arg-type]
        owner,
        plan,
        pod,
        entries,
        {},
        ptasks,
        NOW,
        custom_runs={"w": "pr-w"},
    )
    assert refs[1] == {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": "pr-w",
        "pipelineTaskName": "w",
        "whenExpressions": [{"input": "a", "operator": "in", "values": ["a"]}],
    }
    assert [b["metadata"]["name"] for b in client.bodies] == ["pr-a"]  # no TaskRun of w
    # Not made yet: no reference.
    refs = await taskruns.sync(client, owner, plan, pod, entries, {}, ptasks, NOW)  # type: ignore[arg-type]
    assert [r["kind"] for r in refs] == ["TaskRun"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"status": "Cancelled"}, CANCELLED),
        ({"timeouts": {"pipeline": "1s"}}, TIMED_OUT),
    ],
)
async def test_cancelling_or_timing_out_the_run_cancels_its_unfinished_custom_runs(
    spec: dict[str, Any], message: str
) -> None:
    running = {
        "metadata": {"name": "pr-w"},
        "spec": {},
        "status": {"conditions": [{"type": "Succeeded", "status": "Unknown"}]},
    }
    finished = {
        "metadata": {"name": "pr-f"},
        "spec": {},
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}]},
    }
    pod = {"metadata": {"name": "pr-pod", "namespace": "ns"}, "spec": {}, "status": {}}
    owned = {CUSTOM_RUNS: [running, finished], PODS: [pod]}
    started = {
        "startTime": "2025-12-31T23:00:00Z",
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}],
    }
    obj = pipeline_run({"pipelineSpec": WITH_WAIT, **spec}, started)
    obj = Object(obj.obj, obj.now, PIPELINE_RUNS, lambda kind, uid: owned.get(kind, []))
    client = RecordingClient()
    reconciler = DelegatedPipelineRun(images=Images("ep", "nop", "sh"))
    reconciler.attach(client)  # type: ignore[arg-type]
    result = await reconciler.reconcile(obj)
    assert result.status is not None
    assert (succeeded(result.status) or {}).get("status") == "False"
    path = "/apis/tekton.dev/v1beta1/namespaces/ns/customruns/pr-w"
    assert ("patch", path) in client.calls
    assert client.patched[path] == {"spec": {"status": "RunCancelled", "statusMessage": message}}
    assert not any(p.endswith("/pr-f") for _, p in client.calls)


async def test_a_finally_tasks_taskrun_has_the_statuses_it_reads_substituted() -> None:
    spec = PipelineSpec.model_validate(
        {
            "tasks": [{"name": "a", "taskSpec": {"steps": [SH]}}],
            "finally": [
                {
                    "name": "f",
                    "params": [
                        {"name": "all", "value": "$(tasks.status)"},
                        {"name": "it", "value": "a was $(tasks.a.status)"},
                    ],
                    "taskSpec": {"params": [{"name": "all"}, {"name": "it"}], "steps": [SH]},
                }
            ],
        }
    )
    specs = {p.name: p.taskSpec for p in [*spec.tasks, *spec.finally_] if p.taskSpec}
    plan = compile_pipeline(spec, specs, {}, [], PR_CTX, Images("ep", "nop", "sh"))
    pod = PR_POD
    owner = PR_OWNER
    client = RecordingClient()
    frozen = spec.model_dump(by_alias=True, exclude_unset=True)
    ptasks = {"f": frozen["finally"][0]}
    entries = [
        {"name": "a", "state": "failed"},
        {"name": "f", "state": "running", "finally": True},
    ]
    await taskruns.sync(client, owner, plan, pod, entries, {}, ptasks, NOW)  # type: ignore[arg-type]
    (body,) = client.bodies
    assert body["spec"]["params"] == [
        {"name": "all", "value": "Failed"},
        {"name": "it", "value": "a was Failed"},
    ]
