"""StepActions through Pipeline-in-Pod's controller on the local control plane (no node:
the test writes container states where a kubelet would).

Resolved once at the start, with the Tasks, from both served versions (v1beta1 and
v1alpha1), frozen in the run's status: a StepAction deleted mid-run changes nothing, as
no reconcile reads it again. A task result fetched from a step result reaches the run. A
remote StepAction through a ResolutionRequest, the test answering as a resolver would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

import pytest
import yaml

from customtask_sdk import ConflictError
from customtask_sdk.client import CUSTOM_RUNS, JSON, Resource
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.controllers import create_object, running
from customtask_sdk.testing.pytest_plugin import Cluster
from examples.pipeline_in_pod.controller import PODS, RESOLUTION_REQUESTS, TASKS, PipelineInPod
from tests.e2e.test_pipeline_in_pod_controlplane import (
    IMAGES,
    create_run,
    done,
    embedded,
    kubelet,
    made_pod,
    outcome,
    terminated,
)

V1BETA1 = Resource("tekton.dev", "v1beta1", "stepactions", "StepAction")
V1ALPHA1 = Resource("tekton.dev", "v1alpha1", "stepactions", "StepAction")
KANIKO = {
    "params": [{"name": "image"}],
    "results": [{"name": "digest"}],
    "image": "busybox",
    "env": [{"name": "IMAGE", "value": "$(params.image)"}],
    "script": "printf sha256:1 > $(step.results.digest.path)",
}
SAY = {
    "params": [{"name": "word"}],
    "image": "busybox",
    "command": ["echo", "$(params.word)"],
}


async def test_stepactions_are_resolved_once_and_frozen_with_the_tasks(
    cluster: Cluster, namespace: str
) -> None:
    kube = cluster.client
    await create_object(kube, V1BETA1, namespace, KANIKO, name="kaniko")
    await create_object(kube, V1ALPHA1, namespace, SAY, name="say")
    await create_object(
        kube,
        TASKS,
        namespace,
        {
            "steps": [
                {"name": "say", "ref": {"name": "say"}, "params": [{"name": "word", "value": "hi"}]}
            ]
        },
        name="announce",
    )
    spec = {
        "pipelineSpec": {
            "tasks": [
                {
                    "name": "build",
                    "taskSpec": {
                        "results": [{"name": "digest", "value": "$(steps.kaniko.results.digest)"}],
                        "steps": [
                            {
                                "name": "kaniko",
                                "ref": {"name": "kaniko"},
                                "params": [{"name": "image", "value": "reg/app"}],
                            }
                        ],
                    },
                },
                {"name": "tell", "taskRef": {"name": "announce"}, "runAfter": ["build"]},
            ],
            "results": [{"name": "digest", "value": "$(tasks.build.results.digest)"}],
        }
    }
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, made_pod)
        frozen = run["status"]["extraFields"]["spec"]
        assert frozen["stepActions"] == {"kaniko": KANIKO, "say": SAY}
        pod = await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert containers["step-build-kaniko"]["env"] == [{"name": "IMAGE", "value": "reg/app"}]
        assert containers["step-tell-say"]["args"][-2:] == ["--", "hi"]
        # Deleted mid-run: every later reconcile compiles from the frozen copy.
        for resource, action in ((V1BETA1, "kaniko"), (V1ALPHA1, "say")):
            await kube.delete(resource.path(namespace, action))
        await kubelet(
            kube,
            namespace,
            f"{name}-pod",
            [
                terminated("step-build-kaniko", results={"digest": "sha256:1"}),
                terminated("step-tell-say"),
            ],
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("True", "Succeeded")
    assert run["status"]["results"] == [{"name": "digest", "value": "sha256:1"}]


async def test_a_missing_stepaction_fails_the_run_at_the_start(
    cluster: Cluster, namespace: str
) -> None:
    kube = cluster.client
    spec = {
        "pipelineSpec": {
            "tasks": [{"name": "t", "taskSpec": {"steps": [{"ref": {"name": "gone"}}]}}]
        }
    }
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("False", "StepActionNotFound")
    assert "StepAction 'gone' not found in" in run["status"]["conditions"][0]["message"]


REMOTE = {
    "resolver": "cluster",
    "params": [
        {"name": "kind", "value": "stepaction"},
        {"name": "name", "value": "kaniko"},
        {"name": "namespace", "value": "shared"},
    ],
}


def remote_run() -> JSON:
    step = {"name": "kaniko", "ref": REMOTE, "params": [{"name": "image", "value": "reg/app"}]}
    task = {
        "name": "build",
        "taskSpec": {
            "results": [{"name": "digest", "value": "$(steps.kaniko.results.digest)"}],
            "steps": [step],
        },
    }
    return embedded({"pipelineSpec": {"tasks": [task]}})


async def resolution_request(cluster: Cluster, namespace: str, run: str) -> JSON:
    """The run's one ResolutionRequest, once it exists."""

    async def listed() -> JSON:
        while True:
            items = (await cluster.client.get(RESOLUTION_REQUESTS.path(namespace)))["items"]
            if items:
                found: JSON = items[0]
                return found
            await asyncio.sleep(0.1)

    request = await asyncio.wait_for(listed(), 30)
    assert request["metadata"]["ownerReferences"][0]["name"] == run
    assert request["metadata"]["labels"]["resolution.tekton.dev/type"] == "cluster"
    assert request["spec"]["params"] == REMOTE["params"]
    return request


