"""Custom tasks inside a Pipeline-in-Pod pipeline: their logic runs elsewhere (TEP-0044).

A pipeline task whose ``taskRef`` names another ``apiVersion`` and ``kind`` (a Wait, an
Approval...) runs as a CustomRun that this controller creates and owns, as Tekton's
PipelineRun controller would. Inside the Pod it is a stand-in task of two steps, compiled
like any other, so order, ``when``, skipping, the scheduler and ``finally`` treat it as
Tekton treats the custom task:

- ``start`` (``:``) runs once the entrypoint has let the task go (its dependencies ended,
  its ``when`` held): its clean exit tells the controller to create the CustomRun, with
  its params substituted, results of earlier tasks read from the Pod;
- ``wait`` polls a downward-API file for the CustomRun's outcome, which the controller
  writes as Pod annotations once the CustomRun ends (outcome and results in one patch;
  the kubelet swaps the volume's files atomically); it copies the results the pipeline
  uses into its task results and exits 0 on success, 1 otherwise: dependants then run,
  or are skipped, through the entrypoint's own post files.

Pure but for :func:`sync`, which acts on the cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from customtask_sdk import Owned, Run
from customtask_sdk.client import CUSTOM_RUNS, JSON, ConflictError, KubeClient, NotFoundError
from customtask_sdk.reconciler import format_go_duration
from examples.pipeline_in_pod.compiler import (
    Images,
    Plan,
    RunContext,
    compile_pipeline,
    pipeline_scope,
)
from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import (
    ParamValue,
    PipelineSpec,
    PipelineTask,
    TaskSpec,
    WorkspaceBinding,
)
from examples.pipeline_in_pod.status import PodView, pipeline_results
from examples.pipeline_in_pod.stepactions import StepActionSpec
from examples.pipeline_in_pod.substitution import Scope

__all__ = [
    "CANCELLED",
    "TIMED_OUT",
    "Actions",
    "CustomTask",
    "add_downward_items",
    "child_name",
    "compile_with_custom_tasks",
    "custom_run_body",
    "decide",
    "find_custom_tasks",
    "overlay",
    "prepare",
    "sync",
]

#: Prefix of the Pod annotations carrying a CustomRun's outcome and results into the Pod.
GROUP = "pipelineinpod.customtask.dev"
#: Where a stand-in's ``wait`` step mounts the downward-API volume.
MOUNT = "/pip/downward"
START_STEP = "start"
WAIT_STEP = "wait"
#: Labels on each child CustomRun: the run that owns it, its pipeline task and attempt.
RUN_LABEL = f"{GROUP}/customRun"
TASK_LABEL = f"{GROUP}/pipelineTask"
ATTEMPT_LABEL = f"{GROUP}/attempt"
#: Tekton's ``statusMessage`` for children of a cancelled, or timed-out, PipelineRun.
CANCELLED = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
TIMED_OUT = "CustomRun cancelled as the PipelineRun it belongs to has timed out."
SUCCEEDED = "Succeeded"

_RESULT_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.results\.([^)\[.]+)")
_STATUS_REF = re.compile(r"\$\(tasks\.(?:([a-z0-9][-a-z0-9]*)\.)?status\)")
_ANNOTATION_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class CustomTask:
    """A custom pipeline task: its reference, params (pipeline variables substituted),
    the results other tasks use, and what its CustomRun gets of ``timeout``/``retries``."""

    name: str
    ref: Mapping[str, str]
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    results: tuple[str, ...] = ()
    is_finally: bool = False
    timeout: str | None = None
    retries: int = 0

    @property
    def state_key(self) -> str:
        """The Pod annotation holding the CustomRun's outcome."""
        return f"{GROUP}/{self.name}"

    def result_key(self, result: str) -> str:
        """The Pod annotation holding result ``result``."""
        name = f"{self.name}.{result}"
        if not _ANNOTATION_NAME.fullmatch(name):
            name = "r-" + hashlib.sha256(name.encode()).hexdigest()[:24]
        return f"{GROUP}/{name}"

    @property
    def folder(self) -> str:
        """Its files in the downward-API volume (relative)."""
        return f"custom/{self.name}"


# -- compile time -------------------------------------------------------------------


def _texts(ptask: PipelineTask) -> list[str]:
    texts = [json.dumps(param.value) for param in ptask.params]
    for when in ptask.when:
        texts.extend([when.input or "", *(when.values or []), when.cel or ""])
    if ptask.taskSpec is not None:
        texts.append(ptask.taskSpec.model_dump_json())
    return texts


def used_results(pipeline: PipelineSpec, task: str) -> tuple[str, ...]:
    """The results of ``task`` that other tasks or the pipeline's results reference."""
    texts = [t for p in [*pipeline.tasks, *pipeline.finally_] for t in _texts(p)]
    texts += [json.dumps(r.value).replace("$(finally.", "$(tasks.") for r in pipeline.results]
    found = {m.group(2) for text in texts for m in _RESULT_REF.finditer(text) if m.group(1) == task}
    return tuple(sorted(found))


