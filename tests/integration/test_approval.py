"""Approval on the real control plane: its admission policies enforced by kube-apiserver,
users authenticated by client certificates, Tekton's own PipelineRun controller.

The controller runs as its service account's user with the RBAC of ``config/``; approvers
are users minted by ``kubeconfig_for``; every refusal is the apiserver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from customtask_sdk.client import (
    CUSTOM_RUNS,
    JSON,
    PIPELINE_RUNS,
    ApiError,
    ForbiddenError,
    KubeClient,
    NotFoundError,
    Resource,
)
from customtask_sdk.testing import ControlPlane, condition, wait_for
from customtask_sdk.testing.controllers import controller_process, create_custom_run, running
from examples.approval.cli import run as cli_run
from examples.approval.controller import APPROVAL_TASKS, REQUESTER_ANNOTATION, Approval
from examples.approval.install import (
    CONTROLLER,
    CONTROLLER_GROUPS,
    grant_team,
    install,
    uninstall_admission,
    wait_enforced,
)
from examples.wait.controller import Wait

ROOT = Path(__file__).resolve().parents[2]
API = Approval.api_version
KIND = "ApprovalTask"
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
)
EVENTS = Resource("", "v1", "events", "Event")
# Tekton's controller runs with the control plane's admin kubeconfig here, so that is the
# identity whose CustomRuns keep the requester copied from their PipelineRun.
TEKTON_USER = "default"


class Users:
    """Clients authenticated as users (client certificates), made once per name."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.clients: dict[str, KubeClient] = {}

    async def __call__(self, name: str, *groups: str) -> KubeClient:
        key = "/".join((name, *groups))
        if key not in self.clients:
            path = self.cp.kubeconfig_for(name, groups, name=f"user-{uuid.uuid4().hex[:8]}")
            self.clients[key] = await KubeClient.from_kubeconfig(str(path))
        return self.clients[key]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def installed(control_plane: ControlPlane, kube: KubeClient) -> AsyncIterator[None]:
    """The CRD, RBAC and admission policies of ``config/``, for this module."""
    await install(kube, tekton_user=TEKTON_USER)
    await wait_enforced(kube)
    yield
    await uninstall_admission(kube)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def users(control_plane: ControlPlane) -> AsyncIterator[Users]:
    made = Users(control_plane)
    yield made
    await made.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def controller_kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig_for(CONTROLLER, CONTROLLER_GROUPS, name="approval-controller")


@pytest_asyncio.fixture(loop_scope="session")
async def team(installed: None, kube: KubeClient, namespace: str) -> str:
    """A namespace where every authenticated user may read gates and write responses
    (the approver ClusterRole) and create runs: admission alone decides who counts."""
    everyone = {"kind": "Group", "name": "system:authenticated"}
    await grant_team(kube, namespace, [{**everyone, "apiGroup": "rbac.authorization.k8s.io"}])
    return namespace


@contextlib.asynccontextmanager
async def serving(
    kubeconfig: Path, namespace: str, **manager_options: Any
) -> AsyncIterator[Approval]:
    """Approval (and Wait, for pipelines) in this process, as the controller's user."""
    approval = Approval()
    approval.notifier.backoff = 0.05
    async with (
        await KubeClient.from_kubeconfig(str(kubeconfig)) as client,
        running(client, approval, Wait(), namespace=namespace, **manager_options),
    ):
        yield approval


def wait_task(name: str, **extra: Any) -> JSON:
    return {
        "name": name,
        "taskRef": {"apiVersion": Wait.api_version, "kind": "Wait"},
        "params": [{"name": "duration", "value": "0s"}],
        **extra,
    }


def gate_task(name: str = "gate", **params: Any) -> JSON:
    return {
        "name": name,
        "taskRef": {"apiVersion": API, "kind": KIND},
        "params": [{"name": k, "value": v} for k, v in params.items()],
    }


async def open_gate(client: KubeClient, namespace: str, **params: Any) -> str:
    run = await create_custom_run(client, namespace, API, KIND, params)
    name: str = run["metadata"]["name"]
    return name


def done(obj: JSON) -> bool:
    return (condition(obj) or {}).get("status") in ("True", "False")


