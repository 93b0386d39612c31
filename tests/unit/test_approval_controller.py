"""The Approval reconciler through the SDK's contract (``step``), with a fake API client:
what it creates, writes and reports for each state of its gate."""

from __future__ import annotations

import copy
from typing import Any, cast

from customtask_sdk.client import JSON, ConflictError, KubeClient, Resource
from customtask_sdk.reconciler import RetryLater
from customtask_sdk.reconciler.lifecycle import step, succeeded_condition
from customtask_sdk.testing.clock import FakeClock
from examples.approval.controller import APPROVAL_TASKS, REQUESTER_ANNOTATION, Approval


class FakeApi:
    """Just the calls Approval makes, over a dict of ApprovalTasks."""

    def __init__(self) -> None:
        self.tasks: dict[str, JSON] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)
        self.conflict_next_patch = False
        self.version = 10

    def _stamp(self, obj: JSON) -> JSON:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(obj)

    async def create(self, path: str, body: JSON) -> JSON:
        self.calls.append(f"create {path}")
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = "gate-uid"
        self.tasks[obj["metadata"]["name"]] = obj
        return self._stamp(obj)

    async def patch(self, path: str, body: JSON) -> JSON:
        self.calls.append(f"patch {path}")
        if self.conflict_next_patch:
            self.conflict_next_patch = False
            raise ConflictError(409, "Conflict", "the object has been modified", {})
        obj = self.tasks[path.split("/")[-2]]
        obj["status"] = {k: v for k, v in body["status"].items() if v is not None}
        return self._stamp(obj)

    def record(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        """The manager's Event recorder."""
        self.events.append((obj["metadata"]["name"], type_, reason, message))

    async def get_or_none(self, path: str) -> JSON | None:
        self.calls.append(f"get {path}")
        found = self.tasks.get(path.split("/")[-1])
        return copy.deepcopy(found) if found else None


def custom_run(annotations: dict[str, str] | None = None, **params: Any) -> JSON:
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "metadata": {
            "name": "gate",
            "namespace": "team",
            "uid": "run-uid",
            "generation": 1,
            "labels": {"tekton.dev/pipelineRun": "release", "tekton.dev/pipelineTask": "gate"},
            "annotations": annotations or {},
        },
        "spec": {
            "customRef": {"apiVersion": Approval.api_version, "kind": "ApprovalTask"},
            "params": [{"name": k, "value": v} for k, v in params.items()],
        },
    }


def approval(api: FakeApi) -> Approval:
    reconciler = Approval(FakeClock())
    reconciler.attach(cast(KubeClient, api), events=api)
    return reconciler


def owned_from(api: FakeApi) -> Any:
    def lookup(resource: Resource, uid: str) -> list[JSON]:
        assert resource == APPROVAL_TASKS
        return [copy.deepcopy(t) for t in api.tasks.values()]

    return lookup


async def test_the_first_reconcile_opens_a_gate_with_the_frozen_rules() -> None:
    api = FakeApi()
    run = custom_run(approvers=["alice", "group:release"], numberOfApprovalsRequired="2")
    result = await step(approval(api), run, FakeClock().now(), owned_from(api))
    gate = api.tasks["gate"]
    assert gate["spec"]["approvers"] == ["alice", "group:release"]
    assert gate["spec"]["numberOfApprovalsRequired"] == 2
    assert gate["metadata"]["ownerReferences"][0]["uid"] == "run-uid"
    assert gate["metadata"]["labels"] == {
        "approval.customtask.dev/customRun": "gate",
        "tekton.dev/pipelineRun": "release",
        "tekton.dev/pipelineTask": "gate",
    }
    assert gate["status"]["state"] == "pending"
    assert result.status is not None
    assert result.status["extraFields"] == {"approvalTask": {"name": "gate", "uid": "gate-uid"}}
    assert (succeeded_condition({"status": result.status}) or {})["status"] == "Unknown"


