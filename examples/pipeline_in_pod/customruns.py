"""Custom tasks' CustomRuns, at run time, for both front doors: made once a stand-in
(:mod:`~examples.pipeline_in_pod.customtasks`) starts, their outcome written to the Pod,
cancelled when the run stops; a :class:`Parent` says how each front door names, labels
and owns them (:func:`of_custom_run`: children of a PipelineInPod CustomRun;
:func:`of_pipeline_run`: of a delegated PipelineRun, as Tekton's PipelineRun controller
makes them).

Pure but for :func:`sync`, :func:`cancel` and :func:`cancel_all`, which act on the cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from customtask_sdk import Object, Owned, Run
from customtask_sdk.client import CUSTOM_RUNS, JSON, ConflictError, KubeClient, NotFoundError
from customtask_sdk.reconciler import format_go_duration
from examples.pipeline_in_pod.customtasks import (
    GROUP,
    RESULT_REF,
    START_STEP,
    SUCCEEDED,
    WAIT_STEP,
    CustomTask,
)
from examples.pipeline_in_pod.status import PodView, pipeline_results
from examples.pipeline_in_pod.substitution import Scope
from examples.pipeline_in_pod.tekton_status import child_name as tekton_child_name
from examples.pipeline_in_pod.tekton_status import statuses

__all__ = [
    "CANCELLED",
    "TIMED_OUT",
    "Actions",
    "Parent",
    "cancel",
    "cancel_all",
    "child_name",
    "child_timeout",
    "custom_run_body",
    "decide",
    "of_custom_run",
    "of_pipeline_run",
    "outcome_annotations",
    "overlay",
    "run_params",
    "sync",
]

#: Labels on each child CustomRun of a PipelineInPod run: the run, its pipeline task and
#: attempt.
RUN_LABEL = f"{GROUP}/customRun"
TASK_LABEL = f"{GROUP}/pipelineTask"
ATTEMPT_LABEL = f"{GROUP}/attempt"
#: Tekton's ``statusMessage`` for children of a cancelled, or timed-out, PipelineRun.
CANCELLED = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
TIMED_OUT = "CustomRun cancelled as the PipelineRun it belongs to has timed out."
#: Tekton's ``default-service-account``: a PipelineRun's CustomRuns' when it names none.
DEFAULT_SERVICE_ACCOUNT = "default"
#: Annotations Tekton does not copy from a PipelineRun onto its children.
_RESERVED_ANNOTATION = "chains.tekton.dev/"


@dataclass(frozen=True)
class Parent:
    """The run owning a pipeline's CustomRuns, as its front door names, labels and owns
    them (:func:`of_custom_run`, :func:`of_pipeline_run`)."""

    namespace: str
    #: Its CustomRuns (as cached), by name.
    children: Mapping[str, JSON]
    #: A custom pipeline task's CustomRun name.
    name_of: Callable[[str], str]
    #: The CustomRun's ``metadata`` (name, namespace, labels, ownerReferences...).
    metadata: Callable[[CustomTask, str], JSON]
    service_account: str | None = None


def of_custom_run(run: Run[Any], owned: Owned) -> Parent:
    """A PipelineInPod CustomRun's: ``<run>-<task>[-retry<n>]``, labelled with the run,
    task and attempt (and ``owned``'s labels, so its informer sees them)."""

    def metadata(task: CustomTask, name: str) -> JSON:
        labels = {RUN_LABEL: run.name, TASK_LABEL: task.name, ATTEMPT_LABEL: str(run.attempt)}
        return owned.metadata(run, name=name, namespace=run.namespace, labels=labels)

    return Parent(
        namespace=run.namespace,
        children={c["metadata"]["name"]: c for c in run.owned(CUSTOM_RUNS)},
        name_of=lambda task: child_name(run.name, task, run.attempt),
        metadata=metadata,
        service_account=run.obj["spec"].get("serviceAccountName"),
    )


def of_pipeline_run(obj: Object, labels: Mapping[str, str]) -> Parent:
    """A delegated PipelineRun's, as Tekton's PipelineRun controller makes them
    (``createCustomRun``): named ``kmeta.ChildName(<run>, "-<task>")``; the run's labels
    and ``labels`` (``tekton.dev/pipelineRun``...), ``tekton.dev/pipelineTask`` and
    ``tekton.dev/memberOf``; the run's annotations but Chains'; its service account
    (``taskRunTemplate``, else Tekton's default). Owned by the run but not as its
    controller: Tekton v1.15.1's PipelineRun controller enqueues the controller of any
    CustomRun, whatever its ``managedBy``, and writes that PipelineRun's status."""
    meta = obj.obj["metadata"]
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if _RESERVED_ANNOTATION not in k
    }

    def metadata(task: CustomTask, name: str) -> JSON:
        out: JSON = {
            "name": name,
            "namespace": obj.namespace,
            "labels": {
                **(meta.get("labels") or {}),
                **labels,
                "tekton.dev/pipelineTask": task.name,
                "tekton.dev/memberOf": "finally" if task.is_finally else "tasks",
            },
            "ownerReferences": [{**obj.owner_reference(), "controller": False}],
        }
        if annotations:
            out["annotations"] = dict(annotations)
        return out

    return Parent(
        namespace=obj.namespace,
        children={c["metadata"]["name"]: c for c in obj.owned(CUSTOM_RUNS)},
        name_of=lambda task: tekton_child_name(obj.name, f"-{task}"),
        metadata=metadata,
        service_account=(obj.spec.get("taskRunTemplate") or {}).get("serviceAccountName")
        or DEFAULT_SERVICE_ACCOUNT,
    )


