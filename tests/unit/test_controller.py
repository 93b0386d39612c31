"""Controller edge cases against an in-memory apiserver (integration tests use a real one)."""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from customtask_sdk.client import (
    CUSTOM_RUNS,
    JSON,
    ApiError,
    ClientConfig,
    ConflictError,
    KubeClient,
    NotFoundError,
    Resource,
)
from customtask_sdk.queue import WorkQueue
from customtask_sdk.reconciler import (
    CANCELLED,
    TIMED_OUT,
    GoDuration,
    Outcome,
    Params,
    Reconciler,
    RetryLater,
    Run,
    Running,
    Succeeded,
)
from customtask_sdk.runtime.controller import Controller, status_patch
from customtask_sdk.testing.clock import FakeClock

API = "example.dev/v1"
NS = "ns"
GUARD = 5.0  # seconds before a wait counts as "never": only ever reached by a failing test


def merge(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch (RFC 7386), as the apiserver does."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


Failure = tuple[Callable[[str, JSON], bool], ApiError]


class FakeApi(KubeClient):
    """CustomRuns in memory: list, watch, merge patches with resourceVersion preconditions
    (``/status`` apart), finalizers. ``log`` records each write that landed, in order."""

    def __init__(self) -> None:
        super().__init__(ClientConfig(host="https://127.0.0.1:1"))
        self.objects: dict[str, JSON] = {}
        self.events: list[tuple[int, JSON]] = []
        self.changed = asyncio.Condition()
        self.log: list[str] = []
        self.failures: list[Failure] = []  # each fails the first patch it matches, once
        self._rv = itertools.count(1)

    def _publish(self, kind: str, obj: JSON) -> None:
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.events.append((rv, {"type": kind, "object": copy.deepcopy(obj)}))

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def add(self, name: str, params: Mapping[str, str], **fields: Any) -> None:
        """Create a run (``fields``: more of ``spec``, or ``status`` / ``finalizers``)."""
        status = fields.pop("status", None)
        finalizers = fields.pop("finalizers", None)
        obj: JSON = {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            "spec": {
                "customRef": {"apiVersion": API, "kind": "Task"},
                "params": [{"name": k, "value": v} for k, v in params.items()],
                **fields,
            },
        }
        if status is not None:
            obj["status"] = status
        if finalizers is not None:
            obj["metadata"]["finalizers"] = finalizers
        self.objects[name] = obj
        self._publish("ADDED", obj)
        await self.notify()

    def run(self, name: str) -> JSON:
        return copy.deepcopy(self.objects[name])

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        if path in (CUSTOM_RUNS.path(), CUSTOM_RUNS.path(NS)):
            rv = self.events[-1][0] if self.events else 0
            items = [copy.deepcopy(o) for o in self.objects.values()]
            return {"items": items, "metadata": {"resourceVersion": str(rv)}}
        name = path.rsplit("/", 1)[1]
        if name not in self.objects:
            raise NotFoundError(404, "NotFound", name, {})
        return self.run(name)

    async def patch(
        self,
        path: str,
        body: Any,
        patch_type: Any = "merge",
        params: Mapping[str, str] | None = None,
    ) -> JSON:
        status = path.endswith("/status")
        name = path.removesuffix("/status").rsplit("/", 1)[1]
        obj = self.objects.get(name)
        if obj is None:
            raise NotFoundError(404, "NotFound", name, {})
        for failure in self.failures:
            matches, error = failure
            if matches(path, body):
                self.failures.remove(failure)
                raise error
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != obj["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", "the object has been modified", {})
        if status:
            obj["status"] = merge(obj.get("status"), body["status"])
            reason = obj["status"]["conditions"][-1]["reason"]
            self.log.append(f"status:{reason}")
        else:
            obj["metadata"] = merge(obj["metadata"], {**body.get("metadata", {})})
            if "spec" in body:
                obj["spec"] = merge(obj["spec"], body["spec"])
                obj["metadata"]["generation"] += 1
            if "finalizers" in body.get("metadata", {}):
                self.log.append(f"finalizers:{obj['metadata'].get('finalizers')}")
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.objects[name]
            self._publish("DELETED", obj)
        else:
            self._publish("MODIFIED", obj)
        await self.notify()
        return copy.deepcopy(obj)

    async def watch(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        inactivity_timeout: float = 70.0,
    ) -> AsyncIterator[JSON]:
        sent = int((params or {}).get("resourceVersion") or 0)
        while True:
            for rv, event in self.events:
                if rv > sent:
                    sent = rv
                    yield copy.deepcopy(event)
            async with self.changed:
                await self.changed.wait_for(functools.partial(self._has_events_after, sent))

    def _has_events_after(self, rv: int) -> bool:
        return bool(self.events) and self.events[-1][0] > rv

    async def wait_until(self, check: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), GUARD)


