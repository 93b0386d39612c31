"""Pipeline-in-Pod on the real node: Pods whose containers really run.

A differential harness: each pipeline of the corpus runs twice on the same node, by
Tekton's own PipelineRun controller (one Pod per task) and by Pipeline-in-Pod (one Pod),
and both must agree on the outcome, each task's state and the pipeline's results. Then
what only one Pod shows: one Pod made, sidecars stopped, cancellation, fast failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient, Resource
from customtask_sdk.testing import condition, wait_deleted, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.node import Node
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import CLAIMS, PODS, PipelineInPod, custom_run
from tests.node.corpus import CORPUS, NESTED_CORPUS, done, result, sh, t, tekton_run


@pytest.fixture
async def pip(node: Node, node_namespace: str) -> AsyncIterator[PipelineInPod]:
    reconciler = PipelineInPod(images=Images.served(node.tekton_images))
    async with running(node.client, reconciler, namespace=node_namespace):
        yield reconciler


async def pip_run(
    kube: KubeClient, namespace: str, spec: JSON
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Run ``spec`` as a PipelineInPod CustomRun: outcome, per-task states, results."""
    name = f"pip-{uuid.uuid4().hex[:6]}"
    await kube.create(CUSTOM_RUNS.path(namespace), custom_run(name, {"pipelineSpec": spec}))
    run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done, timeout=180)
    states = {task["name"]: task["state"] for task in run["status"]["extraFields"]["tasks"]}
    results = {r["name"]: r["value"] for r in run["status"].get("results") or []}
    return (condition(run) or {}).get("status", ""), states, results


@pytest.mark.parametrize("case", sorted(CORPUS))
async def test_tekton_and_pipeline_in_pod_agree(
    node: Node, node_namespace: str, pip: PipelineInPod, case: str
) -> None:
    spec = CORPUS[case]
    tekton, ours = await asyncio.gather(
        tekton_run(node.client, node_namespace, spec), pip_run(node.client, node_namespace, spec)
    )
    assert ours == tekton


async def test_one_pod_for_the_whole_pipeline_and_sidecars_stopped(
    node: Node, node_namespace: str, pip: PipelineInPod
) -> None:
    spec = CORPUS["sidecar"]
    _, states, _ = await pip_run(
        node.client,
        node_namespace,
        {**spec, "tasks": [*spec["tasks"], t("b", runAfter=["a"]), t("c", runAfter=["a"])]},
    )
    assert states == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}
    pods = (await node.client.get(PODS.path(node_namespace)))["items"]
    assert len(pods) == 1
    pod = pods[0]

    def sidecar_stopped(obj: JSON) -> bool:
        statuses = obj.get("status", {}).get("containerStatuses") or []
        return any(
            c["name"].startswith("sidecar-") and "terminated" in c["state"] for c in statuses
        )

    pod = await wait_for(
        node.client, PODS, node_namespace, pod["metadata"]["name"], sidecar_stopped, timeout=60
    )
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"].startswith("sidecar-"))
    assert sidecar["image"] == pip.images.nop


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_cancelling_or_timing_out_stops_the_pod_and_ends_each_unfinished_task(
    node: Node, node_namespace: str, pip: PipelineInPod, how: str
) -> None:
    name = f"pip-{uuid.uuid4().hex[:6]}"
    tasks = [
        t("quick"),
        t("long", sh("sleep 600"), runAfter=["quick"]),
        t("beside", sh("sleep 600"), runAfter=["quick"]),
        t("after", runAfter=["long"]),
    ]
    body = custom_run(name, {"pipelineSpec": {"tasks": tasks}})
    if how == "timeout":
        body["spec"]["timeout"] = "20s"
    await node.client.create(CUSTOM_RUNS.path(node_namespace), body)

    def long_running(obj: JSON) -> bool:
        tasks = (obj.get("status", {}).get("extraFields") or {}).get("tasks") or []
        return any(task["name"] == "long" and task["state"] == "running" for task in tasks)

    await wait_for(node.client, CUSTOM_RUNS, node_namespace, name, long_running, timeout=120)
    if how == "cancel":
        await node.client.patch(
            CUSTOM_RUNS.path(node_namespace, name), {"spec": {"status": "RunCancelled"}}
        )
    run = await wait_for(node.client, CUSTOM_RUNS, node_namespace, name, done, timeout=60)
    ended, reason = {
        "cancel": ("cancelled", "CustomRunCancelled"),
        "timeout": ("timedOut", "CustomRunTimedOut"),
    }[how]
    assert (condition(run) or {}).get("reason") == reason
    states = {task["name"]: task["state"] for task in run["status"]["extraFields"]["tasks"]}
    assert states == {"quick": "succeeded", "long": ended, "beside": ended, "after": ended}
    await wait_deleted(node.client, PODS, node_namespace, f"{name}-pod", timeout=60)


