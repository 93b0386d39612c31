"""Leader election on the real control plane: hand-over on SIGTERM, takeover after a crash,
and no two leaders when the leader's network stalls (checked from the apiserver's side)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import signal
from collections.abc import Callable
from pathlib import Path

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient, Resource
from customtask_sdk.reconciler import NoParams, Outcome, Reconciler, Run, Running
from customtask_sdk.runtime import LeaderElection, Manager
from customtask_sdk.runtime.leader import LEASES
from customtask_sdk.testing import ControlPlane, condition, wait_for
from customtask_sdk.testing.controllers import controller_process, create_custom_run
from customtask_sdk.testing.proxy import TcpProxy
from examples.wait.controller import Wait

ROOT = Path(__file__).resolve().parents[2]
WAIT = "examples.wait.controller:Wait"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 3.0, 2.0, 0.5
#: A standby sees the last renew within a retry period and checks its expiry every retry
#: period; beyond that, request latency on a busy machine.
TAKEOVER_BOUND = LEASE_DURATION + 2 * RETRY_PERIOD + 1.5
ELECTION_FLAGS = [
    f"--lease-duration={LEASE_DURATION}",
    f"--renew-deadline={RENEW_DEADLINE}",
    f"--retry-period={RETRY_PERIOD}",
]


def parse(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def done(obj: JSON) -> bool:
    return (condition(obj) or {}).get("status") in ("True", "False")


def held(obj: JSON) -> bool:
    return bool(obj["spec"].get("holderIdentity"))


def revision(obj: JSON) -> int:
    """The object's resourceVersion: etcd's revision, one order for every write."""
    return int(obj["metadata"]["resourceVersion"])


class History:
    """Every version of the objects of ``resource`` in a namespace that the apiserver
    committed, in commit order: a list, then a watch, started before the test acts."""

    def __init__(self, kube: KubeClient, resource: Resource, namespace: str) -> None:
        self.kube = kube
        self.path = resource.path(namespace)
        self.versions: list[JSON] = []
        self._grew = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> History:
        page = await self.kube.get(self.path)
        self.versions += page["items"]
        self._task = asyncio.create_task(self._follow(page["metadata"]["resourceVersion"]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _follow(self, since: str) -> None:
        while True:
            with contextlib.suppress(TimeoutError, OSError):
                async for event in self.kube.watch(self.path, {"resourceVersion": since}):
                    since = event["object"]["metadata"]["resourceVersion"]
                    self.versions.append(event["object"])
                    self._grew.set()

    async def caught_up(self) -> None:
        """Wait until every object's current version has been recorded."""
        current = {revision(obj) for obj in (await self.kube.get(self.path))["items"]}
        async with asyncio.timeout(30):
            while not current <= {revision(obj) for obj in self.versions}:
                self._grew.clear()
                await self._grew.wait()

    def leases(self, holder: str) -> list[JSON]:
        """The Lease's versions held by ``holder``."""
        return [v for v in self.versions if v["spec"].get("holderIdentity") == holder]


def takeover_gap(leases: History, old: str, new: str) -> float:
    """Seconds from the old holder's last renew to the new holder's acquisition."""
    last_renew = parse(leases.leases(old)[-1]["spec"]["renewTime"])
    acquired = parse(leases.leases(new)[0]["spec"]["acquireTime"])
    return (acquired - last_renew).total_seconds()


