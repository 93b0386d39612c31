"""Tekton's own status formats, from a Pipeline-in-Pod Pod: a PipelineRun's condition (as
Tekton's ``GetPipelineConditionStatus`` computes it), ``skippedTasks``, and each task's
TaskRun status (``podName``, ``steps[]``, results, conditions as Tekton's ``pod/status.go``
writes them).

Pure: the compiled plan, the per-task view of :func:`~examples.pipeline_in_pod.status.read_pod`
and the Pod in, JSON out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from examples.pipeline_in_pod.compiler import TaskPlan
from examples.pipeline_in_pod.status import FATAL_WAITING, _termination

__all__ = [
    "PULL_FAILURES",
    "Counts",
    "Graceful",
    "child_name",
    "child_reference",
    "condition",
    "counts",
    "pipeline_condition",
    "skip_reason",
    "statuses",
    "succeeded",
    "task_run_status",
]

JSON = dict[str, Any]
#: Waiting reasons Tekton reports as ``TaskRunImagePullFailed``.
PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
#: Tekton's ``SkippingReason`` for each reason a Pipeline-in-Pod task was skipped.
_SKIP_REASONS = {
    "WhenExpressionsEvaluatedFalse": "When Expressions evaluated to false",
    "ResultsMissing": "Results were missing",
    "ParentTasksFailed": "PipelineRun was stopping",
    "ParentTasksSkipped": "Parent Tasks were skipped",
}


def child_name(parent: str, suffix: str) -> str:
    """Knative's ``kmeta.ChildName``: ``parent + suffix``, hashed when over 63 characters."""
    if len(parent + suffix) <= 63:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: max(0, 63 - len(suffix) - len(digest))] + digest + suffix


def child_reference(name: str, ptask: Mapping[str, Any], kind: str = "TaskRun") -> JSON:
    """A PipelineRun's ``childReferences`` entry for its ``kind`` (``TaskRun``, or
    ``CustomRun``) ``name`` of pipeline task ``ptask``, as Tekton's ``getChildRefForTaskRun``
    and ``getChildRefForRun`` write them."""
    reference: JSON = {
        "apiVersion": "tekton.dev/v1beta1" if kind == "CustomRun" else "tekton.dev/v1",
        "kind": kind,
        "name": name,
        "pipelineTaskName": ptask["name"],
    }
    if ptask.get("displayName"):
        reference["displayName"] = ptask["displayName"]
    if ptask.get("when"):
        reference["whenExpressions"] = ptask["when"]
    return reference


def succeeded(status: Mapping[str, Any]) -> JSON | None:
    """The ``Succeeded`` condition in ``status``, or ``None``."""
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Succeeded":
            found: JSON = cond
            return found
    return None


def condition(previous: JSON | None, status: str, reason: str, message: str, now: str) -> JSON:
    """A ``Succeeded`` condition; ``lastTransitionTime`` kept while nothing else changes."""
    cond = {"type": "Succeeded", "status": status, "reason": reason, "message": message}
    same = previous is not None and all(previous.get(k) == v for k, v in cond.items())
    cond["lastTransitionTime"] = (previous or {}).get("lastTransitionTime", now) if same else now
    return cond


def skip_reason(entry: Mapping[str, Any], graceful: str | None) -> str:
    """Tekton's skipping reason for a skipped task of the view."""
    if graceful is not None and entry.get("reason") in ("Cancelled", "TaskRunCancelled"):
        return graceful
    return _SKIP_REASONS.get(str(entry.get("reason")), "When Expressions evaluated to false")


def statuses(tasks: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``$(tasks.<t>.status)`` and ``$(tasks.status)`` as Tekton computes them, from the
    DAG tasks' states (the view's entries)."""
    out: dict[str, str] = {}
    for entry in tasks:
        if entry.get("finally"):
            continue
        state = entry["state"]
        value = "Succeeded" if state == "succeeded" else "None" if state == "skipped" else "Failed"
        out[f"tasks.{entry['name']}.status"] = value
    values = set(out.values())
    out["tasks.status"] = (
        "Failed" if "Failed" in values else "Completed" if "None" in values else "Succeeded"
    )
    return out


@dataclass(frozen=True)
class Counts:
    """Tekton's ``getPipelineTasksCount`` over the view's tasks."""

    succeeded: int
    failed: int
    cancelled: int
    skipped: int
    incomplete: int

    @property
    def completed(self) -> int:
        return self.succeeded + self.failed + self.cancelled


def counts(states: Sequence[str]) -> Counts:
    """Count task states (``timedOut`` is a failure, as a timed-out TaskRun is)."""
    return Counts(
        succeeded=states.count("succeeded"),
        failed=states.count("failed") + states.count("timedOut"),
        cancelled=states.count("cancelled"),
        skipped=states.count("skipped"),
        incomplete=states.count("pending") + states.count("running"),
    )


@dataclass(frozen=True)
class Graceful:
    """How the PipelineRun is being wound down: which of Tekton's states apply."""

    cancelled: bool = False  # spec.status: CancelledRunFinally
    stopped: bool = False  # spec.status: StoppedRunFinally
    tasks_timed_out: str | None = None  # timeouts.tasks passed (its Go duration)
    finally_done: bool = True


