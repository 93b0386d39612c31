"""Figures for the real node (root only): start-up, Pod and TaskRun latency, memory.

    sudo .venv/bin/python bench/node.py [--pods 10] [--taskruns 5]

Prints the node's start-up phases, a trivial Pod's create->Succeeded (one at a time, and
all at once), a one-step TaskRun's create->Succeeded, the cluster DNS's answer time (a
Service name, a name outside the cluster), and the resident memory of each node process.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from pathlib import Path

from customtask_sdk.client import JSON, TASK_RUNS, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.node import Node

PODS = Resource("", "v1", "pods", "Pod")
NAMESPACE = "bench"


def pod_done(pod: JSON) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def run_done(run: JSON) -> bool:
    return (condition(run) or {}).get("status") in ("True", "False")


async def timed_pod(node: Node) -> float:
    name = f"p-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
        },
    }
    started = time.monotonic()
    await node.client.create(PODS.path(NAMESPACE), body)
    pod = await wait_for(node.client, PODS, NAMESPACE, name, pod_done, timeout=120)
    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    return time.monotonic() - started


async def timed_taskrun(node: Node) -> float:
    name = f"tr-{uuid.uuid4().hex[:8]}"
    step = {"name": "echo", "image": "busybox", "command": ["echo", "hi"]}
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"name": name},
        "spec": {"taskSpec": {"steps": [step]}},
    }
    started = time.monotonic()
    await node.client.create(TASK_RUNS.path(NAMESPACE), body)
    run = await wait_for(node.client, TASK_RUNS, NAMESPACE, name, run_done, timeout=120)
    assert (condition(run) or {}).get("status") == "True", run["status"]
    return time.monotonic() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.2f}s "
        f"(min {min(values):.2f}s, max {max(values):.2f}s, n={len(values)})"
    )


def dns_answers(node: Node, name: str, queries: int = 200) -> str:
    """CoreDNS's answer time for ``name`` (UDP from this machine), in milliseconds."""
    times = []
    for _ in range(queries):
        started = time.monotonic()
        code, _addresses = node.dns.resolve(name)
        times.append((time.monotonic() - started) * 1000)
    return (
        f"{name} (rcode {code}): median {statistics.median(times):.2f} ms, "
        f"max {max(times):.2f} ms, n={queries}"
    )


async def main(pods: int, taskruns: int) -> None:
    async with Node() as node:
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in node.timings.items())
        print(f"node up: {phases}")
        await node.control_plane.ensure_namespace(NAMESPACE)
        await node.wait_service_account(NAMESPACE)
        await timed_pod(node)  # the first pull of the image is not measured
        one_by_one = [await timed_pod(node) for _ in range(pods)]
        print(f"pod create->Succeeded, one at a time: {summary(one_by_one)}")
        started = time.monotonic()
        await asyncio.gather(*(timed_pod(node) for _ in range(pods)))
        print(f"{pods} pods at once, create->all Succeeded: {time.monotonic() - started:.2f}s")
        await timed_taskrun(node)  # Tekton's images pulled once
        runs = [await timed_taskrun(node) for _ in range(taskruns)]
        print(f"one-step TaskRun create->Succeeded: {summary(runs)}")
        for name in ("kubernetes.default.svc.cluster.local", "example.com"):
            print(f"cluster DNS answer for {dns_answers(node, name)}")
        for name in (
            "kubelet",
            "containerd",
            "kube-scheduler",
            "kube-proxy",
            "coredns",
            "registry",
        ):
            pid = node.process(name).pid
            if pid is not None:
                print(f"RSS {name}: {rss_mib(pid):.0f} MiB")
        for name in ("kube-apiserver", "etcd", "kube-controller-manager", "tekton"):
            pid = node.control_plane.process(name).pid
            if pid is not None:
                print(f"RSS {name}: {rss_mib(pid):.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--taskruns", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.pods, args.taskruns))
