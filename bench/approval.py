"""Benchmarks of the Approval gate on the local control plane; prints figures, asserts nothing.

    .venv/bin/python bench/approval.py [--gates 1000] [--rate 50] [--memory-gates 10000]

One ControlPlane (etcd + kube-apiserver + Tekton's CRDs) with Approval's CRD, RBAC and
admission policies installed; the controller runs as a subprocess (``customtask-sdk run``)
under its service account's user, the approvers are client-certificate users.

1. decisions: ``--gates`` gates (one approver each, quorum 1) opened at once; once all are
   pending, each is decided by its own user's write, ``--rate`` writes/s. Latency: from
   the deciding write's answer to the CustomRun's ``Succeeded=True`` (seen on a watch).
2. admission: the same response writes on gates with no controller, with the policies
   installed and then without: the write's round trip, so the difference is what the
   validating and mutating policies add.
3. memory: the controller's RSS with ``--memory-gates`` pending gates in its caches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient
from customtask_sdk.testing import ControlPlane
from customtask_sdk.testing.controllers import controller_process
from customtask_sdk.testing.processes import ManagedProcess

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.approval.controller import APPROVAL_TASKS, Approval  # noqa: E402
from examples.approval.install import (  # noqa: E402
    CONTROLLER,
    CONTROLLER_GROUPS,
    grant_team,
    install,
    uninstall_admission,
    wait_enforced,
)

EVERYONE = {
    "kind": "Group",
    "name": "system:authenticated",
    "apiGroup": "rbac.authorization.k8s.io",
}


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summary(values: Sequence[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms (n={len(ms)})"
    )


async def namespace_for_approvers(kube: KubeClient, name: str) -> None:
    await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    await grant_team(kube, name, [EVERYONE])


async def bounded(count: int, concurrency: int, make: Callable[[int], Awaitable[None]]) -> None:
    """Run ``make(i)`` for i in range(count), ``concurrency`` at a time."""
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            await make(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def open_gates(kube: KubeClient, namespace: str, count: int, prefix: str) -> None:
    async def create(i: int) -> None:
        body = {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "metadata": {"name": f"{prefix}-{i:05d}"},
            "spec": {
                "customRef": {"apiVersion": Approval.api_version, "kind": "ApprovalTask"},
                "params": [{"name": "approvers", "value": [f"user-{i:05d}"]}],
                "timeout": "0",
            },
        }
        await kube.create(CUSTOM_RUNS.path(namespace), body)

    await bounded(count, 32, create)


async def until_pending(kube: KubeClient, namespace: str, count: int) -> float:
    """Seconds until ``count`` gates of the namespace have their first status."""
    started = time.monotonic()
    while True:
        items = (await kube.list_all(APPROVAL_TASKS.path(namespace)))["items"]
        if sum(1 for t in items if (t.get("status") or {}).get("state") == "pending") >= count:
            return time.monotonic() - started
        await asyncio.sleep(0.5)


async def users(cp: ControlPlane, count: int) -> list[KubeClient]:
    return [
        await KubeClient.from_kubeconfig(
            str(cp.kubeconfig_for(f"user-{i:05d}", name=f"bench-user-{i}")), retry_seconds=0
        )
        for i in range(count)
    ]


async def paced_responses(
    clients: list[KubeClient], namespace: str, prefix: str, rate: float
) -> tuple[list[float], dict[str, float]]:
    """Each user approves their gate, ``rate`` per second. Returns the write round trips
    and, per gate, when the deciding write was answered (monotonic)."""
    round_trips: list[float] = []
    answered: dict[str, float] = {}

    async def connect(i: int) -> None:  # TLS handshakes are not part of the figures
        await clients[i].get(APPROVAL_TASKS.path(namespace, f"{prefix}-{i:05d}"))

    await bounded(len(clients), 32, connect)
    start = time.monotonic()

    async def decide(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        name = f"{prefix}-{i:05d}"
        body = {"spec": {"responses": {f"user-{i:05d}": {"decision": "approve"}}}}
        sent = time.monotonic()
        await clients[i].patch(APPROVAL_TASKS.path(namespace, name), body)
        answered[name] = time.monotonic()
        round_trips.append(answered[name] - sent)

    await asyncio.gather(*(decide(i) for i in range(len(clients))))
    return round_trips, answered


async def watch_succeeded(
    kube: KubeClient, namespace: str, seen: dict[str, float], count: int
) -> None:
    """Record when each run is first seen ``Succeeded=True``, until ``count`` are."""
    page = await kube.get(CUSTOM_RUNS.path(namespace))
    params = {"resourceVersion": page["metadata"]["resourceVersion"], "allowWatchBookmarks": "true"}
    async for event in kube.watch(CUSTOM_RUNS.path(namespace), params):
        obj = event["object"]
        for cond in (obj.get("status") or {}).get("conditions") or ():
            if cond.get("type") == "Succeeded" and cond.get("status") == "True":
                seen.setdefault(obj["metadata"]["name"], time.monotonic())
        if len(seen) >= count:
            return


def start_controller(cp: ControlPlane, kubeconfig: Path, namespace: str) -> ManagedProcess:
    return controller_process(
        cp,
        "examples.approval.controller:Approval",
        f"--kubeconfig={kubeconfig}",
        "--no-events",
        namespace=namespace,
        app_dir=ROOT,
        name=f"approval-{namespace}",
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def decisions(cp: ControlPlane, kubeconfig: Path, gates: int, rate: float) -> None:
    kube = cp.client
    namespace = "bench-decide"
    await namespace_for_approvers(kube, namespace)
    proc = start_controller(cp, kubeconfig, namespace)
    await proc.start()
    clients = await users(cp, gates)
    try:
        opened = time.monotonic()
        await open_gates(kube, namespace, gates, "gate")
        await until_pending(kube, namespace, gates)
        print(f"decisions: {gates} gates open and pending in {time.monotonic() - opened:.1f} s")
        seen: dict[str, float] = {}
        watcher = asyncio.create_task(watch_succeeded(kube, namespace, seen, gates))
        round_trips, answered = await paced_responses(clients, namespace, "gate", rate)
        await asyncio.wait_for(watcher, 120)
        latencies = [seen[name] - answered[name] for name in answered]
        print(f"decisions: deciding write answered -> Succeeded=True: {summary(latencies)}")
        print(f"decisions: the deciding write itself (with admission): {summary(round_trips)}")
    finally:
        await proc.stop()
        for client in clients:
            await client.close()


async def admission(cp: ControlPlane, gates: int, rate: float) -> None:
    kube = cp.client
    clients = await users(cp, gates)
    try:
        for label, enforced in (("with policies", True), ("without policies", False)):
            namespace = f"bench-admission-{'on' if enforced else 'off'}"
            await namespace_for_approvers(kube, namespace)
            if not enforced:
                await uninstall_admission(kube)
                await wait_enforced(kube, enforced=False)

            async def create(i: int, namespace: str = namespace) -> None:
                body: JSON = {
                    "apiVersion": APPROVAL_TASKS.api_version,
                    "kind": "ApprovalTask",
                    "metadata": {"name": f"gate-{i:05d}"},
                    "spec": {"approvers": [f"user-{i:05d}"], "numberOfApprovalsRequired": 1},
                }
                await kube.create(APPROVAL_TASKS.path(namespace), body)

            await bounded(gates, 32, create)
            round_trips, _ = await paced_responses(clients, namespace, "gate", rate)
            print(f"admission: response write {label}: {summary(round_trips)}")
    finally:
        for client in clients:
            await client.close()


async def memory(cp: ControlPlane, kubeconfig: Path, gates: int) -> None:
    kube = cp.client
    namespace = "bench-memory"
    await namespace_for_approvers(kube, namespace)
    proc = start_controller(cp, kubeconfig, namespace)
    await proc.start()
    try:
        started = time.monotonic()
        await open_gates(kube, namespace, gates, "mem")
        await until_pending(kube, namespace, gates)
        elapsed = time.monotonic() - started
        assert proc.pid is not None
        print(
            f"memory: {gates} gates pending after {elapsed:.0f} s "
            f"({gates / elapsed:.0f} gates/s opened); controller RSS {rss_mb(proc.pid):.0f} MB"
        )
    finally:
        await proc.stop()


async def main(args: argparse.Namespace) -> None:
    async with ControlPlane() as cp:
        await install(cp.client, tekton_user="default")
        await wait_enforced(cp.client)
        kubeconfig = cp.kubeconfig_for(CONTROLLER, CONTROLLER_GROUPS, name="approval-controller")
        if "decisions" not in args.skip:
            await decisions(cp, kubeconfig, args.gates, args.rate)
        if "memory" not in args.skip:
            await memory(cp, kubeconfig, args.memory_gates)
        if "admission" not in args.skip:
            await admission(cp, args.gates, args.rate)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gates", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="deciding writes per second")
    parser.add_argument("--memory-gates", type=int, default=10_000)
    parser.add_argument("--skip", default="", help="comma-separated: decisions,memory,admission")
    asyncio.run(main(parser.parse_args()))