async def finished(kube: KubeClient, namespace: str, name: str) -> JSON:
    return await wait_for(kube, CUSTOM_RUNS, namespace, name, done)


async def gate_where(
    kube: KubeClient, namespace: str, name: str, check: Callable[[JSON], bool]
) -> JSON:
    return await wait_for(kube, APPROVAL_TASKS, namespace, name, check)


def state_is(state: str) -> Callable[[JSON], bool]:
    return lambda t: (t.get("status") or {}).get("state") == state


def audited(count: int) -> Callable[[JSON], bool]:
    return lambda t: len((t.get("status") or {}).get("responses") or ()) >= count


async def respond(
    client: KubeClient, namespace: str, name: str, user: str, decision: str, message: str = ""
) -> JSON:
    body = {"spec": {"responses": {user: {"decision": decision, "message": message}}}}
    return await client.patch(APPROVAL_TASKS.path(namespace, name), body)


def result(run: JSON, name: str) -> Any:
    for item in run["status"].get("results") or ():
        if item["name"] == name:
            value = item["value"]
            return json.loads(value) if value.startswith("[") else value
    raise KeyError(name)


async def test_approved_by_quorum_with_results_audit_and_events(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube,
            team,
            approvers=["alice", "group:release"],
            numberOfApprovalsRequired="2",
            description="Ship v1.2 to production?",
        )
        run = await wait_for(kube, CUSTOM_RUNS, team, name, lambda r: condition(r) is not None)
        gate = await gate_where(kube, team, name, state_is("pending"))
        assert gate["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
        assert gate["metadata"]["labels"]["approval.customtask.dev/customRun"] == name
        assert gate["spec"]["numberOfApprovalsRequired"] == 2
        assert gate["spec"]["description"] == "Ship v1.2 to production?"

        await respond(await users("alice"), team, name, "alice", "approve", "lgtm")
        gate = await gate_where(kube, team, name, audited(1))
        assert gate["status"]["approvalsReceived"] == 1
        run = await wait_for(
            kube,
            CUSTOM_RUNS,
            team,
            name,
            lambda r: "1/2" in (condition(r) or {}).get("message", ""),
        )
        assert condition(run)["status"] == "Unknown"  # type: ignore[index]

        await respond(await users("carol", "release"), team, name, "carol", "approve", "ship it")
        run = await finished(kube, team, name)
        assert (condition(run)["status"], condition(run)["reason"]) == ("True", "Approved")  # type: ignore[index]
        assert result(run, "decision") == "approved"
        assert result(run, "approvedBy") == ["alice", "carol"]
        assert result(run, "comments") == ["alice (approve): lgtm", "carol (approve): ship it"]

        gate = await kube.get(APPROVAL_TASKS.path(team, name))
        assert gate["status"]["state"] == "approved"
        records = gate["status"]["responses"]
        assert [(r["user"], r["decision"]) for r in records] == [
            ("alice", "approve"),
            ("carol", "approve"),
        ]
        assert "release" in records[1]["groups"]  # stamped by admission, not written by carol
        assert all(r["time"] for r in records)

    events = await _events(kube, team, name, "ResponseApproved", 2)
    assert any("carol (groups: release" in e["message"] for e in events)


async def _events(
    kube: KubeClient, namespace: str, name: str, reason: str, count: int
) -> list[JSON]:
    selector = {"fieldSelector": f"involvedObject.name={name},reason={reason}"}
    async with asyncio.timeout(10):
        while True:
            items: list[JSON] = (await kube.get(EVENTS.path(namespace), selector))["items"]
            if len(items) >= count:
                return items
            await asyncio.sleep(0.1)


async def test_no_events_turns_off_the_response_events_too(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team, events=False):
        name = await open_gate(kube, team, approvers=["alice"])
        await gate_where(kube, team, name, state_is("pending"))
        await respond(await users("alice"), team, name, "alice", "approve", "lgtm")
        await finished(kube, team, name)
    # The manager has stopped (the barrier): nothing was queued for the apiserver.
    selector = {"fieldSelector": f"involvedObject.name={name}"}
    assert (await kube.get(EVENTS.path(team), selector))["items"] == []


async def test_a_rejection_vetoes_and_closes_the_gate(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team):
        vetoed = await open_gate(
            kube, team, approvers=["alice", "bob"], numberOfApprovalsRequired="2"
        )
        branching = await open_gate(kube, team, approvers=["alice"], onReject="continue")
        await gate_where(kube, team, vetoed, state_is("pending"))
        await respond(await users("alice"), team, vetoed, "alice", "approve")
        await respond(await users("bob"), team, vetoed, "bob", "reject", "not on a Friday")
        run = await finished(kube, team, vetoed)
        cond = condition(run) or {}
        assert (cond["status"], cond["reason"]) == ("False", "Rejected")
        assert "bob: not on a Friday" in cond["message"]
        assert result(run, "decision") == "rejected"
        # decided: no one may change their mind any more
        with pytest.raises(ForbiddenError, match="this gate is rejected"):
            await respond(await users("alice"), team, vetoed, "alice", "reject")

        await gate_where(kube, team, branching, state_is("pending"))
        await respond(await users("alice"), team, branching, "alice", "reject", "no")
        run = await finished(kube, team, branching)
        assert ((condition(run) or {})["status"], result(run, "decision")) == ("True", "rejected")


async def test_groups_count_distinct_people_and_per_group_rules(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube,
            team,
            approvers=["group:security", "group:release"],
            numberOfApprovalsRequired="2",
            approvalsPerGroup={"security": "1", "release": "1"},
        )
        await gate_where(kube, team, name, state_is("pending"))
        # dan is in both groups: one person, one approval (though each rule is met)
        await respond(await users("dan", "security", "release"), team, name, "dan", "approve")
        gate = await gate_where(kube, team, name, audited(1))
        assert (gate["status"]["state"], gate["status"]["approvalsReceived"]) == ("pending", 1)
        await respond(await users("erin", "release"), team, name, "erin", "approve")
        run = await finished(kube, team, name)
        assert result(run, "approvedBy") == ["dan", "erin"]


async def test_a_vote_changed_before_the_decision_counts_once_and_is_audited(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube,
            team,
            approvers=["alice", "bob", "carol"],
            numberOfApprovalsRequired="2",
            numberOfRejectionsRequired="2",
        )
        await gate_where(kube, team, name, state_is("pending"))
        alice = await users("alice")
        await respond(alice, team, name, "alice", "reject", "tests are red")
        await gate_where(kube, team, name, audited(1))
        await respond(alice, team, name, "alice", "approve", "fixed")
        await gate_where(kube, team, name, audited(2))
        await respond(await users("bob"), team, name, "bob", "approve")
        run = await finished(kube, team, name)
        assert result(run, "approvedBy") == ["alice", "bob"]
        gate = await kube.get(APPROVAL_TASKS.path(team, name))
        trail = [(r["user"], r["decision"]) for r in gate["status"]["responses"]]
        assert trail == [("alice", "reject"), ("alice", "approve"), ("bob", "approve")]
        assert gate["status"]["rejectionsReceived"] == 0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"numberOfApprovalsRequired": "1"}, "'approvers' is required"),
        ({"approvers": []}, "'approvers': list at least one approver"),
        ({"approvers": ["alice"], "numberOfApprovalsRequired": "2"}, "can never be met"),
        (
            {"approvers": ["alice"], "numberOfApprovalsRequired": "zero"},
            "numberOfApprovalsRequired",
        ),
        ({"approvers": ["group:"]}, "'group:' is not a group name"),
        ({"approvers": ["alice"], "approver": "bob"}, "'approver' is not accepted"),
    ],
)
async def test_bad_input_fails_before_any_approval_task_exists(
    kube: KubeClient, team: str, controller_kubeconfig: Path, params: JSON, fragment: str
) -> None:
    async with serving(controller_kubeconfig, team):
        name = await open_gate(kube, team, **params)
        run = await finished(kube, team, name)
    cond = condition(run) or {}
    assert (cond["status"], cond["reason"]) == ("False", "InvalidParams")
    assert fragment in cond["message"]
    with pytest.raises(NotFoundError):
        await kube.get(APPROVAL_TASKS.path(team, name))


