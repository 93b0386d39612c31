"""Approval: a pipeline gate that the apiserver itself guards.

    customtask-sdk run examples.approval.controller:Approval

Serves ``approval.customtask.dev/v1alpha1`` ``ApprovalTask`` (set ``APPROVAL_API_VERSION``
to serve another, e.g. MAG's ``openshift-pipelines.org/v1alpha1``). Each CustomRun gets
one ``ApprovalTask`` object of the same name, owned by it, holding the frozen rules
(approvers, quorum, description, requester) and the people's responses. Who may write
which response is checked in the apiserver by the admission policies in
``config/admission/``; this controller only counts, records and reports.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Literal

from customtask_sdk import (
    Failed,
    Outcome,
    Owned,
    Reconciler,
    RetryLater,
    Run,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.client import JSON, ConflictError, NotFoundError, Resource
from customtask_sdk.reconciler import CANCELLED, TIMED_OUT
from customtask_sdk.reconciler.run import format_time
from examples.approval import notify
from examples.approval.model import (
    DECIDED,
    ApprovalParams,
    Gate,
    Response,
    State,
    Tally,
    audit,
    close,
    decide,
)

log = logging.getLogger("customtask_sdk.approval")

GROUP = "approval.customtask.dev"
APPROVAL_TASKS = Resource(GROUP, "v1alpha1", "approvaltasks", "ApprovalTask")
#: The label naming a gate's CustomRun; every gate this controller creates carries it.
CUSTOM_RUN_LABEL = f"{GROUP}/customRun"
#: What the controller caches: only gates it created (those with the CustomRun label,
#: gates created before any selector included), and of each only what it reads.
GATES = Owned(APPROVAL_TASKS, label_selector=CUSTOM_RUN_LABEL, fields=("spec", "status"))
#: Who created the PipelineRun (or standalone CustomRun), stamped by the admission policy.
REQUESTER_ANNOTATION = f"{GROUP}/requester"
_HOW_TO_STAMP = (
    "install the approval admission policies (examples/approval/config/admission), which "
    f"stamp the {REQUESTER_ANNOTATION} annotation on every PipelineRun and CustomRun from "
    "the apiserver's authenticated user; on clusters without MutatingAdmissionPolicy, "
    "the creator sets that annotation to their own user name (the policy refuses any "
    "other), or turn preventSelfApproval off"
)


class Approval(Reconciler[ApprovalParams]):
    """Succeeds (``Approved``) once enough approvers approve; fails (``Rejected``) on a veto."""

    api_version = os.environ.get("APPROVAL_API_VERSION", f"{GROUP}/v1alpha1")
    kind = "ApprovalTask"
    owns = (GATES,)
    #: A decision holds its worker for two writes in sequence: when the apiserver slows
    #: down, 16 workers queue decisions (README, Benchmarks).
    workers = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notifier = notify.Notifier()

    # -- the gate's object -------------------------------------------------------------

    def _cached(self, run: Run[ApprovalParams]) -> JSON | None:
        """This run's ApprovalTask from the cache (where this controller's writes go at
        once: ``remember``)."""
        found = [t for t in run.owned(APPROVAL_TASKS) if t["metadata"]["name"] == run.name]
        return found[0] if found else None

    async def _find(self, run: Run[ApprovalParams]) -> JSON | None:
        """This run's ApprovalTask: from the cache, else (once one was created) read."""
        task = self._cached(run)
        recorded = run.extra_fields.get("approvalTask")
        if task is not None or not isinstance(recorded, dict):
            return task
        # Created before, not cached yet (or gone): ask the apiserver.
        live = await self.client.get_or_none(APPROVAL_TASKS.path(run.namespace, run.name))
        if live is None:
            raise RunFailed(
                "ApprovalTaskDeleted",
                f"ApprovalTask {run.name!r} was deleted while the gate was open; its "
                "responses are lost, so the gate fails rather than start over. Re-run the "
                "pipeline to ask again",
                retry=False,  # no retry can fix it: the gate's responses are at stake
            )
        if live["metadata"]["uid"] != recorded.get("uid"):
            raise RunFailed(
                "ApprovalTaskReplaced",
                f"ApprovalTask {run.name!r} was deleted and recreated while the gate was "
                "open; the gate fails rather than trust a replacement",
                retry=False,  # no retry can fix it: the gate's responses are at stake
            )
        return live

    async def _open(self, run: Run[ApprovalParams]) -> JSON:
        """Create the ApprovalTask with the run's frozen rules (or adopt this run's own)."""
        params = run.params
        annotations = run.obj["metadata"].get("annotations") or {}
        requester = str(annotations.get(REQUESTER_ANNOTATION) or "")
        if params.preventSelfApproval and not requester:
            raise RunFailed(
                "RequesterUnknown",
                "preventSelfApproval is set but nobody knows who started this run, so the "
                f"gate fails closed: {_HOW_TO_STAMP}",
                retry=False,  # no retry can fix it: the gate's responses are at stake
            )
        spec: JSON = {
            "approvers": params.approvers,
            "numberOfApprovalsRequired": params.numberOfApprovalsRequired,
            "numberOfRejectionsRequired": params.numberOfRejectionsRequired,
            "description": params.description,
            "requester": requester,
            "preventSelfApproval": params.preventSelfApproval,
            "onReject": params.onReject,
        }
        if params.approvalsPerGroup:
            spec["approvalsPerGroup"] = params.approvalsPerGroup
        if params.notifyURL:
            spec["notifyURL"] = params.notifyURL
        labels = {CUSTOM_RUN_LABEL: run.name}
        for key in ("tekton.dev/pipelineRun", "tekton.dev/pipelineTask"):
            if key in run.labels:
                labels[key] = run.labels[key]
        body: JSON = {
            "apiVersion": APPROVAL_TASKS.api_version,
            "kind": APPROVAL_TASKS.kind,
            "metadata": GATES.metadata(run, name=run.name, namespace=run.namespace, labels=labels),
            "spec": spec,
        }
        path = APPROVAL_TASKS.path(run.namespace)
        try:
            task = await self.client.create(path, body)
            self.remember(APPROVAL_TASKS, task)
        except ConflictError:
            existing = await self.client.get_or_none(APPROVAL_TASKS.path(run.namespace, run.name))
            owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
            if existing is None:
                raise RetryLater("ApprovalTask was deleted while being created") from None
            if not any(ref.get("uid") == run.uid for ref in owners):
                raise RunFailed(
                    "ApprovalTaskExists",
                    f"an ApprovalTask named {run.name!r} already exists and belongs to "
                    "something else; delete it, or give the run another name",
                    retry=False,  # no retry can fix it: the gate's responses are at stake
                ) from None
            return existing
        if params.notifyURL:
            self.notifier.send(params.notifyURL, notify.opened(task))
        return task

    async def _write_status(self, task: JSON, status: JSON) -> JSON:
        """Write the ApprovalTask's status, conditional on the version it was computed
        from: a response that landed meanwhile makes it conflict and be counted."""
        meta = task["metadata"]
        removed = {k: None for k in task.get("status") or {} if k not in status}
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": {**removed, **status},
        }
        path = APPROVAL_TASKS.path(meta["namespace"], meta["name"], "status")
        try:
            written = await self.client.patch(path, body)
        except ConflictError:
            fresh = await self.client.get_or_none(
                APPROVAL_TASKS.path(meta["namespace"], meta["name"])
            )
            if fresh is not None:
                self.remember(APPROVAL_TASKS, fresh)
            raise RetryLater(
                "the ApprovalTask changed; counting again", after=datetime.timedelta(0)
            ) from None
        except NotFoundError:
            raise RetryLater("the ApprovalTask is gone") from None
        self.remember(APPROVAL_TASKS, written)
        return written

    # -- the run -------------------------------------------------------------------------

    async def reconcile(self, run: Run[ApprovalParams]) -> Outcome:
        task = await self._find(run)
        if task is None:
            task = await self._open(run)
        status: JSON = task.get("status") or {}
        current: State = status.get("state") or "pending"
        if current not in DECIDED:
            spec = task["spec"]
            responses = Response.parse_all(spec.get("responses") or {})
            tally = decide(Gate.from_spec(spec), responses, current)
            desired = self._desired(task, tally, responses, run.now)
            if desired != status:
                previous = status
                task = await self._write_status(task, desired)
                status = desired
                self._announce(task, previous, status)
        return self._outcome(task, status)

    def _desired(
        self, task: JSON, tally: Tally, responses: list[Response], now: datetime.datetime
    ) -> JSON:
        status: JSON = task.get("status") or {}
        log_so_far: list[JSON] = list(status.get("responses") or [])
        added = audit(log_so_far, responses, now)
        for record in added:
            why = tally.ignored.get(record["user"])
            if why is not None and record["decision"] != "withdrawn":
                record["ignored"] = why
        desired: JSON = {
            "state": tally.state,
            "approvalsRequired": task["spec"]["numberOfApprovalsRequired"],
            "approvalsReceived": len(tally.approved_by),
            "rejectionsReceived": len(tally.rejected_by),
            "approvedBy": list(tally.approved_by),
            "rejectedBy": list(tally.rejected_by),
            "message": tally.summary,
            "responses": log_so_far + added,
        }
        if tally.state in DECIDED:
            desired["decidedAt"] = format_time(now)
        return desired

    def _outcome(self, task: JSON, status: JSON) -> Outcome:
        state = status.get("state") or "pending"
        extra: JSON = {
            "approvalTask": {"name": task["metadata"]["name"], "uid": task["metadata"]["uid"]}
        }
        if state == "pending":
            return Running(message=status.get("message") or "waiting", extra_fields=extra)
        final = Response.parse_all(task["spec"].get("responses") or {})
        comments = [f"{r.user} ({r.decision}): {r.message}" for r in final if r.message]
        extra["state"] = state
        results: dict[str, str | list[str]] = {
            "decision": state,
            "approvedBy": list(status.get("approvedBy") or ()),
            "rejectedBy": list(status.get("rejectedBy") or ()),
            "comments": comments,
        }
        message = status.get("message") or state
        if state == "approved":
            return Succeeded(
                results=results, reason="Approved", message=message, extra_fields=extra
            )
        if state == "rejected":
            rejected = [r for r in final if r.decision == "reject"]
            why = "; ".join(f"{r.user}: {r.message or '(no message)'}" for r in rejected)
            message = f"{message} ({why})" if why else message
            if task["spec"].get("onReject") == "continue":
                return Succeeded(
                    results=results, reason="Rejected", message=message, extra_fields=extra
                )
            return Failed("Rejected", message, results=results, retry=False, extra_fields=extra)
        reason = TIMED_OUT if state == "timedOut" else CANCELLED
        return Failed(reason, f"the gate was {state}", retry=False, extra_fields=extra)

    async def _close(self, run: Run[ApprovalParams], to: Literal["timedOut", "cancelled"]) -> None:
        """Close this run's gate if it is pending, so that it accepts no more responses."""
        task = self._cached(run)
        if task is None:  # not cached (yet, or any more): make sure
            task = await self.client.get_or_none(APPROVAL_TASKS.path(run.namespace, run.name))
            owners = (task or {}).get("metadata", {}).get("ownerReferences") or ()
            if task is None or not any(ref.get("uid") == run.uid for ref in owners):
                return  # never opened: nothing accepts responses
        status: JSON = task.get("status") or {}
        current: State = status.get("state") or "pending"
        state = close(current, to)
        if state != current:
            desired = {
                **status,
                "state": state,
                "message": f"{to} before a decision",
                "decidedAt": format_time(run.now),
            }
            written = await self._write_status(task, desired)
            self._announce(written, status, desired)

    async def on_timeout(self, run: Run[ApprovalParams]) -> None:
        """Close the gate (``timedOut``) before the run fails: no response counts after."""
        await self._close(run, "timedOut")

    async def on_cancel(self, run: Run[ApprovalParams]) -> None:
        """Close the gate (``cancelled``) before the run is cancelled."""
        await self._close(run, "cancelled")

    # -- audit Events and notifications -------------------------------------------------

    async def stop(self) -> None:
        """Deliver the notifications in flight (a few seconds at most), cancel the rest."""
        await self.notifier.close(timeout=5.0)

    def _announce(self, task: JSON, before: JSON, after: JSON) -> None:
        """An Event per new audit record, and the decision's notification (the run's own
        Event, recorded by the SDK, reports the decision). Neither waits for delivery."""
        state = after.get("state")
        url = task["spec"].get("notifyURL")
        if url and state != before.get("state") and state in DECIDED:
            self.notifier.send(url, notify.decided(task, state, after.get("message") or ""))
        for record in (after.get("responses") or [])[len(before.get("responses") or ()) :]:
            groups = ", ".join(record.get("groups") or ()) or "none"
            text = f"{record['user']} (groups: {groups}) {record['decision']}"
            if record.get("message"):
                text += f": {record['message']}"
            if record.get("ignored"):
                text += f" [not counted: {record['ignored']}]"
            reason = {"approve": "Approved", "reject": "Rejected"}.get(
                record["decision"], "Withdrawn"
            )
            self.record_event(task, "Normal", f"Response{reason}", text)
