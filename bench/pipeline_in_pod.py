"""Figures for Pipeline-in-Pod: compile time, and Tekton's PipelineRun vs one Pod on the node.

    .venv/bin/python bench/pipeline_in_pod.py --compile-only     # no node, no root
    sudo .venv/bin/python bench/pipeline_in_pod.py [--trials 3]  # the real node too

Prints, side by side on the same node in one run: create -> Succeeded for pipelines of 1, 5
and 10 sequential trivial tasks, of 5 parallel ones, and of 3 sequential tasks where the
first writes 200 MB to a workspace and the last reads it (Tekton: a claim on a static
hostPath PersistentVolume the bench makes; Pipeline-in-Pod: the Pod's own emptyDir), run by
Tekton's PipelineRun controller (one Pod per task) and by Pipeline-in-Pod (one Pod), with
the Pods each made (median and range over the trials); the Pipeline-in-Pod controller's
CPU per run (a process of its own); its RSS with 1,000 finished 10-task runs cached; then
the compile time of a 100-task pipeline. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, KubeClient, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import controller_process
from customtask_sdk.testing.processes import ManagedProcess, cpu_seconds, free_port, rss_mb
from examples.pipeline_in_pod.compiler import Images, RunContext, compile_pipeline
from examples.pipeline_in_pod.controller import CLAIMS, PODS, custom_run
from examples.pipeline_in_pod.model import PipelineSpec
from examples.pipeline_in_pod.status import read_pod

IMAGES = Images("ep", "nop", "sh")
VOLUMES = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
NAMESPACE = "bench-pip"

if TYPE_CHECKING:
    from customtask_sdk.testing.node import Node


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
    pipeline of ``count`` tasks, and MiB that ``runs`` such statuses would take in memory
    were they cached whole (decoded JSON, measured with tracemalloc)."""
    text = json.dumps(finished_status(count)["extraFields"])
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


async def tekton(kube: KubeClient, spec: JSON, workspaces: list[JSON] | None = None) -> float:
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": f"pr-{uuid.uuid4().hex[:6]}"},
        "spec": {"pipelineSpec": spec, "workspaces": workspaces or []},
    }
    return await timed(kube, PIPELINE_RUNS, body)


async def in_pod(kube: KubeClient, spec: JSON) -> float:
    body = custom_run(f"pip-{uuid.uuid4().hex[:6]}", {"pipelineSpec": spec})
    return await timed(kube, CUSTOM_RUNS, body)


async def pods(kube: KubeClient) -> set[str]:
    """The Pods there are now (a run's: those there after it and not before it)."""
    return {p["metadata"]["name"] for p in (await kube.get(PODS.path(NAMESPACE)))["items"]}


def big_workspace() -> JSON:
    """The first of 3 sequential tasks writes 200 MB to a workspace; the last reads it."""
    bound = [{"name": "w", "workspace": "data"}]

    def task(name: str, script: str, after: str | None) -> JSON:
        spec = {"workspaces": [{"name": "w"}], "steps": [{"image": "busybox", "script": script}]}
        return {
            "name": name,
            "workspaces": bound,
            "taskSpec": spec,
            **({"runAfter": [after]} if after else {}),
        }

    blob = "$(workspaces.w.path)/blob"
    return {
        "workspaces": [{"name": "data"}],
        "tasks": [
            task("write", f"dd if=/dev/zero of={blob} bs=1M count=200 2>/dev/null", None),
            task("middle", "true", "write"),
            task("read", f'test "$(wc -c < {blob})" = {200 * 2**20}', "middle"),
        ],
    }


async def static_claim(kube: KubeClient, folder: Path) -> tuple[str, list[JSON]]:
    """A claim bound to a hostPath PersistentVolume at ``folder`` (no provisioner needed):
    the PersistentVolume's name, and Tekton's workspace binding to the claim."""
    name = f"bench-pip-{uuid.uuid4().hex[:6]}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "bench-static",
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "bench-static",
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    await kube.create(VOLUMES.path(), volume)
    await kube.create(CLAIMS.path(NAMESPACE), claim)
    return name, [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]


def controller(node: Node, namespace: str, port: int) -> ManagedProcess:
    """The Pipeline-in-Pod controller as a process of its own (its CPU and RSS alone)."""
    images = node.tekton_images
    os.environ.update(  # inherited by the process
        PIP_ENTRYPOINT_IMAGE=images["entrypoint-image"],
        PIP_NOP_IMAGE=images["nop-image"],
        PIP_SHELL_IMAGE=images["shell-image"],
    )
    return controller_process(
        node.control_plane,
        "examples.pipeline_in_pod.controller:PipelineInPod",
        f"--health-port={port}",
        "--no-events",
        namespace=namespace,
        name=f"pipeline-in-pod-{namespace}",
    )


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


