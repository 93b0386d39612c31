"""The wait from a custom task's completion to its dependants starting inside the Pod.

    sudo .venv/bin/python bench/pip_custom_tasks.py [--runs 5] [--pairs 10]

On the real node, Pipeline-in-Pod runs ``--runs`` pipelines one after another, each a
chain of ``--pairs`` (a Wait custom task of 0s, then an in-Pod task that depends on it).
For each pair it takes the CustomRun's ``completionTime`` (written by the Wait
controller, milliseconds) and the in-Pod task's ``startTime`` (the moment Tekton's
entrypoint ran its command, milliseconds, from the step's termination message) and prints
their difference's p50, p90, p99 and max. The path in between: Pipeline-in-Pod sees the
CustomRun end (watch), patches the Pod's annotations, the kubelet rewrites the
downward-API volume, the stand-in (polling every 0.1 s) ends, and the dependant's
entrypoint (polling its wait files every 1 s) starts it. Figures only: nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient
from customtask_sdk.reconciler.run import parse_time
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import PipelineInPod, custom_run
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
        step = {"name": "s", "image": "busybox", "command": ["true"]}
        tasks += [custom, {"name": f"t{i}", "runAfter": [f"c{i}"], "taskSpec": {"steps": [step]}}]
    return {"tasks": tasks}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_run(kube: KubeClient, pairs: int) -> list[float]:
    """Seconds from each custom task's completion to its dependant's start."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    await kube.create(CUSTOM_RUNS.path(NAMESPACE), custom_run(name, {"pipelineSpec": chain(pairs)}))

    def done(obj: JSON) -> bool:
        return (condition(obj) or {}).get("status") in ("True", "False")

    run = await wait_for(kube, CUSTOM_RUNS, NAMESPACE, name, done, timeout=60 + 20 * pairs)
    if (condition(run) or {}).get("status") != "True":
        raise SystemExit(f"run {name} failed: {condition(run)}")
    tasks = {t["name"]: t for t in run["status"]["extraFields"]["tasks"]}
    gaps = []
    for i in range(pairs):
        child = await kube.get(CUSTOM_RUNS.path(NAMESPACE, tasks[f"c{i}"]["customRun"]))
        ended = parse_time(child["status"]["completionTime"])
        started = parse_time(tasks[f"t{i}"]["startTime"])
        gaps.append((started - ended).total_seconds())
    return gaps


async def on_node(runs: int, pairs: int) -> None:
    from customtask_sdk.testing.node import Node  # root only

    async with Node() as node:
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        images = node.tekton_images
        pip = PipelineInPod(
            images=Images(images["entrypoint-image"], images["nop-image"], images["shell-image"])
        )
        async with running(node.client, pip, Wait(), namespace=NAMESPACE):
            await one_run(node.client, 1)  # warm: images pulled, caches filled
            gaps: list[float] = []
            for index in range(runs):
                got = await one_run(node.client, pairs)
                print(f"run {index + 1}: " + " ".join(f"{g:.2f}" for g in got), flush=True)
                gaps += got
    print(
        f"custom task completion -> dependant started in the Pod, n={len(gaps)}: "
        f"p50 {statistics.median(gaps):.2f} s, p90 {percentile(gaps, 0.9):.2f} s, "
        f"p99 {percentile(gaps, 0.99):.2f} s, max {max(gaps):.2f} s, min {min(gaps):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(on_node(args.runs, args.pairs))


if __name__ == "__main__":
    main()