async def test_sigterm_stops_cleanly_and_hands_over_the_lease(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    controller = controller_process(
        control_plane, WAIT, "--no-events", namespace=namespace, app_dir=ROOT
    )
    controller.argv += ["--leader-elect", f"--lease-namespace={namespace}", "--lease-name=wait"]
    await controller.start()
    lease = await wait_for(kube, LEASES, namespace, "wait", held, timeout=30)
    run = await create_custom_run(kube, namespace, Wait.api_version, "Wait", {"duration": "0s"})
    await wait_for(kube, CUSTOM_RUNS, namespace, run["metadata"]["name"], done, timeout=30)
    assert controller.pid is not None
    os.kill(controller.pid, signal.SIGTERM)
    code = await asyncio.wait_for(controller.wait(), 15)
    released = await kube.get(LEASES.path(namespace, "wait"))
    assert code == 0
    assert lease["spec"]["holderIdentity"]
    assert released["spec"]["holderIdentity"] == ""


async def test_a_standby_takes_over_within_the_lease_after_the_leader_is_killed(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    election = ["--leader-elect", f"--lease-namespace={namespace}", "--lease-name=wait"]
    replicas = [
        controller_process(
            control_plane,
            WAIT,
            *election,
            *ELECTION_FLAGS,
            namespace=namespace,
            app_dir=ROOT,
            name=f"{n}-{namespace}",
        )
        for n in ("first", "second")
    ]
    async with History(kube, LEASES, namespace) as leases:
        await replicas[0].start()
        lease = await wait_for(kube, LEASES, namespace, "wait", held, timeout=30)
        await replicas[1].start()
        try:
            first_run = await create_custom_run(
                kube, namespace, Wait.api_version, "Wait", {"duration": "0s"}
            )
            await wait_for(
                kube, CUSTOM_RUNS, namespace, first_run["metadata"]["name"], done, timeout=30
            )
            await asyncio.sleep(1)  # the standby's cache is warm by now
            await replicas[0].kill()  # no release: the standby must wait for the lease to expire
            second_run = await create_custom_run(
                kube, namespace, Wait.api_version, "Wait", {"duration": "0s"}
            )
            finished = await wait_for(
                kube, CUSTOM_RUNS, namespace, second_run["metadata"]["name"], done, timeout=30
            )
        finally:
            for replica in replicas:
                await replica.stop()
        await leases.caught_up()
    old = lease["spec"]["holderIdentity"]
    new = next(
        v["spec"]["holderIdentity"]
        for v in leases.versions
        if held(v) and v["spec"]["holderIdentity"] != old
    )
    assert new != old
    assert leases.leases(new)[0]["spec"]["leaseTransitions"] >= 1
    assert (condition(finished) or {}).get("reason") == "DurationElapsed"
    assert LEASE_DURATION <= takeover_gap(leases, old, new) <= TAKEOVER_BOUND


class Ticker(Reconciler[NoParams]):
    """Writes which replica it runs in, and a tick, on each reconcile (which takes a
    second, so a leader always has writes in flight): every status write names its writer."""

    api_version = "ticker.customtask.dev/v1"
    kind = "Ticker"

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = replica

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        await asyncio.sleep(1.0)
        return Running(
            requeue_after=datetime.timedelta(seconds=0.1),
            extra_fields={"writer": self.replica, "tick": tick(run.obj) + 1},
        )


def tick(obj: JSON) -> int:
    """The last tick written to a Ticker run (0: none yet)."""
    return int(((obj.get("status") or {}).get("extraFields") or {}).get("tick", 0))


def ticked_past(last: int) -> Callable[[JSON], bool]:
    return lambda obj: tick(obj) > last


async def synced(manager: Manager) -> None:
    await asyncio.gather(*(informer.synced.wait() for informer in manager.informers))


def writes(runs: History) -> list[tuple[int, str]]:
    """(revision, writer) of every status write of the Tickers, in commit order."""
    found: list[tuple[int, str]] = []
    last: dict[str, JSON] = {}
    for version in runs.versions:
        extra = (version.get("status") or {}).get("extraFields") or {}
        name = version["metadata"]["name"]
        if extra and extra != last.get(name):
            found.append((revision(version), str(extra["writer"])))
        last[name] = extra
    return found


async def test_a_stalled_leader_stops_before_a_standby_takes_over(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    """The leader's link to the apiserver hangs (a TCP proxy holds every byte). It must
    stop before the standby takes over; once the link is back it must write nothing. The
    apiserver's own order of writes (etcd revisions) shows who wrote when."""
    election = LeaderElection(
        "lock",
        namespace=namespace,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
    )
    host, port = "127.0.0.1", control_plane.apiserver_port
    async with (
        TcpProxy(host, port) as proxy,
        KubeClient(dataclasses.replace(kube.configuration, host=proxy.url())) as via_proxy,
        KubeClient(kube.configuration) as direct,
        History(kube, CUSTOM_RUNS, namespace) as runs,
        History(kube, LEASES, namespace) as leases,
    ):
        managers = {
            name: Manager(
                client,
                [Ticker(name)],
                namespace=namespace,
                workers=4,
                leader_election=election,
                identity=name,
                health_port=None,
                events=False,
            )
            for name, client in (("a", via_proxy), ("b", direct))
        }
        stop_b = asyncio.Event()
        a = asyncio.create_task(managers["a"].run())
        await wait_for(kube, LEASES, namespace, "lock", held)
        b = asyncio.create_task(managers["b"].run(stop_b))
        names = []
        for _ in range(4):
            run = await create_custom_run(kube, namespace, Ticker.api_version, "Ticker")
            names.append(run["metadata"]["name"])
        for name in names:
            await wait_for(kube, CUSTOM_RUNS, namespace, name, ticked_past(0))
        await asyncio.wait_for(synced(managers["b"]), 30)  # the standby is ready
        a_elector = managers["a"].elector
        assert a_elector is not None
        assert a_elector.leading.is_set()

        proxy.stall()
        await wait_for(
            kube, LEASES, namespace, "lock", lambda o: o["spec"]["holderIdentity"] == "b"
        )
        a_stopped = a_elector.lost.is_set()
        proxy.cut()  # the stalled connections are gone; new ones get through
        proxy.resume()
        try:
            await asyncio.wait_for(a, 30)
        except RuntimeError as exc:
            a_exit: BaseException | None = exc
        else:
            a_exit = None
        # Barrier: the new leader writes every run again after the old one has exited.
        for name in names:
            now = tick(await kube.get(CUSTOM_RUNS.path(namespace, name)))
            await wait_for(kube, CUSTOM_RUNS, namespace, name, ticked_past(now))
        stop_b.set()
        await asyncio.wait_for(b, 30)
        await runs.caught_up()
        await leases.caught_up()

    assert isinstance(a_exit, RuntimeError)  # the old leader exited: leadership lost
    assert a_stopped  # before the apiserver saw the standby take the lease
    took_over = revision(leases.leases("b")[0])
    by_a = [rev for rev, writer in writes(runs) if writer == "a"]
    by_b = [rev for rev, writer in writes(runs) if writer == "b"]
    assert by_a
    assert by_b
    assert max(by_a) < took_over < min(by_b), "the two replicas' writes overlap"
    assert LEASE_DURATION <= takeover_gap(leases, "a", "b") <= TAKEOVER_BOUND
