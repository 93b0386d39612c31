"""Manager: work runs only while leading, stops at once when leadership ends, and the
elector is never starved. A fake apiserver (real HTTP) serves a Lease and one CustomRun."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from customtask_sdk.client import JSON, KubeClient
from customtask_sdk.reconciler import NoParams, Outcome, Reconciler, Run, Running
from customtask_sdk.runtime import LeaderElection, LeaderElector, Manager
from tests.unit.test_client import Start, fake_api
from tests.unit.test_leader import FakeLeases, last_write

__all__ = ["fake_api"]  # the fixture, imported for its use here

API_VERSION = "manager.test/v1"
RUN: JSON = {
    "apiVersion": "tekton.dev/v1beta1",
    "kind": "CustomRun",
    "metadata": {"name": "r1", "namespace": "ns", "uid": "u1", "resourceVersion": "5"},
    "spec": {"customRef": {"apiVersion": API_VERSION, "kind": "Slow"}},
}
ELECTION = LeaderElection(
    "lock", namespace="ns", lease_duration=3.0, renew_deadline=1.0, retry_period=0.2
)


class FakeCluster(FakeLeases):
    """The Lease, plus CustomRuns (one run; a watch that stays silent; status patches
    answered with the run), Events (recorded by reason) and ``/hang``, which never
    answers."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "/leases" in request.path:
            return await super().handle(request)
        if request.path == "/hang":
            self.record("HANG")
            await asyncio.sleep(3600)
        if request.path.endswith("/events"):
            self.record(f"EVENT {(await request.json())['reason']}")
            return web.json_response({})
        if request.method == "PATCH":
            return web.json_response(RUN | {"status": (await request.json())["status"]})
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            await asyncio.sleep(3600)
        return web.json_response({"metadata": {"resourceVersion": "5"}, "items": [RUN]})


