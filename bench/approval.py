"""Benchmarks of the Approval gate on the local control plane; prints figures, asserts nothing.

    .venv/bin/python bench/approval.py [--gates 1000] [--rate 50] [--memory-gates 10000]
        [--workers 64[,16,...]] [--skip decisions,memory,admission]

One ControlPlane (etcd + kube-apiserver + Tekton's CRDs, the apiserver writing an audit
log of gate and run writes) with Approval's CRD, RBAC and admission policies installed;
the controller runs as a subprocess (``customtask-sdk run``) under its service account's
user, the approvers are client-certificate users. Every phase prints the load average.

1. decisions (once per ``--workers`` value): ``--gates`` gates (one approver each, quorum
   1) opened at once; once all are pending, each is decided by its own user's write,
   ``--rate`` writes/s. Latency: from the deciding write's answer to the CustomRun's
   ``Succeeded=True`` (seen on a watch); then, per decision, from the audit log, the
   apiserver's share (the response's watch delivery, the gate's and the run's status
   writes) and the controller's (the rest); the controller's CPU per decision and how
   long its reconciles waited in the queue (its /metrics).
2. memory: the controller's RSS with ``--memory-gates`` pending gates in its caches.
3. admission: the same response writes on gates with no controller, with the policies
   installed, with none, and with an HTTPS webhook (``webhook_standin.py``) instead: the
   write's round trip, so the differences are what each mechanism adds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from customtask_sdk.client import CUSTOM_RUNS, JSON, ForbiddenError, KubeClient, ServerError
from customtask_sdk.testing import ControlPlane
from customtask_sdk.testing.certs import CertificateAuthority
from customtask_sdk.testing.controllers import controller_process
from customtask_sdk.testing.processes import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit_trace import AUDIT_LOG, Trail, audit_args, decision_trails, read_audit_log  # noqa: E402

from bench import cpu_seconds, scrape  # noqa: E402
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
    and, per gate, when the deciding write was answered (epoch seconds)."""
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
        sent = time.time()
        await clients[i].patch(APPROVAL_TASKS.path(namespace, name), body)
        answered[name] = time.time()
        round_trips.append(answered[name] - sent)

    await asyncio.gather(*(decide(i) for i in range(len(clients))))
    return round_trips, answered


async def watch_until(
    kube: KubeClient, path: str, seen: dict[str, float], count: int, test: Callable[[JSON], bool]
) -> None:
    """Record when (epoch seconds) each object is first seen passing ``test``, until
    ``count`` are."""
    page = await kube.get(path, {"limit": "1"})
    params = {"resourceVersion": page["metadata"]["resourceVersion"], "allowWatchBookmarks": "true"}
    async for event in kube.watch(path, params):
        obj = event["object"]
        if event["type"] != "BOOKMARK" and test(obj):
            seen.setdefault(obj["metadata"]["name"], time.time())
        if len(seen) >= count:
            return


