"""StepActions through Pipeline-in-Pod's controller on the local control plane (no node:
the test writes container states where a kubelet would).

Resolved once at the start, with the Tasks, from both served versions (v1beta1 and
v1alpha1), frozen in the run's status: a StepAction deleted mid-run changes nothing, as
no reconcile reads it again. A task result fetched from a step result reaches the run.
"""

from __future__ import annotations

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, Resource
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.pytest_plugin import Cluster
from examples.pipeline_in_pod.controller import PODS, TASKS, PipelineInPod
from tests.e2e.test_pipeline_in_pod_controlplane import (
    IMAGES,
    create,
    create_run,
    done,
    embedded,
    kubelet,
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


async def step_action(
    cluster: Cluster, resource: Resource, namespace: str, name: str, spec: JSON
) -> None:
    body = {
        "apiVersion": f"{resource.group}/{resource.version}",
        "kind": "StepAction",
        "metadata": {"name": name},
        "spec": spec,
    }
    await cluster.client.create(resource.path(namespace), body)


async def test_stepactions_are_resolved_once_and_frozen_with_the_tasks(
    cluster: Cluster, namespace: str
) -> None:
    kube = cluster.client
    await step_action(cluster, V1BETA1, namespace, "kaniko", KANIKO)
    await step_action(cluster, V1ALPHA1, namespace, "say", SAY)
    await create(
        kube,
        TASKS,
        namespace,
        "announce",
        {
            "steps": [
                {"name": "say", "ref": {"name": "say"}, "params": [{"name": "word", "value": "hi"}]}
            ]
        },
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
        run = await wait_for(
            kube,
            CUSTOM_RUNS,
            namespace,
            name,
            lambda o: "pod" in (o.get("status", {}).get("extraFields") or {}),
        )
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


@pytest.mark.parametrize(
    ("step", "reason", "message"),
    [
        (
            {"name": "s", "ref": {"name": "gone"}},
            "StepActionNotFound",
            "StepAction 'gone' not found in",
        ),
        (
            {
                "name": "s",
                "ref": {"resolver": "cluster", "params": [{"name": "name", "value": "x"}]},
            },
            "Unsupported",
            "tasks[t].steps[0].ref.resolver: remote StepActions",
        ),
    ],
)
async def test_a_stepaction_that_cannot_be_resolved_fails_the_run_at_the_start(
    cluster: Cluster, namespace: str, step: JSON, reason: str, message: str
) -> None:
    kube = cluster.client
    spec = {"pipelineSpec": {"tasks": [{"name": "t", "taskSpec": {"steps": [step]}}]}}
    async with running(kube, PipelineInPod(images=IMAGES), namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    status, why = outcome(run)
    assert (status, why) == ("False", reason)
    assert message in run["status"]["conditions"][0]["message"]
