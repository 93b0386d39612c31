"""ObjectReconciler: any kind on the CustomRun machinery (cache, queue, guarded /status)."""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from customtask_sdk import PIPELINE_RUNS, Object, ObjectReconciler, Result, RetryLater
from customtask_sdk.client import JSON, ConflictError, Resource
from customtask_sdk.reconciler.objects import object_step
from customtask_sdk.runtime.controller import ObjectController, controller_for
from customtask_sdk.testing.clock import FakeClock
from tests.unit.test_controller import GUARD, NS, FakeApi

PODS = Resource("", "v1", "pods", "Pod")
MINE = "example.dev/delegated"


class Api(FakeApi):
    """The controller tests' fake apiserver, serving PipelineRuns (and Pods)."""

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        if path in (PIPELINE_RUNS.path(), PIPELINE_RUNS.path(NS), PODS.path(), PODS.path(NS)):
            kind = "Pod" if "/pods" in path else "PipelineRun"
            rv = self.events[-1][0] if self.events else 0
            items = [copy.deepcopy(o) for o in self.objects.values() if o["kind"] == kind]
            return {"items": items, "metadata": {"resourceVersion": str(rv)}}
        return await super().get(path, params)

    async def put(
        self, name: str, kind: str = "PipelineRun", owner: JSON | None = None, **fields: Any
    ) -> JSON:
        obj: JSON = {
            "apiVersion": "v1" if kind == "Pod" else "tekton.dev/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1},
            **fields,
        }
        if owner is not None:
            obj["metadata"]["ownerReferences"] = [owner]
        self.objects[name] = obj
        self._publish("ADDED", obj)
        await self.notify()
        return obj


def condition(reason: str, status: str = "Unknown") -> JSON:
    return {"conditions": [{"type": "Succeeded", "status": status, "reason": reason}]}


class Delegated(ObjectReconciler):
    """Reconciles the PipelineRuns managed by ``MINE`` by ``script`` (the last repeated)."""

    resource = PIPELINE_RUNS
    owns = (PODS,)

    def __init__(self, *script: Result | Exception) -> None:
        super().__init__(FakeClock())
        self.script = list(script)
        self.calls: list[str] = []
        self.owned_seen: list[list[str]] = []

    def selects(self, obj: JSON) -> bool:
        return (obj.get("spec") or {}).get("managedBy") == MINE

    async def reconcile(self, obj: Object) -> Result:
        self.calls.append(obj.name)
        self.owned_seen.append([p["metadata"]["name"] for p in obj.owned(PODS)])
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


@asynccontextmanager
async def serving(reconciler: Delegated, api: Api) -> AsyncIterator[ObjectController]:
    controller = controller_for(reconciler, api, workers=2)
    assert isinstance(controller, ObjectController)
    tasks = [asyncio.create_task(i.run()) for i in controller.informers]
    tasks.append(asyncio.create_task(controller.run_workers()))
    try:
        for informer in controller.informers:
            assert await informer.wait_synced(GUARD)
        yield controller
    finally:
        controller.queue.shutdown()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def reason_of(api: Api, name: str) -> str | None:
    conditions = (api.objects[name].get("status") or {}).get("conditions") or [{}]
    found: str | None = conditions[-1].get("reason")
    return found


async def test_only_selected_objects_are_cached_and_reconciled() -> None:
    api = Api()
    await api.put("theirs", spec={})
    await api.put("other", spec={"managedBy": "tekton.dev/pipeline"})
    await api.put("mine", spec={"managedBy": MINE})
    reconciler = Delegated(Result(status=condition("Succeeded", "True")))
    async with serving(reconciler, api) as controller:
        await api.wait_until(lambda: reason_of(api, "mine") == "Succeeded")
        assert controller.runs.keys() == [f"{NS}/mine"]
        await api.put("late", spec={"managedBy": MINE})  # a barrier: later than the others
        await api.wait_until(lambda: reason_of(api, "late") == "Succeeded")
    assert sorted(reconciler.calls) == ["late", "mine"]
    assert "status" not in api.objects["theirs"]
    assert "status" not in api.objects["other"]
    assert api.log == ["status:Succeeded", "status:Succeeded"]


