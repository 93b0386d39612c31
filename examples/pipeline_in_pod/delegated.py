"""The delegated front door: a plain ``tekton.dev/v1`` PipelineRun, run in one Pod.

    customtask-sdk run examples.pipeline_in_pod.delegated:DelegatedPipelineRun

A PipelineRun whose ``spec.managedBy`` is :data:`MANAGED_BY`
(``pipelineinpod.customtask.dev/controller``; ``PIP_MANAGED_BY`` overrides it) is left
alone by Tekton's own controller (v1.15+) and run here: the same compiler and semantics
as the CustomRun front door, the status in Tekton's own format (conditions and reasons as
Tekton's PipelineRun reconciler writes them, ``startTime``, ``completionTime``,
``pipelineSpec``, ``childReferences``, ``results``, ``skippedTasks``,
``finallyStartTime``), and one TaskRun per pipeline task that ran (same ``managedBy``,
owned by the PipelineRun, ``podName`` the shared Pod, ``steps[]`` with each step's
container), written when that task changes; a custom task's CustomRun as Tekton makes
it (customruns.py). Whatever one Pod cannot do fails the PipelineRun at once, the
message naming the field.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from customtask_sdk import (
    PIPELINE_RUNS,
    TASK_RUNS,
    ConflictError,
    NotFoundError,
    Object,
    ObjectReconciler,
    Owned,
    Result,
)
from customtask_sdk.client import CUSTOM_RUNS
from customtask_sdk.reconciler import format_go_duration, parse_go_duration
from customtask_sdk.reconciler.run import format_time, parse_time
from examples.pipeline_in_pod import customruns, taskruns
from examples.pipeline_in_pod.compiler import (
    BARRIER_CONTAINER,
    CANCEL_ANNOTATION,
    CompileError,
    Images,
    Plan,
    RunContext,
    compile_pipeline,
)
from examples.pipeline_in_pod.controller import MANAGED, images_from_env
from examples.pipeline_in_pod.model import PipelineSpec, PipelineTask, TaskSpec, WorkspaceBinding
from examples.pipeline_in_pod.nested import inner_name
from examples.pipeline_in_pod.pods import (
    PODS,
    Unresolvable,
    container_state,
    create_claims,
    embed_children,
    mark_ready,
    resolve_pipeline,
    resolve_tasks,
    stop_sidecars,
)
from examples.pipeline_in_pod.status import PodView, read_pod
from examples.pipeline_in_pod.step_action_sources import Requester, fetch_step_actions
from examples.pipeline_in_pod.stepactions import StepActionSpec
from examples.pipeline_in_pod.taskruns import MANAGED_BY
from examples.pipeline_in_pod.tekton_status import (
    Graceful,
    child_name,
    condition,
    counts,
    pipeline_condition,
    skip_reason,
    succeeded,
)

__all__ = ["MANAGED_BY", "DelegatedPipelineRun", "Invalid"]

JSON = dict[str, Any]
log = logging.getLogger("examples.pipeline_in_pod.delegated")
#: Tekton's ``default-timeout-minutes``: a PipelineRun's timeout when it sets none.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=60)
#: ``spec.status`` values of a PipelineRun.
CANCELLED, CANCELLED_RUN_FINALLY = "Cancelled", "CancelledRunFinally"
STOPPED_RUN_FINALLY, PENDING = "StoppedRunFinally", "PipelineRunPending"
#: The ``statusMessage`` Tekton puts on the TaskRuns of a cancelled / timed-out PipelineRun.
BY_CANCEL = "TaskRun cancelled as the PipelineRun it belongs to has been cancelled."
BY_TIMEOUT = "TaskRun cancelled as the PipelineRun it belongs to has timed out."
_TASK_RUN_SPEC = ("serviceAccountName", "podTemplate")
#: Tekton's reasons for what :class:`~examples.pipeline_in_pod.pods.Unresolvable` says.
_UNRESOLVABLE = {
    "PipelineNotFound": "CouldntGetPipeline",
    "TaskNotFound": "CouldntGetTask",
    "InvalidPipeline": "PipelineValidationFailed",
}
#: ``status.annotations`` key of the StepActions frozen at the start (JSON, by ``ref_key``).
STEP_ACTIONS_ANNOTATION = "pipelineinpod.customtask.dev/step-actions"
_ENDED = {"succeeded", "failed", "timedOut", "cancelled", "skipped"}


class Invalid(Exception):
    """The PipelineRun cannot run (here): it fails at once with ``reason``, ``message``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _validated(model: type[BaseModel], data: Any, where: str, reason: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join([where, *(str(p) for p in e['loc'])])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise Invalid(reason, problems) from None


def check_supported(spec: Mapping[str, Any]) -> None:
    """Reject what one Pod cannot do (or is not done yet), naming the field."""
    if spec.get("taskRunSpecs"):
        raise Invalid(
            "InvalidTaskRunSpecs",
            "spec.taskRunSpecs: per-task service accounts and Pod templates are impossible "
            "in one Pod; use spec.taskRunTemplate",
        )
    ref = spec.get("pipelineRef") or {}
    for key in ("resolver", "params", "bundle"):
        if key in ref:
            raise Invalid(
                "CouldntGetPipeline", f"spec.pipelineRef.{key}: remote resolution is not supported"
            )
    for key in spec.get("taskRunTemplate") or {}:
        if key not in _TASK_RUN_SPEC:
            raise Invalid(
                "PipelineValidationFailed",
                f"spec.taskRunTemplate.{key}: not supported in one Pod (only "
                f"{' and '.join(_TASK_RUN_SPEC)})",
            )


def pipeline_timeouts(spec: Mapping[str, Any]) -> dict[str, datetime.timedelta]:
    """``spec.timeouts`` that apply (``pipeline`` defaults to 60 minutes; ``0``: none)."""
    given = spec.get("timeouts") or {}
    limits = {"pipeline": DEFAULT_TIMEOUT}
    for key in ("pipeline", "tasks", "finally"):
        text = given.get(key)
        if text is None or text == "":
            continue
        try:
            limit = parse_go_duration(str(text))
        except ValueError as exc:
            raise Invalid("PipelineValidationFailed", f"spec.timeouts.{key}: {exc}") from None
        if limit > datetime.timedelta(0):
            limits[key] = limit
        else:
            limits.pop(key, None)
    return limits


def _params(spec: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for index, param in enumerate(spec.get("params") or []):
        value = param.get("value") if isinstance(param, dict) else None
        if not isinstance(value, str | list | dict) or not param.get("name"):
            raise Invalid(
                "PipelineValidationFailed",
                f"spec.params[{index}]: give a name and a string, array or object value",
            )
        values[param["name"]] = value
    return values


class DelegatedPipelineRun(ObjectReconciler):
    """Runs each PipelineRun whose ``spec.managedBy`` is :data:`MANAGED_BY` in one Pod."""

    resource = PIPELINE_RUNS
    owns: ClassVar = (
        Owned(PODS, labels=MANAGED, fields=("metadata.annotations", "spec.containers", "status")),
        Owned(TASK_RUNS, labels=MANAGED, fields=("status",)),
        # The CustomRuns of its custom tasks (customruns.py).
        Owned(CUSTOM_RUNS, labels=MANAGED, fields=("spec.status", "status")),
    )

    def __init__(
        self, images: Images | None = None, managed_by: str = MANAGED_BY, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.images = images or images_from_env()
        self.managed_by = managed_by

    def selects(self, obj: JSON) -> bool:
        return (obj.get("spec") or {}).get("managedBy") == self.managed_by

    async def reconcile(self, obj: Object) -> Result:
        now = format_time(obj.now)
        status: JSON = dict(obj.status)
        generation = obj.obj["metadata"].get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        previous = succeeded(status)
        if not status.get("startTime") or previous is None:
            if obj.spec.get("status") == PENDING:
                message = f'PipelineRun "{obj.name}" is pending'
                status["conditions"] = [
                    condition(previous, "Unknown", "PipelineRunPending", message, now)
                ]
                return Result(status)
            status["startTime"] = now
            status["conditions"] = [condition(None, "Unknown", "Started", "", now)]
        try:
            return await self._advance(obj, status, now)
        except Invalid as exc:
            await self._delete_pod(obj)
            await customruns.cancel_all(self.client, self._parent(obj), customruns.CANCELLED)
            _finish(status, "False", exc.reason, exc.message, now)
            return Result(status)

    # -- the run -----------------------------------------------------------------

    async def _advance(self, obj: Object, status: JSON, now: str) -> Result:
        spec = obj.spec
        if spec.get("status") == CANCELLED:
            await self._delete_pod(obj)
            await taskruns.cancel_unfinished(
                self.client, obj.namespace, obj.owned(TASK_RUNS), now, BY_CANCEL
            )
            await customruns.cancel_all(self.client, self._parent(obj), customruns.CANCELLED)
            _finish(status, "False", "Cancelled", f'PipelineRun "{obj.name}" was cancelled', now)
            return Result(status)
        check_supported(spec)
        if "pipelineSpec" not in status:
            frozen = await self._resolve(obj)
            freeze_step_actions(status, await self._step_actions(obj, frozen))
            status["pipelineSpec"] = frozen
        pipeline = _validated(PipelineSpec, status["pipelineSpec"], "pipelineSpec", "Invalid")
        ptasks = pipeline_tasks(status["pipelineSpec"])
        plan = self._compile(obj, pipeline, ptasks, frozen_step_actions(status))
        limits = pipeline_timeouts(spec)
        started = parse_time(status["startTime"])
        pod_name = child_name(obj.name, "-pod")
        pod = next((p for p in obj.owned(PODS) if p["metadata"]["name"] == pod_name), None)
        if pod is None:
            if status["conditions"][0]["reason"] not in ("Started", PENDING):
                raise Invalid("PodDeleted", f"Pod {pod_name!r} was deleted while the pipeline ran")
            # volumeClaimTemplates: the run's claims, owned by it as Tekton owns them
            await create_claims(self.client, obj.namespace, plan.claims, obj.owner_reference())
            with contextlib.suppress(ConflictError):  # made earlier; its event is on its way
                body = self._pod_body(obj, plan, pod_name, pipeline_name(obj))
                await self.client.create(PODS.path(obj.namespace), body)
            shown = [t for t in plan.tasks if t.name not in plan.children]  # no child's end
            total = counts(["skipped" if t.skipped else "pending" for t in shown])
            _, reason, message = pipeline_condition(obj.name, total, Graceful())
            status["conditions"] = [condition(succeeded(status), "Unknown", reason, message, now)]
            return Result(status, _until(limits, started, obj.now))
        if "pipeline" in limits and obj.now >= started + limits["pipeline"]:
            await self._delete_pod(obj)
            await taskruns.cancel_unfinished(
                self.client, obj.namespace, obj.owned(TASK_RUNS), now, BY_TIMEOUT
            )
            await customruns.cancel_all(self.client, self._parent(obj), customruns.TIMED_OUT)
            limit = format_go_duration(limits["pipeline"])
            message = f'PipelineRun "{obj.name}" failed to finish within "{limit}"'
            _finish(status, "False", "PipelineRunTimeout", message, now)
            return Result(status)
        return await self._follow(obj, status, now, plan, pod, limits, started)

    async def _follow(
        self,
        obj: Object,
        status: JSON,
        now: str,
        plan: Plan,
        pod: JSON,
        limits: Mapping[str, datetime.timedelta],
        started: datetime.datetime,
    ) -> Result:
        """Read the Pod, act on graceful stops and the tasks' timeout, write the TaskRuns."""
        tasks_end = started + limits["tasks"] if "tasks" in limits else None
        tasks_timed_out = tasks_end is not None and obj.now >= tasks_end
        wanted = obj.spec.get("status")
        graceful = Graceful(
            cancelled=wanted == CANCELLED_RUN_FINALLY,
            stopped=wanted == STOPPED_RUN_FINALLY,
            tasks_timed_out=format_go_duration(limits["tasks"]) if tasks_timed_out else None,
        )
        parent = self._parent(obj)
        view = self._read(plan, pod, parent, tasks_timed_out)
        dag = [t for t in view.tasks if not t.get("finally")]
        existing = {t["metadata"]["name"]: t for t in obj.owned(TASK_RUNS)}
        custom_runs = {
            t: parent.name_of(t) for t in plan.custom if parent.name_of(t) in parent.children
        }
        made = {*custom_runs, *(t["name"] for t in view.tasks if _task_run(obj, t) in existing)}
        # A DAG task has started once its TaskRun (CustomRun) exists; a Pod shows every step
        # container running from the start (each waits for its turn), so its states cannot.
        begun = {t["name"] for t in dag if t["name"] in made}
        dag_names = {t["name"] for t in dag}
        stopping = bool(tasks_timed_out or graceful.cancelled or graceful.stopped)
        signalled = (pod["metadata"].get("annotations") or {}).get(CANCEL_ANNOTATION)
        unstarted_left = any(t["state"] not in _ENDED for t in dag if t["name"] not in begun)
        # StoppedRunFinally lets the started tasks finish, then stops the rest.
        finishing = any(t["state"] == "running" and t["name"] in begun for t in dag)
        only_stopped = graceful.stopped and not (tasks_timed_out or graceful.cancelled)
        if (
            stopping
            and not signalled
            and not all(t["state"] in _ENDED for t in dag)
            and (not only_stopped or (unstarted_left and not finishing))
        ):
            meta = pod["metadata"]
            await self.client.patch(
                PODS.path(meta["namespace"], meta["name"]),
                {"metadata": {"annotations": {CANCEL_ANNOTATION: "CANCEL"}}},
            )
        if plan.waits_for_ready and not view.steps_done:
            await mark_ready(self.client, pod)
        if plan.custom:
            await self._sync_custom_runs(plan, pod, view, parent, limits, graceful)
        finals = [t for t in view.tasks if t.get("finally")]
        graceful = Graceful(
            graceful.cancelled,
            graceful.stopped,
            graceful.tasks_timed_out,
            finally_done=all(t["state"] in _ENDED for t in finals),
        )
        entries = self._entries(view.tasks, made, graceful)
        ptasks = pipeline_tasks(status["pipelineSpec"])
        if stopping:  # a DAG task not started by now never starts: it gets no TaskRun
            ptasks = {k: p for k, p in ptasks.items() if k in begun or k not in dag_names}
        status["childReferences"] = await taskruns.sync(
            self.client,
            self._owner(obj),
            plan,
            pod,
            entries,
            existing,
            ptasks,
            now,
            BY_CANCEL,
            custom_runs=custom_runs,
            results=view.results,
        )
        skipped = [
            {"name": e["name"], "reason": e["skipReason"]}
            for e in entries
            if e["state"] == "skipped"
        ]
        status.pop("skippedTasks", None)
        if skipped:
            status["skippedTasks"] = skipped
        barrier = container_state(pod, BARRIER_CONTAINER).get("terminated") or {}
        if finals and barrier.get("finishedAt"):
            status["finallyStartTime"] = barrier["finishedAt"]
        previous = succeeded(status)
        if view.verdict is not None and (
            not view.steps_done or view.verdict.reason not in ("Succeeded", "Completed", "Failed")
        ):  # the Pod itself failed: an image, a helper, scheduling, eviction
            await stop_sidecars(self.client, pod, self.images.nop)
            _finish(status, "False", view.verdict.reason, view.verdict.message, now)
            return Result(status)
        state, reason, message = pipeline_condition(
            obj.name, counts([e["state"] for e in entries]), graceful
        )
        if state == "Unknown" or view.verdict is None:  # steps (or their reading) to go
            reason = reason if state == "Unknown" else "Running"
            status["conditions"] = [condition(previous, "Unknown", reason, message, now)]
            return Result(status, _until(limits, started, obj.now))
        await stop_sidecars(self.client, pod, self.images.nop)
        results = view.verdict.results if view.verdict is not None else {}
        status.pop("results", None)
        if results:
            status["results"] = [{"name": k, "value": v} for k, v in results.items()]
        _finish(status, state, reason, message, now)
        return Result(status)

    @staticmethod
    def _entries(tasks: Sequence[JSON], made: Collection[str], graceful: Graceful) -> list[JSON]:
        """The view's tasks as Tekton sees them: a task stopped before it ever ran (no
        TaskRun or CustomRun of it was ``made``) was skipped, with Tekton's reason."""
        why = None
        if graceful.cancelled:
            why = "PipelineRun was gracefully cancelled"
        elif graceful.stopped:
            why = "PipelineRun was gracefully stopped"
        elif graceful.tasks_timed_out:
            why = "PipelineRun Tasks timeout has been reached"
        entries = []
        for task in tasks:
            entry = dict(task)
            never_ran = task["name"] not in made
            if why and never_ran and task["state"] in ("cancelled", "timedOut"):
                entry.update(state="skipped", reason="Cancelled")
            if entry["state"] == "skipped":
                entry["skipReason"] = skip_reason(entry, why)
            entries.append(entry)
        return entries

    # -- resolving and compiling -------------------------------------------------

    async def _resolve(self, obj: Object) -> JSON:
        """``status.pipelineSpec``: the Pipeline with each ``taskRef`` resolved into its
        ``taskSpec``, frozen at the start as Tekton freezes the pipeline's spec."""
        spec = obj.spec
        if "pipelineSpec" in spec:
            raw = spec["pipelineSpec"]
        elif (spec.get("pipelineRef") or {}).get("name"):
            try:
                found = await resolve_pipeline(
                    self.client, obj.namespace, spec["pipelineRef"]["name"]
                )
                raw = found.get("spec") or {}
            except Unresolvable as exc:
                raise Invalid("CouldntGetPipeline", exc.message) from None
        else:
            raise Invalid("PipelineValidationFailed", "spec: set pipelineRef.name or pipelineSpec")
        pipeline = _validated(PipelineSpec, raw, "spec.pipelineSpec", "PipelineValidationFailed")
        named = (spec["pipelineRef"]["name"],) if "pipelineSpec" not in spec else ()
        try:  # child pipelines as the CustomRun front door embeds them (nested.py)
            pipeline = await embed_children(self.client, obj.namespace, pipeline, named)
            tasks = await resolve_tasks(self.client, obj.namespace, pipeline)
        except Unresolvable as exc:
            raise Invalid(_UNRESOLVABLE.get(exc.reason, exc.reason), exc.message) from None
        return frozen_spec(raw, tasks, child_specs(pipeline))

    async def _step_actions(self, obj: Object, frozen: JSON) -> JSON:
        """The StepActions the frozen tasks' steps reference (as the CustomRun front door
        reads them); a remote one through a ResolutionRequest owned by the run, not as its
        controller (Tekton's controller enqueues, and writes, the controller of any)."""
        tasks = {
            name: p["taskSpec"]
            for name, p in pipeline_tasks(frozen).items()
            if isinstance(p.get("taskSpec"), dict)
        }
        owner = {**obj.owner_reference(), "controller": False}
        try:
            return await fetch_step_actions(
                self.client, obj.namespace, tasks, Requester(obj.name, MANAGED, owner)
            )
        except Unresolvable as exc:
            raise Invalid(exc.reason, exc.message) from None

    def _compile(
        self,
        obj: Object,
        pipeline: PipelineSpec,
        ptasks: Mapping[str, JSON],
        actions: Mapping[str, StepActionSpec],
    ) -> Plan:
        tasks = {
            name: _validated(TaskSpec, p.get("taskSpec"), f"pipelineSpec.{name}", "Invalid")
            for name, p in ptasks.items()
            if "taskRef" not in p  # frozen with a taskRef: a custom task, run as a CustomRun
        }
        template = obj.spec.get("taskRunTemplate") or {}
        ctx = RunContext(
            name=obj.name,
            namespace=obj.namespace,
            uid=obj.uid,
            pipeline=pipeline_name(obj),
            pipeline_run=obj.name,
            service_account=template.get("serviceAccountName"),
            pod_template=template.get("podTemplate") or {},
        )
        bindings = [
            _validated(WorkspaceBinding, raw, f"spec.workspaces[{i}]", "InvalidWorkspaceBindings")
            for i, raw in enumerate(obj.spec.get("workspaces") or [])
        ]
        try:
            return compile_pipeline(
                pipeline, tasks, _params(obj.spec), bindings, ctx, self.images, actions
            )
        except CompileError as exc:
            raise Invalid(exc.reason, f"{exc.field}: {exc.message}") from None

    # -- objects -----------------------------------------------------------------

    def _labels(self, obj: Object, pipeline: str) -> dict[str, str]:
        return {
            **MANAGED,
            "tekton.dev/pipelineRun": obj.name,
            "tekton.dev/pipelineRunUID": obj.uid,
            "tekton.dev/pipeline": pipeline,
        }

    def _owner(self, obj: Object) -> taskruns.Owner:
        return taskruns.Owner(
            name=obj.name,
            namespace=obj.namespace,
            reference=obj.owner_reference(),
            labels=self._labels(obj, pipeline_name(obj)),
            managed_by=self.managed_by,
            template=obj.spec.get("taskRunTemplate") or {},
            timeout=format_go_duration(DEFAULT_TIMEOUT),
        )

    def _parent(self, obj: Object) -> customruns.Parent:
        """The run as its custom tasks' CustomRuns' owner, as Tekton makes them."""
        return customruns.of_pipeline_run(obj, self._labels(obj, pipeline_name(obj)))

    @staticmethod
    def _read(plan: Plan, pod: JSON, parent: customruns.Parent, timed_out: bool) -> PodView:
        """The Pod read back; a custom task's entry tells its CustomRun's story."""
        hook = customruns.overlay(plan.custom, parent, pod) if plan.custom else None
        return read_pod(plan, pod, timed_out=timed_out, overlay=hook)

    async def _sync_custom_runs(
        self,
        plan: Plan,
        pod: JSON,
        view: PodView,
        parent: customruns.Parent,
        limits: Mapping[str, datetime.timedelta],
        graceful: Graceful,
    ) -> None:
        """Create, inform and stop the custom tasks' CustomRuns (customruns.py): a DAG
        one is cancelled by ``CancelledRunFinally`` or the tasks' timeout (Tekton lets
        ``StoppedRunFinally`` finish the running ones), any left once the Pod ended."""
        stopping = {"all": customruns.CANCELLED} if view.verdict else {}
        if graceful.tasks_timed_out:
            stopping["dag"] = customruns.TIMED_OUT
        elif graceful.cancelled:
            stopping["dag"] = customruns.CANCELLED
        meta = pod["metadata"]
        path = PODS.path(meta["namespace"], meta["name"])
        await customruns.sync(self.client, parent, plan.custom, view, pod, limits, stopping, path)

    def _pod_body(self, obj: Object, plan: Plan, name: str, pipeline: str) -> JSON:
        meta = {
            "name": name,
            "namespace": obj.namespace,
            "labels": self._labels(obj, pipeline),
            "ownerReferences": [obj.owner_reference()],
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": plan.pod_spec}

    async def _delete_pod(self, obj: Object) -> None:
        with contextlib.suppress(NotFoundError):
            await self.client.delete(
                PODS.path(obj.namespace, child_name(obj.name, "-pod")),
                params={"gracePeriodSeconds": "1"},
            )


def pipeline_name(obj: Object) -> str:
    """The Pipeline's name (``tekton.dev/pipeline``): the one referenced, else the run's."""
    return str((obj.spec.get("pipelineRef") or {}).get("name") or obj.name)


def freeze_step_actions(status: JSON, actions: Mapping[str, Any]) -> None:
    """Keep the StepActions read at the start in ``status.annotations`` (Tekton's place for
    a reconciler's extra state; ``status.pipelineSpec`` keeps the steps' ``ref``s)."""
    if actions:
        text = json.dumps(actions, sort_keys=True, separators=(",", ":"))
        status["annotations"] = {**(status.get("annotations") or {}), STEP_ACTIONS_ANNOTATION: text}


def frozen_step_actions(status: Mapping[str, Any]) -> dict[str, StepActionSpec]:
    """The StepActions :func:`freeze_step_actions` kept, by ``ref_key``."""
    text = (status.get("annotations") or {}).get(STEP_ACTIONS_ANNOTATION)
    if not text:
        return {}
    return {
        key: _validated(StepActionSpec, spec, f"StepAction {key!r}", "PipelineValidationFailed")
        for key, spec in json.loads(text).items()
    }


def child_specs(pipeline: PipelineSpec, prefix: str = "") -> dict[str, JSON]:
    """Each embedded child pipeline's spec, by the name its tasks are prefixed with."""
    found: dict[str, JSON] = {}
    for ptask in _all_tasks(pipeline):
        if ptask.pipelineSpec is not None:
            name = inner_name(prefix, ptask.name) if prefix else ptask.name
            found[name] = ptask.pipelineSpec.model_dump(by_alias=True, exclude_unset=True)
            found.update(child_specs(ptask.pipelineSpec, name))
    return found


def frozen_spec(
    raw: Mapping[str, Any],
    tasks: Mapping[str, JSON],
    children: Mapping[str, JSON],
    prefix: str = "",
) -> JSON:
    """``status.pipelineSpec``: ``raw`` with each ``taskRef`` resolved into its
    ``taskSpec`` (``tasks``, by :func:`pipeline_tasks` name) and each child pipeline's
    ``pipelineRef`` into its ``pipelineSpec`` (``children``, from :func:`child_specs`)."""
    frozen: JSON = {**raw}
    for key in ("tasks", "finally"):
        if key not in frozen:
            continue
        out = []
        for ptask in frozen[key]:
            name = inner_name(prefix, ptask["name"]) if prefix else ptask["name"]
            if name in children:
                source = ptask.get("pipelineSpec")  # as written, else the Pipeline's
                source = source if isinstance(source, dict) else children[name]
                child = frozen_spec(source, tasks, children, name)
                ptask = {k: v for k, v in ptask.items() if k != "pipelineRef"}
                ptask["pipelineSpec"] = child
            elif "taskRef" in ptask and name in tasks:
                ptask = {k: v for k, v in ptask.items() if k != "taskRef"}
                ptask["taskSpec"] = tasks[name]
            out.append(ptask)
        frozen[key] = out
    return frozen


def pipeline_tasks(frozen: Mapping[str, Any], prefix: str = "") -> dict[str, JSON]:
    """Each task of ``status.pipelineSpec`` that runs, by the name it runs (and its TaskRun
    is named) under: a child pipeline's task ``t`` of task ``c`` as ``c-t`` (nested.py)."""
    found: dict[str, JSON] = {}
    for ptask in [*frozen.get("tasks", []), *(frozen.get("finally") or [])]:
        name = inner_name(prefix, ptask["name"]) if prefix else ptask["name"]
        if isinstance(ptask.get("pipelineSpec"), dict):
            found.update(pipeline_tasks(ptask["pipelineSpec"], name))
        else:
            found[name] = ptask
    return found


def _task_run(obj: Object, entry: Mapping[str, Any]) -> str:
    """The name of the TaskRun of the view's task ``entry``."""
    return child_name(obj.name, f"-{entry['name']}")


def _all_tasks(pipeline: PipelineSpec) -> list[PipelineTask]:
    return [*pipeline.tasks, *pipeline.finally_]


def _finish(status: JSON, state: str, reason: str, message: str, now: str) -> None:
    status["conditions"] = [condition(succeeded(status), state, reason, message, now)]
    status["completionTime"] = now


def _until(
    limits: Mapping[str, datetime.timedelta], started: datetime.datetime, now: datetime.datetime
) -> datetime.timedelta | None:
    """Time left to the next of the pipeline's deadlines (``tasks``, ``pipeline``)."""
    ends = [started + limits[k] - now for k in ("pipeline", "tasks") if k in limits]
    ahead = [end for end in ends if end > datetime.timedelta(0)]
    return min(ahead) if ahead else None
