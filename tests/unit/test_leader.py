"""LeaderElector against a fake Lease endpoint (real HTTP) that can hang or answer garbage.

The assertions are the election's guarantee: a leader has stepped down before a standby
that saw its last renew could take over (``lease_duration`` after that renew).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from customtask_sdk.client import JSON, ClientConfig, KubeClient
from customtask_sdk.runtime import LeaderElection, LeaderElector
from tests.unit.test_client import Start, fake_api

__all__ = ["fake_api"]  # the fixture, imported for its use here

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lock"
HANG_FOREVER = 3600.0


class FakeLeases:
    """One Lease (``ns/lock``): GET, POST and PUT with resourceVersion preconditions.

    ``mode``: ``ok``; ``hang`` (no answer, ever: a stalled connection); ``unavailable``
    (503 at once); ``garbage`` (200 with a body that is not JSON); ``slow`` (the next PUT
    is stored at once but answered ``slow_seconds`` later, and every request after it
    hangs). Every request is recorded as ``(method, monotonic time)``.
    """

    def __init__(self) -> None:
        self.lease: JSON | None = None
        self.mode = "ok"
        self.slow_seconds = 0.0
        self.requests: list[tuple[str, float]] = []
        self.writes: list[tuple[str, float]] = []  # (holder, time) of each stored write
        self._activity = asyncio.Event()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, checking after each request and write."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._activity.clear()
                await self._activity.wait()

    def record(self, method: str) -> None:
        """Note a request (its method and time)."""
        self.requests.append((method, time.monotonic()))
        self._activity.set()

    def count(self, *, method: str = "", holder: str = "") -> int:
        """How many requests (of ``method``) or stored writes (by ``holder``) there were."""
        if holder:
            return sum(1 for who, _ in self.writes if who == holder)
        return sum(1 for m, _ in self.requests if m == method or not method)

    def hold(self, holder: str, *, duration: int = 1, renew: str = "t0") -> None:
        """Store a lease held by ``holder`` (as another replica would have written it)."""
        rv = str(int((self.lease or {}).get("metadata", {}).get("resourceVersion", 0)) + 1)
        self.lease = {
            "metadata": {"name": "lock", "namespace": "ns", "resourceVersion": rv},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "renewTime": renew,
                "leaseTransitions": 0,
            },
        }

    def _store(self, body: JSON) -> web.Response:
        rv = int((self.lease or {}).get("metadata", {}).get("resourceVersion", 0)) + 1
        body["metadata"]["resourceVersion"] = str(rv)
        self.lease = body
        self.writes.append((body["spec"]["holderIdentity"], time.monotonic()))
        self._activity.set()
        return web.json_response(copy.deepcopy(body))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.record(request.method)
        if self.mode == "hang":
            await asyncio.sleep(HANG_FOREVER)
        if self.mode == "unavailable":
            return _status(503, "ServiceUnavailable")
        if self.mode == "garbage":
            return web.Response(status=200, text="<html>proxy error</html>")
        if request.method == "GET":
            if self.lease is None:
                return _status(404, "NotFound")
            return web.json_response(self.lease)
        body = await request.json()
        if request.method == "POST":
            return _status(409, "AlreadyExists") if self.lease else self._store(body)
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            return _status(409, "Conflict")
        answer = self._store(body)
        if self.mode == "slow":
            self.mode = "hang"
            await asyncio.sleep(self.slow_seconds)
        return answer


def _status(code: int, reason: str) -> web.Response:
    body = {"kind": "Status", "code": code, "reason": reason, "message": reason}
    return web.json_response(body, status=code)


def elector(client: KubeClient, identity: str = "me", **timing: Any) -> LeaderElector:
    timing = {"lease_duration": 3.0, "renew_deadline": 1.0, "retry_period": 0.2} | timing
    return LeaderElector(client, "ns", "lock", identity, **timing)


async def lead(candidate: LeaderElector) -> asyncio.Task[None]:
    """Run ``candidate`` until it leads."""
    task = asyncio.create_task(candidate.run())
    await asyncio.wait_for(candidate.leading.wait(), 10)
    return task


def last_write(api: FakeLeases, holder: str) -> float:
    """When the last write by ``holder`` was stored: a standby that saw it waits from then."""
    return max(at for who, at in api.writes if who == holder)


@pytest.mark.parametrize(
    ("lease_duration", "renew_deadline", "retry_period"),
    [(10, 10, 2), (10, 12, 2), (15, 10, 10), (15, 10, 0), (15, 0, -1)],
)
def test_timing_that_could_leave_two_leaders_is_refused(
    lease_duration: float, renew_deadline: float, retry_period: float
) -> None:
    timing: dict[str, Any] = {
        "lease_duration": lease_duration,
        "renew_deadline": renew_deadline,
        "retry_period": retry_period,
    }
    refused = "retry_period < renew_deadline < lease_duration"
    with pytest.raises(ValueError, match=refused):
        LeaderElection("lock", **timing)
    with pytest.raises(ValueError, match=refused):
        elector(KubeClient(ClientConfig(host="http://127.0.0.1:1")), **timing)


async def test_acquires_a_free_lease_and_declares_at_least_its_lease_duration(
    fake_api: Start,
) -> None:
    api = FakeLeases()
    me = elector(await fake_api(api.handle), lease_duration=2.4, renew_deadline=2.2)
    task = await lead(me)
    task.cancel()
    assert api.lease is not None
    spec = api.lease["spec"]
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 0
    # Rounded down to 2 s, a standby would take over while this leader still leads.
    assert spec["leaseDurationSeconds"] >= 2.4


async def test_a_standby_takes_over_only_a_lease_duration_after_it_saw_the_last_renew(
    fake_api: Start,
) -> None:
    api = FakeLeases()
    api.hold("other", duration=1)
    standby = elector(await fake_api(api.handle), lease_duration=2.0, renew_deadline=1.0)
    task = asyncio.create_task(standby.run())
    for renew in range(1, 6):  # the holder renews within its 1 s: never taken over
        await asyncio.sleep(0.4)
        api.hold("other", duration=1, renew=f"t{renew}")
    renewed = time.monotonic()
    assert sum(1 for _, at in api.requests if at > renewed - 1.0) >= 3  # it was looking
    assert not standby.leading.is_set()
    await asyncio.wait_for(standby.leading.wait(), 10)
    task.cancel()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "me"
    assert api.lease["spec"]["leaseTransitions"] == 1
    assert last_write(api, "me") - renewed >= 1.0  # the holder's leaseDurationSeconds


@pytest.mark.parametrize("fault", ["hang", "unavailable"])
async def test_a_leader_that_cannot_renew_steps_down_in_time(fake_api: Start, fault: str) -> None:
    """Renews that hang, or fail at once (which a client would retry for 30 s)."""
    api = FakeLeases()
    lost: list[float] = []
    me = elector(await fake_api(api.handle))
    me.on_lost = lambda: lost.append(time.monotonic())
    task = await lead(me)
    await asyncio.sleep(0.5)  # a few renews
    api.mode = fault
    await asyncio.wait_for(task, 10)  # not after the client's 60 s timeout or its retries
    renewed = last_write(api, "me")
    assert len(lost) == 1
    assert not me.leading.is_set()
    assert me.lost.is_set()
    # Stepped down before a standby that saw the last renew could take over...
    assert lost[0] < renewed + me.lease_duration
    # ...and sent nothing after stepping down.
    assert all(at <= lost[0] for _, at in api.requests)


async def test_the_renew_deadline_counts_from_the_start_of_the_last_successful_renew(
    fake_api: Start,
) -> None:
    """A renew answered late: the lease was written when it arrived, so a standby counts
    from then; counting from the answer would lead 0.8 s too long, past the lease."""
    api = FakeLeases()
    lost: list[float] = []
    me = elector(
        await fake_api(api.handle), lease_duration=1.5, renew_deadline=1.0, retry_period=0.1
    )
    me.on_lost = lambda: lost.append(time.monotonic())
    task = await lead(me)
    api.mode, api.slow_seconds = "slow", 0.8
    await asyncio.wait_for(task, 10)
    assert lost[0] < last_write(api, "me") + me.lease_duration


async def test_an_answer_that_is_not_json_fails_the_renew_and_the_leader_steps_down(
    fake_api: Start,
) -> None:
    api = FakeLeases()
    me = elector(await fake_api(api.handle))
    task = await lead(me)
    api.mode = "garbage"
    await asyncio.wait_for(me.lost.wait(), 10)
    await asyncio.wait_for(task, 10)
    assert not me.leading.is_set()
    attempts = [at for method, at in api.requests if at > last_write(api, "me")]
    assert len(attempts) > 1  # it kept trying until the deadline


async def test_a_leader_that_sees_another_holder_steps_down_at_once(fake_api: Start) -> None:
    api = FakeLeases()
    me = elector(await fake_api(api.handle), lease_duration=30.0, renew_deadline=20.0)
    task = await lead(me)
    api.hold("usurper", duration=30)  # e.g. an operator moved the lease
    await asyncio.wait_for(task, 10)  # long before the 20 s renew deadline
    assert me.lost.is_set()
    assert me.holder == "usurper"


async def test_a_new_leader_rides_out_a_failed_renew(fake_api: Start) -> None:
    api = FakeLeases()
    api.hold("other", duration=1)
    me = elector(await fake_api(api.handle), lease_duration=2.0, renew_deadline=1.5)
    task = await lead(me)  # taken over from "other"
    requests = api.count()
    api.mode = "unavailable"
    await api.until(lambda: api.count() > requests)
    api.mode = "ok"
    renews = api.count(holder="me")
    await api.until(lambda: api.count(holder="me") > renews)  # renewed after the failure
    assert me.leading.is_set()
    assert not me.lost.is_set()
    task.cancel()


async def test_release_clears_the_holder_only_while_the_lease_is_held(fake_api: Start) -> None:
    api = FakeLeases()
    me = elector(await fake_api(api.handle))
    task = await lead(me)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not me.lost.is_set()  # a cancelled elector has not lost anything
    await me.release()
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == ""

    api2 = FakeLeases()
    late = elector(await fake_api(api2.handle))
    task = await lead(late)
    api2.mode = "hang"
    await asyncio.wait_for(task, 10)
    requests = len(api2.requests)
    await late.release()  # past the renew deadline: the lease may be another's already
    assert len(api2.requests) == requests
