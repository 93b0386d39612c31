"""One TaskRun per pipeline task, for both front doors: what ``tkn``, the Dashboard and
anything else reading TaskRuns see of a pipeline run in one Pod.

Each task that runs gets a TaskRun (``<run>-<task>``, as Tekton names them) with the run's
``managedBy`` (Tekton's controller ignores it), owned by the run (not as its controller:
Tekton v1.15.1's PipelineRun controller enqueues, and writes the status of, the controller
of any TaskRun whatever its ``managedBy``), ``spec.taskSpec`` resolved, and a status in
Tekton's format (:func:`~examples.pipeline_in_pod.tekton_status.task_run_status`), written
only when it changed and never after it finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from customtask_sdk import TASK_RUNS, ConflictError, InvalidError, KubeClient, NotFoundError
from customtask_sdk.reconciler.lifecycle import _stored_form
from examples.pipeline_in_pod.compiler import Plan
from examples.pipeline_in_pod.model import ParamValue
from examples.pipeline_in_pod.status import pipeline_results
from examples.pipeline_in_pod.substitution import Scope
from examples.pipeline_in_pod.tekton_status import (
    child_name,
    child_reference,
    condition,
    statuses,
    succeeded,
    task_run_status,
)

__all__ = ["MANAGED_BY", "Owner", "cancel_unfinished", "named_steps", "sync"]

JSON = dict[str, Any]
#: The ``spec.managedBy`` of the PipelineRuns the delegated front door runs, and of every
#: TaskRun either front door makes (``PIP_MANAGED_BY`` overrides it).
MANAGED_BY = os.environ.get("PIP_MANAGED_BY", "pipelineinpod.customtask.dev/controller")
log = logging.getLogger("examples.pipeline_in_pod.taskruns")
_TASK_RUN_SPEC = ("serviceAccountName", "podTemplate")


@dataclass(frozen=True)
class Owner:
    """The run whose TaskRuns these are."""

    name: str  # TaskRun names are <name>-<task>
    namespace: str
    reference: JSON  # the run's ownerReference
    labels: Mapping[str, str]
    managed_by: str
    template: Mapping[str, Any] = field(default_factory=dict)  # serviceAccountName, podTemplate
    timeout: str = "1h0m0s"  # a task's, unless it sets one


def named_steps(task_spec: JSON) -> JSON:
    """``task_spec`` with each unnamed step named ``unnamed-<index>``, as Tekton names it
    (the TaskRun CRD requires step names in ``status.taskSpec``)."""
    steps = [
        step if step.get("name") else {**step, "name": f"unnamed-{index}"}
        for index, step in enumerate(task_spec.get("steps") or [])
    ]
    return {**task_spec, "steps": steps} if steps else task_spec


def _params(
    given: Sequence[JSON], entries: Sequence[JSON], results: Mapping[str, Mapping[str, ParamValue]]
) -> list[JSON]:
    """A task's params as Tekton's TaskRun has them: the tasks' statuses (``entries``) and
    results substituted."""
    scope = Scope(strings=statuses(entries))
    out = []
    for param in given:
        value = scope.value(param["value"])
        resolved = pipeline_results({"v": value}, results)
        out.append({"name": param["name"], "value": resolved.get("v", value)})
    return out


def _body(owner: Owner, entry: JSON, ptask: JSON, name: str, params: Sequence[JSON]) -> JSON:
    labels = {
        **owner.labels,
        "tekton.dev/pipelineTask": entry["name"],
        "tekton.dev/memberOf": "finally" if entry.get("finally") else "tasks",
    }
    spec: JSON = {
        "managedBy": owner.managed_by,
        "taskSpec": named_steps(ptask.get("taskSpec") or {}),
        **{key: owner.template[key] for key in _TASK_RUN_SPEC if key in owner.template},
    }
    if params:
        spec["params"] = list(params)
    if ptask.get("timeout"):
        spec["timeout"] = ptask["timeout"]
    meta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [{**owner.reference, "controller": False}],
    }
    return {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": meta, "spec": spec}


async def _write_status(
    client: KubeClient,
    owner: Owner,
    plan: Plan,
    pod: JSON,
    entry: JSON,
    ptask: JSON,
    task_run: JSON,
    now: str,
    cancel_message: str,
) -> None:
    stored = task_run.get("status") or {}
    if (succeeded(stored) or {}).get("status") in ("True", "False"):
        return  # a finished TaskRun is never written again
    desired = _stored_form(
        task_run_status(
            task_run["metadata"]["name"],
            plan.task(entry["name"]),
            entry,
            pod,
            stored,
            now,
            task_spec=named_steps(ptask.get("taskSpec") or {}),
            timeout=str(ptask.get("timeout") or owner.timeout),
            cancel_message=cancel_message,
        )
    )
    if desired == stored:
        return
    meta = task_run["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": desired}
    try:
        await client.patch(TASK_RUNS.path(owner.namespace, meta["name"], "status"), body)
    except (ConflictError, NotFoundError):
        pass  # its watch event wakes the run again
    except InvalidError as exc:  # the run goes on; its TaskRun shows less
        log.warning("TaskRun %s: status refused: %s", meta["name"], exc)


async def sync(
    client: KubeClient,
    owner: Owner,
    plan: Plan,
    pod: JSON,
    entries: Sequence[JSON],
    existing: Mapping[str, JSON],
    ptasks: Mapping[str, JSON],
    now: str,
    cancel_message: str = "",
    custom_runs: Mapping[str, str] | None = None,
    results: Mapping[str, Mapping[str, ParamValue]] | None = None,
) -> list[JSON]:
    """Create each running or ended task's TaskRun, write its status when it changed, and
    delete one whose task turned out skipped; return the ``childReferences``.

    ``entries``: the tasks' views (``name``, ``state``...); ``existing``: the cached
    TaskRuns by name; ``ptasks``: each pipeline task by name, its ``taskSpec`` resolved;
    ``custom_runs``: each custom task's CustomRun that exists (no TaskRun for those: a
    ``CustomRun`` reference, as Tekton lists one); ``results``: the tasks' results so far
    (substituted into a new TaskRun's params, as the tasks' statuses are).
    """
    # A matrix's instances (<task>-<i>) are TaskRuns of pipeline task <task>.
    matrix_of = {i: task for task, instances in plan.matrices.items() for i in instances}
    references = []
    for entry in entries:
        if entry["name"] in plan.custom:
            made = (custom_runs or {}).get(entry["name"])
            if made is not None and entry["name"] in ptasks:
                references.append(child_reference(made, ptasks[entry["name"]], "CustomRun"))
            continue
        name = child_name(owner.name, f"-{entry['name']}")
        found = existing.get(name)
        parent: str = matrix_of.get(entry["name"]) or entry["name"]
        ptask = ptasks.get(parent)
        if entry["state"] in ("skipped", "pending") or ptask is None:
            if found is not None and entry["state"] == "skipped":
                with contextlib.suppress(NotFoundError):
                    await client.delete(TASK_RUNS.path(owner.namespace, name))
            continue
        if found is None:
            try:
                params = _params(plan.task(entry["name"]).params, entries, results or {})
                body = _body(owner, {**entry, "name": parent}, ptask, name, params)
                found = await client.create(TASK_RUNS.path(owner.namespace), body)
            except ConflictError:  # made earlier; its event is on its way
                found = None
        if found is not None:
            await _write_status(client, owner, plan, pod, entry, ptask, found, now, cancel_message)
        references.append(child_reference(name, ptask))
    return references


async def cancel_unfinished(
    client: KubeClient, namespace: str, task_runs: Sequence[JSON], now: str, why: str
) -> None:
    """Mark every unfinished TaskRun of a run cancelled, as Tekton does."""
    for task_run in task_runs:
        stored = task_run.get("status") or {}
        cond = succeeded(stored)
        if cond is not None and cond.get("status") != "Unknown":
            continue
        name = task_run["metadata"]["name"]
        message = f'TaskRun "{name}" was cancelled. {why}'
        status = {
            **stored,
            "conditions": [condition(cond, "False", "TaskRunCancelled", message, now)],
            "completionTime": now,
        }
        body = {
            "metadata": {"resourceVersion": task_run["metadata"]["resourceVersion"]},
            "status": status,
        }
        with contextlib.suppress(ConflictError, NotFoundError):
            await client.patch(TASK_RUNS.path(namespace, name, "status"), body)