async def test_self_approval_is_refused_and_an_unknown_requester_fails_closed(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    bob = await users("bob")
    async with serving(controller_kubeconfig, team):
        # bob starts the run (claiming to be alice): admission records bob
        body = {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "CustomRun",
            "metadata": {"name": "bobs-release", "annotations": {REQUESTER_ANNOTATION: "alice"}},
            "spec": {
                "customRef": {"apiVersion": API, "kind": KIND},
                "params": [
                    {"name": "approvers", "value": ["alice", "bob"]},
                    {"name": "preventSelfApproval", "value": "true"},
                ],
            },
        }
        created = await bob.create(CUSTOM_RUNS.path(team), body)
        assert created["metadata"]["annotations"][REQUESTER_ANNOTATION] == "bob"
        gate = await gate_where(kube, team, "bobs-release", state_is("pending"))
        assert gate["spec"]["requester"] == "bob"
        with pytest.raises(ForbiddenError, match="you \\(bob\\) started this run"):
            await respond(bob, team, "bobs-release", "bob", "approve")
        await respond(await users("alice"), team, "bobs-release", "alice", "approve")
        run = await finished(kube, team, "bobs-release")
        assert result(run, "approvedBy") == ["alice"]

        # a run whose creator nobody recorded (here: created as Tekton would, unstamped)
        unknown = await open_gate(kube, team, approvers=["alice"], preventSelfApproval="true")
        run = await finished(kube, team, unknown)
        cond = condition(run) or {}
        assert (cond["status"], cond["reason"]) == ("False", "RequesterUnknown")
        assert "admission policies" in cond["message"]
        with pytest.raises(NotFoundError):
            await kube.get(APPROVAL_TASKS.path(team, unknown))


async def test_results_reach_a_later_tasks_when_through_tektons_controller(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    decision = "$(tasks.gate.results.decision)"
    tasks = [
        gate_task(
            approvers=["alice", "bob"],
            onReject="continue",
            preventSelfApproval="true",
            description="Ship?",
        ),
        wait_task("ship", when=[{"input": decision, "operator": "in", "values": ["approved"]}]),
        wait_task("rollback", when=[{"input": decision, "operator": "in", "values": ["rejected"]}]),
    ]
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": "release"},
        "spec": {"pipelineSpec": {"tasks": tasks}},
    }
    bob = await users("bob")
    async with serving(controller_kubeconfig, team):
        await bob.create(PIPELINE_RUNS.path(team), body)
        gate = await gate_where(kube, team, "release-gate", state_is("pending"))
        assert gate["spec"]["requester"] == "bob"  # PipelineRun -> CustomRun -> gate
        assert gate["metadata"]["labels"]["tekton.dev/pipelineRun"] == "release"
        assert gate["metadata"]["labels"]["tekton.dev/pipelineTask"] == "gate"
        with pytest.raises(ForbiddenError, match="started this run"):
            await respond(bob, team, "release-gate", "bob", "approve")
        await respond(await users("alice"), team, "release-gate", "alice", "reject", "not yet")
        run = await wait_for(kube, PIPELINE_RUNS, team, "release", done, timeout=60)
    assert (condition(run) or {}).get("status") == "True"
    skipped = {s["name"] for s in run["status"].get("skippedTasks") or ()}
    ran = {c["pipelineTaskName"] for c in run["status"].get("childReferences") or ()}
    assert "ship" in skipped
    assert {"gate", "rollback"} <= ran


async def test_pipeline_run_cancel_and_timeouts_close_the_gate(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    alice = await users("alice")

    def pipeline_run(name: str, **spec: Any) -> JSON:
        tasks = [gate_task(approvers=["alice"])]
        return {
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": name},
            "spec": {"pipelineSpec": {"tasks": tasks}, **spec},
        }

    async with serving(controller_kubeconfig, team):
        await kube.create(PIPELINE_RUNS.path(team), pipeline_run("cancelled"))
        await kube.create(
            PIPELINE_RUNS.path(team), pipeline_run("expired", timeouts={"pipeline": "3s"})
        )
        timed = await open_gate(kube, team, approvers=["alice"])
        await kube.patch(CUSTOM_RUNS.path(team, timed), {"spec": {"timeout": "2s"}})
        await gate_where(kube, team, "cancelled-gate", state_is("pending"))
        # Tekton cancels the children its status lists (from its cache): wait for the gate.
        await wait_for(
            kube,
            PIPELINE_RUNS,
            team,
            "cancelled",
            lambda pr: any(
                child.get("name") == "cancelled-gate"
                for child in (pr.get("status") or {}).get("childReferences") or ()
            ),
        )
        await kube.patch(PIPELINE_RUNS.path(team, "cancelled"), {"spec": {"status": "Cancelled"}})
        run = await finished(kube, team, "cancelled-gate")
        assert (condition(run) or {}).get("reason") == "CustomRunCancelled"
        await gate_where(kube, team, "cancelled-gate", state_is("cancelled"))
        with pytest.raises(ForbiddenError, match="this gate is cancelled"):
            await respond(alice, team, "cancelled-gate", "alice", "approve")

        run = await finished(kube, team, timed)
        assert (condition(run) or {}).get("reason") == "CustomRunTimedOut"
        await gate_where(kube, team, timed, state_is("timedOut"))
        with pytest.raises(ForbiddenError, match="this gate is timedOut"):
            await respond(alice, team, timed, "alice", "approve")

        # the PipelineRun's own timeout: Tekton cancels its runs, the gate is cancelled
        run = await finished(kube, team, "expired-gate")
        cond = condition(run) or {}
        assert cond.get("reason") == "CustomRunCancelled"
        assert "timed out" in cond.get("message", "")
        await gate_where(kube, team, "expired-gate", state_is("cancelled"))
        with pytest.raises(ForbiddenError, match="this gate is cancelled"):
            await respond(alice, team, "expired-gate", "alice", "approve")


async def test_controller_killed_mid_gate_loses_and_double_counts_nothing(
    kube: KubeClient,
    team: str,
    users: Users,
    control_plane: ControlPlane,
    controller_kubeconfig: Path,
) -> None:
    proc = controller_process(
        control_plane,
        "examples.approval.controller:Approval",
        f"--kubeconfig={controller_kubeconfig}",
        namespace=team,
        app_dir=ROOT,
        name=f"approval-{team}",
    )
    await proc.start()
    try:
        name = await open_gate(
            kube, team, approvers=["alice", "bob", "carol"], numberOfApprovalsRequired="3"
        )
        await gate_where(kube, team, name, state_is("pending"))
        await respond(await users("alice"), team, name, "alice", "approve")
        await gate_where(kube, team, name, audited(1))
        await proc.kill()
        await respond(await users("bob"), team, name, "bob", "approve", "while it was down")
        await proc.start()
        await gate_where(kube, team, name, audited(2))
        await respond(await users("carol"), team, name, "carol", "approve")
        run = await finished(kube, team, name)
    finally:
        await proc.stop()
    assert result(run, "approvedBy") == ["alice", "bob", "carol"]
    gate = await kube.get(APPROVAL_TASKS.path(team, name))
    assert [r["user"] for r in gate["status"]["responses"]] == ["alice", "bob", "carol"]
    assert gate["status"]["approvalsReceived"] == 3


async def test_a_deleted_approval_task_fails_the_gate_instead_of_reopening_it(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube, team, approvers=["alice", "bob"], numberOfApprovalsRequired="2"
        )
        await gate_where(kube, team, name, state_is("pending"))
        await wait_for(
            kube,
            CUSTOM_RUNS,
            team,
            name,
            lambda r: "approvalTask" in r["status"].get("extraFields", {}),
        )
        await respond(await users("alice"), team, name, "alice", "approve")
        await gate_where(kube, team, name, audited(1))
        with pytest.raises(ForbiddenError):  # an approver may not delete it...
            await (await users("alice")).delete(APPROVAL_TASKS.path(team, name))
        await kube.delete(APPROVAL_TASKS.path(team, name))  # ...an admin can, and the gate fails
        run = await finished(kube, team, name)
    assert (condition(run) or {}).get("reason") == "ApprovalTaskDeleted"


async def test_notifications_on_open_and_decision_are_retried(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    received: list[JSON] = []
    arrived = asyncio.Event()
    failures = {"left": 1}

    async def hook(request: web.Request) -> web.Response:
        if failures["left"]:
            failures["left"] -= 1
            return web.Response(status=503)
        received.append(await request.json())
        arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with serving(controller_kubeconfig, team):
            name = await open_gate(
                kube, team, approvers=["alice"], notifyURL=f"http://127.0.0.1:{port}/hook"
            )
            await asyncio.wait_for(arrived.wait(), 30)
            assert received[0]["event"] == "opened"
            assert f"kubectl approval approve {name} -n {team}" in received[0]["text"]
            await respond(await users("alice"), team, name, "alice", "approve")
            await finished(kube, team, name)
        # the manager's stop ran Approval.stop: what was in flight is delivered, nothing runs
        assert [r["event"] for r in received] == ["opened", "decided"]
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("notify ")]
        assert "approved" in received[1]["text"]
    finally:
        await runner.cleanup()


Attempt = Callable[[], Awaitable[Any]]


async def test_bypass_corpus_is_refused_by_the_apiserver_and_changes_nothing(
    kube: KubeClient,
    team: str,
    users: Users,
    control_plane: ControlPlane,
    controller_kubeconfig: Path,
) -> None:
    alice = await users("alice")
    mallory = await users("mallory", "other")
    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube,
            team,
            approvers=["alice", "bob", "group:release"],
            numberOfApprovalsRequired="3",
            description="Ship?",
        )
        decided = await open_gate(kube, team, approvers=["alice"])
        await gate_where(kube, team, decided, state_is("pending"))
        await respond(alice, team, decided, "alice", "approve")
        await finished(kube, team, decided)
        await gate_where(kube, team, name, state_is("pending"))
        await respond(alice, team, name, "alice", "approve", "mine")
        before = await gate_where(kube, team, name, audited(1))
        run_before = await kube.get(CUSTOM_RUNS.path(team, name))

        path = APPROVAL_TASKS.path(team, name)
        apply_params = {"fieldManager": "attacker", "force": "true"}

        def apply_body(spec: JSON) -> JSON:
            return {
                "apiVersion": APPROVAL_TASKS.api_version,
                "kind": KIND,
                "metadata": {"name": name},
                "spec": spec,
            }

        def merge(client: KubeClient, spec: JSON, target: str = path) -> Attempt:
            return lambda: client.patch(target, {"spec": spec})

        def json_patch(client: KubeClient, ops: list[JSON]) -> Attempt:
            return lambda: client.patch(path, ops, "json")

        def ssa(client: KubeClient, spec: JSON) -> Attempt:
            return lambda: client.patch(path, apply_body(spec), "apply", apply_params)

        bob_approves = {"responses": {"bob": {"decision": "approve"}}}
        corpus: list[tuple[str, Attempt, str]] = [
            (
                "a non-approver responds",
                merge(mallory, {"responses": {"mallory": {"decision": "approve"}}}),
                "not an approver",
            ),
            (
                "a non-approver responds (SSA)",
                ssa(mallory, {"responses": {"mallory": {"decision": "approve"}}}),
                "not an approver",
            ),
            (
                "an approver answers for another",
                merge(alice, bob_approves),
                "only your own response",
            ),
            (
                "... with a JSON patch",
                json_patch(
                    alice,
                    [
                        {
                            "op": "add",
                            "path": "/spec/responses/bob",
                            "value": {"decision": "approve"},
                        }
                    ],
                ),
                "only your own response",
            ),
            ("... with server-side apply", ssa(alice, bob_approves), "only your own response"),
            (
                "someone erases another's response",
                merge(await users("bob"), {"responses": {"alice": None}}),
                "only your own response",
            ),
            (
                "an approver lowers the quorum while approving",
                merge(
                    alice,
                    {
                        "numberOfApprovalsRequired": 1,
                        "responses": {"alice": {"decision": "approve", "message": "x"}},
                    },
                ),
                "frozen",
            ),
            (
                "... with a JSON patch",
                json_patch(
                    alice,
                    [{"op": "replace", "path": "/spec/numberOfApprovalsRequired", "value": 1}],
                ),
                "frozen",
            ),
            (
                "... with server-side apply",
                ssa(
                    alice,
                    {
                        "approvers": ["alice", "bob", "group:release"],
                        "numberOfApprovalsRequired": 1,
                    },
                ),
                "frozen",
            ),
            (
                "an approver adds an approver",
                json_patch(alice, [{"op": "add", "path": "/spec/approvers/-", "value": "mallory"}]),
                "frozen",
            ),
            (
                "an approver edits the description",
                merge(alice, {"description": "Ship a different thing?"}),
                "frozen",
            ),
            ("an approver sets a requester", merge(alice, {"requester": "someone-else"}), "frozen"),
            (
                "an approver forges their groups",
                merge(
                    mallory,
                    {"responses": {"mallory": {"decision": "approve", "groups": ["release"]}}},
                ),
                "not an approver",
            ),
            (
                "an approver detaches the gate from its run",
                json_patch(alice, [{"op": "remove", "path": "/metadata/ownerReferences"}]),
                "never change",
            ),
            (
                "an approver pins the gate with a finalizer",
                lambda: alice.patch(path, {"metadata": {"finalizers": ["example.com/keep"]}}),
                "never change",
            ),
            (
                "an approver writes the status",
                lambda: alice.patch(path + "/status", {"status": {"state": "approved"}}),
                "cannot",
            ),
            ("an approver deletes the gate", lambda: alice.delete(path), "cannot delete"),
            (
                "an approver creates a gate",
                lambda: alice.create(
                    APPROVAL_TASKS.path(team),
                    apply_body({"approvers": ["alice"], "numberOfApprovalsRequired": 1}),
                ),
                "cannot create",
            ),
            (
                "an admin creates a gate with a decision in it",
                lambda: kube.create(
                    APPROVAL_TASKS.path(team),
                    {
                        **apply_body(
                            {
                                "approvers": ["alice"],
                                "numberOfApprovalsRequired": 1,
                                "responses": {"alice": {"decision": "approve"}},
                            }
                        ),
                        "metadata": {"name": "forged"},
                    },
                ),
                "created without responses",
            ),
            (
                "a response after the decision",
                merge(
                    alice,
                    {"responses": {"alice": {"decision": "reject"}}},
                    APPROVAL_TASKS.path(team, decided),
                ),
                "this gate is approved",
            ),
            (
                "an approver edits the run's params",
                lambda: alice.patch(
                    CUSTOM_RUNS.path(team, name),
                    {"spec": {"params": [{"name": "approvers", "value": ["alice"]}]}},
                ),
                "cannot patch",
            ),
            (
                "an approver impersonates another without the right",
                lambda: _impersonating(control_plane, alice, "bob", path),
                "cannot impersonate",
            ),
            (
                "the requester annotation is edited",
                lambda: kube.patch(
                    CUSTOM_RUNS.path(team, name),
                    {"metadata": {"annotations": {REQUESTER_ANNOTATION: "mallory"}}},
                ),
                "cannot be added, changed or removed",
            ),
        ]
        refusals: list[str] = []
        for what, attempt, fragment in corpus:
            with pytest.raises(ApiError) as caught:
                await attempt()
            assert caught.value.status in (403, 422), what
            assert fragment in str(caught.value), f"{what}: {caught.value}"
            refusals.append(what)
        assert len(refusals) >= 15

        after = await kube.get(path)
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert after["spec"] == before["spec"]
        run_after = await kube.get(CUSTOM_RUNS.path(team, name))
        assert run_after["spec"] == run_before["spec"]

        # someone who may edit the run (an admin) changes its params: the gate keeps the
        # rules it opened with
        await kube.patch(
            CUSTOM_RUNS.path(team, name),
            {
                "spec": {
                    "params": [
                        {"name": "approvers", "value": ["alice"]},
                        {"name": "numberOfApprovalsRequired", "value": "1"},
                    ]
                }
            },
        )
        await respond(await users("bob"), team, name, "bob", "approve")
        gate = await gate_where(kube, team, name, audited(2))
        assert gate["spec"]["numberOfApprovalsRequired"] == 3
        assert gate["status"]["state"] == "pending"


async def _impersonating(cp: ControlPlane, client: KubeClient, user: str, path: str) -> JSON:
    """A GET sent with ``Impersonate-User``: only who holds the impersonate verb may."""
    import aiohttp

    from customtask_sdk.client.errors import error_for

    ssl = client.configuration.ssl_context()
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{cp.host}{path}",
            ssl=ssl,
            headers={"Impersonate-User": user, "Content-Type": "application/merge-patch+json"},
            data=json.dumps({"spec": {"responses": {user: {"decision": "approve"}}}}),
        ) as response,
    ):
        body = await response.read()
        if response.status >= 400:
            raise error_for(response.status, body)
        answer: JSON = json.loads(body)
        return answer