async def test_status_is_written_only_when_it_changes_and_never_after_it_finished() -> None:
    api = Api()
    again = datetime.timedelta(milliseconds=1)
    running = Result(status=condition("Running"), requeue_after=again)
    reconciler = Delegated(running, running, running, Result(status=condition("Succeeded", "True")))
    async with serving(reconciler, api) as controller:
        await api.put("mine", spec={"managedBy": MINE})
        await api.wait_until(lambda: reason_of(api, "mine") == "Succeeded")
        # A change to the finished object is no reason to reconcile it: nothing is written.
        await api.patch(PIPELINE_RUNS.path(NS, "mine"), {"metadata": {"labels": {"a": "b"}}})
        await api.put("barrier", spec={"managedBy": MINE})
        await api.wait_until(lambda: reason_of(api, "barrier") == "Succeeded")
        stub = controller.runs.get(f"{NS}/mine")
    assert reconciler.calls == ["mine"] * 4 + ["barrier"]
    assert api.log == ["status:Running", "status:Succeeded", "status:Succeeded"]
    assert stub is not None
    assert "spec" not in stub


async def test_errors_and_conflicts_come_back_and_a_key_left_out_is_removed() -> None:
    api = Api()
    api.failures.append(
        (lambda path, body: path.endswith("/status"), ConflictError(409, "Conflict", "", {}))
    )
    reconciler = Delegated(
        RetryLater("not yet", after=datetime.timedelta(milliseconds=1)),
        ValueError("a bug"),
        Result(status={**condition("Running"), "extra": {"a": "1"}}),
        Result(status={**condition("Running"), "extra": {"a": "1"}}),  # after the conflict
        Result(status=condition("Succeeded", "True")),
    )
    async with serving(reconciler, api):
        await api.put("mine", spec={"managedBy": MINE}, status={"old": "x"})
        await api.wait_until(lambda: reason_of(api, "mine") == "Running")
        await api.patch(PIPELINE_RUNS.path(NS, "mine"), {"metadata": {"labels": {"a": "b"}}})
        await api.wait_until(lambda: reason_of(api, "mine") == "Succeeded")
    assert reconciler.calls == ["mine"] * 5
    assert api.objects["mine"]["status"] == condition("Succeeded", "True")


async def test_owned_objects_wake_their_owner_whatever_its_kind() -> None:
    api = Api()
    again = Result(status=condition("Running"))
    reconciler = Delegated(again, again, Result(status=condition("Succeeded", "True")))
    async with serving(reconciler, api):
        owner = await api.put("mine", spec={"managedBy": MINE})
        await api.wait_until(lambda: reason_of(api, "mine") == "Running")
        ref = {"kind": "PipelineRun", "name": "mine", "uid": owner["metadata"]["uid"]}
        await api.put("pod", kind="Pod", owner=ref)
        await api.wait_until(lambda: reason_of(api, "mine") == "Succeeded")
    assert reconciler.owned_seen[-1] == ["pod"]


async def test_object_step_writes_the_stored_form_and_nothing_when_unchanged() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    stored = {"conditions": [{"type": "Succeeded", "status": "Unknown"}]}
    obj = {"metadata": {"name": "a", "namespace": NS}, "status": stored}
    same = Delegated(Result(status={**stored, "gone": None}))
    assert (await object_step(same, obj, now)).status is None
    changed = Delegated(Result(status={"conditions": [], "tuple": ("x",)}))
    assert (await object_step(changed, obj, now)).status == {"conditions": [], "tuple": ["x"]}
    later = Delegated(Result(requeue_after=datetime.timedelta(seconds=-1)))
    assert (await object_step(later, obj, now)).requeue_after == 0.0


async def test_a_hung_reconcile_is_an_error() -> None:
    class Hung(Delegated):
        reconcile_timeout = datetime.timedelta(milliseconds=10)

        async def reconcile(self, obj: Object) -> Result:
            await asyncio.sleep(GUARD)
            return Result()

    obj = {"metadata": {"name": "a", "namespace": NS}}
    step = await object_step(Hung(), obj, datetime.datetime.now(datetime.UTC))
    assert step.error is not None
    assert "reconcile_timeout" in str(step.error)


def test_owner_reference_and_name() -> None:
    reconciler = Delegated()
    assert reconciler.name == "pipelineruns.tekton.dev"
    view = Object(
        {"apiVersion": "tekton.dev/v1", "metadata": {"name": "a", "uid": "u"}},
        datetime.datetime.now(datetime.UTC),
        PIPELINE_RUNS,
    )
    assert view.owner_reference()["kind"] == "PipelineRun"
    assert view.owned(PODS) == []


def test_reconcile_must_be_implemented() -> None:
    class Nothing(ObjectReconciler):
        resource = PIPELINE_RUNS

    view = Object({"metadata": {"name": "a"}}, datetime.datetime.now(datetime.UTC), PIPELINE_RUNS)
    with pytest.raises(NotImplementedError, match="Nothing must implement"):
        asyncio.run(Nothing().reconcile(view))
