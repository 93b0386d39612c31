"""The Reconciler contract end to end on the real apiserver (in-process manager)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from typing import Any, Literal

import aiohttp
import pytest

from customtask_sdk import (
    Failed,
    LeaderElection,
    Outcome,
    Params,
    Reconciler,
    Run,
    Running,
    Succeeded,
)
from customtask_sdk.client import CUSTOM_RUNS, JSON, ConflictError, KubeClient, Resource
from customtask_sdk.reconciler import NoParams
from customtask_sdk.runtime.leader import LEASES
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import create_custom_run, running

API = "probe.customtask.dev/v1"


class ProbeParams(Params):
    mode: Literal["succeed", "fail", "run", "touch-then-succeed"] = "succeed"
    seconds: float = 0


class Probe(Reconciler[ProbeParams]):
    api_version = API
    kind = "Probe"

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[str] = []
        self.touched: set[str] = set()
        self.timed_out: list[str] = []

    async def reconcile(self, run: Run[ProbeParams]) -> Outcome:
        mode = run.params.mode
        if mode == "fail":
            return Failed("ProbeFailed", f"attempt {run.attempt} failed")
        if mode == "run":
            return Running(message="working")
        if mode == "touch-then-succeed" and run.name not in self.touched:
            # Another writer (the attached client) changes the object between our read and
            # our status write.
            self.touched.add(run.name)
            path = CUSTOM_RUNS.path(run.namespace, run.name)
            await self.client.patch(path, {"metadata": {"labels": {"touched": uuid.uuid4().hex}}})
        if run.elapsed < datetime.timedelta(seconds=run.params.seconds):
            return Running(
                requeue_after=datetime.timedelta(seconds=run.params.seconds) - run.elapsed
            )
        return Succeeded(results={"attempt": str(run.attempt), "items": ["a", "b"]})

    async def on_cancel(self, run: Run[ProbeParams]) -> None:
        self.cancelled.append(run.name)

    async def on_timeout(self, run: Run[ProbeParams]) -> None:
        self.timed_out.append(run.name)


def finished(obj: JSON) -> bool:
    return (condition(obj) or {}).get("status") in ("True", "False")


async def finish(kube: KubeClient, namespace: str, run: JSON, timeout: float = 30) -> JSON:
    return await wait_for(kube, CUSTOM_RUNS, namespace, run["metadata"]["name"], finished, timeout)


async def barrier(kube: KubeClient, namespace: str) -> None:
    """Create a run and wait until it finishes. The watch delivers changes in order and a
    one-worker queue handles keys in order, so by then the controller has handled every
    change made before: what it has not done by now, it does not do."""
    await finish(kube, namespace, await create_custom_run(kube, namespace, API, "Probe"))


def state(obj: JSON) -> tuple[str, str]:
    cond = condition(obj) or {}
    return cond.get("status", ""), cond.get("reason", "")


async def test_an_instant_run_succeeds_with_one_status_write(
    kube: KubeClient, namespace: str
) -> None:
    probe = Probe()
    async with running(kube, probe, events=False) as manager:
        run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "succeed"})
        done = await finish(kube, namespace, run)
    writes = manager.metrics.status_writes.labels(controller=probe.name)._value.get()
    assert state(done) == ("True", "Succeeded")
    assert done["status"]["results"] == [
        {"name": "attempt", "value": "0"},
        {"name": "items", "value": '["a","b"]'},
    ]
    assert done["status"]["observedGeneration"] == 1
    assert done["status"]["startTime"]
    assert done["status"]["completionTime"]
    assert writes == 1


async def test_a_waiting_run_takes_two_writes_and_finishes_on_time(
    kube: KubeClient, namespace: str
) -> None:
    probe = Probe()
    async with running(kube, probe, events=False) as manager:
        run = await create_custom_run(
            kube, namespace, API, "Probe", {"mode": "succeed", "seconds": "2"}
        )
        done = await finish(kube, namespace, run)
    writes = manager.metrics.status_writes.labels(controller=probe.name)._value.get()
    start = datetime.datetime.fromisoformat(done["status"]["startTime"].replace("Z", "+00:00"))
    end = datetime.datetime.fromisoformat(done["status"]["completionTime"].replace("Z", "+00:00"))
    assert 2.0 <= (end - start).total_seconds() < 3.0
    assert writes == 2


async def test_retries_are_archived_until_exhausted(kube: KubeClient, namespace: str) -> None:
    async with running(kube, Probe(), events=False):
        run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "fail"}, retries=2)
        done = await finish(kube, namespace, run)
    assert state(done) == ("False", "ProbeFailed")
    assert done["status"]["conditions"][0]["message"] == "attempt 2 failed"
    archived = done["status"]["retriesStatus"]
    assert [state({"status": a}) for a in archived] == [("False", "ProbeFailed")] * 2
    assert all(a["completionTime"] for a in archived)


async def test_timeout_then_retry_then_timeout(kube: KubeClient, namespace: str) -> None:
    probe = Probe()
    async with running(kube, probe, events=False):
        run = await create_custom_run(
            kube, namespace, API, "Probe", {"mode": "run"}, timeout="1s", retries=1
        )
        done = await finish(kube, namespace, run)
    assert state(done) == ("False", "CustomRunTimedOut")
    assert len(done["status"]["retriesStatus"]) == 1
    assert probe.timed_out == [run["metadata"]["name"]] * 2


@pytest.mark.parametrize("started", [True, False])
async def test_cancellation(kube: KubeClient, namespace: str, started: bool) -> None:
    probe = Probe()
    message = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
    if not started:
        run = await create_custom_run(
            kube,
            namespace,
            API,
            "Probe",
            {"mode": "run"},
            status="RunCancelled",
            statusMessage=message,
        )
    async with running(kube, probe, events=False):
        if started:
            run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "run"})
            await wait_for(kube, CUSTOM_RUNS, namespace, run["metadata"]["name"], condition)
            patch = {"spec": {"status": "RunCancelled", "statusMessage": message}}
            await kube.patch(CUSTOM_RUNS.path(namespace, run["metadata"]["name"]), patch)
        done = await finish(kube, namespace, run)
    assert state(done) == ("False", "CustomRunCancelled")
    assert done["status"]["conditions"][0]["message"] == message
    assert probe.cancelled == ([run["metadata"]["name"]] if started else [])


async def test_invalid_params_fail_clearly_and_other_kinds_are_untouched(
    kube: KubeClient, namespace: str
) -> None:
    async with running(kube, Probe(), events=False, workers=1):
        bad = await create_custom_run(kube, namespace, API, "Probe", {"mode": "explode"})
        other = await create_custom_run(kube, namespace, API, "Other", {"mode": "succeed"})
        done = await finish(kube, namespace, bad)
        await barrier(kube, namespace)
        untouched = await kube.get(CUSTOM_RUNS.path(namespace, other["metadata"]["name"]))
    assert state(done) == ("False", "InvalidParams")
    assert "'mode'" in done["status"]["conditions"][0]["message"]
    assert "status" not in untouched


async def test_a_finished_run_is_not_rewritten_after_a_late_cancel(
    kube: KubeClient, namespace: str
) -> None:
    async with running(kube, Probe(), events=False, workers=1):
        run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "succeed"})
        done = await finish(kube, namespace, run)
        path = CUSTOM_RUNS.path(namespace, run["metadata"]["name"])
        patched = await kube.patch(path, {"spec": {"status": "RunCancelled"}})
        await barrier(kube, namespace)
        after = await kube.get(path)
    assert patched["metadata"]["generation"] == 2
    assert after["status"] == done["status"]
    assert after["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


async def test_a_concurrent_writer_causes_conflicts_that_are_resolved(
    kube: KubeClient, namespace: str
) -> None:
    probe = Probe()
    async with running(kube, probe, events=False) as manager:
        runs = [
            await create_custom_run(kube, namespace, API, "Probe", {"mode": "touch-then-succeed"})
            for _ in range(5)
        ]
        done = [await finish(kube, namespace, run) for run in runs]
    conflicts = manager.metrics.reconcile_total.labels(
        controller=probe.name, result="conflict"
    )._value.get()
    assert all(state(d) == ("True", "Succeeded") for d in done)
    assert all(d["metadata"]["labels"]["touched"] for d in done)
    assert conflicts >= 5


async def test_events_are_recorded_on_transitions(kube: KubeClient, namespace: str) -> None:
    async with running(kube, Probe()) as manager:
        failing = await create_custom_run(kube, namespace, API, "Probe", {"mode": "fail"})
        waiting = await create_custom_run(kube, namespace, API, "Probe", {"seconds": "1"})
        await finish(kube, namespace, failing)
        await finish(kube, namespace, waiting)
        assert manager.events is not None
        await manager.events.flush()
    events = (await kube.get(f"/api/v1/namespaces/{namespace}/events"))["items"]

    def reasons(run: JSON) -> list[tuple[str, str]]:
        name = run["metadata"]["name"]
        mine = sorted(
            (e for e in events if e["involvedObject"]["name"] == name),
            key=lambda e: (e["firstTimestamp"], e["metadata"]["creationTimestamp"]),
        )
        return [(e["type"], e["reason"]) for e in mine]

    assert reasons(failing) == [("Warning", "ProbeFailed")]  # an instant run: its outcome only
    assert reasons(waiting) == [("Normal", "Started"), ("Normal", "Succeeded")]


async def test_leader_election_failover(kube: KubeClient, namespace: str) -> None:
    election = LeaderElection(
        f"probe-{namespace}",
        namespace=namespace,
        lease_duration=2,
        renew_deadline=1.5,
        retry_period=0.3,
    )

    def held_by(identity: str) -> Any:
        return lambda obj: obj["spec"].get("holderIdentity") == identity

    async with contextlib.AsyncExitStack() as standby_stack:
        async with running(kube, Probe(), identity="first", leader_election=election, events=False):
            await wait_for(kube, LEASES, namespace, election.lease_name, held_by("first"))
            standby = await standby_stack.enter_async_context(
                running(kube, Probe(), identity="second", leader_election=election, events=False)
            )
            assert standby.elector is not None
            assert not standby.elector.leading.is_set()
            assert standby.controllers[0].runs.has_synced  # warm cache while standing by
            run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "succeed"})
            await finish(kube, namespace, run)
        # "first" stopped gracefully and released the lease: "second" takes over at once.
        lease = await wait_for(
            kube, LEASES, namespace, election.lease_name, held_by("second"), timeout=5
        )
        assert lease["spec"]["leaseTransitions"] >= 1
        run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "succeed"})
        done = await finish(kube, namespace, run)
    assert state(done) == ("True", "Succeeded")


CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")


class Gate(Reconciler[NoParams]):
    """Creates a ConfigMap owned by the run; succeeds once someone sets data.open."""

    api_version = API
    kind = "Gate"
    owns = (CONFIG_MAPS,)

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        gates = run.owned(CONFIG_MAPS)  # from the cache: no GET
        if not gates:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"gate-{run.name}",
                    "ownerReferences": [run.owner_reference()],
                },
                "data": {"open": "no"},
            }
            try:
                await self.client.create(CONFIG_MAPS.path(run.namespace), body)
            except ConflictError as exc:  # the cache has not seen our create yet
                if not exc.already_exists:
                    raise
            return Running(message="gate created")
        if gates[0].get("data", {}).get("open") == "yes":
            return Succeeded(message="gate opened")
        return Running(message="gate closed")  # no requeue: the owned ConfigMap wakes us


async def test_changes_to_owned_objects_wake_the_owning_run(
    kube: KubeClient, namespace: str
) -> None:
    async with running(kube, Gate(), namespace=namespace, events=False):
        run = await create_custom_run(kube, namespace, API, "Gate")
        name = run["metadata"]["name"]
        await wait_for(
            kube,
            CUSTOM_RUNS,
            namespace,
            name,
            lambda o: (condition(o) or {}).get("message") == "gate closed",
        )
        await kube.patch(CONFIG_MAPS.path(namespace, f"gate-{name}"), {"data": {"open": "yes"}})
        done = await finish(kube, namespace, run, timeout=10)
    assert state(done) == ("True", "Succeeded")
    gate = await kube.get(CONFIG_MAPS.path(namespace, f"gate-{name}"))
    assert gate["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]


async def test_probes_and_metrics(kube: KubeClient, namespace: str) -> None:
    async with running(kube, Probe(), namespace=namespace, events=False) as manager:
        run = await create_custom_run(kube, namespace, API, "Probe", {"mode": "succeed"})
        await finish(kube, namespace, run)
        base = f"http://127.0.0.1:{manager.bound_port}"
        success = (
            'controller_runtime_reconcile_total{controller="Probe.probe.customtask.dev/v1",'
            'result="success"}'
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as health:
                assert (health.status, await health.text()) == (200, "ok")
            async with session.get(f"{base}/readyz") as ready:
                assert ready.status == 200
            # The reconcile is counted just after its status write lands, which the test
            # may see first: read until it is counted.
            async with asyncio.timeout(10):
                while True:
                    async with session.get(f"{base}/metrics") as metrics:
                        text = await metrics.text()
                    if success in text:
                        break
                    await asyncio.sleep(0.05)
    for name in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "workqueue_adds_total",
        "workqueue_depth",
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket",
        "workqueue_retries_total",
        "rest_client_requests_total",
        "customtask_status_writes_total",
    ):
        assert name in text, name


class Cleaning(Reconciler[NoParams]):
    """Succeeds at once; ``finalize`` records the run as stored, and on its first call
    writes to the run (as another controller might), so dropping the finalizer conflicts."""

    api_version = API
    kind = "Cleaning"

    def __init__(self) -> None:
        super().__init__()
        self.reconciled: list[str] = []
        self.stored_at_cleanup: list[tuple[str, str, list[str]]] = []

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        self.reconciled.append(run.name)
        return Succeeded(message="done")

    async def finalize(self, run: Run[NoParams]) -> None:
        path = CUSTOM_RUNS.path(run.namespace, run.name)
        stored = await self.client.get(path)
        status, reason = state(stored)
        self.stored_at_cleanup.append((status, reason, stored["metadata"].get("finalizers")))
        if len(self.stored_at_cleanup) == 1:
            await self.client.patch(path, {"metadata": {"labels": {"cleaned": "once"}}})


async def test_the_outcome_is_stored_before_cleanup_and_a_conflict_after_it_reconciles_nothing(
    kube: KubeClient, namespace: str
) -> None:
    cleaning = Cleaning()
    async with running(kube, cleaning, namespace=namespace, events=False) as manager:
        finalizer = manager.controllers[0].finalizer
        run = await create_custom_run(kube, namespace, API, "Cleaning")
        name = run["metadata"]["name"]
        done = await wait_for(
            kube,
            CUSTOM_RUNS,
            namespace,
            name,
            lambda o: finished(o) and not o["metadata"].get("finalizers"),
        )
    assert state(done) == ("True", "Succeeded")
    assert done["metadata"]["labels"]["cleaned"] == "once"
    # Cleanup saw the final status already stored, with the finalizer still held; the
    # conflict dropping the finalizer led to a second cleanup, never to a second reconcile.
    assert cleaning.stored_at_cleanup == [("True", "Succeeded", [finalizer])] * 2
    assert cleaning.reconciled == [name]


class Phases(Reconciler[NoParams]):
    """Two phases of ``extraFields``; the second drops keys the first wrote."""

    api_version = API
    kind = "Phases"

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        fields = run.extra_fields
        now = datetime.timedelta(0)
        if not fields:
            pod = {"name": "p1", "ip": "10.0.0.1"}
            return Running(requeue_after=now, extra_fields={"phase": "a", "pod": pod, "n": 1})
        if fields["phase"] == "a":
            return Running(requeue_after=now, extra_fields={"phase": "b", "pod": {"name": "p1"}})
        if "n" in fields or "ip" in fields["pod"]:
            return Failed("Leaked", f"extraFields kept removed keys: {fields}", retry=False)
        return Succeeded()


async def test_extra_fields_are_replaced_and_an_empty_result_list_is_not_written(
    kube: KubeClient, namespace: str
) -> None:
    phases = Phases()
    async with running(kube, phases, namespace=namespace, events=False) as manager:
        run = await create_custom_run(kube, namespace, API, "Phases")
        done = await finish(kube, namespace, run)
    writes = manager.metrics.status_writes.labels(controller=phases.name)._value.get()
    assert state(done) == ("True", "Succeeded"), done["status"]
    assert done["status"]["extraFields"] == {"phase": "b", "pod": {"name": "p1"}}
    assert "results" not in done["status"]
    assert writes == 3  # phase a (with the start), phase b, success: no no-op write


class Stuck(Reconciler[NoParams]):
    """A reconcile that never returns (until cancelled by its time limit)."""

    api_version = API
    kind = "Stuck"
    reconcile_timeout = datetime.timedelta(milliseconds=300)

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_run_is_cancelled_while_its_reconcile_is_stuck(
    kube: KubeClient, namespace: str
) -> None:
    stuck = Stuck()
    async with running(kube, stuck, namespace=namespace, events=False):
        run = await create_custom_run(kube, namespace, API, "Stuck")
        await asyncio.wait_for(stuck.entered.wait(), 30)
        patch = {"spec": {"status": "RunCancelled", "statusMessage": "stop it"}}
        await kube.patch(CUSTOM_RUNS.path(namespace, run["metadata"]["name"]), patch)
        done = await finish(kube, namespace, run)
    assert state(done) == ("False", "CustomRunCancelled")
    assert done["status"]["conditions"][0]["message"] == "stop it"