async def test_an_image_that_cannot_be_pulled_fails_within_seconds(
    node: Node, node_namespace: str, pip: PipelineInPod
) -> None:
    spec = {"tasks": [t("a", {"image": "customtask.local/no/such:image", "command": ["x"]})]}
    status, states, _ = await pip_run(node.client, node_namespace, spec)
    assert status == "False"
    assert states == {"a": "failed"}


CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")


async def _tekton_api_fields(kube: KubeClient, level: str) -> None:
    path = CONFIG_MAPS.path("tekton-pipelines", "feature-flags")
    await kube.patch(path, {"data": {"enable-api-fields": level}})


#: The first of :data:`NESTED_CORPUS`: a child pipeline reading a result of the parent,
#: its tasks passing a result, and a parent task after the child.
NESTED = NESTED_CORPUS["child"]


@asynccontextmanager
async def _alpha(
    kube: KubeClient, namespace: str
) -> AsyncIterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """Tekton's alpha API fields on, for the block; Tekton's run of :data:`NESTED`."""
    await _tekton_api_fields(kube, "alpha")
    try:
        # Tekton's controller reloads its flags on its own time: until a run shows them, a
        # child pipeline is rejected (PipelineValidationFailed). Run until it is not.
        for _ in range(10):
            tekton = await tekton_run(kube, namespace, NESTED)
            if tekton[0] == "True":
                break
        yield tekton
    finally:
        await _tekton_api_fields(kube, "beta")


async def tekton_nested_run(
    kube: KubeClient, namespace: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """:data:`NESTED` run by Tekton, with its alpha API fields on for the run."""
    async with _alpha(kube, namespace) as tekton:
        return tekton


async def test_child_pipelines_run_in_the_pod_as_tekton_runs_them(
    node: Node, node_namespace: str, pip: PipelineInPod
) -> None:
    """The :data:`NESTED_CORPUS` (Tekton: alpha), both ways, all at once."""
    cases = sorted(NESTED_CORPUS)
    async with _alpha(node.client, node_namespace) as first:
        runs = await asyncio.gather(
            *(tekton_run(node.client, node_namespace, NESTED_CORPUS[case]) for case in cases),
            *(pip_run(node.client, node_namespace, NESTED_CORPUS[case]) for case in cases),
        )
    assert first[1] == {
        "a": "succeeded",
        "c-x": "succeeded",
        "c-y": "succeeded",
        "after": "succeeded",
    }
    tekton = dict(zip(cases, runs[: len(cases)], strict=True))
    ours = dict(zip(cases, runs[len(cases) :], strict=True))
    differing = {case: (ours[case], tekton[case]) for case in cases if ours[case] != tekton[case]}
    assert not differing, f"ours, then Tekton's: {differing}"


async def test_a_volume_claim_template_gets_a_claim_owned_by_the_run_named_as_tekton(
    node: Node, node_namespace: str, pip: PipelineInPod
) -> None:
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    spec = {
        "workspaces": [{"name": "shared"}],
        "tasks": [
            t(
                "write",
                sh("echo kept > $(workspaces.w.path)/file"),
                workspaces=[{"name": "w", "workspace": "shared"}],
                spec={"workspaces": [{"name": "w"}]},
            ),
            t(
                "read",
                sh("printf $(cat $(workspaces.w.path)/file) > $(results.out.path)"),
                runAfter=["write"],
                workspaces=[{"name": "w", "workspace": "shared"}],
                spec={"workspaces": [{"name": "w"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [result("read")],
    }
    name = f"pip-{uuid.uuid4().hex[:6]}"
    bound = [{"name": "shared", "volumeClaimTemplate": {"spec": claim}}]
    body = custom_run(name, {"pipelineSpec": spec, "workspaces": bound})
    created = await node.client.create(CUSTOM_RUNS.path(node_namespace), body)
    tekton, ours = await asyncio.gather(
        tekton_run(node.client, node_namespace, spec),
        wait_for(node.client, CUSTOM_RUNS, node_namespace, name, done, timeout=180),
    )
    assert (condition(ours) or {}).get("status") == "True", condition(ours)
    assert ours["status"]["results"] == [{"name": "r-read", "value": "kept"}]
    assert tekton[2] == {"r-read": "kept"}
    claims = (await node.client.get(CLAIMS.path(node_namespace)))["items"]
    owners = {c["metadata"]["name"]: c["metadata"]["ownerReferences"][0] for c in claims}
    uid = created["metadata"]["uid"]
    ours_name = "pvc-" + hashlib.sha256(f"shared{uid}".encode()).hexdigest()[:10]
    assert owners[ours_name]["uid"] == uid
    # Tekton's own claim for its PipelineRun, by the same rule
    (run,) = [o for o in owners.values() if o["kind"] == "PipelineRun"]
    assert "pvc-" + hashlib.sha256(f"shared{run['uid']}".encode()).hexdigest()[:10] in owners