async def test_quorum_reached_decides_the_gate_then_the_run() -> None:
    api = FakeApi()
    reconciler = approval(api)
    run = custom_run(approvers=["alice", "bob"], numberOfApprovalsRequired="2")
    first = await step(reconciler, run, FakeClock().now(), owned_from(api))
    run["status"] = first.status
    api.tasks["gate"]["spec"]["responses"] = {
        "alice": {"decision": "approve", "message": "ok", "groups": []},
        "bob": {"decision": "approve", "groups": []},
    }
    api.calls.clear()
    done = await step(reconciler, run, FakeClock().now(), owned_from(api))
    assert api.calls == [
        "patch /apis/approval.customtask.dev/v1alpha1/namespaces/team/approvaltasks/gate/status"
    ]
    assert api.tasks["gate"]["status"]["state"] == "approved"
    assert done.status is not None
    cond = succeeded_condition({"status": done.status}) or {}
    assert (cond["status"], cond["reason"]) == ("True", "Approved")
    assert api.events == [  # one per response, through the manager's recorder
        ("gate", "Normal", "ResponseApproved", "alice (groups: none) approve: ok"),
        ("gate", "Normal", "ResponseApproved", "bob (groups: none) approve"),
    ]
    results = {r["name"]: r["value"] for r in done.status["results"]}
    assert results["decision"] == "approved"
    assert results["approvedBy"] == '["alice","bob"]'
    assert results["comments"] == '["alice (approve): ok"]'


async def test_prevent_self_approval_without_a_requester_fails_before_any_gate() -> None:
    api = FakeApi()
    run = custom_run(approvers=["alice"], preventSelfApproval="true")
    result = await step(approval(api), run, FakeClock().now(), owned_from(api))
    cond = succeeded_condition({"status": result.status}) or {}
    assert (cond["status"], cond["reason"]) == ("False", "RequesterUnknown")
    assert api.calls == []


async def test_the_requester_is_frozen_from_the_admission_stamped_annotation() -> None:
    api = FakeApi()
    run = custom_run({REQUESTER_ANNOTATION: "bob"}, approvers=["alice"], preventSelfApproval="true")
    await step(approval(api), run, FakeClock().now(), owned_from(api))
    assert api.tasks["gate"]["spec"]["requester"] == "bob"


async def opened(api: FakeApi) -> tuple[Approval, JSON]:
    """A reconciler and its run, whose gate (alice alone approves) is open."""
    reconciler = approval(api)
    run = custom_run(approvers=["alice"])
    run["status"] = (await step(reconciler, run, FakeClock().now(), owned_from(api))).status
    return reconciler, run


async def test_a_response_landing_during_the_count_makes_it_count_again() -> None:
    api = FakeApi()
    reconciler, run = await opened(api)
    api.tasks["gate"]["spec"]["responses"] = {"alice": {"decision": "approve"}}
    api.conflict_next_patch = True
    result = await step(reconciler, run, FakeClock().now(), owned_from(api))
    assert isinstance(result.error, RetryLater)  # nothing decided on a stale count
    assert result.status is None
    again = await step(reconciler, run, FakeClock().now(), owned_from(api))
    assert (succeeded_condition({"status": again.status}) or {})["reason"] == "Approved"


async def test_cancel_closes_a_pending_gate_before_the_run_ends() -> None:
    api = FakeApi()
    reconciler, run = await opened(api)
    run["spec"]["status"] = "RunCancelled"
    result = await step(reconciler, run, FakeClock().now(), owned_from(api))
    assert api.tasks["gate"]["status"]["state"] == "cancelled"
    assert (succeeded_condition({"status": result.status}) or {})["reason"] == "CustomRunCancelled"


async def test_cancel_closes_the_gate_even_before_the_cache_has_it() -> None:
    api = FakeApi()
    _, run = await opened(api)
    run["spec"]["status"] = "RunCancelled"
    fresh = approval(api)  # e.g. a new leader whose cache lags
    await step(fresh, run, FakeClock().now(), lambda resource, uid: [])
    assert api.tasks["gate"]["status"]["state"] == "cancelled"


async def test_its_own_writes_go_to_the_cache_so_the_next_reconcile_counts_from_them() -> None:
    api = FakeApi()
    reconciler = approval(api)
    cache: dict[str, JSON] = {}  # the controller's cache, before any watch event arrives

    def remember(resource: Resource, obj: JSON) -> None:
        assert resource == APPROVAL_TASKS
        cache[obj["metadata"]["name"]] = copy.deepcopy(obj)

    reconciler.attach(cast(KubeClient, api), events=api, cache_write=remember)
    run = custom_run(approvers=["alice"])
    first = await step(reconciler, run, FakeClock().now(), lambda r, uid: list(cache.values()))
    assert first.error is None, first.error
    assert cache["gate"] == api.tasks["gate"]  # the create, then its status write (pending)
    run["status"] = first.status
    api.calls.clear()
    again = await step(reconciler, run, FakeClock().now(), lambda r, uid: list(cache.values()))
    assert api.calls == []  # nothing to read, nothing to write again
    assert (again.error, again.status) == (None, None)  # and the run's status stands