def reason(obj: JSON) -> str | None:
    conditions = (obj.get("status") or {}).get("conditions") or [{}]
    found: str | None = conditions[-1].get("reason")
    return found


class TaskParams(Params):
    duration: GoDuration = datetime.timedelta(0)


class Task(Reconciler[TaskParams]):
    """Reconciles by ``script`` (one outcome or exception per call, the last repeated);
    logs ``finalize`` calls into the fake API's write log."""

    api_version = API
    kind = "Task"

    def __init__(self, api: FakeApi, *script: Outcome | Exception, clock: FakeClock) -> None:
        super().__init__(clock)
        self.api = api
        self.script = list(script) or [Succeeded()]
        self.calls: list[str] = []
        self.called = asyncio.Event()

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        self.calls.append(run.name)
        self.called.set()
        await self.api.notify()
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


class Cleaning(Task):
    async def finalize(self, run: Run[TaskParams]) -> None:
        assert run.params.duration == datetime.timedelta(0)
        self.api.log.append("finalize")


class Recorder:
    """The manager's EventRecorder, in memory: (run, type, reason) in recording order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def record(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason))


@asynccontextmanager
async def serving(
    reconciler: Task, events: Recorder | None = None, **queue: Any
) -> AsyncIterator[Controller]:
    """The controller running its informer and two workers (``queue``: WorkQueue options)."""
    controller = Controller(reconciler, reconciler.api, workers=2, events=events)
    if queue:
        controller.queue = WorkQueue(controller.name, **queue)
    tasks = [
        asyncio.create_task(controller.runs.run()),
        asyncio.create_task(controller.run_workers()),
    ]
    try:
        assert await controller.runs.wait_synced(GUARD)
        yield controller
    finally:
        controller.queue.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settled(api: FakeApi, name: str, want: str) -> Callable[[], bool]:
    """The run holds no finalizer and ended with ``want`` (or is gone, for ``want=""``)."""

    def check() -> bool:
        obj = api.objects.get(name)
        if obj is None:
            return want == ""
        return reason(obj) == want and not obj["metadata"].get("finalizers")

    return check


async def test_an_instant_run_costs_one_status_write(api: FakeApi, clock: FakeClock) -> None:
    reconciler = Task(api, Succeeded(), clock=clock)
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    assert api.log == ["status:Succeeded"]
    assert "results" not in api.objects["r"]["status"]


@pytest.mark.parametrize(
    "error",
    [
        ConflictError(409, "Conflict", "", {}),  # re-read, reconcile again: never overwrite
        ApiError(422, "Invalid", "bad", {}),  # the worker survives; retried with backoff
    ],
)
async def test_a_failed_status_write_is_reconciled_again(
    api: FakeApi, clock: FakeClock, error: ApiError
) -> None:
    api.failures.append((lambda path, body: path.endswith("/status"), error))
    reconciler = Task(api, Succeeded(), clock=clock)
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    assert reconciler.calls == ["r", "r"]
    assert api.log == ["status:Succeeded"]


async def test_a_finishing_run_stores_its_outcome_then_cleans_up_then_drops_the_finalizer(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Cleaning(api, Running(), Succeeded(), clock=clock)
    async with serving(reconciler) as controller:
        await api.add("r", {})
        await api.wait_until(lambda: reason(api.objects["r"]) == "Running")
        await api.patch(CUSTOM_RUNS.path(NS, "r"), {"metadata": {"labels": {"wake": "1"}}})
        await api.wait_until(settled(api, "r", "Succeeded"))
    finalizer = controller.finalizer
    assert api.log == [
        f"finalizers:['{finalizer}']",
        "status:Running",
        "status:Succeeded",
        "finalize",
        "finalizers:[]",
    ]


def removes_finalizer(path: str, body: JSON) -> bool:
    return body.get("metadata", {}).get("finalizers") == []


async def test_a_conflict_dropping_the_finalizer_never_reconciles_the_cleaned_up_run(
    api: FakeApi, clock: FakeClock
) -> None:
    api.failures.append((removes_finalizer, ConflictError(409, "Conflict", "", {})))
    reconciler = Cleaning(api, Succeeded(), clock=clock)
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    assert reconciler.calls == ["r"]  # its resources are gone: never reconciled again
    assert api.log[1:] == ["status:Succeeded", "finalize", "finalize", "finalizers:[]"]


async def test_a_run_left_finished_with_its_finalizer_is_cleaned_up_not_reconciled(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Cleaning(api, clock=clock)
    controller_finalizer = f"{API.split('/')[0]}/task-cleanup"
    done = {"conditions": [{"type": "Succeeded", "status": "False", "reason": "Boom"}]}
    await api.add("r", {}, status=done, finalizers=[controller_finalizer])  # a crash, say
    async with serving(reconciler):
        await api.wait_until(settled(api, "r", "Boom"))
    assert reconciler.calls == []
    assert api.log == ["finalize", "finalizers:[]"]


async def test_a_run_with_invalid_params_drops_its_finalizer_without_finalize(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Cleaning(api, clock=clock)
    async with serving(reconciler):
        await api.add("r", {"duration": "soon"})
        await api.wait_until(settled(api, "r", "InvalidParams"))
    assert reconciler.calls == []
    assert "finalize" not in api.log


class HangingCleanup(Cleaning):
    """Its first ``finalize`` hangs until cancelled."""

    reconcile_timeout = datetime.timedelta(milliseconds=20)

    async def finalize(self, run: Run[TaskParams]) -> None:
        if "hung" not in self.api.log:
            self.api.log.append("hung")
            await asyncio.Event().wait()
        await super().finalize(run)


async def test_a_hung_finalize_is_cancelled_and_retried(api: FakeApi, clock: FakeClock) -> None:
    reconciler = HangingCleanup(api, Succeeded(), clock=clock)
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    assert api.log[1:] == ["status:Succeeded", "hung", "finalize", "finalizers:[]"]


class Stuck(Task):
    """Its first reconcile starts the run, the next ones never return; records cancels."""

    reconcile_timeout = datetime.timedelta(milliseconds=50)

    def __init__(self, api: FakeApi, clock: FakeClock) -> None:
        super().__init__(api, clock=clock)
        self.cancelled: list[str] = []
        self.stuck = asyncio.Event()

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        if not self.calls:
            return await super().reconcile(run)  # Running: the run is started
        self.stuck.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def on_cancel(self, run: Run[TaskParams]) -> None:
        self.cancelled.append(run.name)


@pytest.mark.parametrize("ending", ["cancel", "timeout"])
async def test_a_cancellation_or_timeout_is_seen_while_a_reconcile_of_the_run_is_stuck(
    api: FakeApi, clock: FakeClock, ending: str
) -> None:
    reconciler = Stuck(api, clock)
    reconciler.script = [Running()]
    async with serving(reconciler):
        await api.add("r", {}, timeout="1m")
        await api.wait_until(lambda: reason(api.objects["r"]) == "Running")
        await api.patch(CUSTOM_RUNS.path(NS, "r"), {"metadata": {"labels": {"wake": "1"}}})
        await asyncio.wait_for(reconciler.stuck.wait(), GUARD)
        if ending == "cancel":
            cancel = {"spec": {"status": "RunCancelled", "statusMessage": "stop"}}
            await api.patch(CUSTOM_RUNS.path(NS, "r"), cancel)
        else:
            clock.advance(60)  # the deadline passes while the reconcile is stuck
        await api.wait_until(settled(api, "r", CANCELLED if ending == "cancel" else TIMED_OUT))
    assert reconciler.cancelled == (["r"] if ending == "cancel" else [])


@pytest.mark.parametrize(
    "error",
    [ConnectionError("backend down"), RetryLater("later", after=datetime.timedelta(hours=2))],
)
async def test_an_error_comes_back_by_the_deadline_whatever_the_backoff(
    api: FakeApi, clock: FakeClock, error: Exception
) -> None:
    reconciler = Task(api, error, clock=clock)
    async with serving(reconciler, base_delay=1000.0, max_delay=1000.0):
        await api.add("r", {}, timeout="100ms")
        await asyncio.wait_for(reconciler.called.wait(), GUARD)
        clock.advance(1)  # the next look at the run is past its deadline
        await api.wait_until(lambda: reason(api.objects["r"]) == TIMED_OUT)
    assert reconciler.calls == ["r"]


async def test_a_removed_extra_field_disappears_from_the_stored_status(
    api: FakeApi, clock: FakeClock
) -> None:
    now = datetime.timedelta(0)
    reconciler = Task(
        api,
        Running(requeue_after=now, extra_fields={"phase": "a", "pod": {"name": "p1", "ip": "x"}}),
        Running(requeue_after=now, extra_fields={"phase": "b", "pod": {"name": "p1"}}),
        Running(extra_fields={"phase": "b", "pod": {"name": "p1"}}),
        clock=clock,
    )
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(lambda: len(reconciler.calls) == 3)
        await api.patch(CUSTOM_RUNS.path(NS, "r"), {"metadata": {"labels": {"wake": "1"}}})
        await api.wait_until(lambda: len(reconciler.calls) == 4)
        await api.patch(CUSTOM_RUNS.path(NS, "r"), {"metadata": {"labels": {"wake": "2"}}})
        await api.wait_until(lambda: len(reconciler.calls) == 5)  # the 4th was written, if ever
    assert api.objects["r"]["status"]["extraFields"] == {"phase": "b", "pod": {"name": "p1"}}
    assert api.log == ["status:Running", "status:Running"]  # unchanged since: no no-op PATCH


@pytest.mark.parametrize(
    ("current", "desired"),
    [
        ({"a": 1, "b": 2}, {"a": 1}),
        ({"extraFields": {"phase": "a", "pod": "p1"}}, {"extraFields": {"phase": "b"}}),
        ({"x": {"y": {"z": 1, "w": 2}}}, {"x": {"y": {"z": 1}}}),
        ({"x": {"y": 1}}, {"x": [1, 2]}),
        ({"x": [1, 2]}, {"x": {"y": 1}}),
        ({}, {"x": {"y": {}}}),
    ],
)
def test_status_patch_turns_the_current_status_into_the_desired_one(
    current: JSON, desired: JSON
) -> None:
    assert merge(current, status_patch(current, desired)) == desired


class Announcing(Task):
    """Records an Event of its own on each run it reconciles."""

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        self.record_event(run.obj, "Warning", "Looked", f"looked at {run.name}")
        return await super().reconcile(run)


@pytest.mark.parametrize("events", [True, False])
async def test_a_reconcilers_events_go_through_the_controllers_recorder(
    api: FakeApi, clock: FakeClock, events: bool
) -> None:
    recorder = Recorder()
    reconciler = Announcing(api, Succeeded(), clock=clock)
    async with serving(reconciler, recorder if events else None):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    expected = [("r", "Warning", "Looked"), ("r", "Normal", "Succeeded")]
    assert recorder.events == (expected if events else [])  # none at all with events off


class Hooked(Task):
    """Starts a background task in ``start`` and ends it in ``stop``, logging both."""

    reconcile_timeout = datetime.timedelta(seconds=0.2)

    def __init__(self, api: FakeApi, *script: Outcome | Exception, clock: FakeClock) -> None:
        super().__init__(api, *script, clock=clock)
        self.background: asyncio.Task[None] | None = None
        self.hang_in_stop = False
        self.started = asyncio.Event()

    async def start(self) -> None:
        self.api.log.append("start")
        self.started.set()
        self.background = asyncio.create_task(asyncio.sleep(3600))

    async def stop(self) -> None:
        self.api.log.append("stop")
        assert self.background is not None
        self.background.cancel()
        if self.hang_in_stop:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.api.log.append("stop cancelled")
                raise


async def test_start_comes_before_the_first_reconcile_and_stop_after_the_last(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Hooked(api, Succeeded(), clock=clock)
    async with serving(reconciler):
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
        assert api.log == ["start", "status:Succeeded"]
    assert api.log == ["start", "status:Succeeded", "stop"]
    assert reconciler.background is not None
    assert reconciler.background.cancelled()


async def test_a_hung_stop_is_cancelled_after_reconcile_timeout(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Hooked(api, clock=clock)
    reconciler.hang_in_stop = True
    controller = Controller(reconciler, api, workers=1)
    workers = asyncio.create_task(controller.run_workers())
    await asyncio.wait_for(reconciler.started.wait(), GUARD)
    controller.queue.shutdown()
    await asyncio.wait_for(workers, GUARD)  # returns: the stop's failure is only logged
    assert api.log == ["start", "stop", "stop cancelled"]


async def test_a_failing_start_runs_no_worker(api: FakeApi, clock: FakeClock) -> None:
    class Broken(Task):
        async def start(self) -> None:
            raise ValueError("no notification endpoint")

    reconciler = Broken(api, clock=clock)
    controller = Controller(reconciler, api, workers=1)
    await api.add("r", {})
    controller.queue.add("ns/r")
    with pytest.raises(ValueError, match="no notification endpoint"):
        await asyncio.wait_for(controller.run_workers(), GUARD)
    assert reconciler.calls == []


GADGETS = Resource("example.dev", "v1", "gadgets", "Gadget")


class Making(Task):
    """Owns Gadgets: "writes" one per run (versions 7, then a stale 5) and remembers both;
    succeeds once ``run.owned`` shows version 7. The Gadget watch never delivers a thing."""

    owns = (GADGETS,)

    def __init__(self, api: FakeApi, *, clock: FakeClock) -> None:
        super().__init__(api, clock=clock)
        self.seen: list[list[str]] = []

    def gadget(self, run: Run[TaskParams], version: str) -> JSON:
        meta = {"name": run.name, "namespace": NS, "uid": "g1", "resourceVersion": version}
        owner = {"kind": "CustomRun", "name": run.name, "uid": run.uid}
        return {"metadata": {**meta, "ownerReferences": [owner]}}

    async def reconcile(self, run: Run[TaskParams]) -> Outcome:
        found = run.owned(GADGETS)
        self.seen.append([g["metadata"]["resourceVersion"] for g in found])
        if not found:
            self.remember(GADGETS, self.gadget(run, "7"))
            self.remember(GADGETS, self.gadget(run, "5"))  # older: ignored
            return Running(requeue_after=datetime.timedelta(0))
        return Succeeded()


async def test_a_reconcilers_own_writes_are_in_the_cache_before_their_watch_events(
    api: FakeApi, clock: FakeClock
) -> None:
    reconciler = Making(api, clock=clock)
    async with serving(reconciler):  # runs the CustomRun informer only: Gadgets lag forever
        await api.add("r", {})
        await api.wait_until(settled(api, "r", "Succeeded"))
    assert reconciler.seen == [[], ["7"]]
    with pytest.raises(KeyError, match=r"CustomRun is not in Making\.owns"):
        reconciler.remember(CUSTOM_RUNS, api.run("r"))