async def side_by_side(node: Node, trials: int) -> None:
    kube = node.client
    cases: list[tuple[str, JSON, bool]] = [
        ("1 task", sequential(1), False),
        ("5 sequential", sequential(5), False),
        ("10 sequential", sequential(10), False),
        ("5 parallel", parallel(5), False),
        ("200 MB, 3 seq", big_workspace(), True),
    ]
    folder = Path(tempfile.mkdtemp(prefix="bench-pip-pv-"))
    volume, bound = await static_claim(kube, folder)
    proc = controller(node, NAMESPACE, free_port())
    await proc.start()
    assert proc.pid is not None
    print(f"{trials} trials; seconds: median (range)")
    print(
        f"{'pipeline':<14} {'Tekton PipelineRun':>20} {'pods':>4} "
        f"{'Pipeline-in-Pod':>20} {'pods':>4} {'ratio':>6} {'ctrl CPU/run':>12}"
    )
    try:
        await in_pod(kube, sequential(1))  # warm: images pulled, caches filled
        await tekton(kube, sequential(1))
        for label, spec, needs_claim in cases:
            ours, theirs, cpu = [], [], []
            made_ours = made_theirs = 0
            for _ in range(trials):
                before = await pods(kube)
                theirs.append(await tekton(kube, spec, bound if needs_claim else None))
                middle = await pods(kube)
                used = cpu_seconds(proc.pid)
                ours.append(await in_pod(kube, spec))
                cpu.append(cpu_seconds(proc.pid) - used)
                made_theirs, made_ours = len(middle - before), len(await pods(kube) - middle)
            ratio = statistics.median(theirs) / statistics.median(ours)
            print(
                f"{label:<14} {spread(theirs):>20} {made_theirs:>4} {spread(ours):>20} "
                f"{made_ours:>4} {ratio:>5.1f}x {statistics.median(cpu) * 1000:>9.0f} ms"
            )
        print("(the 200 MB case: Tekton's affinity assistant Pod is counted among its Pods)")
    finally:
        await proc.stop()
        await kube.delete(PIPELINE_RUNS.path(NAMESPACE))
        await kube.delete(CLAIMS.path(NAMESPACE, volume))
        await kube.delete(VOLUMES.path(None, volume))
        shutil.rmtree(folder, ignore_errors=True)


def finished_status(count: int) -> JSON:
    """The status of a finished run of ``count`` sequential tasks, as the controller wrote it."""
    spec = PipelineSpec.model_validate(sequential(count))
    specs = {t.name: t.taskSpec for t in spec.tasks if t.taskSpec is not None}
    plan = compile_pipeline(spec, specs, {}, [], RunContext("r", "ns", "u", "p", "pr"), IMAGES)
    started = [{"key": "StartedAt", "value": "2026-01-01T00:00:00.000Z", "type": 3}]
    ended = {
        "exitCode": 0,
        "message": json.dumps(started),
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z",
    }
    statuses = [
        {"name": c["name"], "state": {"terminated": ended}} for c in plan.pod_spec["containers"]
    ]
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"containerStatuses": statuses}}
    cond = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Succeeded",
        "message": "Tasks Completed: 10 (Failed: 0), Skipped: 0",
        "lastTransitionTime": "2026-01-01T00:00:02Z",
    }
    return {
        "conditions": [cond],
        "startTime": "2026-01-01T00:00:00Z",
        "completionTime": "2026-01-01T00:00:02Z",
        "extraFields": {"pod": "p", "tasks": read_pod(plan, pod).tasks},
    }


async def rss_with(node: Node, namespace: str, finished: int) -> float:
    """The controller's RSS (MB) once it has synced ``namespace`` holding ``finished`` runs:
    a probe run (invalid input: no Pod) created after it started, seen finished, is the
    barrier."""
    kube = node.client
    proc = controller(node, namespace, free_port())
    await proc.start()
    assert proc.pid is not None
    try:
        probe = custom_run(f"probe-{uuid.uuid4().hex[:6]}", {})
        await kube.create(CUSTOM_RUNS.path(namespace), probe)
        await wait_for(kube, CUSTOM_RUNS, namespace, probe["metadata"]["name"], done, timeout=120)
        return rss_mb(proc.pid)
    finally:
        await proc.stop()


async def memory(node: Node, runs: int) -> None:
    kube = node.client
    empty, full = "bench-pip-empty", "bench-pip-full"
    for namespace in (empty, full):
        await node.control_plane.ensure_namespace(namespace, {})
    idle = await rss_with(node, empty, 0)
    status = finished_status(10)
    semaphore = asyncio.Semaphore(32)

    async def finished_run(index: int) -> None:
        async with semaphore:
            body = custom_run(f"done-{index:04d}", {"pipelineSpec": sequential(10)})
            await kube.create(CUSTOM_RUNS.path(full), body)
            path = CUSTOM_RUNS.path(full, body["metadata"]["name"], "status")
            await kube.patch(path, {"status": status})

    await asyncio.gather(*(finished_run(i) for i in range(runs)))
    cached = await rss_with(node, full, runs)
    print(
        f"controller RSS: {idle:.0f} MB idle, {cached:.0f} MB with {runs:,} finished 10-task runs "
        f"cached ({len(json.dumps(status)) / 1024:.1f} KiB of status each; the cache keeps a "
        "finished run's key and outcome only)"
    )
    for namespace in (empty, full):
        await kube.delete(CUSTOM_RUNS.path(namespace))


async def on_node(trials: int, runs: int) -> None:
    from customtask_sdk.testing.node import Node  # the node helper's, root only

    async with Node() as node:
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        await side_by_side(node, trials)
        await memory(node, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--finished-runs", type=int, default=1000)
    parser.add_argument("--compile-only", action="store_true")
    args = parser.parse_args()
    for count in (10, 100):
        print(f"compile {count:>3} tasks: {compile_time(count) * 1000:.1f} ms (median of 20)")
    for count in (10, 100):
        size, mib = status_size(count)
        print(
            f"status of a {count:>3}-task run: {size / 1024:.1f} KiB; "
            f"1,000 held whole: {mib:.1f} MiB (decoded)"
        )
    if not args.compile_only:
        asyncio.run(on_node(args.trials, args.finished_runs))


if __name__ == "__main__":
    main()