def succeeded(run: JSON) -> bool:
    conditions = (run.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Succeeded" and c.get("status") == "True" for c in conditions)


def responded(gate: JSON) -> bool:
    return bool((gate.get("spec") or {}).get("responses"))


def start_controller(
    cp: ControlPlane, kubeconfig: Path, namespace: str, *args: str
) -> ManagedProcess:
    return controller_process(
        cp,
        "examples.approval.controller:Approval",
        f"--kubeconfig={kubeconfig}",
        "--no-events",
        *args,
        namespace=namespace,
        app_dir=ROOT,
        name=f"approval-{namespace}",
    )


def queue_buckets(metrics: dict[str, float]) -> dict[float, float]:
    """The controller's ``workqueue_queue_duration_seconds`` buckets, from its /metrics."""
    buckets: dict[float, float] = {}
    for key, value in metrics.items():
        if key.startswith("workqueue_queue_duration_seconds_bucket{"):
            bound = float(key.split('le="', 1)[1].split('"', 1)[0])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def queue_waits(before: dict[float, float], after: dict[float, float]) -> str:
    """The share of reconciles between two scrapes that waited in the queue (ready to
    handed to a worker) at most 1 ms, 10 ms, 100 ms, 1 s."""
    count = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = count.get(float("inf"), 0.0) or 1.0
    shares = ", ".join(
        f"<= {label} {100 * count.get(bound, 0.0) / total:.1f}%"
        for bound, label in ((1e-3, "1 ms"), (1e-2, "10 ms"), (1e-1, "100 ms"), (1.0, "1 s"))
    )
    return f"{shares} (n={total:.0f} reconciles)"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def decisions(
    cp: ControlPlane, kubeconfig: Path, gates: int, rate: float, workers: int, trial: int
) -> None:
    kube = cp.client
    namespace = f"bench-decide-{trial}"
    print(f"decisions, trial {trial}: controller with --workers={workers}")
    await namespace_for_approvers(kube, namespace)
    port = free_port()
    proc = start_controller(
        cp, kubeconfig, namespace, f"--workers={workers}", f"--health-port={port}"
    )
    await proc.start()
    assert proc.pid is not None
    clients = await users(cp, gates)
    try:
        opened = time.monotonic()
        await open_gates(kube, namespace, gates, "gate")
        await until_pending(kube, namespace, gates)
        print(f"decisions: {gates} gates open and pending in {time.monotonic() - opened:.1f} s")
        done: dict[str, float] = {}
        delivered: dict[str, float] = {}
        watchers = [
            asyncio.create_task(
                watch_until(kube, CUSTOM_RUNS.path(namespace), done, gates, succeeded)
            ),
            asyncio.create_task(
                watch_until(kube, APPROVAL_TASKS.path(namespace), delivered, gates, responded)
            ),
        ]
        print(f"decisions: {load()} before")
        cpu = cpu_seconds(proc.pid)
        queued = queue_buckets(await scrape(port))
        round_trips, answered = await paced_responses(clients, namespace, "gate", rate)
        await asyncio.wait_for(asyncio.gather(*watchers), 120)
        cpu = cpu_seconds(proc.pid) - cpu
        print(f"decisions: {load()} after")
        latencies = [done[name] - answered[name] for name in answered]
        print(f"decisions: deciding write answered -> Succeeded=True: {summary(latencies)}")
        print(f"decisions: the deciding write itself (with admission): {summary(round_trips)}")
        print(f"decisions: controller CPU {cpu / gates * 1000:.2f} ms per decision")
        waits = queue_waits(queued, queue_buckets(await scrape(port)))
        print(f"decisions: controller queue wait: {waits}")
        trails = await audit_trails(cp, namespace, gates)
        breakdown(trails, delivered, done)
    finally:
        await proc.stop()
        for client in clients:
            await client.close()


async def audit_trails(cp: ControlPlane, namespace: str, gates: int) -> dict[str, Trail]:
    """The decisions' writes from the apiserver's audit log (written in the background:
    read until every decision is in, or 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        writes = read_audit_log(cp.workdir / "audit" / AUDIT_LOG)
        trails = decision_trails(writes, namespace, CONTROLLER)
        if len(trails) >= gates or time.monotonic() > deadline:
            return trails
        await asyncio.sleep(1)


def breakdown(
    trails: dict[str, Trail], delivered: dict[str, float], done: dict[str, float]
) -> None:
    """Print where each decision's time went, in the apiserver's clock (audit log).

    The response's watch delivery to the controller is estimated by its delivery to this
    benchmark's own watch (same apiserver, same moment), counted as the apiserver's."""
    kept = [(n, t) for n, t in trails.items() if n in delivered and n in done]
    watch = [min(max(0.0, delivered[n] - t.deciding.answered), t.total) for n, t in kept]
    apiserver = [w + t.gate_write + t.run_write for w, (_, t) in zip(watch, kept, strict=True)]
    rows: list[tuple[str, list[float]]] = [
        ("total: deciding write answered -> the run's write answered", [t.total for _, t in kept]),
        ("apiserver: watch delivery + the two writes", apiserver),
        ("  the response's watch delivery (estimate)", watch),
        ("  the gate's status write", [t.gate_write for _, t in kept]),
        ("  the run's status write", [t.run_write for _, t in kept]),
        ("controller: the rest", [t.total - a for a, (_, t) in zip(apiserver, kept, strict=True)]),
        (
            "  response delivered -> gate write received (queue, reconcile)",
            [t.watch_queue_reconcile - w for w, (_, t) in zip(watch, kept, strict=True)],
        ),
        ("  gate write answered -> run write received", [t.between_writes for _, t in kept]),
        (
            "then: the run's write answered -> seen here",
            [done[n] - t.run.answered for n, t in kept],
        ),
        (
            "the approver's deciding write, in the apiserver",
            [t.deciding.answered - t.deciding.received for _, t in kept],
        ),
    ]
    print(f"decisions: where the time went, from the apiserver's audit log (n={len(kept)}):")
    for label, values in rows:
        print(f"  {label}: {summary(values)}")


WEBHOOK = "approval-bench-webhook"


async def start_webhook(cp: ControlPlane) -> ManagedProcess:
    """Serve ``webhook_standin.py`` on loopback over HTTPS (a self-signed certificate) and
    register it for ApprovalTask updates, failing closed; returns once it is called."""
    authority = CertificateAuthority("approval-bench-webhook-ca")
    cert, key = cp.workdir / "webhook.crt", cp.workdir / "webhook.key"
    authority.issue_serving(["127.0.0.1"]).write(cert, key)
    port = free_port()
    argv = [
        sys.executable,
        str(ROOT / "bench" / "webhook_standin.py"),
        str(port),
        str(cert),
        str(key),
    ]
    proc = ManagedProcess("webhook-standin", argv, cp.log_dir)
    await proc.start()
    webhook: JSON = {
        "name": "approvaltasks.bench.customtask.dev",
        "clientConfig": {
            "url": f"https://127.0.0.1:{port}/validate",
            "caBundle": base64.b64encode(authority.cert_pem).decode(),
        },
        "rules": [
            {
                "apiGroups": [APPROVAL_TASKS.group],
                "apiVersions": [APPROVAL_TASKS.version],
                "operations": ["UPDATE"],
                "resources": [APPROVAL_TASKS.plural],
            }
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 10,
    }
    configs = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    await cp.client.create(configs, {"metadata": {"name": WEBHOOK}, "webhooks": [webhook]})
    namespace = "bench-webhook-probe"
    await cp.client.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    gate: JSON = {
        "apiVersion": APPROVAL_TASKS.api_version,
        "kind": "ApprovalTask",
        "metadata": {"name": "probe"},
        "spec": {"approvers": ["someone-else"], "numberOfApprovalsRequired": 1},
    }
    await cp.client.create(APPROVAL_TASKS.path(namespace), gate)
    foreign = {"spec": {"responses": {"default": {"decision": "approve"}}}}
    async with asyncio.timeout(30):
        while True:  # until the apiserver calls it: the admin's response is refused
            try:
                await cp.client.patch(
                    APPROVAL_TASKS.path(namespace, "probe"), foreign, params={"dryRun": "All"}
                )
            except ForbiddenError:
                return proc
            except ServerError:  # not listening yet
                pass
            await asyncio.sleep(0.1)


async def admission(cp: ControlPlane, gates: int, rate: float) -> None:
    """Response writes with the admission policies (CEL), with nothing, with a webhook."""
    kube = cp.client
    clients = await users(cp, gates)
    webhook: ManagedProcess | None = None
    try:
        for label, mode in (
            ("with the policies (CEL in the apiserver)", "policies"),
            ("without admission checks", "none"),
            ("with an HTTPS webhook on loopback instead", "webhook"),
        ):
            namespace = f"bench-admission-{mode}"
            await namespace_for_approvers(kube, namespace)
            if mode == "none":
                await uninstall_admission(kube)
                await wait_enforced(kube, enforced=False)
            if mode == "webhook":
                webhook = await start_webhook(cp)

            async def create(i: int, namespace: str = namespace) -> None:
                body: JSON = {
                    "apiVersion": APPROVAL_TASKS.api_version,
                    "kind": "ApprovalTask",
                    "metadata": {"name": f"gate-{i:05d}"},
                    "spec": {"approvers": [f"user-{i:05d}"], "numberOfApprovalsRequired": 1},
                }
                await kube.create(APPROVAL_TASKS.path(namespace), body)

            await bounded(gates, 32, create)
            print(f"admission: {load()}")
            round_trips, _ = await paced_responses(clients, namespace, "gate", rate)
            print(f"admission: response write {label}: {summary(round_trips)}")
    finally:
        if webhook is not None:
            await webhook.stop()
        for client in clients:
            await client.close()


async def memory(cp: ControlPlane, kubeconfig: Path, gates: int) -> None:
    kube = cp.client
    namespace = "bench-memory"
    await namespace_for_approvers(kube, namespace)
    proc = start_controller(cp, kubeconfig, namespace)
    await proc.start()
    assert proc.pid is not None
    try:
        await open_gates(kube, namespace, 1, "first")  # the controller is up and serving
        await until_pending(kube, namespace, 1)
        idle = rss_mb(proc.pid)
        started = time.monotonic()
        await open_gates(kube, namespace, gates, "mem")
        await until_pending(kube, namespace, gates + 1)
        elapsed = time.monotonic() - started
        print(
            f"memory: {gates} gates pending after {elapsed:.0f} s "
            f"({gates / elapsed:.0f} gates/s opened); controller RSS {rss_mb(proc.pid):.0f} MB "
            f"({idle:.0f} MB with one)"
        )
    finally:
        await proc.stop()


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="approval-bench-"))
    try:
        async with ControlPlane(
            workdir=workdir, apiserver_args=audit_args(workdir / "audit")
        ) as cp:
            await run_phases(cp, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run_phases(cp: ControlPlane, args: argparse.Namespace) -> None:
    await install(cp.client, tekton_user="default")
    await wait_enforced(cp.client)
    kubeconfig = cp.kubeconfig_for(CONTROLLER, CONTROLLER_GROUPS, name="approval-controller")
    if "decisions" not in args.skip:
        for trial, workers in enumerate(args.workers):
            await decisions(cp, kubeconfig, args.gates, args.rate, workers, trial)
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
    parser.add_argument(
        "--workers",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[64],
        help="the controller's --workers; a comma-separated list runs one trial per value",
    )
    parser.add_argument("--skip", default="", help="comma-separated: decisions,memory,admission")
    asyncio.run(main(parser.parse_args()))
