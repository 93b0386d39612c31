"""The wait from a custom task's completion to its dependants starting inside the Pod.

    sudo PYTHONPATH=. .venv/bin/python bench/pip_custom_tasks.py [--runs 5] [--pairs 10]
        [--delegated]

On the real node, Pipeline-in-Pod runs ``--runs`` pipelines one after another, each a
chain of ``--pairs`` (a Wait custom task of 0s, then an in-Pod task that depends on it),
as PipelineInPod CustomRuns or (``--delegated``) as PipelineRuns with ``managedBy``.
For each pair it takes the CustomRun's ``completionTime`` (written by the Wait
controller, milliseconds) and the in-Pod task's ``startTime`` (the moment Tekton's
entrypoint ran its command, milliseconds, from the step's termination message) and prints
their difference's p50, p90, p99 and max, split at the moment the Pod's annotation is
seen (a watch of the Pod in this process). The path in between: Pipeline-in-Pod sees the
CustomRun end (watch), patches the Pod's annotations, the kubelet rewrites the
downward-API volume, the stand-in (polling every 0.1 s) ends, and the dependant's
entrypoint (polling its wait files every 1 s) starts it. Figures only: nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient
from customtask_sdk.reconciler.run import parse_time
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import PODS, PipelineInPod, custom_run
from examples.pipeline_in_pod.customtasks import GROUP
from examples.pipeline_in_pod.delegated import MANAGED_BY, DelegatedPipelineRun
from examples.wait.controller import Wait

NAMESPACE = "bench-pip-custom"


def chain(pairs: int) -> JSON:
    """``c0 → t0 → c1 → t1 ...``: each ``c`` a 0 s Wait, each ``t`` a trivial step."""
    tasks: list[JSON] = []
    for i in range(pairs):
        custom: JSON = {
            "name": f"c{i}",
            "taskRef": {"apiVersion": Wait.api_version, "kind": "Wait"},
            "params": [{"name": "duration", "value": "0s"}],
        }
        if i:
            custom["runAfter"] = [f"t{i - 1}"]
        step = {
            "name": "s",
            "image": "busybox",
            "imagePullPolicy": "IfNotPresent",
            "command": ["true"],
        }
        tasks += [custom, {"name": f"t{i}", "runAfter": [f"c{i}"], "taskSpec": {"steps": [step]}}]
    return {"tasks": tasks}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def start(kube: KubeClient, name: str, pairs: int, delegated: bool) -> None:
    """A PipelineInPod CustomRun of the chain, or a PipelineRun with ``managedBy``."""
    if not delegated:
        body = custom_run(name, {"pipelineSpec": chain(pairs)})
        await kube.create(CUSTOM_RUNS.path(NAMESPACE), body)
        return
    spec = {"pipelineSpec": chain(pairs), "managedBy": MANAGED_BY}
    body = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": name}}
    await kube.create(PIPELINE_RUNS.path(NAMESPACE), {**body, "spec": spec})


async def started_at(kube: KubeClient, run: JSON, task: str, delegated: bool) -> float:
    """When the entrypoint started ``task``'s step (its termination message)."""
    if not delegated:
        tasks = {t["name"]: t for t in run["status"]["extraFields"]["tasks"]}
        return parse_time(tasks[task]["startTime"]).timestamp()
    name = f"{run['metadata']['name']}-{task}"
    task_run = await kube.get(TASK_RUNS.path(NAMESPACE, name))
    return parse_time(task_run["status"]["steps"][0]["terminated"]["startedAt"]).timestamp()


async def one_run(kube: KubeClient, pairs: int, delegated: bool) -> list[tuple[float, float]]:
    """For each pair: seconds from the custom task's completion to the Pod's annotation
    (the controller's part), and from then to its dependant's start (the kubelet's
    downward-API refresh, the stand-in, the dependant's entrypoint)."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    annotated: dict[str, float] = {}  # task -> wall time the Pod's annotation was seen

    def seen(pod: JSON) -> bool:
        annotations = pod["metadata"].get("annotations") or {}
        for i in range(pairs):
            if f"{GROUP}/c{i}" in annotations:
                annotated.setdefault(f"c{i}", time.time())
        return len(annotated) == pairs

    watcher = asyncio.create_task(
        wait_for(kube, PODS, NAMESPACE, f"{name}-pod", seen, timeout=60 + 20 * pairs)
    )
    await start(kube, name, pairs, delegated)

    def done(obj: JSON) -> bool:
        return (condition(obj) or {}).get("status") in ("True", "False")

    kind = PIPELINE_RUNS if delegated else CUSTOM_RUNS
    run = await wait_for(kube, kind, NAMESPACE, name, done, timeout=60 + 20 * pairs)
    await watcher
    if (condition(run) or {}).get("status") != "True":
        raise SystemExit(f"run {name} failed: {condition(run)}")
    gaps = []
    for i in range(pairs):  # either front door names the CustomRun <run>-<task>
        child = await kube.get(CUSTOM_RUNS.path(NAMESPACE, f"{name}-c{i}"))
        ended = parse_time(child["status"]["completionTime"]).timestamp()
        started = await started_at(kube, run, f"t{i}", delegated)
        gaps.append((annotated[f"c{i}"] - ended, started - annotated[f"c{i}"]))
    return gaps


async def on_node(runs: int, pairs: int, delegated: bool) -> None:
    from customtask_sdk.testing.node import Node  # root only

    async with Node() as node:
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        images = Images.served(node.tekton_images)
        pip = DelegatedPipelineRun(images=images) if delegated else PipelineInPod(images=images)
        async with running(node.client, pip, Wait(), namespace=NAMESPACE):
            await one_run(node.client, 1, delegated)  # warm: images pulled, caches filled
            parts: list[tuple[float, float]] = []
            for index in range(runs):
                got = await one_run(node.client, pairs, delegated)
                print(f"run {index + 1}: " + " ".join(f"{a + b:.2f}" for a, b in got), flush=True)
                parts += got
    for label, values in (
        ("custom task completion -> dependant started in the Pod", [a + b for a, b in parts]),
        ("  of which completion -> annotation on the Pod (controller)", [a for a, _ in parts]),
        ("  of which annotation -> dependant started (kubelet, Pod)", [b for _, b in parts]),
    ):
        print(
            f"{label}, n={len(values)}: p50 {statistics.median(values):.2f} s, "
            f"p90 {percentile(values, 0.9):.2f} s, p99 {percentile(values, 0.99):.2f} s, "
            f"min {min(values):.2f} s, max {max(values):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--delegated", action="store_true", help="PipelineRuns with managedBy")
    args = parser.parse_args()
    asyncio.run(on_node(args.runs, args.pairs, args.delegated))


if __name__ == "__main__":
    main()