def find_custom_tasks(pipeline: PipelineSpec) -> dict[str, CustomTask]:
    """The pipeline's custom tasks (``taskRef`` with another ``apiVersion`` and ``kind``).

    Raises:
        CompileError: a custom task has a ``matrix`` (not yet).
    """
    found: dict[str, CustomTask] = {}
    for where, ptasks in (("tasks", pipeline.tasks), ("finally", pipeline.finally_)):
        for ptask in ptasks:
            if ptask.taskRef is None or not ptask.taskRef.is_custom:
                continue
            if ptask.matrix is not None:
                raise CompileError(
                    f"{where}[{ptask.name}].matrix",
                    "a matrix of a custom task is not supported yet",
                    "Unsupported",
                )
            found[ptask.name] = CustomTask(
                name=ptask.name,
                ref=ptask.taskRef.model_dump(exclude_none=True),
                results=used_results(pipeline, ptask.name),
                is_finally=where == "finally",
                timeout=ptask.timeout,
                retries=ptask.retries,
            )
    return found


def stand_in(task: CustomTask, shell: str) -> TaskSpec:
    """The in-Pod stand-in of a custom task: ``start``, then ``wait`` for its outcome."""
    folder = f"{MOUNT}/{task.folder}"
    lines = [
        f'until [ -s "{folder}/state" ]; do sleep 0.1; done',
        *(f'cp "{folder}/results/{r}" "$(results.{r}.path)"' for r in task.results),
        f'state=$(cat "{folder}/state")',
        f'[ "$state" = {SUCCEEDED} ] && exit 0',
        'echo "$state" >&2',
        "exit 1",
    ]
    mount = {"name": "tekton-internal-downward", "mountPath": MOUNT, "readOnly": True}
    # The shell image is pulled already (``place-scripts``): no pull per stand-in.
    pulled = {"image": shell, "imagePullPolicy": "IfNotPresent"}
    return TaskSpec.model_validate(
        {
            "results": [{"name": r} for r in task.results],
            "steps": [
                {**pulled, "name": START_STEP, "command": ["sh", "-c", ":"]},
                {
                    **pulled,
                    "name": WAIT_STEP,
                    "script": "\n".join(lines) + "\n",
                    "volumeMounts": [mount],
                },
            ],
        }
    )


def prepare(
    pipeline: PipelineSpec, tasks: Mapping[str, TaskSpec], shell: str, scope: Scope
) -> tuple[PipelineSpec, dict[str, TaskSpec], dict[str, CustomTask]]:
    """The pipeline as the compiler takes it: each custom task's spec is its stand-in, its
    ``timeout`` and ``retries`` kept for its CustomRun; and the custom tasks, their params
    substituted but for results and statuses (known only at run time).

    Raises:
        CompileError: as :func:`find_custom_tasks`.
    """
    customs = find_custom_tasks(pipeline)
    if not customs:
        return pipeline, dict(tasks), {}
    specs = dict(tasks)
    for name, task in list(customs.items()):
        ptask = next(p for p in [*pipeline.tasks, *pipeline.finally_] if p.name == name)
        params = {param.name: scope.value(param.value) for param in ptask.params}
        customs[name] = CustomTask(**{**task.__dict__, "params": params})
        specs[name] = stand_in(task, shell)

    def bare(ptask: PipelineTask) -> PipelineTask:
        if ptask.name not in customs:
            return ptask
        return ptask.model_copy(update={"timeout": None, "retries": 0})

    stripped = pipeline.model_copy(
        update={
            "tasks": [bare(p) for p in pipeline.tasks],
            "finally_": [bare(p) for p in pipeline.finally_],
        }
    )
    return stripped, specs, customs


def add_downward_items(pod_spec: JSON, customs: Mapping[str, CustomTask]) -> None:
    """Add each custom task's outcome and results to the Pod's downward-API volume."""
    volume = next(v for v in pod_spec["volumes"] if v["name"] == "tekton-internal-downward")
    for task in customs.values():
        items = [(f"{task.folder}/state", task.state_key)]
        items += [(f"{task.folder}/results/{r}", task.result_key(r)) for r in task.results]
        for path, key in items:
            ref = {"fieldPath": f"metadata.annotations['{key}']"}
            volume["downwardAPI"]["items"].append({"path": path, "fieldRef": ref})


def compile_with_custom_tasks(
    pipeline: PipelineSpec,
    tasks: Mapping[str, TaskSpec],
    params: Mapping[str, ParamValue],
    bindings: Sequence[WorkspaceBinding],
    ctx: RunContext,
    images: Images,
    step_actions: Mapping[str, StepActionSpec] | None = None,
) -> Plan:
    """:func:`~examples.pipeline_in_pod.compiler.compile_pipeline`, custom tasks included
    (``tasks`` need no entry for them): their stand-ins compiled, ``Plan.custom`` set.

    Raises:
        CompileError: as ``compile_pipeline``, or :func:`find_custom_tasks`.
    """
    scope = pipeline_scope(pipeline, params, ctx)
    pipeline, specs, custom = prepare(pipeline, tasks, images.shell, scope)
    plan = compile_pipeline(pipeline, specs, params, bindings, ctx, images, step_actions)
    add_downward_items(plan.pod_spec, custom)
    return dataclasses.replace(plan, custom=custom)


