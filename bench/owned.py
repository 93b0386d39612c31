"""Memory of a controller that owns Pods, in a cluster full of Pods that are not its own.

    .venv/bin/python bench/owned.py [--pods 10000] [--runs 100] [--concurrency 64]

One ControlPlane (etcd + kube-apiserver; no kubelet, so every Pod stays Pending). The
controllers of ``bench/owned_tasks.py`` run one at a time, each as its own process and
cluster-wide, on ``--runs`` CustomRuns of a namespace of their own; each run creates one
labelled Pod. Once every run reports its Pod ``Pending`` (its caches are synced and its
own Pods cached), the controller's CPU and time since start are taken, then its RSS 2 s
later and its peak RSS. The first controller runs before any other Pod exists (the
floor); then ``--pods`` unrelated Pods (a web Deployment's) are created, and every
controller runs again beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from owned_tasks import (
    API,
    PODS,
    SELECTED,
    AllPods,
    ProjectedPods,
    SelectedPods,
    SelectedProjectedPods,
)

from bench import cpu_seconds  # bench/bench.py
from customtask_sdk import Owned, Reconciler
from customtask_sdk.client import CUSTOM_RUNS, JSON, GoneError, KubeClient
from customtask_sdk.testing import ControlPlane
from customtask_sdk.testing.controllers import controller_process
from customtask_sdk.testing.processes import ManagedProcess

BENCH = Path(__file__).resolve().parent
#: What each controller class caches: ``owns`` as written in ``bench/owned_tasks.py``.
CONTROLLERS: dict[type[Reconciler[Any]], str] = {
    AllPods: "PODS",
    ProjectedPods: "Owned(PODS, fields=FIELDS)",
    SelectedPods: "Owned(PODS, labels=LABELS)",
    SelectedProjectedPods: "Owned(PODS, labels=LABELS, fields=FIELDS)",
}


def unrelated_pod(i: int) -> JSON:
    """A Pod of a web Deployment: what fills a busy cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"web-7d4b9c8f6d-{i:05d}",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6d",
                    "uid": "5b0e4a8e-8c1b-4d3e-9f6a-2a7c1e0d9b11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/team/web:1.42.0",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": f"SETTING_{k}", "value": f"value-{k}"} for k in range(5)],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                }
            ]
        },
    }


def pod_task_run(i: int) -> JSON:
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": f"run-{i:04d}"},
        "spec": {"customRef": {"apiVersion": API, "kind": "PodTask"}},
    }


async def create_all(
    kube: KubeClient, path: str, bodies: Iterable[JSON], concurrency: int
) -> float:
    """Create ``bodies`` with ``concurrency`` requests in flight; returns objects/s."""
    todo = iter(bodies)
    created = 0

    async def worker() -> None:
        nonlocal created
        for body in todo:  # shared: each body is taken by one worker
            await kube.create(path, body)
            created += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return created / (time.monotonic() - started)


def message(obj: JSON) -> str | None:
    conditions = (obj.get("status") or {}).get("conditions") or [{}]
    text: str | None = conditions[-1].get("message")
    return text


