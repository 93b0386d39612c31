"""Custom tasks inside a Pipeline-in-Pod pipeline, on the real node.

``build → approval → publish`` in one Pod, where approval is the Approval controller's
ApprovalTask, approved by a minted user while the Pod waits; pipelines mixing in-Pod tasks
with Wait custom tasks (passing, failing, timing out) run by Tekton's own PipelineRun
controller and by both of Pipeline-in-Pod's front doors, which must agree; a delegated
PipelineRun's CustomRun made, labelled and listed as Tekton makes it; and cancelling the
run cancels its CustomRun.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient
from customtask_sdk.testing import condition, wait_deleted, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.node import Node
from examples.approval.controller import APPROVAL_TASKS, Approval
from examples.approval.install import (
    CONTROLLER,
    CONTROLLER_GROUPS,
    grant_team,
    install,
    uninstall_admission,
    wait_enforced,
)
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import MANAGED, PODS, PipelineInPod, custom_run
from examples.pipeline_in_pod.delegated import MANAGED_BY, DelegatedPipelineRun
from examples.wait.controller import Wait
from tests.node.corpus import done, outcome, pipeline_run, tekton_run

APPROVAL = {"apiVersion": Approval.api_version, "kind": "ApprovalTask"}
WAIT = {"apiVersion": Wait.api_version, "kind": "Wait"}
#: Tekton's controller runs as the node's admin user; so does Pipeline-in-Pod here.
TEKTON_USER = "default"


def sh(script: str) -> JSON:
    return {"image": "busybox", "script": script}


def in_pod(name: str, script: str = "true", **fields: Any) -> JSON:
    spec = {"steps": [sh(script)], **fields.pop("spec", {})}
    return {"name": name, "taskSpec": spec, **fields}


def wait(name: str, duration: str, **fields: Any) -> JSON:
    return {
        "name": name,
        "taskRef": dict(WAIT),
        "params": [{"name": "duration", "value": duration}],
        **fields,
    }


def tasks_of(run: JSON) -> dict[str, JSON]:
    return {
        t["name"]: t
        for t in ((run.get("status") or {}).get("extraFields") or {}).get("tasks") or []
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def approval_installed(node: Node) -> AsyncIterator[None]:
    """The Approval CRD, RBAC and admission policies, for this module."""
    await install(node.client, tekton_user=TEKTON_USER)
    await wait_enforced(node.client)
    yield
    await uninstall_admission(node.client)


@pytest_asyncio.fixture(loop_scope="session")
async def controllers(
    node: Node, node_namespace: str, approval_installed: None
) -> AsyncIterator[PipelineInPod]:
    """Pipeline-in-Pod and Wait as the admin; Approval as its own service account's user;
    everyone may respond to gates in the namespace (admission decides whose counts)."""
    everyone = {"kind": "Group", "name": "system:authenticated"}
    await grant_team(
        node.client, node_namespace, [{**everyone, "apiGroup": "rbac.authorization.k8s.io"}]
    )
    pip = PipelineInPod(images=Images.served(node.tekton_images))
    delegated = DelegatedPipelineRun(images=Images.served(node.tekton_images))
    path = node.control_plane.kubeconfig_for(CONTROLLER, CONTROLLER_GROUPS, name="approval")
    async with (
        await KubeClient.from_kubeconfig(str(path)) as approver_client,
        running(approver_client, Approval(), namespace=node_namespace),
        running(node.client, pip, delegated, Wait(), namespace=node_namespace),
    ):
        yield pip


async def start(kube: KubeClient, namespace: str, spec: JSON) -> str:
    name = f"pip-{uuid.uuid4().hex[:6]}"
    await kube.create(CUSTOM_RUNS.path(namespace), custom_run(name, {"pipelineSpec": spec}))
    return name


async def pending_gate(kube: KubeClient, namespace: str, name: str) -> JSON:
    """The ApprovalTask ``name`` once it waits for responses."""

    def pending(gate: JSON) -> bool:
        return (gate.get("status") or {}).get("state") == "pending"

    return await wait_for(kube, APPROVAL_TASKS, namespace, name, pending, timeout=120)


def task_state(task: str, state: str) -> Any:
    return lambda run: tasks_of(run).get(task, {}).get("state") == state


# -- build → approval → publish ---------------------------------------------------------

RELEASE: JSON = {
    "tasks": [
        in_pod(
            "build",
            "printf sha256:c0ffee > $(results.digest.path)",
            spec={"results": [{"name": "digest"}]},
        ),
        {
            "name": "approval",
            "taskRef": dict(APPROVAL),
            "params": [
                {"name": "approvers", "value": ["alice"]},
                {"name": "description", "value": "Publish $(tasks.build.results.digest)?"},
            ],
        },
        {
            "name": "publish",
            "params": [
                {"name": "decision", "value": "$(tasks.approval.results.decision)"},
                {"name": "by", "value": ["$(tasks.approval.results.approvedBy[*])"]},
            ],
            "taskSpec": {
                "params": [{"name": "decision"}, {"name": "by", "type": "array"}],
                "results": [{"name": "out"}],
                "steps": [
                    {  # an array param expands in args only (as in Tekton)
                        "image": "busybox",
                        "command": ["sh", "-c", 'printf "$0 by $*" > $(results.out.path)'],
                        "args": ["$(params.decision)", "$(params.by[*])"],
                    }
                ],
            },
        },
    ],
    "results": [
        {"name": "published", "value": "$(tasks.publish.results.out)"},
        {"name": "decision", "value": "$(tasks.approval.results.decision)"},
    ],
}


async def test_build_approval_publish_in_one_pod_approved_by_a_user_while_it_waits(
    node: Node, node_namespace: str, controllers: PipelineInPod
) -> None:
    kube, ns = node.client, node_namespace
    name = await start(kube, ns, RELEASE)
    gate_name = f"{name}-approval"
    # The CustomRun is made once build has ended, with build's result in its params.
    gate = await pending_gate(kube, ns, gate_name)
    assert gate["spec"]["description"] == "Publish sha256:c0ffee?"
    child = await kube.get(CUSTOM_RUNS.path(ns, gate_name))
    owner = child["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("CustomRun", name)
    run = await wait_for(kube, CUSTOM_RUNS, ns, name, task_state("approval", "running"), timeout=60)
    entry = tasks_of(run)["approval"]
    assert entry["customRun"] == gate_name
    assert tasks_of(run)["publish"]["state"] == "pending"
    # The Pod waits: publish's container runs, its entrypoint waiting on the gate.
    pod = await kube.get(PODS.path(ns, f"{name}-pod"))
    assert pod["status"]["phase"] == "Running"
    # alice, a user minted by the apiserver's CA, approves.
    path = node.control_plane.kubeconfig_for("alice", (), name=f"alice-{uuid.uuid4().hex[:6]}")
    async with await KubeClient.from_kubeconfig(str(path)) as alice:
        body = {"spec": {"responses": {"alice": {"decision": "approve", "message": "ship it"}}}}
        await alice.patch(APPROVAL_TASKS.path(ns, gate_name), body)
    run = await wait_for(kube, CUSTOM_RUNS, ns, name, done, timeout=120)
    assert (condition(run) or {}).get("status") == "True", condition(run)
    states = {task: entry["state"] for task, entry in tasks_of(run).items()}
    assert states == {"build": "succeeded", "approval": "succeeded", "publish": "succeeded"}
    assert tasks_of(run)["approval"]["reason"] == "Approved"
    results = {r["name"]: r["value"] for r in run["status"]["results"]}
    assert results == {"published": "approved by alice", "decision": "approved"}
    pods = (await kube.get(PODS.path(ns)))["items"]
    assert [p["metadata"]["name"] for p in pods] == [f"{name}-pod"]


async def test_cancelling_the_run_cancels_its_custom_run(
    node: Node, node_namespace: str, controllers: PipelineInPod
) -> None:
    kube, ns = node.client, node_namespace
    name = await start(kube, ns, RELEASE)
    gate_name = f"{name}-approval"
    await pending_gate(kube, ns, gate_name)
    await kube.patch(CUSTOM_RUNS.path(ns, name), {"spec": {"status": "RunCancelled"}})
    run = await wait_for(kube, CUSTOM_RUNS, ns, name, done, timeout=60)
    assert (condition(run) or {}).get("reason") == "CustomRunCancelled"
    child = await wait_for(kube, CUSTOM_RUNS, ns, gate_name, done, timeout=60)
    assert (condition(child) or {}).get("reason") == "CustomRunCancelled"
    gate = await kube.get(APPROVAL_TASKS.path(ns, gate_name))
    assert gate["status"]["state"] == "cancelled"
    entry = tasks_of(run)["approval"]
    assert (entry["state"], entry["customRun"]) == ("cancelled", gate_name)
    await wait_deleted(kube, PODS, ns, f"{name}-pod", timeout=60)


# -- differential: Tekton's PipelineRun and Pipeline-in-Pod agree -------------------------

REPORT = in_pod(
    "report",
    'printf "$(params.all)/$(params.it)" > $(results.out.path)',
    params=[{"name": "all", "value": "$(tasks.status)"}],
    spec={"params": [{"name": "all"}, {"name": "it"}], "results": [{"name": "out"}]},
)


def report(task: str) -> JSON:
    return {
        **REPORT,
        "params": [*REPORT["params"], {"name": "it", "value": f"$(tasks.{task}.status)"}],
    }


CORPUS: dict[str, JSON] = {
    # A Wait whose duration is an in-Pod task's result, then a task after it.
    "wait-from-a-result": {
        "tasks": [
            in_pod("length", "printf 1s > $(results.d.path)", spec={"results": [{"name": "d"}]}),
            wait("pause", "$(tasks.length.results.d)"),
            in_pod("after", runAfter=["pause"]),
        ],
        "finally": [report("pause")],
        "results": [{"name": "r", "value": "$(finally.report.results.out)"}],
    },
    # A custom task that fails (bad input): its dependants are skipped, finally runs.
    "failing-custom-task": {
        "tasks": [
            in_pod("first"),
            wait("bad", "not-a-duration", runAfter=["first"]),
            in_pod("never", runAfter=["bad"]),
        ],
        "finally": [report("bad")],
        "results": [{"name": "r", "value": "$(finally.report.results.out)"}],
    },
    # A custom task past its own timeout: timed out, dependants skipped, finally runs.
    "custom-task-timeout": {
        "tasks": [
            wait("slow", "60s", timeout="2s"),
            in_pod("never", runAfter=["slow"]),
        ],
        "finally": [report("slow")],
        "results": [{"name": "r", "value": "$(finally.report.results.out)"}],
    },
}


async def pip_run(kube: KubeClient, namespace: str, spec: JSON) -> tuple[str, dict[str, str], JSON]:
    name = await start(kube, namespace, spec)
    run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done, timeout=240)
    states = {task: entry["state"] for task, entry in tasks_of(run).items()}
    results = {r["name"]: r["value"] for r in run["status"].get("results") or []}
    return (condition(run) or {}).get("status", ""), states, results


@pytest.mark.parametrize("case", sorted(CORPUS))
async def test_tekton_and_both_front_doors_agree_on_custom_tasks(
    node: Node, node_namespace: str, controllers: PipelineInPod, case: str
) -> None:
    spec = CORPUS[case]
    kube, ns = node.client, node_namespace
    tekton, ours, delegated = await asyncio.gather(
        tekton_run(kube, ns, spec), pip_run(kube, ns, spec), tekton_run(kube, ns, spec, MANAGED_BY)
    )
    assert ours == tekton
    assert delegated == tekton


# -- the delegated front door: a custom task's CustomRun as Tekton makes it ---------------

#: A Wait between two in-Pod tasks, its duration the first one's result.
BETWEEN: JSON = {
    "tasks": [
        in_pod("build", "printf 1s > $(results.d.path)", spec={"results": [{"name": "d"}]}),
        wait("pause", "$(tasks.build.results.d)"),
        in_pod(
            "publish",
            "printf published > $(results.out.path)",
            runAfter=["pause"],
            spec={"results": [{"name": "out"}]},
        ),
    ],
    "results": [{"name": "r", "value": "$(tasks.publish.results.out)"}],
}


def status_writers(obj: JSON) -> set[str]:
    """The field managers that wrote ``obj``'s status."""
    return {
        entry.get("manager", "")
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status"
    }