async def test_cli_lists_describes_and_decides_as_the_authenticated_user(
    kube: KubeClient, team: str, control_plane: ControlPlane, controller_kubeconfig: Path
) -> None:
    alice = str(control_plane.kubeconfig_for("alice", name=f"cli-alice-{team}"))
    carol = str(control_plane.kubeconfig_for("carol", ["release"], name=f"cli-carol-{team}"))
    mallory = str(control_plane.kubeconfig_for("mallory", name=f"cli-mallory-{team}"))

    async def cli(kubeconfig: str, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = await cli_run(["--kubeconfig", kubeconfig, *argv], out)
        return code, out.getvalue()

    async with serving(controller_kubeconfig, team):
        name = await open_gate(
            kube,
            team,
            approvers=["alice", "group:release"],
            numberOfApprovalsRequired="2",
            description="Ship v2?",
        )
        await gate_where(kube, team, name, state_is("pending"))
        assert await cli(carol, "whoami") == (0, "carol (groups: release, system:authenticated)\n")
        code, listed = await cli(carol, "list", "-n", team)
        assert code == 0
        assert name in listed
        assert "Ship v2?" in listed
        assert (await cli(mallory, "list", "-n", team))[1].startswith("no open gates for mallory")
        # with read access in every namespace, `list` looks across all of them
        everywhere = {
            "metadata": {"name": f"approval-reader-{team}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "customtask-approval-approver",
            },
            "subjects": [
                {"kind": "User", "name": f"erin-{team}", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        }
        erin = str(
            control_plane.kubeconfig_for(f"erin-{team}", ["release"], name=f"cli-erin-{team}")
        )
        await kube.create(CLUSTER_ROLE_BINDINGS.path(), everywhere)
        try:
            code, listed = await cli(erin, "list")
        finally:
            await kube.delete(CLUSTER_ROLE_BINDINGS.path(name=f"approval-reader-{team}"))
        assert code == 0
        assert any(line.split()[:2] == [team, name] for line in listed.splitlines())
        code, _ = await cli(carol, "list")  # no read outside the namespace, none configured
        assert code == 1
        assert await cli(alice, "approve", name, "-n", team, "-m", "lgtm") == (
            0,
            f"{team}/{name}: approved as alice\n",
        )
        with pytest.raises(ForbiddenError, match="not an approver"):
            await cli(mallory, "approve", name, "-n", team)
        await cli(carol, "approve", name, "-n", team, "-m", "go")
        await finished(kube, team, name)
        code, described = await cli(alice, "describe", name, "-n", team)
    assert "State:        approved" in described
    assert "carol [release,system:authenticated]  approve: go" in described
    assert (await cli(alice, "list", "-n", team))[1].startswith("no open gates")


async def test_the_sample_pipeline_ships_once_approved(
    kube: KubeClient, team: str, users: Users, controller_kubeconfig: Path
) -> None:
    sample = yaml.safe_load((ROOT / "examples" / "approval" / "pipelinerun.yaml").read_text())
    async with serving(controller_kubeconfig, team):
        created = await (await users("bob")).create(PIPELINE_RUNS.path(team), sample)
        name = created["metadata"]["name"]
        gate = f"{name}-release-approval"
        await gate_where(kube, team, gate, state_is("pending"))
        await respond(await users("alice"), team, gate, "alice", "approve", "go")
        await respond(await users("carol", "release-managers"), team, gate, "carol", "approve")
        run = await wait_for(kube, PIPELINE_RUNS, team, name, done, timeout=60)
    assert (condition(run) or {}).get("status") == "True"
    assert {s["name"] for s in run["status"].get("skippedTasks") or ()} == {"rollback"}