def pipeline_condition(name: str, total: Counts, graceful: Graceful) -> tuple[str, str, str]:
    """``(status, reason, message)`` as Tekton's ``GetPipelineConditionStatus`` (the
    pipeline's own timeout is the caller's)."""
    if graceful.tasks_timed_out is not None and graceful.finally_done and not total.incomplete:
        limit = graceful.tasks_timed_out
        message = f'PipelineRun "{name}" failed due to tasks failed to finish within "{limit}"'
        return "False", "PipelineRunTimeout", message
    done = (
        f"Tasks Completed: {total.completed} (Failed: {total.failed}, Cancelled {total.cancelled})"
    )
    if total.incomplete == 0:
        message = f"{done}, Skipped: {total.skipped}"
        if total.failed:
            return "False", "Failed", message
        if graceful.cancelled or graceful.stopped:
            return "False", "Cancelled", f'PipelineRun "{name}" was cancelled'
        if total.cancelled:
            return "False", "Cancelled", message
        return "True", "Completed" if total.skipped else "Succeeded", message
    reason = "Running"
    if graceful.tasks_timed_out is not None and not graceful.finally_done:
        reason = "PipelineRunTimeoutRunningFinally"
    elif graceful.cancelled:
        reason = "CancelledRunningFinally"
    elif graceful.stopped:
        reason = "StoppedRunningFinally"
    elif total.cancelled or (total.failed and graceful.finally_done):
        reason = "PipelineRunStopping"
    message = f"{done}, Incomplete: {total.incomplete}, Skipped: {total.skipped}"
    return "Unknown", reason, message


def _step_state(step_name: str, container: str, status: JSON) -> JSON:
    """One ``steps[]`` entry: the container's state as Tekton reports a step's."""
    entry: JSON = {"name": step_name, "container": container}
    if status.get("imageID"):
        entry["imageID"] = status["imageID"]
    state = status.get("state") or {}
    if "terminated" in state:
        done = dict(state["terminated"])
        _, internal, _ = _termination(done)
        done.pop("message", None)
        if internal.get("StartedAt"):
            done["startedAt"] = internal["StartedAt"]
        entry["terminated"] = done
        entry["terminationReason"] = internal.get("Reason") or (
            "Completed" if done.get("exitCode", 0) == 0 else "Error"
        )
    elif "running" in state:
        entry["running"] = state["running"]
    elif "waiting" in state:
        entry["waiting"] = state["waiting"]
    return entry


def _task_results(task: TaskPlan, statuses: Mapping[str, JSON]) -> list[JSON]:
    """The task's results, whole, from its steps' termination messages."""
    found: dict[str, Any] = {}
    for plan in task.steps:
        terminated = (statuses.get(plan.container, {}).get("state") or {}).get("terminated")
        if terminated:
            results, _, _ = _termination(terminated)
            found.update(results)
    out = []
    for name in task.results:
        if name in found:
            value = found[name]
            kind = (
                "array"
                if isinstance(value, list)
                else "object"
                if isinstance(value, dict)
                else "string"
            )
            out.append({"name": name, "type": kind, "value": value})
    return out


def task_run_status(
    task_run: str,
    task: TaskPlan,
    entry: Mapping[str, Any],
    pod: JSON,
    previous: JSON | None,
    now: str,
    *,
    task_spec: JSON,
    timeout: str,
    cancel_message: str = "",
) -> JSON:
    """The status of ``task_run``, the TaskRun showing pipeline task ``task`` of ``pod``.

    ``entry``: the task's view (``state``, ``reason``, ``message``, times); ``previous``:
    the TaskRun's stored status (keeps ``lastTransitionTime`` and ``startTime``).
    """
    statuses = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
    steps = [_step_state(p.name, p.container, statuses.get(p.container, {})) for p in task.steps]
    state = entry["state"]
    if state == "running" or state == "pending":
        cond = ("Unknown", "Running", "Not all Steps in the Task have finished executing")
    elif state == "succeeded":
        cond = ("True", "Succeeded", "All Steps have completed executing")
    elif state == "timedOut":
        cond = (
            "False",
            "TaskRunTimeout",
            f'TaskRun "{task_run}" failed to finish within "{timeout}"',
        )
    elif state == "cancelled":
        cond = (
            "False",
            "TaskRunCancelled",
            f'TaskRun "{task_run}" was cancelled. {cancel_message}',
        )
    elif entry.get("reason") in PULL_FAILURES:
        cond = ("False", "TaskRunImagePullFailed", str(entry.get("message", "")))
    elif entry.get("reason") in FATAL_WAITING:
        cond = ("False", str(entry["reason"]), str(entry.get("message", "")))
    else:
        failing = next(
            (
                (s["container"], s["terminated"].get("exitCode"))
                for s, p in zip(steps, task.steps, strict=True)
                if "terminated" in s
                and s["terminated"].get("exitCode")
                and p.on_error != "continue"
                and s.get("terminationReason") != "Skipped"
            ),
            None,
        )
        message = (
            f'"{failing[0]}" exited with code {failing[1]}'
            if failing
            else str(entry.get("message") or entry.get("reason", "Failed"))
        )
        cond = ("False", "Failed", message)
    old = previous or {}
    old_cond = succeeded(old)
    status: JSON = {
        "conditions": [condition(old_cond, *cond, now)],
        "podName": pod["metadata"]["name"],
        "startTime": old.get("startTime") or entry.get("startTime") or now,
        "steps": steps,
        "taskSpec": task_spec,
    }
    if cond[0] != "Unknown":
        # When it was seen ending, as Tekton's controller stamps it: a container's
        # finishedAt has whole seconds only, and can read earlier than its start.
        status["completionTime"] = old.get("completionTime") or now
    results = _task_results(task, statuses)
    if results:
        status["results"] = results
    if task.sidecars:
        status["sidecars"] = [
            {"name": name.removeprefix("sidecar-"), "container": name} for name in task.sidecars
        ]
    copied: JSON = json.loads(json.dumps(status))  # a plain copy: no shared nested values
    return copied
