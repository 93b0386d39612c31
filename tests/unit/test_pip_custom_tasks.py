"""Custom tasks inside a Pipeline-in-Pod pipeline: compiling their stand-ins, and what the
controller decides from the Pod and the CustomRuns (``customtasks.py``, ``customruns.py``),
without a cluster.

The stand-ins running for real under Tekton's entrypoint: ``test_pip_local_pod.py``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from examples.pipeline_in_pod.__main__ import compile_file
from examples.pipeline_in_pod.compiler import (
    CompileError,
    Images,
    Plan,
    RunContext,
    compile_pipeline,
)
from examples.pipeline_in_pod.customruns import (
    CANCELLED,
    TIMED_OUT,
    Parent,
    child_name,
    child_timeout,
    decide,
    outcome_annotations,
    overlay,
    run_params,
)
from examples.pipeline_in_pod.customtasks import GROUP, MOUNT
from examples.pipeline_in_pod.model import PipelineSpec
from examples.pipeline_in_pod.status import PodView, read_pod

IMAGES = Images(entrypoint="ep:1", nop="nop:1", shell="shell:1")
CTX = RunContext(name="run", namespace="ns", uid="uid-1", pipeline="pl", pipeline_run="pr")
APPROVAL = {"apiVersion": "approval.customtask.dev/v1alpha1", "kind": "ApprovalTask"}
JSON = dict[str, Any]


def sh(script: str) -> JSON:
    return {"image": "busybox", "script": script}


def build_task(name: str, **fields: Any) -> JSON:
    return {"name": name, "taskSpec": {"steps": [sh("true")], **fields.pop("spec", {})}, **fields}


def approval(**fields: Any) -> JSON:
    return {"name": "approval", "taskRef": dict(APPROVAL), **fields}


def compile_(tasks: list[JSON], finally_: list[JSON] | None = None, **pipeline: Any) -> Plan:
    spec = PipelineSpec.model_validate({"tasks": tasks, "finally": finally_ or [], **pipeline})
    specs = {t.name: t.taskSpec for t in [*spec.tasks, *spec.finally_] if t.taskSpec is not None}
    return compile_pipeline(spec, specs, {"version": "v1"}, [], CTX, IMAGES)


#: build -> approval (params from build's result and a pipeline param) -> publish.
PIPELINE = {
    "params": [{"name": "version"}],
    "tasks": [
        build_task(
            "build",
            spec={
                "results": [{"name": "digest"}],
                "steps": [sh("printf sha > $(results.digest.path)")],
            },
        ),
        approval(
            params=[
                {"name": "approvers", "value": ["alice"]},
                {
                    "name": "description",
                    "value": "Ship $(params.version) ($(tasks.build.results.digest))?",
                },
            ],
            timeout="2h",
            retries=1,
        ),
        build_task(
            "publish",
            params=[{"name": "who", "value": ["$(tasks.approval.results.approvedBy[*])"]}],
            spec={
                "params": [{"name": "who", "type": "array"}],
                "steps": [{"image": "busybox", "command": ["echo"], "args": ["$(params.who[*])"]}],
            },
        ),
    ],
    "results": [{"name": "decision", "value": "$(tasks.approval.results.decision)"}],
}


def plan() -> Plan:
    return compile_(PIPELINE["tasks"], results=PIPELINE["results"], params=PIPELINE["params"])


def test_a_task_ref_with_another_api_version_and_kind_is_a_custom_task() -> None:
    spec = PipelineSpec.model_validate(PIPELINE)
    ref = spec.tasks[1].taskRef
    assert ref is not None
    assert ref.is_custom
    named = PipelineSpec.model_validate({"tasks": [{"name": "a", "taskRef": {"name": "t"}}]})
    assert named.tasks[0].taskRef is not None
    assert not named.tasks[0].taskRef.is_custom
    with pytest.raises(ValidationError, match="taskRef names a Task"):
        PipelineSpec.model_validate({"tasks": [{"name": "a", "taskRef": {"kind": "Wait"}}]})


def test_the_custom_task_runs_as_a_two_step_stand_in_in_its_place_in_the_order() -> None:
    compiled = plan()
    task = compiled.custom["approval"]
    assert task.ref == APPROVAL
    assert task.timeout == "2h"
    assert task.retries == 1
    assert task.results == ("approvedBy", "decision")  # used by publish and the pipeline
    # Pipeline variables substituted now; results at run time.
    assert task.params == {
        "approvers": ["alice"],
        "description": "Ship v1 ($(tasks.build.results.digest))?",
    }
    stand_in = compiled.task("approval")
    assert [s.name for s in stand_in.steps] == ["start", "wait"]
    assert stand_in.deps == ("build",)
    assert compiled.task("publish").deps == ("approval",)
    containers = {c["name"]: c for c in compiled.pod_spec["containers"]}
    start, wait = (containers[s.container] for s in stand_in.steps)
    assert start["args"][start["args"].index("-wait_file") + 1].startswith(
        "/tekton/run/build/0/out"
    )
    assert start["args"][-4:] == ["-entrypoint", "sh", "--", "-c"] or start["args"][-1] == ":"
    assert "-results" in wait["args"]  # the last step reports the copied results
    assert {"name": "tekton-internal-downward", "mountPath": MOUNT, "readOnly": True} in wait[
        "volumeMounts"
    ]
    # publish reads approvedBy from the stand-in's results, as from any task.
    publish = containers[compiled.task("publish").steps[0].container]
    assert any(
        m["mountPath"] == "/tekton/steps/step-pip-approval/results" for m in publish["volumeMounts"]
    )


def test_the_outcome_and_each_used_result_reach_the_pod_through_the_downward_api() -> None:
    compiled = plan()
    volume = next(
        v for v in compiled.pod_spec["volumes"] if v["name"] == "tekton-internal-downward"
    )
    items = {i["path"]: i["fieldRef"]["fieldPath"] for i in volume["downwardAPI"]["items"]}
    assert items["custom/approval/state"] == f"metadata.annotations['{GROUP}/approval']"
    assert items["custom/approval/results/decision"] == (
        f"metadata.annotations['{GROUP}/approval.decision']"
    )
    assert "ready" in items
    assert "cancel" in items


def test_an_annotation_name_too_long_for_a_task_and_result_is_hashed() -> None:
    long = "r" * 60
    compiled = compile_(
        [
            approval(),
            build_task(
                "use",
                params=[{"name": "x", "value": f"$(tasks.approval.results.{long})"}],
                spec={"params": [{"name": "x"}]},
            ),
        ]
    )
    key = compiled.custom["approval"].result_key(long)
    name = key.split("/", 1)[1]
    assert len(name) <= 63
    assert name.startswith("r-")


def test_a_custom_task_with_a_matrix_is_rejected_naming_the_field() -> None:
    with pytest.raises(CompileError) as caught:
        compile_([approval(matrix={"params": [{"name": "x", "value": ["a", "b"]}]})])
    assert caught.value.field == "tasks[approval].matrix"


def test_a_custom_task_statically_skipped_by_when_gets_no_stand_in() -> None:
    compiled = compile_([approval(when=[{"input": "a", "operator": "in", "values": ["b"]}])])
    assert compiled.task("approval").skipped == "WhenExpressionsEvaluatedFalse"
    assert not compiled.task("approval").steps


# -- run time: what the controller decides --------------------------------------------


def step(name: str, code: int | None = None, reason: str = "") -> JSON:
    out: JSON = {"name": name}
    if code is not None:
        out.update(exitCode=code, reason=reason)
    return out


def view(approval_steps: list[JSON], state: str = "running", **others: str) -> PodView:
    tasks = [{"name": "build", "state": others.get("build", "succeeded")}]
    tasks.append({"name": "approval", "state": state, "reason": "", "steps": approval_steps})
    return PodView(tasks, None, False, {"build": {"digest": "sha"}})


def child(status: str | None = None, reason: str = "", **fields: Any) -> JSON:
    obj: JSON = {"metadata": {"name": "run-approval"}, "spec": {}, "status": {}}
    if status is not None:
        cond = {"type": "Succeeded", "status": status, "reason": reason, "message": "m"}
        obj["status"]["conditions"] = [cond]
    obj["status"].update(fields)
    return obj


def parent(children: dict[str, JSON] | None = None) -> Parent:
    """A PipelineInPod run ``run`` (attempt 0) owning ``children``."""
    return Parent("ns", children or {}, lambda task: child_name("run", task, 0), dict)


POD: JSON = {"metadata": {"name": "run-pod", "namespace": "ns", "annotations": {}}}
STARTED = [step("start", 0, "Completed"), step("wait")]


def test_the_custom_run_is_created_once_the_stand_in_starts_with_results_substituted() -> None:
    customs = plan().custom
    waiting = decide(customs, view([step("start"), step("wait")]), POD, parent(), {})
    assert not waiting.create  # its dependencies have not ended: nothing yet
    actions = decide(customs, view(STARTED), POD, parent(), {})
    assert actions.create == {
        "approval": [
            {"name": "approvers", "value": ["alice"]},
            {"name": "description", "value": "Ship v1 (sha)?"},
        ]
    }
    made = decide(customs, view(STARTED), POD, parent({"run-approval": child()}), {})
    assert not made.create
    assert not made.annotations
    assert not made.cancel


def test_a_stand_in_skipped_in_the_pod_creates_no_custom_run() -> None:
    skipped = [step("start", 1, "Skipped"), step("wait", 1, "Skipped")]
    actions = decide(plan().custom, view(skipped, "skipped"), POD, parent(), {})
    assert not actions.create
    assert not actions.annotations


def test_an_ended_custom_run_is_written_to_the_pod_in_one_patch() -> None:
    customs = plan().custom
    done = child(
        "True",
        "Approved",
        results=[
            {"name": "decision", "value": "approved"},
            {"name": "approvedBy", "value": '["alice"]'},
            {"name": "comments", "value": "[]"},
        ],
    )
    actions = decide(customs, view(STARTED), POD, parent({"run-approval": done}), {})
    assert actions.annotations == {
        f"{GROUP}/approval": "Succeeded",
        f"{GROUP}/approval.decision": "approved",
        f"{GROUP}/approval.approvedBy": '["alice"]',
    }
    annotated = {"metadata": {**POD["metadata"], "annotations": actions.annotations}}
    again = decide(customs, view(STARTED), annotated, parent({"run-approval": done}), {})
    assert not again.annotations  # written once


def test_a_failed_custom_run_and_a_missing_result_fail_the_stand_in() -> None:
    task = plan().custom["approval"]
    rejected = outcome_annotations(task, child("False", "Rejected"))
    assert rejected == {f"{GROUP}/approval": "Rejected: m"}
    missing = outcome_annotations(task, child("True", "Approved", results=[]))
    assert missing[f"{GROUP}/approval"].startswith("InvalidTaskResultReference: ")
    assert "'approvedBy'" in missing[f"{GROUP}/approval"]


def test_a_result_an_earlier_task_did_not_produce_fails_without_a_custom_run() -> None:
    customs = plan().custom
    empty = PodView(view(STARTED).tasks, None, False, {"build": {}})
    actions = decide(customs, empty, POD, parent(), {})
    assert not actions.create
    assert actions.annotations[f"{GROUP}/approval"].startswith("InvalidTaskResultReference: ")


def test_running_custom_runs_are_cancelled_when_the_run_stops_or_their_stand_in_ends() -> None:
    customs = plan().custom
    running = {"run-approval": child("Unknown", "Running")}
    ending = decide(customs, view(STARTED), POD, parent(running), {"all": CANCELLED})
    assert ending.cancel == {"run-approval": CANCELLED}
    timed_out = decide(customs, view(STARTED), POD, parent(running), {"dag": TIMED_OUT})
    assert timed_out.cancel == {"run-approval": TIMED_OUT}
    gone = [step("start", 0, "Completed"), step("wait", 1, "Cancelled")]
    assert decide(customs, view(gone, "cancelled"), POD, parent(running), {}).cancel
    asked = {"run-approval": {**child("Unknown"), "spec": {"status": "RunCancelled"}}}
    assert not decide(customs, view(gone), POD, parent(asked), {"all": CANCELLED}).cancel


def test_finally_custom_tasks_see_statuses_and_are_not_stopped_by_the_tasks_timeout() -> None:
    compiled = compile_(
        [build_task("build")],
        finally_=[
            approval(
                params=[{"name": "description", "value": "$(tasks.status)/$(tasks.build.status)"}]
            )
        ],
    )
    task = compiled.custom["approval"]
    assert task.is_finally
    failed = PodView([{"name": "build", "state": "failed"}], None, False, {})
    assert run_params(task, failed) == ([{"name": "description", "value": "Failed/Failed"}], None)
    skipped = PodView([{"name": "build", "state": "skipped"}], None, False, {})
    assert run_params(task, skipped)[0][0]["value"] == "Completed/None"
    running = {"run-approval": child("Unknown")}
    entry = {**view(STARTED).tasks[1], "finally": True}
    actions = decide(
        compiled.custom,
        PodView([entry], None, False, {}),
        POD,
        parent(running),
        {"dag": TIMED_OUT},
    )
    assert not actions.cancel


def test_the_task_status_tells_the_custom_runs_story() -> None:
    compiled = plan()
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": compiled.pod_spec, "status": {}}
    running = {"run-approval": child("Unknown", "Pending", startTime="2026-01-01T00:00:00Z")}
    states: list[JSON] = []

    def seen(entry: JSON) -> None:
        overlay(compiled.custom, parent(running), pod)(entry)
        states.append(entry)

    # Before the CustomRun exists, the stand-in is pending like any task.
    read_pod(compiled, pod, overlay=seen)
    entry = next(e for e in states if e["name"] == "approval")
    assert entry["customRun"] == "run-approval"
    assert entry["ref"] == APPROVAL
    assert entry["state"] == "running"
    assert entry["reason"] == "Pending"
    # It failed in the Pod because the CustomRun timed out: timedOut, with its message.
    failed = {"name": "approval", "state": "failed", "reason": "Failed", "message": "exit 1"}
    timed_out = {"run-approval": child("False", "CustomRunTimedOut", completionTime="t")}
    overlay(compiled.custom, parent(timed_out), pod)(failed)
    assert failed["state"] == "timedOut"
    assert failed["reason"] == "CustomRunTimedOut"
    assert failed["message"] == "CustomRun 'run-approval': m"
    assert failed["completionTime"] == "t"


def test_child_names_fit_and_retries_get_their_own() -> None:
    assert child_name("run", "approval", 0) == "run-approval"
    assert child_name("run", "approval", 2) == "run-approval-retry2"
    long = child_name("r" * 50, "t" * 40, 0)
    assert len(long) <= 63
    assert long != child_name("r" * 50, "t" * 41, 0)


def test_a_custom_run_gets_the_runs_task_timeout_only_over_tektons_default() -> None:
    task = plan().custom["approval"]
    hours = datetime.timedelta(hours=3)
    assert child_timeout(task, {"tasks": hours}) == "3h0m0s"
    assert child_timeout(task, {"tasks": datetime.timedelta(minutes=10)}) is None
    assert child_timeout(task, {"pipeline": hours, "finally": datetime.timedelta(hours=1)}) == (
        "2h0m0s"
    )


def test_the_release_sample_compiles_with_its_approval_as_a_custom_task() -> None:
    sample = Path(__file__).parents[2] / "examples" / "pipeline_in_pod" / "release.yaml"
    run = yaml.safe_load(sample.read_text())
    spec = PipelineSpec.model_validate(run["spec"]["customSpec"]["spec"]["pipelineSpec"])
    specs = {t.name: t.taskSpec for t in [*spec.tasks, *spec.finally_] if t.taskSpec is not None}
    compiled = compile_pipeline(spec, specs, {}, [], CTX, IMAGES)
    assert set(compiled.custom) == {"approval"}
    assert compiled.custom["approval"].timeout == "24h"
    assert compiled.task("publish").deps == ("approval",)
    readme = (sample.parent / "README.md").read_text()
    assert sample.read_text() in readme  # the README shows the sample whole


def test_compile_prints_the_pod_of_a_pipeline_with_a_custom_task(tmp_path: Path) -> None:
    pipeline = {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "release"},
        "spec": {"tasks": [build_task("build"), approval(runAfter=["build"])]},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    pod_spec = compile_file(path, {})
    names = [c["name"] for c in pod_spec["containers"]]
    assert "step-approval-start" in names
    assert "step-approval-wait" in names


def test_a_kubelets_pull_rate_limit_is_waited_out_while_a_failed_pull_fails_the_run() -> None:
    compiled = plan()
    containers = [c["name"] for c in compiled.pod_spec["containers"]]
    stand_in = [c for c in compiled.pod_spec["containers"] if c["name"].startswith("step-approval")]
    assert {c["imagePullPolicy"] for c in stand_in} == {"IfNotPresent"}  # no pull per stand-in

    def pod(reason: str, message: str) -> JSON:
        waiting = {"waiting": {"reason": reason, "message": message}}
        statuses = [{"name": name, "state": waiting} for name in containers]
        return {
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"containerStatuses": statuses},
        }

    limited = read_pod(compiled, pod("ErrImagePull", "pull QPS exceeded"))
    assert limited.verdict is None
    backing_off = "Back-off pulling image: ErrImagePull: pull QPS exceeded"
    assert read_pod(compiled, pod("ImagePullBackOff", backing_off)).verdict is None
    missing = read_pod(compiled, pod("ErrImagePull", "manifest unknown"))
    assert missing.verdict is not None
    assert missing.verdict.reason == "ErrImagePull"


def test_a_custom_task_inside_a_child_pipeline_is_rejected_naming_the_field() -> None:
    child = {"tasks": [{"name": "inner", "pipelineSpec": {"tasks": [approval()]}}]}
    with pytest.raises(CompileError) as caught:
        compile_([{"name": "outer", "pipelineSpec": child}])
    assert caught.value.field == (
        "tasks[outer].pipelineSpec.tasks[inner].pipelineSpec.tasks[approval].taskRef"
    )
    assert caught.value.reason == "Unsupported"