def child_name(run: str, task: str, attempt: int) -> str:
    """The CustomRun of ``task`` in attempt ``attempt`` of run ``run`` (at most 63)."""
    name = f"{run}-{task}" + (f"-retry{attempt}" if attempt else "")
    if len(name) <= 63:
        return name
    return f"{name[:52].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def _condition(obj: JSON) -> JSON:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Succeeded":
            return dict(cond)
    return {}


def _done(obj: JSON) -> bool:
    return _condition(obj).get("status") in ("True", "False")


def run_params(task: CustomTask, view: PodView) -> tuple[list[JSON], str | None]:
    """The CustomRun's params with results and statuses substituted; or which result is
    missing (Tekton fails the run: ``InvalidTaskResultReference``)."""
    scope = Scope(strings=statuses(view.tasks))
    params: list[JSON] = []
    for name, value in task.params.items():
        resolved = pipeline_results({name: scope.value(value)}, view.results)
        if name not in resolved:
            refs = ", ".join(sorted({m.group(0) + ")" for m in RESULT_REF.finditer(str(value))}))
            return [], f"param {name!r}: no value for {refs}"
        params.append({"name": name, "value": resolved[name]})
    return params, None


def custom_run_body(
    parent: Parent, task: CustomTask, params: Sequence[JSON], timeout: str | None
) -> JSON:
    """The child CustomRun of ``task``: named, labelled and owned as ``parent`` says, its
    ``customRef``, params, ``timeout``, ``retries`` and service account, as Tekton makes one."""
    spec: JSON = {"customRef": dict(task.ref), "params": list(params)}
    if task.timeout or timeout:
        spec["timeout"] = task.timeout or timeout
    if task.retries:
        spec["retries"] = task.retries
    if parent.service_account:
        spec["serviceAccountName"] = parent.service_account
    meta = parent.metadata(task, parent.name_of(task.name))
    return {"apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun", "metadata": meta, "spec": spec}


def _results(child: JSON) -> dict[str, str]:
    return {r["name"]: r.get("value", "") for r in (child.get("status") or {}).get("results") or []}


def outcome_annotations(task: CustomTask, child: JSON) -> dict[str, str]:
    """The Pod annotations telling the stand-in how ``child`` ended: ``Succeeded`` and the
    results, or ``<reason>: <message>`` (also for a result the pipeline uses but the
    CustomRun did not produce)."""
    cond = _condition(child)
    results = _results(child)
    if cond.get("status") != "True":
        return {task.state_key: f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}"}
    missing = [r for r in task.results if r not in results]
    if missing:
        name = child["metadata"]["name"]
        why = f"CustomRun {name!r} produced no result {missing[0]!r}, which the pipeline uses"
        return {task.state_key: f"InvalidTaskResultReference: {why}"}
    out = {task.result_key(r): results[r] for r in task.results}
    out[task.state_key] = SUCCEEDED
    return out


def _step(entry: JSON, name: str) -> JSON:
    return next((s for s in entry.get("steps") or () if s.get("name") == name), {})