async def wait_messages(
    kube: KubeClient, namespace: str, count: int, text: str, process: ManagedProcess
) -> None:
    """Until ``count`` runs of ``namespace`` say ``text``: list, then watch."""
    path = CUSTOM_RUNS.path(namespace)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        process.check_alive()
        page = await kube.list_all(path)
        saying = {o["metadata"]["name"] for o in page["items"] if message(o) == text}
        params = {"resourceVersion": page["metadata"]["resourceVersion"], "timeoutSeconds": "10"}
        with contextlib.suppress(TimeoutError, GoneError):
            async for event in kube.watch(path, params):
                obj = event["object"]
                if message(obj) == text:
                    saying.add(obj["metadata"]["name"])
                else:
                    saying.discard(obj["metadata"]["name"])
                if len(saying) >= count:
                    return
        if len(saying) >= count:
            return
    raise TimeoutError(f"{namespace}: fewer than {count} runs said {text!r}")


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process, in MB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss, peak = (int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, peak


async def measure(
    cp: ControlPlane, task: type[Reconciler[Any]], namespace: str, runs: int
) -> dict[str, float]:
    """Run controller ``task`` on ``runs`` fresh runs until each reports its Pod Pending."""
    kube = cp.client
    await cp.ensure_namespace(namespace)
    await create_all(kube, CUSTOM_RUNS.path(namespace), map(pod_task_run, range(runs)), 32)
    process = controller_process(
        cp,
        f"owned_tasks:{task.__name__}",
        "--workers=16",
        "--no-events",
        "--log-level=WARNING",
        app_dir=BENCH,
        name=f"owned-{namespace}",
    )
    started = time.monotonic()
    await process.start()
    try:
        await wait_messages(kube, namespace, runs, "pod Pending", process)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(process.pid or 0)
        await asyncio.sleep(2)
        rss, peak = memory_mb(process.pid or 0)
    finally:
        await process.stop()
    kind = Owned.of(task.owns[0])
    selectors = {"labelSelector": kind.selector or "", "fieldSelector": kind.field_selector or ""}
    cached = len((await kube.list_all(PODS.path(), selectors))["items"])
    await kube.delete(CUSTOM_RUNS.path(namespace))
    await kube.delete(PODS.path(namespace))
    return {"rss": rss, "peak": peak, "cpu": cpu, "seconds": seconds, "cached": cached}


def cached_sizes(pod: JSON) -> tuple[int, int]:
    """Bytes of compact JSON the informer keeps of ``pod``: whole, and projected."""
    pod["metadata"].pop("managedFields", None)

    def size(obj: JSON) -> int:
        return len(json.dumps(obj, separators=(",", ":")).encode())

    return size(pod), size(SELECTED.project(pod))


async def main(args: argparse.Namespace) -> None:
    rows: list[tuple[type[Reconciler[Any]], str, dict[str, float]]] = []

    def report(task: type[Reconciler[Any]], pods: str, figures: dict[str, float]) -> None:
        rows.append((task, pods, figures))
        print(task.__name__, pods, {k: round(v, 1) for k, v in figures.items()}, flush=True)

    async with ControlPlane() as cp:
        print(f"control plane up in {cp.timings['total']:.1f}s", flush=True)
        report(AllPods, "0", await measure(cp, AllPods, "owned-floor", args.runs))
        await cp.ensure_namespace("owned-unrelated")
        rate = await create_all(
            cp.client,
            PODS.path("owned-unrelated"),
            map(unrelated_pod, range(args.pods)),
            args.concurrency,
        )
        sample = await cp.client.get(
            PODS.path("owned-unrelated", unrelated_pod(0)["metadata"]["name"])
        )
        whole, projected = cached_sizes(sample)
        print(
            f"{args.pods:,} unrelated Pods created at {rate:.0f}/s; each is {whole:,} bytes "
            f"cached whole, {projected:,} projected",
            flush=True,
        )
        for task in CONTROLLERS:
            namespace = f"owned-{task.__name__.lower()}"
            report(task, f"{args.pods:,}", await measure(cp, task, namespace, args.runs))
    print(
        f"\n{args.runs} runs, one Pod each; controller cluster-wide, RSS 2 s after every run"
        " reported its Pod"
    )
    print("owns | unrelated Pods | Pods cached | RSS | peak RSS | CPU to ready | time to ready")
    for task, pods, f in rows:
        print(
            f"{CONTROLLERS[task]} | {pods} | {f['cached']:,.0f} | {f['rss']:.0f} MB | "
            f"{f['peak']:.0f} MB | {f['cpu']:.2f} s | {f['seconds']:.1f} s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10_000, help="unrelated Pods")
    parser.add_argument("--runs", type=int, default=100, help="runs per controller")
    parser.add_argument("--concurrency", type=int, default=64, help="creates in flight")
    asyncio.run(main(parser.parse_args()))
