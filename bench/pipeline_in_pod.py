"""Figures for Pipeline-in-Pod: compile time, and Tekton's PipelineRun vs one Pod on the node.

    .venv/bin/python bench/pipeline_in_pod.py --compile-only     # no node, no root
    sudo .venv/bin/python bench/pipeline_in_pod.py [--trials 3]  # the real node too

Prints, side by side on the same node in one run: create -> Succeeded for pipelines of 1, 5
and 10 sequential trivial tasks and of 5 parallel ones, run by Tekton's PipelineRun
controller (one Pod per task) and by Pipeline-in-Pod (one Pod), with the Pods each made;
then the compile time of a 100-task pipeline. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
import uuid
from typing import Any

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running
from examples.pipeline_in_pod.compiler import Images, RunContext, compile_pipeline
from examples.pipeline_in_pod.controller import PODS, PipelineInPod, custom_run
from examples.pipeline_in_pod.model import PipelineSpec
from examples.pipeline_in_pod.status import read_pod

IMAGES = Images("ep", "nop", "sh")
PIPELINE_RUNS = Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun")
NAMESPACE = "bench-pip"


def trivial(name: str, after: str | None) -> JSON:
    task: JSON = {
        "name": name,
        "taskSpec": {"steps": [{"name": "s", "image": "busybox", "command": ["true"]}]},
    }
    if after:
        task["runAfter"] = [after]
    return task


def sequential(count: int) -> JSON:
    return {"tasks": [trivial(f"t{i}", f"t{i - 1}" if i else None) for i in range(count)]}


def parallel(count: int) -> JSON:
    return {"tasks": [trivial(f"t{i}", None) for i in range(count)]}


def compile_time(count: int, trials: int = 20) -> float:
    """Median seconds to compile a pipeline of ``count`` tasks (a chain with fan-outs)."""
    tasks = [
        {
            **trivial(f"t{i}", f"t{(i - 1) // 2}" if i else None),
            "taskSpec": {
                "params": [{"name": "p", "default": "x"}],
                "steps": [
                    {"image": "busybox", "script": "echo $(params.p) > /dev/null"},
                    {"image": "busybox", "command": ["echo", "$(params.p)"]},
                ],
            },
        }
        for i in range(count)
    ]
    spec = PipelineSpec.model_validate({"tasks": tasks})
    specs = {t.name: t.taskSpec for t in spec.tasks if t.taskSpec is not None}
    ctx = RunContext("r", "ns", "u", "p", "pr")
    times = []
    for _ in range(trials):
        started = time.perf_counter()
        compile_pipeline(spec, specs, {}, [], ctx, IMAGES)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def status_size(count: int, runs: int = 1000) -> tuple[int, float]:
    """Bytes of one finished run's ``status.extraFields`` (its per-task status) for a
    pipeline of ``count`` tasks, and MiB that ``runs`` such statuses take in memory as
    the informer caches them (decoded JSON, measured with tracemalloc)."""
    pipeline = sequential(count)
    spec = PipelineSpec.model_validate(pipeline)
    specs = {t.name: t.taskSpec for t in spec.tasks if t.taskSpec is not None}
    plan = compile_pipeline(spec, specs, {}, [], RunContext("r", "ns", "u", "p", "pr"), IMAGES)
    ended = {
        "exitCode": 0,
        "message": json.dumps(
            [{"key": "StartedAt", "value": "2026-01-01T00:00:00.000Z", "type": 3}]
        ),
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z",
    }
    statuses = [
        {"name": c["name"], "state": {"terminated": ended}} for c in plan.pod_spec["containers"]
    ]
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"containerStatuses": statuses}}
    view = read_pod(plan, pod)
    fields = {"pod": "p", "tasks": view.tasks}  # a finished run keeps no frozen spec
    text = json.dumps(fields)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [json.loads(text) for _ in range(runs)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return len(text), used / 2**20


def done(obj: JSON) -> bool:
    return (condition(obj) or {}).get("status") in ("True", "False")


async def timed(kube: KubeClient, resource: Resource, body: JSON) -> float:
    """Seconds from creating ``body`` to its ``Succeeded=True``."""
    name = body["metadata"]["name"]
    started = time.monotonic()
    await kube.create(resource.path(NAMESPACE), body)
    run = await wait_for(kube, resource, NAMESPACE, name, done, timeout=600)
    assert (condition(run) or {}).get("status") == "True", run["status"]
    return time.monotonic() - started


async def tekton(kube: KubeClient, spec: JSON) -> float:
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": f"pr-{uuid.uuid4().hex[:6]}"},
        "spec": {"pipelineSpec": spec},
    }
    return await timed(kube, PIPELINE_RUNS, body)


async def in_pod(kube: KubeClient, spec: JSON) -> float:
    body = custom_run(f"pip-{uuid.uuid4().hex[:6]}", {"pipelineSpec": spec})
    return await timed(kube, CUSTOM_RUNS, body)


async def pods(kube: KubeClient) -> int:
    return len((await kube.get(PODS.path(NAMESPACE)))["items"])


async def on_node(trials: int) -> None:
    from customtask_sdk.testing.node import Node  # the node helper's, root only

    async with Node() as node:
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        images = node.tekton_images
        reconciler = PipelineInPod(
            images=Images(images["entrypoint-image"], images["nop-image"], images["shell-image"])
        )
        cases: list[tuple[str, Any]] = [
            ("1 sequential", sequential(1)),
            ("5 sequential", sequential(5)),
            ("10 sequential", sequential(10)),
            ("5 parallel", parallel(5)),
        ]
        print(
            f"{'pipeline':<14} {'Tekton s':>9} {'pods':>5} {'in Pod s':>9} {'pods':>5} {'ratio':>6}"
        )
        async with running(node.client, reconciler, namespace=NAMESPACE):
            await in_pod(node.client, sequential(1))  # warm: images pulled, caches filled
            await tekton(node.client, sequential(1))
            for label, spec in cases:
                ours, theirs = [], []
                made_ours = made_theirs = 0
                for _ in range(trials):
                    before = await pods(node.client)
                    theirs.append(await tekton(node.client, spec))
                    middle = await pods(node.client)
                    ours.append(await in_pod(node.client, spec))
                    made_theirs, made_ours = middle - before, await pods(node.client) - middle
                t, o = statistics.median(theirs), statistics.median(ours)
                row = f"{label:<14} {t:>9.2f} {made_theirs:>5} {o:>9.2f} {made_ours:>5}"
                print(f"{row} {t / o:>5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    for count in (10, 100):
        print(f"compile {count:>3} tasks: {compile_time(count) * 1000:.1f} ms (median of 20)")
    for count in (10, 100):
        size, mib = status_size(count)
        print(
            f"status of a {count:>3}-task run: {size / 1024:.1f} KiB; 1,000 cached: {mib:.1f} MiB"
        )
    if not args.compile_only:
        asyncio.run(on_node(args.trials))


if __name__ == "__main__":
    main()