async def answer(
    cluster: Cluster, request: JSON, condition: JSON, run: str, data: str = ""
) -> JSON:
    """Answer the ResolutionRequest as a resolver does (its status), until the run has
    ended or made its Pod. Tekton's own ResolutionRequest reconciler may mark it "waiting
    for resolver" over an early answer (it read the request before): then answer again."""
    meta = request["metadata"]
    path = RESOLUTION_REQUESTS.path(meta["namespace"], meta["name"])
    source = {"uri": "test://resolver"}
    status: JSON = {
        "conditions": [{"type": "Succeeded", **condition}],
        "refSource": source,
        "source": source,
        "data": base64.b64encode(data.encode()).decode(),
    }

    async def settled() -> JSON:
        while True:
            current = (await cluster.client.get(path)).get("status") or {}
            if current.get("conditions", [{}])[0].get("status") != condition["status"]:
                await cluster.client.patch(f"{path}/status", {"status": status})
            found = await cluster.client.get(CUSTOM_RUNS.path(meta["namespace"], run))
            if done(found) or made_pod(found):
                return found
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(settled(), 30)


async def test_a_remote_stepaction_is_resolved_through_a_resolution_request(
    cluster: Cluster, namespace: str
) -> None:
    kube = cluster.client
    resolved = yaml.safe_dump(
        {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "StepAction",
            "metadata": {"name": "kaniko"},
            "spec": KANIKO,
        }
    )
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, remote_run())
        request = await resolution_request(cluster, namespace, name)
        succeeded = {"status": "True", "reason": "ResolutionSucceeded"}
        run = await answer(cluster, request, succeeded, name, resolved)
        (frozen,) = run["status"]["extraFields"]["spec"]["stepActions"].values()
        assert frozen == KANIKO
        pod = await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        (step,) = pod["spec"]["containers"][:1]
        assert step["env"] == [{"name": "IMAGE", "value": "reg/app"}]


async def test_a_failed_resolution_fails_the_run_with_the_resolvers_message(
    cluster: Cluster, namespace: str
) -> None:
    kube = cluster.client
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, remote_run())
        request = await resolution_request(cluster, namespace, name)
        failed = {"status": "False", "reason": "ResolutionFailed", "message": "no such stepaction"}
        run = await answer(cluster, request, failed, name)
    assert outcome(run) == ("False", "StepActionResolutionFailed")
    assert "no such stepaction" in run["status"]["conditions"][0]["message"]


async def test_tektons_cluster_resolver_resolves_a_remote_stepaction(
    cluster: Cluster, namespace: str
) -> None:
    """Tekton's own resolvers binary (built by testbin) answers the ResolutionRequest: a
    StepAction read from another namespace by the cluster resolver."""
    if cluster.control_plane is None:
        pytest.skip("needs the local control plane (starts Tekton's resolvers)")
    cp = cluster.control_plane
    await cp.start_tekton_resolvers()
    kube = cluster.client
    await cp.ensure_namespace("shared")
    with contextlib.suppress(ConflictError):
        await create_object(kube, V1BETA1, "shared", KANIKO, name="kaniko")
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, remote_run())
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, lambda o: done(o) or made_pod(o))
        assert not done(run), run["status"]
        (frozen,) = run["status"]["extraFields"]["spec"]["stepActions"].values()
        assert frozen == KANIKO
        pod = await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        assert pod["spec"]["containers"][0]["env"] == [{"name": "IMAGE", "value": "reg/app"}]
