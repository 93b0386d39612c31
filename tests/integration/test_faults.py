"""Faults on the real control plane: crashes, apiserver restarts, 410s, finalizers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections import defaultdict
from pathlib import Path

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient
from customtask_sdk.reconciler import Outcome, Reconciler, Run
from customtask_sdk.testing import ControlPlane, condition, wait_deleted, wait_for
from customtask_sdk.testing.controllers import controller_process, create_custom_run, running
from examples.wait.controller import Wait, WaitParams

ROOT = Path(__file__).resolve().parents[2]
WAIT = "examples.wait.controller:Wait"


def parse(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def done(obj: JSON) -> bool:
    return (condition(obj) or {}).get("status") in ("True", "False")


class Recorder:
    """Every version of every run in a namespace, from a watch started before the test."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.versions: dict[str, list[JSON]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def __aenter__(self) -> Recorder:
        page = await self.kube.get(CUSTOM_RUNS.path(self.namespace))
        self._task = asyncio.create_task(self._watch(page["metadata"]["resourceVersion"]))
        return self

    async def _watch(self, resource_version: str) -> None:
        while True:
            with contextlib.suppress(TimeoutError, OSError):
                params = {"resourceVersion": resource_version}
                async for event in self.kube.watch(CUSTOM_RUNS.path(self.namespace), params):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    self.versions[obj["metadata"]["name"]].append(obj)
                    self._seen[obj["metadata"]["name"]].set()

    async def barrier(self) -> None:
        """Create a run that nobody serves and wait until the watch shows it: the watch is
        ordered, so every change made before has been recorded by then."""
        marker = await create_custom_run(self.kube, self.namespace, "none.example/v1", "None")
        await asyncio.wait_for(self._seen[marker["metadata"]["name"]].wait(), 30)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def completions(self, name: str) -> int:
        """How many times the run went from not done to done (must be exactly 1)."""
        transitions, was_done = 0, False
        for version in self.versions[name]:
            if done(version) and not was_done:
                transitions += 1
            was_done = done(version)
        return transitions

    def status_changes_after_done(self, name: str) -> int:
        statuses = [v.get("status") for v in self.versions[name]]
        first = next(i for i, v in enumerate(self.versions[name]) if done(v))
        return sum(1 for s in statuses[first + 1 :] if s != statuses[first])