def overlay(customs: Mapping[str, CustomTask], parent: Parent, pod: JSON) -> Callable[[JSON], None]:
    """The hook for ``read_pod``: a custom task's entry tells its CustomRun's state,
    reason, message and times (the Pod still decides when it has ended)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}

    def apply(entry: JSON) -> None:
        task = customs.get(entry["name"])
        if task is None:
            return
        name = parent.name_of(task.name)
        entry["customRun"] = name
        entry["ref"] = dict(task.ref)
        child = parent.children.get(name)
        state = annotations.get(task.state_key, "")
        if child is None:
            if state and state != SUCCEEDED and entry["state"] == "failed":
                reason, _, message = state.partition(": ")
                entry.update(reason=reason, message=message[:512])
            return
        cond = _condition(child)
        status = child.get("status") or {}
        if status.get("startTime"):
            entry["startTime"] = status["startTime"]
        if not _done(child):
            if entry["state"] in ("pending", "running"):
                entry.update(state="running", reason=cond.get("reason") or "Started")
                if cond.get("message"):
                    entry["message"] = cond["message"][:512]
            return
        if entry["state"] == "running":  # the Pod has not seen the outcome yet
            return
        reason, message = cond.get("reason", ""), cond.get("message", "")
        if state.startswith("InvalidTaskResultReference"):
            reason, _, message = state.partition(": ")
        entry.update(reason=reason or entry["reason"])
        if entry["state"] == "failed":
            entry["message"] = f"CustomRun {name!r}: {message}"[:512]
            if reason == "CustomRunTimedOut":
                entry["state"] = "timedOut"
            elif reason == "CustomRunCancelled":
                entry["state"] = "cancelled"
        if status.get("completionTime"):
            entry["completionTime"] = status["completionTime"]

    return apply


@dataclass
class Actions:
    """What :func:`sync` does: CustomRuns to create (task -> params), annotations to
    set on the Pod, CustomRuns to cancel (name -> ``statusMessage``)."""

    create: dict[str, list[JSON]] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cancel: dict[str, str] = field(default_factory=dict)


def decide(
    customs: Mapping[str, CustomTask],
    view: PodView,
    pod: JSON,
    parent: Parent,
    stopping: Mapping[str, str],
) -> Actions:
    """The next actions for each custom task, from the Pod and the CustomRuns.

    ``stopping``: CustomRuns to stop, by kind (``dag``, ``all``) -> ``statusMessage``:
    ``timeouts.tasks`` passed, or the run is ending."""
    actions = Actions()
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    entries = {entry["name"]: entry for entry in view.tasks}
    for task in customs.values():
        entry = entries.get(task.name)
        if entry is None:
            continue
        name = parent.name_of(task.name)
        child = parent.children.get(name)
        start, wait = _step(entry, START_STEP), _step(entry, WAIT_STEP)
        started = start.get("exitCode") == 0 and start.get("reason") != "Skipped"
        ended = "exitCode" in wait
        message = stopping.get("all") or ("" if task.is_finally else stopping.get("dag", ""))
        if child is None:
            if started and not ended and not message and task.state_key not in annotations:
                params, missing = run_params(task, view)
                if missing is None:
                    actions.create[task.name] = params
                else:
                    actions.annotations[task.state_key] = f"InvalidTaskResultReference: {missing}"
            continue
        if _done(child):
            if task.state_key not in annotations:
                actions.annotations.update(outcome_annotations(task, child))
        elif (message or ended) and (child.get("spec") or {}).get("status") != "RunCancelled":
            actions.cancel[name] = message or CANCELLED
    return actions


def child_timeout(task: CustomTask, limits: Mapping[str, datetime.timedelta]) -> str | None:
    """The CustomRun's ``timeout`` without the task's own: the run's tasks (or finally)
    timeout when it is over Tekton's 60-minute default, as Tekton passes it."""
    if task.is_finally:
        limit = limits.get("finally")
    else:
        limit = limits.get("tasks")
        if limit is None and "pipeline" in limits:
            limit = limits["pipeline"] - limits.get("finally", datetime.timedelta(0))
    if limit is None or limit <= datetime.timedelta(minutes=60):
        return None
    return format_go_duration(limit)


async def sync(
    client: KubeClient,
    parent: Parent,
    customs: Mapping[str, CustomTask],
    view: PodView,
    pod: JSON,
    limits: Mapping[str, datetime.timedelta],
    stopping: Mapping[str, str],
    pod_path: str,
) -> None:
    """Create, inform and cancel the run's CustomRuns as :func:`decide` says (``pod_path``:
    the Pod's API path, for its annotations)."""
    actions = decide(customs, view, pod, parent, stopping)
    for name, params in actions.create.items():
        task = customs[name]
        body = custom_run_body(parent, task, params, child_timeout(task, limits))
        # A conflict: an earlier reconcile made it; its watch event is on its way.
        with contextlib.suppress(ConflictError):
            await client.create(CUSTOM_RUNS.path(parent.namespace), body)
    if actions.annotations:
        await client.patch(pod_path, {"metadata": {"annotations": actions.annotations}})
    for name, message in actions.cancel.items():
        await cancel(client, parent.namespace, name, message)


async def cancel(client: KubeClient, namespace: str, name: str, message: str) -> None:
    """Ask a child CustomRun to stop, as Tekton does (``RunCancelled`` and a message)."""
    body = {"spec": {"status": "RunCancelled", "statusMessage": message}}
    with contextlib.suppress(NotFoundError):
        await client.patch(CUSTOM_RUNS.path(namespace, name), body)


async def cancel_all(client: KubeClient, parent: Parent, message: str) -> None:
    """Cancel every unfinished CustomRun of ``parent`` (it is cancelled or timed out)."""
    for name, child in parent.children.items():
        if not _done(child) and (child.get("spec") or {}).get("status") != "RunCancelled":
            await cancel(client, parent.namespace, name, message)
