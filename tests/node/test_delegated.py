"""The delegated front door on the real node, with Tekton's own controller beside it: a plain
PipelineRun with ``spec.managedBy`` runs in one Pod, Tekton never touches it, it ends as
Tekton would end it, and each task shows up as a TaskRun."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.node import Node
from customtask_sdk.testing.testbin import locate_tkn
from examples.pipeline_in_pod.controller import PipelineInPod, custom_run
from examples.pipeline_in_pod.delegated import MANAGED_BY, DelegatedPipelineRun
from examples.pipeline_in_pod.pods import CLAIMS, PODS
from tests.node.corpus import (
    CORPUS,
    done,
    images,
    outcome,
    pipeline_run,
    producer,
    sh,
    t,
    tekton_run,
)
from tests.node.test_node_pip_stepactions import CORPUS as STEPACTION_CORPUS
from tests.node.test_node_pip_stepactions import step_actions  # noqa: F401 - the fixture
from tests.node.test_pipeline_in_pod import NESTED, tekton_nested_run

#: Who wrote a PipelineRun's or TaskRun's status: our client's field manager.
OURS = "customtask-sdk"


@pytest.fixture
async def delegated(node: Node, node_namespace: str) -> AsyncIterator[DelegatedPipelineRun]:
    reconciler = DelegatedPipelineRun(images=images(node))
    async with running(node.client, reconciler, namespace=node_namespace):
        yield reconciler


def status_writers(obj: JSON) -> set[str]:
    """The field managers that wrote ``obj``'s status."""
    return {
        entry.get("manager", "")
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status"
    }


async def start(kube: KubeClient, namespace: str, spec: JSON, **fields: Any) -> str:
    name = f"dl-{uuid.uuid4().hex[:6]}"
    body = pipeline_run(name, spec, MANAGED_BY, **fields)
    await kube.create(PIPELINE_RUNS.path(namespace), body)
    return name


async def children(kube: KubeClient, namespace: str, name: str) -> list[JSON]:
    found = await kube.get(
        TASK_RUNS.path(namespace), params={"labelSelector": f"tekton.dev/pipelineRun={name}"}
    )
    items: list[JSON] = found["items"]
    return items


#: The corpus, and the StepActions corpus (its StepActions made by ``step_actions``).
ALL_CORPUS = {**CORPUS, **STEPACTION_CORPUS}


@pytest.mark.parametrize("case", sorted(ALL_CORPUS))
@pytest.mark.usefixtures("step_actions")
async def test_tekton_and_the_delegated_pipelinerun_agree(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun, case: str
) -> None:
    spec = ALL_CORPUS[case]
    tekton, ours = await asyncio.gather(
        tekton_run(node.client, node_namespace, spec),
        tekton_run(node.client, node_namespace, spec, MANAGED_BY),
    )
    assert ours == tekton


async def finished_task_run(kube: KubeClient, namespace: str, name: str) -> JSON:
    """TaskRun ``name`` once finished (its last write may trail its PipelineRun's)."""
    return await wait_for(kube, TASK_RUNS, namespace, name, done, timeout=60)


@pytest.mark.usefixtures("step_actions")
async def test_a_stepaction_steps_taskrun_status_is_tektons(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    spec = STEPACTION_CORPUS["stepaction-when-on-steps"]  # a StepAction step skipped by when
    theirs = f"pr-{uuid.uuid4().hex[:6]}"
    await kube.create(PIPELINE_RUNS.path(node_namespace), pipeline_run(theirs, spec))
    ours = await start(kube, node_namespace, spec)
    for name in (theirs, ours):
        await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=180)
    mine = await finished_task_run(kube, node_namespace, f"{ours}-a")
    tektons = await finished_task_run(kube, node_namespace, f"{theirs}-a")

    def steps(task_run: JSON) -> list[tuple[str, Any, Any]]:
        return [
            (s["name"], s["terminated"]["exitCode"], s.get("terminationReason"))
            for s in task_run["status"]["steps"]
        ]

    assert steps(mine) == steps(tektons)
    assert [s[0] for s in steps(mine)] == ["build", "skipped", "ran"]
    assert mine["status"]["results"] == tektons["status"]["results"]
    (pod,) = [
        p
        for p in (await kube.get(PODS.path(node_namespace)))["items"]
        if p["metadata"]["name"] == mine["status"]["podName"]
    ]
    containers = {c["name"] for c in pod["spec"]["containers"]}
    assert {s["container"] for s in mine["status"]["steps"]} <= containers