async def test_sigkill_mid_flight_loses_and_repeats_nothing(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    controller = controller_process(
        control_plane, WAIT, "--no-events", namespace=namespace, app_dir=ROOT
    )
    durations = {f"w-{i:03d}": f"{1 + i % 4}s" for i in range(100)}
    async with Recorder(kube, namespace) as recorder:
        await controller.start()
        try:
            for name, duration in durations.items():
                await create_custom_run(
                    kube, namespace, Wait.api_version, "Wait", {"duration": duration}, name=name
                )
            # Killed mid-flight: the first 1s waits are over, longer ones still wait.
            await wait_for(kube, CUSTOM_RUNS, namespace, "w-000", done, timeout=60)
            await controller.kill()
            await asyncio.sleep(1.0)  # a real outage: waits end while no controller runs
            await controller.start()
            for name in durations:
                await wait_for(kube, CUSTOM_RUNS, namespace, name, done, timeout=60)
        finally:
            await controller.stop()
        await recorder.barrier()  # every write of the (stopped) controller is recorded
    for name, duration in durations.items():
        final = recorder.versions[name][-1]
        assert (condition(final) or {}).get("reason") == "DurationElapsed", name
        assert recorder.completions(name) == 1, name
        assert recorder.status_changes_after_done(name) == 0, name
        starts = {v["status"]["startTime"] for v in recorder.versions[name] if v.get("status")}
        assert len(starts) == 1, f"{name} was restarted: {starts}"
        waited = parse(final["status"]["completionTime"]) - parse(final["status"]["startTime"])
        assert waited >= datetime.timedelta(seconds=int(duration[:-1])), name


async def test_apiserver_restart_mid_run(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    async with running(kube, Wait(), namespace=namespace, events=False):
        run = await create_custom_run(kube, namespace, Wait.api_version, "Wait", {"duration": "4s"})
        name = run["metadata"]["name"]
        await wait_for(kube, CUSTOM_RUNS, namespace, name, condition)
        await control_plane.stop_apiserver()
        await asyncio.sleep(1)  # a real outage: the controller's requests and watch fail
        await control_plane.start_apiserver()
        final = await wait_for(kube, CUSTOM_RUNS, namespace, name, done, timeout=30)
        later = await create_custom_run(
            kube, namespace, Wait.api_version, "Wait", {"duration": "0s"}
        )
        await wait_for(kube, CUSTOM_RUNS, namespace, later["metadata"]["name"], done, timeout=30)
    assert (condition(final) or {}).get("reason") == "DurationElapsed"
    waited = parse(final["status"]["completionTime"]) - parse(final["status"]["startTime"])
    assert datetime.timedelta(seconds=4) <= waited < datetime.timedelta(seconds=8)


async def test_a_forced_410_relists_and_misses_nothing(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    """A restarted apiserver's watch cache cannot serve the informer's old resourceVersion:
    its watch gets 410 Gone, it re-lists, and runs created or deleted meanwhile are seen."""
    async with running(kube, Wait(), namespace=namespace, events=False) as manager:
        informer = manager.controllers[0].runs
        doomed = await create_custom_run(
            kube, namespace, Wait.api_version, "Wait", {"duration": "1h"}, timeout="2h"
        )
        doomed_name = doomed["metadata"]["name"]
        await wait_for(kube, CUSTOM_RUNS, namespace, doomed_name, condition)
        assert informer.get(f"{namespace}/{doomed_name}") is not None
        gone_before = informer.relists_after_gone
        await control_plane.stop_apiserver()
        await control_plane.start_apiserver()
        # Changes made while the informer is still backing off from the outage.
        await kube.delete(CUSTOM_RUNS.path(namespace, doomed_name))
        fresh = await create_custom_run(
            kube, namespace, Wait.api_version, "Wait", {"duration": "0s"}
        )
        # The barrier: the informer had the fresh run (created after the delete) to
        # reconcile it, so its cache is at least that recent.
        await wait_for(kube, CUSTOM_RUNS, namespace, fresh["metadata"]["name"], done, timeout=30)
    assert informer.relists_after_gone > gone_before
    assert informer.get(f"{namespace}/{doomed_name}") is None


def released(obj: JSON) -> bool:
    """Finished, and cleaned up: the final status is written before the finalizer goes."""
    return done(obj) and not obj["metadata"].get("finalizers")


class Cleaning(Reconciler[WaitParams]):
    """A Wait that owns an external resource, released in ``finalize``."""

    api_version = "cleaning.customtask.dev/v1"
    kind = "Wait"

    def __init__(self) -> None:
        super().__init__()
        self.finalized: list[str] = []
        self.delegate = Wait(self.clock)

    async def reconcile(self, run: Run[WaitParams]) -> Outcome:
        return await self.delegate.reconcile(run)

    async def finalize(self, run: Run[WaitParams]) -> None:
        self.finalized.append(run.name)


async def test_finalizer_guards_cleanup_on_finish_and_on_delete(
    kube: KubeClient, namespace: str
) -> None:
    reconciler = Cleaning()
    async with running(kube, reconciler, namespace=namespace, events=False) as manager:
        finalizer = manager.controllers[0].finalizer
        short = await create_custom_run(
            kube, namespace, reconciler.api_version, "Wait", {"duration": "1s"}
        )
        long = await create_custom_run(
            kube, namespace, reconciler.api_version, "Wait", {"duration": "1h"}, timeout="2h"
        )
        long_name = long["metadata"]["name"]
        held = await wait_for(
            kube,
            CUSTOM_RUNS,
            namespace,
            long_name,
            lambda o: (
                finalizer in (o["metadata"].get("finalizers") or []) and condition(o) is not None
            ),
        )
        finished = await wait_for(kube, CUSTOM_RUNS, namespace, short["metadata"]["name"], released)
        await kube.delete(CUSTOM_RUNS.path(namespace, long_name))
        await wait_deleted(kube, CUSTOM_RUNS, namespace, long_name)
    assert held["metadata"]["finalizers"] == [finalizer]
    assert (condition(finished) or {}).get("status") == "True"
    assert finished["metadata"].get("finalizers") in (None, [])
    assert sorted(reconciler.finalized) == sorted([short["metadata"]["name"], long_name])


class FlakyCleanup(Cleaning):
    """Cleanup that fails twice before it succeeds."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[str] = []

    async def finalize(self, run: Run[WaitParams]) -> None:
        self.attempts.append(run.name)
        if len(self.attempts) <= 2:
            raise ConnectionError("the external system is down")
        await super().finalize(run)


async def test_a_failing_cleanup_is_retried_with_backoff_after_the_run_finishes(
    kube: KubeClient, namespace: str
) -> None:
    reconciler = FlakyCleanup()
    async with running(kube, reconciler, namespace=namespace, events=False):
        run = await create_custom_run(
            kube, namespace, reconciler.api_version, "Wait", {"duration": "0s"}
        )
        finished = await wait_for(
            kube, CUSTOM_RUNS, namespace, run["metadata"]["name"], released, timeout=30
        )
    assert len(reconciler.attempts) == 3  # retried (with the queue's backoff) until it worked
    assert reconciler.finalized == [run["metadata"]["name"]]
    assert (condition(finished) or {}).get("reason") == "DurationElapsed"
    assert finished["metadata"].get("finalizers") in (None, [])