class Slow(Reconciler[NoParams]):
    """Reconciles for ``seconds`` (forever by default), recording how that ended."""

    api_version = API_VERSION
    kind = "Slow"

    def __init__(self, seconds: float = 3600.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.started = asyncio.Event()
        self.ended: list[tuple[str, float]] = []  # ("finished" | "cancelled", when)
        self.hooks: list[tuple[str, float]] = []  # ("start" | "stop", when)

    async def start(self) -> None:
        self.hooks.append(("start", time.monotonic()))

    async def stop(self) -> None:
        self.hooks.append(("stop", time.monotonic()))

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.ended.append(("cancelled", time.monotonic()))
            raise
        self.ended.append(("finished", time.monotonic()))
        return Running()


@pytest.fixture
async def cluster(fake_api: Start) -> tuple[FakeCluster, KubeClient]:
    api = FakeCluster()
    return api, await fake_api(api.handle)


def manager(client: KubeClient, *reconcilers: Reconciler[Any], **options: Any) -> Manager:
    defaults: dict[str, Any] = {
        "leader_election": ELECTION,
        "identity": "me",
        "health_port": None,
        "events": False,
    }
    return Manager(client, reconcilers, **(defaults | options))


async def test_losing_leadership_cancels_in_flight_reconciles_at_once(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    api, client = cluster
    slow = Slow()
    task = asyncio.create_task(manager(client, slow).run())
    await asyncio.wait_for(slow.started.wait(), 10)
    api.mode = "hang"  # the renews stall (the lease only)
    with pytest.raises(RuntimeError, match="leader election ended"):
        await asyncio.wait_for(task, 10)  # no 3600 s shutdown grace for a lost leader
    [(how, when)] = slow.ended
    assert how == "cancelled"
    assert when < last_write(api, "me") + ELECTION.lease_duration  # before any takeover
    assert [hook for hook, _ in slow.hooks] == ["start", "stop"]  # stopped all the same


class Dying(LeaderElector):
    """An elector that leads, then fails unexpectedly (a bug), without stepping down."""

    async def run(self) -> None:
        self.leading.set()
        await asyncio.sleep(0.2)
        raise ZeroDivisionError("a bug in the elector")


async def test_an_elector_that_dies_stops_the_work(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    _, client = cluster
    slow = Slow()
    it = manager(client, slow)
    assert it.elector is not None
    it.elector = Dying(client, "ns", "lock", "me", renew_deadline=1.0, retry_period=0.2)
    with pytest.raises(RuntimeError, match="leader election ended") as raised:
        await asyncio.wait_for(it.run(), 10)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert [how for how, _ in slow.ended] == ["cancelled"]


async def test_the_elector_renews_while_workers_hold_every_connection(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    api, client = cluster
    busy = KubeClient(client.configuration, max_connections=1)
    hog = asyncio.create_task(busy.request("GET", "/hang", timeout=3600, retry=False))
    await api.until(lambda: api.count(method="HANG") == 1)  # its only connection is taken
    stop = asyncio.Event()
    task = asyncio.create_task(manager(busy).run(stop))
    try:
        await api.until(lambda: api.count(holder="me") >= 3)  # acquired, renewed twice
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        hog.cancel()
        await asyncio.gather(hog, return_exceptions=True)
        await busy.close()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == ""  # released on the way out


async def test_a_graceful_stop_lets_reconciles_finish_then_releases_the_lease(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    api, client = cluster
    slow = Slow(seconds=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(manager(client, slow).run(stop))
    await asyncio.wait_for(slow.started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert [how for how, _ in slow.ended] == ["finished"]
    [(_, finished)] = slow.ended
    assert [hook for hook, _ in slow.hooks] == ["start", "stop"]
    assert slow.hooks[1][1] >= finished  # stopped once its reconcile was over
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == ""


async def test_a_standby_does_no_work_and_stops_quietly(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    api, client = cluster
    api.hold("other", duration=30, renew="now")
    slow = Slow()
    stop = asyncio.Event()
    task = asyncio.create_task(manager(client, slow).run(stop))
    await api.until(lambda: api.count(method="GET") >= 5)  # it had its chances
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not slow.started.is_set()
    assert slow.hooks == []  # never started: it never led
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "other"


async def test_a_failing_start_stops_the_manager_with_its_error(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    api, client = cluster

    class Misconfigured(Slow):
        async def start(self) -> None:
            raise ValueError("NOTIFY_URL is not a URL")

    broken = Misconfigured()
    with pytest.raises(ValueError, match="NOTIFY_URL"):
        await asyncio.wait_for(manager(client, broken).run(), 10)
    assert not broken.started.is_set()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == ""  # released on the way out


class Noticing(Slow):
    """Records an Event of its own about each run, then keeps it running."""

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        self.record_event(run.obj, "Normal", "Noticed", "seen")
        return await super().reconcile(run)


@pytest.mark.parametrize("events", [True, False])
async def test_reconcilers_record_events_through_the_managers_recorder_unless_off(
    cluster: tuple[FakeCluster, KubeClient], events: bool
) -> None:
    api, client = cluster
    noticing = Noticing(seconds=0)
    stop = asyncio.Event()
    task = asyncio.create_task(manager(client, noticing, events=events).run(stop))
    await asyncio.wait_for(noticing.started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)  # the recorder was flushed on the way out
    posted = [method for method, _ in api.requests if method.startswith("EVENT")]
    assert posted == (["EVENT Noticed", "EVENT Started"] if events else [])


class Busy(Slow):
    """A reconciler that asks for more concurrent reconciles than the SDK's default."""

    kind = "Busy"
    workers = 64


async def test_each_reconciler_runs_its_own_workers_unless_the_operator_sets_them(
    cluster: tuple[FakeCluster, KubeClient],
) -> None:
    _, client = cluster
    own = manager(client, Slow(), Busy())
    assert [c.workers for c in own.controllers] == [16, 64]
    given = manager(client, Slow(), Busy(), workers=8)  # --workers 8
    assert [c.workers for c in given.controllers] == [8, 8]


def test_a_reconciler_without_workers_is_refused_when_defined() -> None:
    with pytest.raises(ValueError, match=r"Idle\.workers must be at least 1"):

        class Idle(Slow):
            workers = 0