# -- run time -----------------------------------------------------------------------


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


def statuses(view: PodView) -> dict[str, str]:
    """``$(tasks.<t>.status)`` and ``$(tasks.status)`` as Tekton computes them, from the
    DAG tasks' states."""
    out: dict[str, str] = {}
    for entry in view.tasks:
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


def run_params(task: CustomTask, view: PodView) -> tuple[list[JSON], str | None]:
    """The CustomRun's params with results and statuses substituted; or which result is
    missing (Tekton fails the run: ``InvalidTaskResultReference``)."""
    scope = Scope(strings=statuses(view))
    params: list[JSON] = []
    for name, value in task.params.items():
        resolved = pipeline_results({name: scope.value(value)}, view.results)
        if name not in resolved:
            refs = ", ".join(sorted({m.group(0) + ")" for m in _RESULT_REF.finditer(str(value))}))
            return [], f"param {name!r}: no value for {refs}"
        params.append({"name": name, "value": resolved[name]})
    return params, None


def custom_run_body(
    run: Run[Any],
    owned: Owned,
    task: CustomTask,
    params: Sequence[JSON],
    timeout: str | None,
) -> JSON:
    """The child CustomRun of ``task``: owned by ``run``, labelled, its ``customRef``,
    params, ``timeout``, ``retries`` and the run's service account, as Tekton makes one."""
    labels = {
        RUN_LABEL: run.name,
        TASK_LABEL: task.name,
        ATTEMPT_LABEL: str(run.attempt),
    }
    meta = owned.metadata(
        run,
        name=child_name(run.name, task.name, run.attempt),
        namespace=run.namespace,
        labels=labels,
    )
    spec: JSON = {"customRef": dict(task.ref), "params": list(params)}
    if task.timeout or timeout:
        spec["timeout"] = task.timeout or timeout
    if task.retries:
        spec["retries"] = task.retries
    account = run.obj["spec"].get("serviceAccountName")
    if account:
        spec["serviceAccountName"] = account
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


def overlay(
    customs: Mapping[str, CustomTask],
    children: Mapping[str, JSON],
    pod: JSON,
    run: str,
    attempt: int,
) -> Callable[[JSON], None]:
    """The hook for ``read_pod``: a custom task's entry tells its CustomRun's state,
    reason, message and times (the Pod still decides when it has ended)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}

    def apply(entry: JSON) -> None:
        task = customs.get(entry["name"])
        if task is None:
            return
        name = child_name(run, task.name, attempt)
        entry["customRun"] = name
        entry["ref"] = dict(task.ref)
        child = children.get(name)
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
    children: Mapping[str, JSON],
    run: str,
    attempt: int,
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
        name = child_name(run, task.name, attempt)
        child = children.get(name)
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
    run: Run[Any],
    owned: Owned,
    customs: Mapping[str, CustomTask],
    view: PodView,
    pod: JSON,
    limits: Mapping[str, datetime.timedelta],
    stopping: Mapping[str, str],
    pod_path: str,
) -> None:
    """Create, inform and cancel the run's CustomRuns as :func:`decide` says (``pod_path``:
    the Pod's API path, for its annotations)."""
    children = {c["metadata"]["name"]: c for c in run.owned(CUSTOM_RUNS)}
    actions = decide(customs, view, pod, children, run.name, run.attempt, stopping)
    for name, params in actions.create.items():
        task = customs[name]
        body = custom_run_body(run, owned, task, params, child_timeout(task, limits))
        # A conflict: an earlier reconcile made it; its watch event is on its way.
        with contextlib.suppress(ConflictError):
            await client.create(CUSTOM_RUNS.path(run.namespace), body)
    if actions.annotations:
        await client.patch(pod_path, {"metadata": {"annotations": actions.annotations}})
    for name, message in actions.cancel.items():
        await cancel(client, run.namespace, name, message)


async def cancel(client: KubeClient, namespace: str, name: str, message: str) -> None:
    """Ask a child CustomRun to stop, as Tekton does (``RunCancelled`` and a message)."""
    body = {"spec": {"status": "RunCancelled", "statusMessage": message}}
    with contextlib.suppress(NotFoundError):
        await client.patch(CUSTOM_RUNS.path(namespace, name), body)


async def cancel_all(client: KubeClient, run: Run[Any], message: str) -> None:
    """Cancel every unfinished CustomRun of ``run`` (it is cancelled or timed out)."""
    for child in run.owned(CUSTOM_RUNS):
        if not _done(child) and (child.get("spec") or {}).get("status") != "RunCancelled":
            await cancel(client, run.namespace, child["metadata"]["name"], message)
