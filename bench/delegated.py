"""Figures for the delegated front door: the same PipelineRun run by Tekton and in one Pod.

    sudo PYTHONPATH=. .venv/bin/python bench/delegated.py [--trials 3]

On the real node, Tekton's controller beside ours: for pipelines of 1 and 5 sequential
trivial tasks and 5 parallel ones, create -> Succeeded of a plain PipelineRun run by
Tekton (one Pod per task) and of the same PipelineRun with ``spec.managedBy`` (one Pod),
and the status writes each made (of the PipelineRun and of its TaskRuns, counted from
watch events whose ``status`` changed). Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter

from pipeline_in_pod import parallel, sequential  # bench/pipeline_in_pod.py

from customtask_sdk.client import JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient, Resource
from customtask_sdk.testing import condition
from customtask_sdk.testing.controllers import running
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.delegated import MANAGED_BY, DelegatedPipelineRun
from examples.pipeline_in_pod.pods import PODS

NAMESPACE = "bench-delegated"


class StatusWrites:
    """Counts, per PipelineRun, the watch events that changed a status: its own and its
    TaskRuns' (found by the ``tekton.dev/pipelineRun`` label)."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.counts: Counter[str] = Counter()
        self.done: dict[str, asyncio.Event] = {}
        self._last: dict[str, object] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> StatusWrites:
        for resource in (PIPELINE_RUNS, TASK_RUNS):
            listed = await self.kube.get(resource.path(NAMESPACE))
            version = listed["metadata"]["resourceVersion"]
            self._tasks.append(asyncio.create_task(self._watch(resource, version)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self, resource: Resource, version: str) -> None:
        params = {"resourceVersion": version, "allowWatchBookmarks": "false"}
        async for event in self.kube.watch(resource.path(NAMESPACE), params):
            obj = event["object"]
            meta = obj["metadata"]
            key = f"{resource.kind}/{meta['name']}"
            status = obj.get("status")
            if event["type"] == "MODIFIED" and status and status != self._last.get(key):
                run = (meta.get("labels") or {}).get("tekton.dev/pipelineRun", meta["name"])
                self.counts[run] += 1
            self._last[key] = status
            if resource == PIPELINE_RUNS and (condition(obj) or {}).get("status") == "True":
                self.done.setdefault(meta["name"], asyncio.Event()).set()

    async def run(self, spec: JSON, managed_by: str | None) -> tuple[float, int]:
        """Seconds from create to ``Succeeded=True``, and the status writes (once settled)."""
        name = f"pr-{uuid.uuid4().hex[:6]}"
        body: JSON = {
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": name},
            "spec": {"pipelineSpec": spec, **({"managedBy": managed_by} if managed_by else {})},
        }
        finished = self.done.setdefault(name, asyncio.Event())
        started = time.monotonic()
        await self.kube.create(PIPELINE_RUNS.path(NAMESPACE), body)
        await asyncio.wait_for(finished.wait(), 600)
        took = time.monotonic() - started
        await asyncio.sleep(3)  # writes after Succeeded (TaskRuns settling) count too
        return took, self.counts[name]


async def pods(kube: KubeClient) -> int:
    return len((await kube.get(PODS.path(NAMESPACE)))["items"])


async def on_node(trials: int) -> None:
    from customtask_sdk.testing.node import Node  # the node helper's, root only

    async with Node() as node:
        kube = node.client
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        reconciler = DelegatedPipelineRun(images=Images.served(node.tekton_images))
        cases = [
            ("1 task", sequential(1)),
            ("5 sequential", sequential(5)),
            ("5 parallel", parallel(5)),
        ]
        head = f"{'pipeline':<13} {'Tekton s':>9} {'writes':>7} {'pods':>5}"
        print(f"{head} {'delegated s':>12} {'writes':>7} {'pods':>5} {'ratio':>6}")
        async with running(kube, reconciler, namespace=NAMESPACE), StatusWrites(kube) as w:
            await w.run(sequential(1), None)  # warm: images pulled, caches filled
            await w.run(sequential(1), MANAGED_BY)
            for label, spec in cases:
                theirs, ours, writes_t, writes_o = [], [], [], []
                made_t = made_o = 0
                for _ in range(trials):
                    before = await pods(kube)
                    took, writes = await w.run(spec, None)
                    theirs.append(took)
                    writes_t.append(writes)
                    middle = await pods(kube)
                    took, writes = await w.run(spec, MANAGED_BY)
                    ours.append(took)
                    writes_o.append(writes)
                    made_t, made_o = middle - before, await pods(kube) - middle
                t, o = statistics.median(theirs), statistics.median(ours)
                wt, wo = statistics.median(writes_t), statistics.median(writes_o)
                row = f"{label:<13} {t:>9.2f} {wt:>7.0f} {made_t:>5} {o:>12.2f} {wo:>7.0f}"
                print(f"{row} {made_o:>5} {t / o:>5.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(on_node(args.trials))


if __name__ == "__main__":
    main()