async def test_a_volumeclaimtemplate_workspace_gets_the_claim_tekton_would_make(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    spec = CORPUS["workspace-shared"]
    theirs = f"pr-{uuid.uuid4().hex[:6]}"
    await kube.create(PIPELINE_RUNS.path(node_namespace), pipeline_run(theirs, spec))
    # Bound as Tekton's is (pipeline_run binds one Pod's workspaces to an emptyDir).
    (bound,) = pipeline_run(theirs, spec)["spec"]["workspaces"]
    ours = await start(kube, node_namespace, spec, workspaces=[bound])
    runs = [
        await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=180)
        for name in (theirs, ours)
    ]
    tekton, mine = [await outcome(kube, node_namespace, run) for run in runs]
    assert mine == tekton
    assert mine[0] == "True", mine
    for run in runs:  # Tekton's name: sha256(workspace + the PipelineRun's uid)
        uid = run["metadata"]["uid"]
        claim = f"pvc-{hashlib.sha256(f'ws{uid}'.encode()).hexdigest()[:10]}"
        found = await kube.get(CLAIMS.path(node_namespace, claim))
        (owner,) = found["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("PipelineRun", uid, True)
    pod = await kube.get(PODS.path(node_namespace, f"{ours}-pod"))
    uid = runs[1]["metadata"]["uid"]
    claim = f"pvc-{hashlib.sha256(f'ws{uid}'.encode()).hexdigest()[:10]}"
    assert {"claimName": claim} in [
        v["persistentVolumeClaim"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
    ]


async def test_a_child_pipeline_runs_in_the_pod_with_tektons_taskrun_names(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    tekton = await tekton_nested_run(node.client, node_namespace)
    kube = node.client
    name = await start(kube, node_namespace, NESTED)
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=180)
    ours = await outcome(kube, node_namespace, run)
    # Tekton's child PipelineRun <run>-c runs TaskRuns <run>-c-x, <run>-c-y: the names of
    # the delegated run's TaskRuns for the child's tasks (outcome() keys both alike).
    assert ours == tekton
    assert ours[0] == "True", ours
    assert {"c-x", "c-y"} <= set(ours[1])
    # tkn lists them with the parent's (it leaves a child PipelineRun's out).
    described = await tkn(node, "pipelinerun", "describe", name, "-n", node_namespace)
    assert f"{name}-c-x" in described
    assert f"{name}-c-y" in described


async def test_a_delegated_run_is_ours_alone_in_one_pod_with_a_taskrun_per_task(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    spec = {
        "tasks": [producer("a", "x"), t("b", sh("echo hello-b"), runAfter=["a"])],
        "finally": [t("f", sh("echo bye"))],
        "results": [{"name": "r", "value": "$(tasks.a.results.out)"}],
    }
    kube = node.client
    name = await start(kube, node_namespace, spec)
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=120)
    # A PipelineRun of Tekton's, made after ours and finished, proves Tekton had its chance.
    await tekton_run(kube, node_namespace, {"tasks": [t("z")]})
    run = await kube.get(PIPELINE_RUNS.path(node_namespace, name))
    status = run["status"]
    assert condition(run) == {
        **(condition(run) or {}),
        "status": "True",
        "reason": "Succeeded",
        "message": "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0",
    }
    assert status_writers(run) == {OURS}
    assert status["results"] == [{"name": "r", "value": "x"}]
    assert status["startTime"] <= status["completionTime"]
    assert [c["pipelineTaskName"] for c in status["childReferences"]] == ["a", "b", "f"]
    assert status["pipelineSpec"]["tasks"][0]["name"] == "a"
    assert "finallyStartTime" in status
    pods = [
        p
        for p in (await kube.get(PODS.path(node_namespace)))["items"]
        if p["metadata"].get("labels", {}).get("tekton.dev/pipelineRun") == name
    ]
    assert len(pods) == 1
    pod = pods[0]
    assert "tekton.dev/taskRun" not in pod["metadata"]["labels"]  # not one of Tekton's Pods
    containers = {c["name"] for c in pod["spec"]["containers"]}
    task_runs = {
        tr["metadata"]["labels"]["tekton.dev/pipelineTask"]: tr
        for tr in await children(kube, node_namespace, name)
    }
    assert sorted(task_runs) == ["a", "b", "f"]
    for task, task_run in task_runs.items():
        assert task_run["spec"]["managedBy"] == MANAGED_BY
        assert task_run["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
        assert status_writers(task_run) == {OURS}
        tr_status = task_run["status"]
        assert (condition(task_run) or {})["reason"] == "Succeeded", task
        assert tr_status["podName"] == pod["metadata"]["name"]
        assert tr_status["taskSpec"]["steps"]
        for step in tr_status["steps"]:
            assert step["container"] in containers
            assert step["terminated"]["exitCode"] == 0
        assert tr_status["startTime"] <= tr_status["completionTime"]
    assert task_runs["a"]["status"]["results"] == [{"name": "out", "type": "string", "value": "x"}]


async def test_cancel_deletes_the_pod_and_cancels_the_running_taskrun(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    name = await start(
        kube, node_namespace, {"tasks": [t("long", sh("sleep 600")), t("next", runAfter=["long"])]}
    )

    def child_running(obj: JSON) -> bool:
        return bool((obj.get("status") or {}).get("childReferences"))

    await wait_for(kube, PIPELINE_RUNS, node_namespace, name, child_running, timeout=120)
    await kube.patch(PIPELINE_RUNS.path(node_namespace, name), {"spec": {"status": "Cancelled"}})
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=60)
    cond = condition(run) or {}
    assert (cond["status"], cond["reason"]) == ("False", "Cancelled")
    assert cond["message"] == f'PipelineRun "{name}" was cancelled'
    (task_run,) = await children(kube, node_namespace, name)
    assert (condition(task_run) or {})["reason"] == "TaskRunCancelled"


@pytest.mark.parametrize(
    ("how", "reason", "first", "states"),
    [
        # Cancelled, finally runs: the running task is cancelled, the next never runs.
        (
            "CancelledRunFinally",
            "CancelledRunningFinally",
            "sleep 600",
            {"first": "cancelled", "second": "skipped", "f": "succeeded"},
        ),
        # Stopped, finally runs: the running task finishes, the next never runs.
        (
            "StoppedRunFinally",
            "StoppedRunningFinally",
            "sleep 4",
            {"first": "succeeded", "second": "skipped", "f": "succeeded"},
        ),
    ],
)
async def test_graceful_cancel_and_stop_run_finally(
    node: Node,
    node_namespace: str,
    delegated: DelegatedPipelineRun,
    how: str,
    reason: str,
    first: str,
    states: dict[str, str],
) -> None:
    kube = node.client
    spec = {
        # The second task's first step starts a moment after the first task ends; one
        # that ends at once could slip through before the stop lands (README).
        "tasks": [t("first", sh(first)), t("second", sh("sleep 3"), runAfter=["first"])],
        "finally": [t("f", sh("sleep 2"))],
    }
    name = await start(kube, node_namespace, spec)

    def child_running(obj: JSON) -> bool:
        return bool((obj.get("status") or {}).get("childReferences"))

    await wait_for(kube, PIPELINE_RUNS, node_namespace, name, child_running, timeout=120)
    await kube.patch(PIPELINE_RUNS.path(node_namespace, name), {"spec": {"status": how}})
    await wait_for(
        kube,
        PIPELINE_RUNS,
        node_namespace,
        name,
        lambda o: (condition(o) or {}).get("reason") in (reason, "Cancelled"),
        timeout=60,
    )
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=120)
    cond = condition(run) or {}
    assert (cond["status"], cond["reason"]) == ("False", "Cancelled")
    _, got, _ = await outcome(kube, node_namespace, run)
    assert got == states


async def test_pending_waits_then_runs(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    name = await start(kube, node_namespace, {"tasks": [t("a")]}, status="PipelineRunPending")
    run = await wait_for(
        kube,
        PIPELINE_RUNS,
        node_namespace,
        name,
        lambda o: (condition(o) or {}).get("reason") == "PipelineRunPending",
    )
    assert "startTime" not in run["status"]
    assert (condition(run) or {})["message"] == f'PipelineRun "{name}" is pending'
    assert not [
        p
        for p in (await kube.get(PODS.path(node_namespace)))["items"]
        if p["metadata"]["labels"].get("tekton.dev/pipelineRun") == name
    ]
    await kube.patch(PIPELINE_RUNS.path(node_namespace, name), {"spec": {"status": None}})
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=120)
    assert (condition(run) or {})["reason"] == "Succeeded"


async def test_a_pipeline_timeout_fails_as_tektons(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    spec = {"tasks": [t("long", sh("sleep 600"))]}
    name = await start(kube, node_namespace, spec, timeouts={"pipeline": "5s"})
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=120)
    cond = condition(run) or {}
    assert (cond["status"], cond["reason"]) == ("False", "PipelineRunTimeout")
    assert cond["message"] == f'PipelineRun "{name}" failed to finish within "5s"'


async def test_what_one_pod_cannot_do_fails_at_once_naming_the_field(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    name = await start(
        kube,
        node_namespace,
        {"tasks": [t("a")]},
        taskRunSpecs=[{"pipelineTaskName": "a", "serviceAccountName": "x"}],
    )
    run = await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=30)
    cond = condition(run) or {}
    assert (cond["status"], cond["reason"]) == ("False", "InvalidTaskRunSpecs")
    assert cond["message"].startswith("spec.taskRunSpecs:")


async def tkn(node: Node, *args: str) -> str:
    """Run Tekton's own CLI against the node's cluster; its output."""
    proc = await asyncio.create_subprocess_exec(
        str(locate_tkn()),
        *args,
        env={**os.environ, "KUBECONFIG": str(node.control_plane.kubeconfig), "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    return text


async def test_tkn_describes_the_delegated_run_task_by_task_and_prints_each_tasks_logs(
    node: Node, node_namespace: str, delegated: DelegatedPipelineRun
) -> None:
    kube = node.client
    spec = {
        "tasks": [
            t("build", sh("echo built-it", name="compile")),
            t("test", sh("echo tested-it", name="unit"), runAfter=["build"]),
        ]
    }
    name = await start(kube, node_namespace, spec)
    await wait_for(kube, PIPELINE_RUNS, node_namespace, name, done, timeout=120)
    described = await tkn(node, "pipelinerun", "describe", name, "-n", node_namespace)
    print(described)  # the README's sample (pytest -s)
    assert "Succeeded" in described
    for task in ("build", "test"):
        assert f"{name}-{task}" in described
    task_run = await tkn(node, "taskrun", "describe", f"{name}-build", "-n", node_namespace)
    assert "compile" in task_run
    assert "Succeeded" in task_run
    logs = await tkn(node, "taskrun", "logs", f"{name}-test", "-n", node_namespace)
    assert "tested-it" in logs
    logs = await tkn(node, "pipelinerun", "logs", name, "-n", node_namespace)
    assert "built-it" in logs
    assert "tested-it" in logs


async def test_the_customrun_front_door_shows_each_task_as_a_taskrun_too(
    node: Node, node_namespace: str
) -> None:
    reconciler = PipelineInPod(images=images(node))
    kube = node.client
    name = f"pip-{uuid.uuid4().hex[:6]}"
    spec = {"tasks": [producer("a", "x"), t("b", sh("exit 3"), runAfter=["a"])]}
    async with running(kube, reconciler, namespace=node_namespace):
        await kube.create(
            CUSTOM_RUNS.path(node_namespace), custom_run(name, {"pipelineSpec": spec})
        )
        await wait_for(kube, CUSTOM_RUNS, node_namespace, name, done, timeout=120)
        found = await kube.get(
            TASK_RUNS.path(node_namespace), params={"labelSelector": f"tekton.dev/customRun={name}"}
        )

        def finished(obj: JSON) -> bool:
            return (condition(obj) or {}).get("status") in ("True", "False")

        for task_run in found["items"]:  # its last write may trail the run's by a moment
            await wait_for(kube, TASK_RUNS, node_namespace, task_run["metadata"]["name"], finished)
        found = await kube.get(
            TASK_RUNS.path(node_namespace), params={"labelSelector": f"tekton.dev/customRun={name}"}
        )
    by_task = {tr["metadata"]["labels"]["tekton.dev/pipelineTask"]: tr for tr in found["items"]}
    assert sorted(by_task) == ["a", "b"]
    assert (condition(by_task["a"]) or {})["reason"] == "Succeeded"
    failed = condition(by_task["b"]) or {}
    assert (failed["reason"], failed["message"]) == (
        "Failed",
        '"step-b-unnamed-0" exited with code 3',
    )
    assert by_task["b"]["status"]["steps"][0]["terminated"]["exitCode"] == 3
    assert by_task["a"]["status"]["podName"] == f"{name}-pod"
    assert by_task["a"]["spec"]["managedBy"] == MANAGED_BY
    assert by_task["a"]["metadata"]["ownerReferences"][0]["kind"] == "CustomRun"
