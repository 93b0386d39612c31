"""Hermetic execution through Pipeline-in-Pod's controller on the local control plane (the
test writes container states where a kubelet would): annotations read from the Pipeline,
the Task and the run, frozen at the start; the check init container's failure ends the run
``HermeticUnavailable``."""

from __future__ import annotations

from customtask_sdk.client import CUSTOM_RUNS, JSON
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.pytest_plugin import Cluster
from examples.pipeline_in_pod.controller import PIPELINES, PODS, TASKS, PipelineInPod
from examples.pipeline_in_pod.hermetic import CHECK_CONTAINER, EXECUTION_MODE, PRE_STEPS
from tests.e2e.test_pipeline_in_pod_controlplane import (
    container,
    create_run,
    done,
    kubelet,
    made_pod,
    outcome,
    reconciler,  # noqa: F401 - the fixture
    ref,
)

HERMETIC = {EXECUTION_MODE: "hermetic"}


def env(found: JSON) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in found.get("env") or []}


async def test_annotations_of_pipeline_and_task_are_frozen_and_a_refused_check_fails_the_run(
    cluster: Cluster,
    namespace: str,
    reconciler: PipelineInPod,  # noqa: F811
) -> None:
    kube = cluster.client
    steps = [{"name": n, "image": "busybox", "command": ["true"]} for n in ("fetch", "build")]
    task = {
        "metadata": {"name": "tool", "annotations": {PRE_STEPS: "fetch"}},
        "spec": {"steps": steps},
    }
    await kube.create(
        TASKS.path(namespace), {"apiVersion": "tekton.dev/v1", "kind": "Task", **task}
    )
    pipeline = {"tasks": [{"name": "t", "taskRef": {"name": "tool"}}]}
    body = {"metadata": {"name": "whole", "annotations": HERMETIC}, "spec": pipeline}
    await kube.create(
        PIPELINES.path(namespace), {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", **body}
    )
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, ref("whole"))
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, made_pod)
        frozen = run["status"]["extraFields"]["spec"]
        assert frozen["annotations"] == HERMETIC  # the Pipeline's: every task hermetic
        assert frozen["tasks"]["t"]["metadata"] == {"annotations": {PRE_STEPS: "fetch"}}
        pod_name = run["status"]["extraFields"]["pod"]
        pod = await wait_for(kube, PODS, namespace, pod_name, lambda o: True)
        by_name = {c["name"]: c for c in pod["spec"]["containers"]}
        assert "TEKTON_HERMETIC" not in env(by_name["step-t-fetch"])  # the pre step
        assert env(by_name["step-t-build"])["TEKTON_HERMETIC"] == "1"
        check = f"{CHECK_CONTAINER}-0"
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["prepare", check]
        refused = container(check, {"terminated": {"exitCode": 1, "reason": "Error"}})
        done_init = container("prepare", {"terminated": {"exitCode": 0, "reason": "Completed"}})
        await kubelet(kube, namespace, pod_name, [], init=[done_init, refused])
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("False", "HermeticUnavailable")
    message = run["status"]["conditions"][0]["message"]
    assert "no step ran, none ran with the network instead" in message