async def test_a_delegated_pipelinerun_runs_a_custom_task_as_tektons_controller_would(
    node: Node, node_namespace: str, controllers: PipelineInPod
) -> None:
    kube, ns = node.client, node_namespace
    theirs, ours = f"pr-{uuid.uuid4().hex[:6]}", f"dl-{uuid.uuid4().hex[:6]}"
    await kube.create(PIPELINE_RUNS.path(ns), pipeline_run(theirs, BETWEEN))
    await kube.create(PIPELINE_RUNS.path(ns), pipeline_run(ours, BETWEEN, MANAGED_BY))
    tekton = await wait_for(kube, PIPELINE_RUNS, ns, theirs, done, timeout=180)
    await wait_for(kube, PIPELINE_RUNS, ns, ours, done, timeout=180)
    # A PipelineRun of Tekton's, made after ours finished, proves Tekton had its chance.
    await tekton_run(kube, ns, {"tasks": [in_pod("z")]})
    run = await kube.get(PIPELINE_RUNS.path(ns, ours))
    assert await outcome(kube, ns, run) == await outcome(kube, ns, tekton)
    assert (condition(run) or {}).get("reason") == "Succeeded"
    assert status_writers(run) == {"customtask-sdk"}  # never Tekton's controller
    # childReferences as Tekton lists them: a TaskRun, the CustomRun, a TaskRun.
    assert [{**c, "name": ""} for c in run["status"]["childReferences"]] == [
        {**c, "name": ""} for c in tekton["status"]["childReferences"]
    ]
    assert run["status"]["childReferences"][1] == {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": f"{ours}-pause",
        "pipelineTaskName": "pause",
    }
    # Its CustomRun: Tekton's name, labels and spec; it ran and succeeded.
    mine = await kube.get(CUSTOM_RUNS.path(ns, f"{ours}-pause"))
    tektons = await kube.get(CUSTOM_RUNS.path(ns, f"{theirs}-pause"))
    assert (condition(mine) or {}).get("status") == "True"
    uids = (tekton["metadata"]["uid"], run["metadata"]["uid"])
    expected = {
        key: value.replace(theirs, ours).replace(*uids)
        for key, value in tektons["metadata"]["labels"].items()
    }
    assert mine["metadata"]["labels"] == {**expected, **MANAGED}
    assert mine["spec"] == tektons["spec"]
    (owner,) = mine["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("PipelineRun", run["metadata"]["uid"])
    # No TaskRun for the custom task (Tekton makes none); one Pod.
    task_runs = await kube.get(
        TASK_RUNS.path(ns), params={"labelSelector": f"tekton.dev/pipelineRun={ours}"}
    )
    assert sorted(
        t["metadata"]["labels"]["tekton.dev/pipelineTask"] for t in task_runs["items"]
    ) == [
        "build",
        "publish",
    ]
    assert run["status"]["results"] == [{"name": "r", "value": "published"}]


async def test_cancelling_a_delegated_pipelinerun_cancels_its_custom_run(
    node: Node, node_namespace: str, controllers: PipelineInPod
) -> None:
    kube, ns = node.client, node_namespace
    name = f"dl-{uuid.uuid4().hex[:6]}"
    spec = {"tasks": [in_pod("first"), wait("long", "10m", runAfter=["first"])]}
    await kube.create(PIPELINE_RUNS.path(ns), pipeline_run(name, spec, MANAGED_BY))

    def waiting(obj: JSON) -> bool:
        return (condition(obj) or {}).get("status") == "Unknown"

    await wait_for(kube, CUSTOM_RUNS, ns, f"{name}-long", waiting, timeout=120)
    await kube.patch(PIPELINE_RUNS.path(ns, name), {"spec": {"status": "Cancelled"}})
    run = await wait_for(kube, PIPELINE_RUNS, ns, name, done, timeout=60)
    assert (condition(run) or {}).get("reason") == "Cancelled"
    child = await wait_for(kube, CUSTOM_RUNS, ns, f"{name}-long", done, timeout=60)
    assert (condition(child) or {}).get("reason") == "CustomRunCancelled"
    assert child["spec"]["statusMessage"] == (
        "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
    )


@pytest.mark.parametrize("how", ["CancelledRunFinally", "timeouts.tasks"])
async def test_stopping_a_delegated_pipelinerun_stops_its_custom_run_as_tekton_does(
    node: Node, node_namespace: str, controllers: PipelineInPod, how: str
) -> None:
    kube, ns = node.client, node_namespace
    spec = {
        "tasks": [in_pod("first"), wait("long", "10m", runAfter=["first"])],
        "finally": [report("long")],
        "results": [{"name": "r", "value": "$(finally.report.results.out)"}],
    }
    fields = {"timeouts": {"pipeline": "1h", "tasks": "20s"}} if how == "timeouts.tasks" else {}
    names = (f"pr-{uuid.uuid4().hex[:6]}", f"dl-{uuid.uuid4().hex[:6]}")
    for name, managed_by in zip(names, (None, MANAGED_BY), strict=True):
        await kube.create(PIPELINE_RUNS.path(ns), pipeline_run(name, spec, managed_by, **fields))

    def waiting(obj: JSON) -> bool:
        return (condition(obj) or {}).get("status") == "Unknown"

    for name in names:  # each CustomRun runs; the run is then stopped
        await wait_for(kube, CUSTOM_RUNS, ns, f"{name}-long", waiting, timeout=120)
        if how == "CancelledRunFinally":
            await kube.patch(PIPELINE_RUNS.path(ns, name), {"spec": {"status": how}})
    seen = []
    for name in names:
        run = await wait_for(kube, PIPELINE_RUNS, ns, name, done, timeout=120)
        child = await kube.get(CUSTOM_RUNS.path(ns, f"{name}-long"))
        reason = (condition(run) or {}).get("reason")
        seen.append((*await outcome(kube, ns, run), reason, child["spec"].get("statusMessage")))
    tekton, ours = seen
    assert tekton[1]["long"] == "cancelled"  # the CustomRun was cancelled, finally ran
    assert ours == tekton
