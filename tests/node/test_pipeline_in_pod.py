"""Pipeline-in-Pod on the real node: Pods whose containers really run.

A differential harness: each pipeline of the corpus runs twice on the same node, by
Tekton's own PipelineRun controller (one Pod per task) and by Pipeline-in-Pod (one Pod),
and both must agree on the outcome, each task's state and the pipeline's results. Then
what only one Pod shows: one Pod made, sidecars stopped, cancellation, fast failures.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient, Resource
from customtask_sdk.testing import condition, wait_deleted, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.node import Node
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import PODS, PipelineInPod, custom_run

PIPELINE_RUNS = Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun")
TASK_RUNS = Resource("tekton.dev", "v1", "taskruns", "TaskRun")


def sh(script: str, **fields: Any) -> JSON:
    return {"image": "busybox", "script": script, **fields}


def t(name: str, *steps: JSON, **fields: Any) -> JSON:
    spec: JSON = {"steps": list(steps) or [sh("true")]}
    spec.update(fields.pop("spec", {}))
    return {"name": name, "taskSpec": spec, **fields}


def producer(name: str, value: str, **fields: Any) -> JSON:
    spec = {"results": [{"name": "out"}], **fields.pop("spec", {})}
    return t(name, sh(f"printf '{value}' > $(results.out.path)"), spec=spec, **fields)


def uses(name: str, source: str, **fields: Any) -> JSON:
    return t(
        name,
        sh('printf "got-$(params.v)" > $(results.out.path)'),
        params=[{"name": "v", "value": f"$(tasks.{source}.results.out)"}],
        spec={"params": [{"name": "v"}], "results": [{"name": "out"}]},
        **fields,
    )


def result(task: str) -> JSON:
    return {"name": f"r-{task}", "value": f"$(tasks.{task}.results.out)"}


#: The corpus: name -> pipelineSpec. Each is run by Tekton and by Pipeline-in-Pod.
CORPUS: dict[str, JSON] = {
    "one-task": {"tasks": [producer("a", "x")], "results": [result("a")]},
    "sequential-3": {
        "tasks": [producer("a", "1"), uses("b", "a"), uses("c", "b")],
        "results": [result("c")],
    },
    "run-after": {"tasks": [t("a"), t("b", runAfter=["a"]), t("c", runAfter=["b"])]},
    "parallel-5": {
        "tasks": [producer(f"p{i}", str(i)) for i in range(5)],
        "results": [result("p3")],
    },
    "fan-out-fan-in": {
        "tasks": [
            producer("root", "r"),
            uses("left", "root"),
            uses("right", "root"),
            t(
                "join",
                sh('printf "$(params.l)+$(params.r)" > $(results.out.path)'),
                params=[
                    {"name": "l", "value": "$(tasks.left.results.out)"},
                    {"name": "r", "value": "$(tasks.right.results.out)"},
                ],
                spec={"params": [{"name": "l"}, {"name": "r"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [result("join")],
    },
    "params-string-array-object": {
        "params": [
            {"name": "s", "default": "str"},
            {"name": "a", "type": "array", "default": ["x", "y"]},
            {"name": "o", "type": "object", "properties": {"k": {}}, "default": {"k": "v"}},
        ],
        "tasks": [
            t(
                "p",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s " "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.s)", "$(params.a[*])", "$(params.o.k)", "$(params.a[1])"],
                },
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("p")],
    },
    # Tekton substitutes results in params and when only: they come through params.
    "result-in-args-and-env": {
        "tasks": [
            producer("a", "val"),
            t(
                "b",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "$1-$E" > $(results.out.path)', "--"],
                    "args": ["$(params.v)"],
                    "env": [{"name": "E", "value": "$(params.v)"}],
                },
                params=[{"name": "v", "value": "$(tasks.a.results.out)"}],
                spec={"params": [{"name": "v"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [result("b")],
    },
    "array-result": {
        "tasks": [
            t(
                "a",
                sh('printf \'["p","q"]\' > $(results.out.path)'),
                spec={"results": [{"name": "out", "type": "array"}]},
            ),
            t(
                "b",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s," "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.v[*])"],
                },
                params=[{"name": "v", "value": ["$(tasks.a.results.out[*])"]}],
                spec={
                    "params": [{"name": "v", "type": "array"}],
                    "results": [{"name": "out"}],
                },
            ),
        ],
        "results": [result("b")],
    },
    "fails": {"tasks": [t("a", sh("exit 2"))]},
    "failure-skips-dependants": {
        "tasks": [t("a", sh("exit 1")), t("b", runAfter=["a"]), t("c", runAfter=["b"])]
    },
    "finally-after-success": {
        "tasks": [producer("a", "x")],
        "finally": [
            t(
                "f",
                sh('printf "$(params.s)" > $(results.out.path)'),
                params=[{"name": "s", "value": "$(tasks.status)"}],
                spec={"params": [{"name": "s"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "finally-after-failure": {
        "tasks": [t("a", sh("exit 1")), t("b", runAfter=["a"])],
        "finally": [
            t(
                "f",
                sh('printf "$(params.s)/$(params.a)/$(params.b)" > $(results.out.path)'),
                params=[
                    {"name": "s", "value": "$(tasks.status)"},
                    {"name": "a", "value": "$(tasks.a.status)"},
                    {"name": "b", "value": "$(tasks.b.status)"},
                ],
                spec={
                    "params": [{"name": "s"}, {"name": "a"}, {"name": "b"}],
                    "results": [{"name": "out"}],
                },
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "finally-fails": {"tasks": [t("a")], "finally": [t("f", sh("exit 1"))]},
    "when-param-false": {
        "params": [{"name": "go", "default": "no"}],
        "tasks": [
            t("a", when=[{"input": "$(params.go)", "operator": "in", "values": ["yes"]}]),
            t("b", runAfter=["a"]),
        ],
    },
    "when-param-true": {
        "params": [{"name": "go", "default": "yes"}],
        "tasks": [
            producer(
                "a", "ran", when=[{"input": "$(params.go)", "operator": "in", "values": ["yes"]}]
            )
        ],
        "results": [result("a")],
    },
    "when-result": {
        "tasks": [
            producer("decide", "no"),
            t(
                "skipme",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "in", "values": ["yes"]}
                ],
            ),
            producer(
                "runme",
                "ran",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "notin", "values": ["yes"]}
                ],
            ),
        ],
        "results": [result("runme")],
    },
    "on-error-continue": {
        "tasks": [
            t(
                "a",
                sh("exit 3", onError="continue"),
                sh("printf after > $(results.out.path)"),
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    "step-timeout": {"tasks": [t("a", sh("sleep 60", timeout="2s"))]},
    "workspace-shared": {
        "workspaces": [{"name": "ws"}],
        "tasks": [
            t(
                "w",
                sh("echo data > $(workspaces.d.path)/f"),
                spec={"workspaces": [{"name": "d"}]},
                workspaces=[{"name": "d", "workspace": "ws"}],
            ),
            t(
                "r",
                sh("printf $(cat $(workspaces.d.path)/f) > $(results.out.path)"),
                runAfter=["w"],
                spec={"workspaces": [{"name": "d"}], "results": [{"name": "out"}]},
                workspaces=[{"name": "d", "workspace": "ws"}],
            ),
        ],
        "results": [result("r")],
    },
    "step-template-and-workdir": {
        "tasks": [
            t(
                "a",
                {"script": 'printf "$(pwd):$V" > $(results.out.path)', "workingDir": "/w/d"},
                spec={
                    "stepTemplate": {"image": "busybox", "env": [{"name": "V", "value": "tmpl"}]},
                    "results": [{"name": "out"}],
                },
            )
        ],
        "results": [result("a")],
    },
    "sidecar": {
        "tasks": [
            producer(
                "a",
                "x",
                spec={
                    "sidecars": [
                        {
                            "name": "helper",
                            "image": "busybox",
                            "command": [
                                "sh",
                                "-c",
                                "trap 'exit 0' TERM; while true; do sleep 1; done",
                            ],
                        }
                    ],
                },
            )
        ],
        "results": [result("a")],
    },
    "when-result-skips-users": {
        "tasks": [
            producer("decide", "no"),
            producer(
                "maybe",
                "made",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "in", "values": ["yes"]}
                ],
            ),
            uses("user", "maybe"),
            t("after", runAfter=["maybe"]),
        ],
        "finally": [
            t(
                "f",
                sh('printf "$(params.m)" > $(results.out.path)'),
                params=[{"name": "m", "value": "$(tasks.maybe.status)"}],
                spec={"params": [{"name": "m"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "step-results": {
        "tasks": [
            t(
                "a",
                sh("printf hi > $(step.results.w.path)", name="make", results=[{"name": "w"}]),
                {
                    "name": "use",
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "$1" > $(results.out.path)', "--"],
                    "args": ["$(steps.make.results.w)"],
                },
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    "context": {
        "tasks": [
            t(
                "a",
                sh("printf '$(params.r)' > $(results.out.path)"),
                params=[{"name": "r", "value": "$(context.pipelineTask.retries)"}],
                spec={"params": [{"name": "r"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    # Tekton aggregates a matrix's string results into arrays, in TaskRun-name order
    # (m-10 before m-2), leaving out instances without the result (m-3).
    "matrix-results": {
        "tasks": [
            t(
                "m",
                sh(
                    'if [ "$(params.n)" != 3 ]; then '
                    "printf 'v$(params.n)-$(params.x)' > $(results.out.path); fi"
                ),
                matrix={
                    "params": [{"name": "n", "value": [str(i) for i in range(11)]}],
                    "include": [{"name": "x", "params": [{"name": "x", "value": "i"}]}],
                },
                spec={"params": [{"name": "n"}, {"name": "x"}], "results": [{"name": "out"}]},
            ),
            t(
                "use",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s," "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.all[*])", "$(params.count)", "$(params.made)"],
                },
                runAfter=["m"],
                params=[
                    {"name": "all", "value": "$(tasks.m.results.out[*])"},
                    {"name": "count", "value": "$(tasks.m.matrix.length)"},
                    {"name": "made", "value": "$(tasks.m.matrix.out.length)"},
                ],
                spec={
                    "params": [
                        {"name": "all", "type": "array"},
                        {"name": "count"},
                        {"name": "made"},
                    ],
                    "results": [{"name": "out"}],
                },
            ),
        ],
        # (A pipeline result of $(tasks.m.results.out[*]) is published here as documented;
        # Tekton v1.15.1 fails such a PipelineRun, CouldntGetPipelineResult: its results
        # cache of a matrix is only filled when a later task reads it in that reconcile.)
        "results": [result("use")],
    },
    "matrix-in-finally": {
        "tasks": [producer("a", "x")],
        "finally": [
            t(
                "f",
                sh("printf '$(params.p)-$(params.a)' > $(results.out.path)"),
                params=[{"name": "a", "value": "$(tasks.a.results.out)"}],
                matrix={"params": [{"name": "p", "value": ["1", "2", "3"]}]},
                spec={"params": [{"name": "p"}, {"name": "a"}], "results": [{"name": "out"}]},
            )
        ],
    },
    "matrix-failure": {
        "tasks": [
            t(
                "m",
                sh("exit $(params.code)"),
                matrix={"params": [{"name": "code", "value": ["0", "1"]}]},
                spec={"params": [{"name": "code"}]},
            ),
            t("after", runAfter=["m"]),
        ],
    },
}


@pytest.fixture
async def pip(node: Node, node_namespace: str) -> AsyncIterator[PipelineInPod]:
    images = node.tekton_images
    reconciler = PipelineInPod(
        images=Images(images["entrypoint-image"], images["nop-image"], images["shell-image"])
    )
    async with running(node.client, reconciler, namespace=node_namespace):
        yield reconciler


def done(obj: JSON) -> bool:
    found = condition(obj)
    return found is not None and found.get("status") in ("True", "False")


async def tekton_run(
    kube: KubeClient, namespace: str, spec: JSON
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Run ``spec`` as a PipelineRun: outcome, per-task states, results."""
    name = f"pr-{uuid.uuid4().hex[:6]}"
    # Tekton's tasks share a workspace across Pods through a volume: a claim per run (the
    # node provisions hostPath volumes); Pipeline-in-Pod's default is an emptyDir.
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    bound = [
        {"name": ws["name"], "volumeClaimTemplate": {"spec": claim}}
        for ws in spec.get("workspaces") or []
    ]
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": spec, "workspaces": bound},
    }
    await kube.create(PIPELINE_RUNS.path(namespace), body)
    run = await wait_for(kube, PIPELINE_RUNS, namespace, name, done, timeout=180)
    states: dict[str, str] = {}
    for child in run["status"].get("childReferences") or []:
        task_run = await kube.get(TASK_RUNS.path(namespace, child["name"]))
        cond = condition(task_run) or {}
        task = child["name"].removeprefix(f"{name}-")  # a matrix's: <task>-<i>
        if cond.get("status") == "True":
            states[task] = "succeeded"
        elif cond.get("reason") == "TaskRunTimeout":
            states[task] = "timedOut"
        else:
            states[task] = "failed"
    for skipped in run["status"].get("skippedTasks") or []:
        states[skipped["name"]] = "skipped"
    results = {r["name"]: r["value"] for r in run["status"].get("results") or []}
    return (condition(run) or {}).get("status", ""), states, results


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
