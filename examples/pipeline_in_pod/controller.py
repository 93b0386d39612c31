"""Pipeline-in-Pod: run a whole Tekton Pipeline in one Pod (TEP-0044).

    customtask-sdk run examples.pipeline_in_pod.controller:PipelineInPod

Serves ``pipelineinpod.customtask.dev/v1alpha1`` ``PipelineInPod`` (``PIP_API_VERSION``
overrides it). ``customRef.name`` names a ``tekton.dev/v1`` Pipeline; or an embedded
``customSpec.spec`` holds ``pipelineRef`` or ``pipelineSpec``, ``workspaces``,
``podTemplate`` and params. The resolved Pipeline and Tasks are frozen into
``status.extraFields.spec`` at the start; the Pod is compiled from them on every reconcile
(deterministic), created once per attempt, and read back into per-task status.

Images (env): ``PIP_ENTRYPOINT_IMAGE`` (Tekton's entrypoint, ``/ko-app/entrypoint``),
``PIP_NOP_IMAGE`` (Tekton's nop, swapped in to stop sidecars), ``PIP_SHELL_IMAGE`` (a
shell: places scripts, and the finally barrier).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import ValidationError

from customtask_sdk import (
    ConflictError,
    Failed,
    Outcome,
    Owned,
    Reconciler,
    Run,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.client import CUSTOM_RUNS, TASK_RUNS
from customtask_sdk.reconciler import format_go_duration, parse_go_duration
from customtask_sdk.reconciler.run import format_time, parse_time
from examples.pipeline_in_pod import customtasks, taskruns
from examples.pipeline_in_pod.compiler import (
    BARRIER_CONTAINER,
    CANCEL_ANNOTATION,
    CompileError,
    Images,
    Plan,
    RunContext,
)
from examples.pipeline_in_pod.hermetic import kept
from examples.pipeline_in_pod.model import (
    PipelineInPodInput,
    PipelineSpec,
    TaskSpec,
    WorkspaceBinding,
)
from examples.pipeline_in_pod.pods import (
    CLAIMS,
    PIPELINES,
    PODS,
    TASKS,
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
from examples.pipeline_in_pod.step_action_sources import (
    RESOLUTION_REQUESTS,
    STEP_ACTIONS,
    Requester,
    fetch_step_actions,
)
from examples.pipeline_in_pod.stepactions import StepActionSpec

__all__ = [
    "CLAIMS",
    "PIPELINES",
    "PODS",
    "RESOLUTION_REQUESTS",
    "STEP_ACTIONS",
    "TASKS",
    "PipelineInPod",
    "custom_run",
    "images_from_env",
]

JSON = dict[str, Any]
#: Label on every Pod this controller makes (the informer selects on it).
MANAGED = {"app.kubernetes.io/managed-by": "pipeline-in-pod"}
ATTEMPT_LABEL = "pipelineinpod.customtask.dev/attempt"
_TEKTON = "ghcr.io/tektoncd/pipeline/cmd"
#: Tekton's reason for a PipelineRun past one of its timeouts.
TIMEOUT = "PipelineRunTimeout"


def custom_run(name: str, spec: Mapping[str, Any]) -> JSON:
    """A standalone CustomRun of ``spec`` (``pipelineSpec`` or ``pipelineRef``,
    ``workspaces``, ``timeouts``, ``podTemplate``, params) in one Pod."""
    custom = {"apiVersion": PipelineInPod.api_version, "kind": "PipelineInPod", "spec": dict(spec)}
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": name},
        "spec": {"customSpec": custom},
    }


def images_from_env(env: Mapping[str, str] = os.environ) -> Images:
    """The Pod's helper images, from ``PIP_*_IMAGE`` (defaults: Tekton v1.15.1's)."""
    return Images(
        entrypoint=env.get("PIP_ENTRYPOINT_IMAGE", f"{_TEKTON}/entrypoint:v1.15.1"),
        nop=env.get("PIP_NOP_IMAGE", f"{_TEKTON}/nop:v1.15.1"),
        shell=env.get("PIP_SHELL_IMAGE", "cgr.dev/chainguard/busybox:latest"),
    )


def _input_error(reason: str, message: str) -> RunFailed:
    return RunFailed(reason, message, retry=False)


class PipelineInPod(Reconciler[PipelineInPodInput]):
    """Compiles the run's Pipeline into one Pod, and reports each task from its containers."""

    api_version = os.environ.get("PIP_API_VERSION", "pipelineinpod.customtask.dev/v1alpha1")
    kind = "PipelineInPod"
    accepts_named_ref = True
    owns: ClassVar = (
        Owned(PODS, labels=MANAGED, fields=("metadata.annotations", "spec.containers", "status")),
        # The CustomRuns of its custom tasks (customtasks.py).
        Owned(CUSTOM_RUNS, labels=MANAGED, fields=("spec.status", "status")),
        # One TaskRun per task that runs, for tkn and the Dashboard (taskruns.py).
        Owned(TASK_RUNS, labels=MANAGED, fields=("status",)),
    )

    def __init__(self, images: Images | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.images = images or images_from_env()

    # -- resolving and freezing --------------------------------------------------

    async def _resolve(self, run: Run[PipelineInPodInput]) -> JSON:
        """The Pipeline and each task's spec, as the run first saw them."""
        params = run.params
        spec = params.pipelineSpec
        name = (run.obj["spec"].get("customRef") or {}).get("name") or (
            params.pipelineRef.name if params.pipelineRef else None
        )
        annotations = kept(run.obj["metadata"].get("annotations"))
        try:
            if spec is None:
                if name is None:
                    raise _input_error(
                        "InvalidParams",
                        "name a Pipeline (customRef.name or pipelineRef.name) or embed "
                        "pipelineSpec",
                    )
                found = await resolve_pipeline(self.client, run.namespace, name)
                spec = self._validate(PipelineSpec, found.get("spec") or {}, f"Pipeline {name!r}")
                # Tekton copies a Pipeline's annotations onto its run; the run's win.
                annotations = {**kept(found["metadata"].get("annotations")), **annotations}
            spec = await embed_children(self.client, run.namespace, spec, (name,) if name else ())
            tasks = await resolve_tasks(self.client, run.namespace, spec)
        except Unresolvable as exc:
            raise _input_error(exc.reason, exc.message) from None
        frozen: JSON = {
            "pipelineName": name or run.name,
            "pipeline": spec.model_dump(by_alias=True, exclude_unset=True),
            "tasks": tasks,
            "annotations": annotations,
        }
        requester = Requester(run.name, MANAGED, run.owner_reference())
        try:
            actions = await fetch_step_actions(self.client, run.namespace, tasks, requester)
        except Unresolvable as exc:
            raise _input_error(exc.reason, exc.message) from None
        if actions:
            frozen["stepActions"] = actions
        return frozen

    @staticmethod
    def _validate(model: type[Any], data: Any, what: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise _input_error("InvalidPipeline", f"{what}: {problems}") from None

    def _frozen(self, run: Run[PipelineInPodInput]) -> JSON | None:
        """The spec frozen at the start (kept across retries, whose status starts afresh)."""
        frozen = run.extra_fields.get("spec")
        if isinstance(frozen, dict):
            return frozen
        for earlier in (run.obj.get("status") or {}).get("retriesStatus") or []:
            kept = (earlier.get("extraFields") or {}).get("spec")
            if isinstance(kept, dict):
                return kept
        return None

    def compile(self, run: Run[PipelineInPodInput], frozen: JSON) -> Plan:
        """The run's Pod, compiled from the frozen spec."""
        pipeline = self._validate(PipelineSpec, frozen["pipeline"], "pipeline")
        tasks = {
            name: self._validate(TaskSpec, spec, f"tasks[{name}]")
            for name, spec in frozen["tasks"].items()
        }
        try:
            values = run.params.params
        except ValueError as exc:
            raise _input_error("InvalidParams", str(exc)) from None
        ctx = RunContext(
            name=run.name,
            namespace=run.namespace,
            uid=run.uid,
            pipeline=frozen.get("pipelineName", run.name),
            pipeline_run=run.pipeline_run or run.name,
            service_account=run.obj["spec"].get("serviceAccountName"),
            pod_template=run.params.podTemplate or {},
            annotations=frozen.get("annotations") or {},
            task_annotations={
                spec.pipelineTaskName: spec.metadata.annotations for spec in run.params.taskRunSpecs
            },
        )
        actions = {
            name: self._validate(StepActionSpec, spec, f"StepAction {name!r}")
            for name, spec in (frozen.get("stepActions") or {}).items()
        }
        bindings = list(run.params.workspaces)  # a pipeline task's bindings come in spec
        for raw in run.obj["spec"].get("workspaces") or []:
            bindings.append(self._validate(WorkspaceBinding, raw, "spec.workspaces"))
        try:
            return customtasks.compile_with_custom_tasks(
                pipeline, tasks, values, bindings, ctx, self.images, actions
            )
        except CompileError as exc:
            raise _input_error(exc.reason, f"{exc.field}: {exc.message}") from None

    # -- the Pod -----------------------------------------------------------------

    def pod_name(self, run: Run[PipelineInPodInput]) -> str:
        """The Pod of this attempt."""
        suffix = f"-retry{run.attempt}" if run.attempt else ""
        return f"{run.name[: 63 - 4 - len(suffix)]}-pod{suffix}"

    def _pod_body(self, run: Run[PipelineInPodInput], plan: Plan) -> JSON:
        labels = {
            "tekton.dev/customRun": run.name,
            ATTEMPT_LABEL: str(run.attempt),
            **{k: v for k, v in run.labels.items() if k.startswith("tekton.dev/")},
        }
        meta = Owned.of(self.owns[0]).metadata(
            run, name=self.pod_name(run), namespace=run.namespace, labels=labels
        )
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": plan.pod_spec}

    async def reconcile(self, run: Run[PipelineInPodInput]) -> Outcome:
        frozen = self._frozen(run)
        if frozen is None:
            frozen = await self._resolve(run)
        plan = self.compile(run, frozen)
        name = self.pod_name(run)
        pod = next((p for p in run.owned(PODS) if p["metadata"]["name"] == name), None)
        if pod is None and run.extra_fields.get("tasks"):  # seen before: it was deleted
            raise RunFailed(
                "PodDeleted",
                f"Pod {name!r} was deleted while the pipeline ran (evicted, or by someone)",
            )
        if pod is None:
            # volumeClaimTemplates: the run's claims, first (its attempts share them)
            await create_claims(self.client, run.namespace, plan.claims, run.owner_reference())
            # A conflict: an earlier reconcile made it; its watch event is on its way.
            with contextlib.suppress(ConflictError):
                await self.client.create(PODS.path(run.namespace), self._pod_body(run, plan))
            return Running(
                message="Pod created",
                extra_fields={"spec": frozen, "pod": name, "tasks": []},
                requeue_after=datetime.timedelta(seconds=30),
            )
        limits = self._timeouts(run)
        timed_out = bool(run.extra_fields.get("tasksTimedOut"))
        view = self._read(run, plan, pod, timed_out)
        fields: JSON = {"spec": frozen, "pod": name, "tasks": view.tasks}
        await self._sync_task_runs(run, frozen, plan, pod, view.tasks)
        if plan.waits_for_ready and not view.steps_done:
            await mark_ready(self.client, pod)
        if plan.custom:
            stopping = {"all": customtasks.CANCELLED} if view.verdict else {}
            if timed_out:
                stopping["dag"] = customtasks.TIMED_OUT
            await customtasks.sync(
                self.client,
                run,
                self.owns[1],
                plan.custom,
                view,
                pod,
                limits,
                stopping,
                PODS.path(run.namespace, name),
            )
        if view.verdict is None:
            outcome = await self._running(run, pod, view.tasks, fields, limits, timed_out)
            if plan.custom and isinstance(outcome, Failed):  # timeouts.pipeline or finally
                await customtasks.cancel_all(self.client, run, customtasks.TIMED_OUT)
            return outcome
        await stop_sidecars(self.client, pod, self.images.nop)
        verdict = view.verdict
        if verdict.succeeded or run.attempt >= run.retries:
            # The run ends here: its frozen spec is no longer needed (a retry would read it),
            # and a finished run's status stays in every cache for as long as the run does.
            del fields["spec"]
        if timed_out and not verdict.succeeded:
            fields["tasksTimedOut"] = True
            return Failed(TIMEOUT, f"timeouts.tasks passed; {verdict.message}", extra_fields=fields)
        if verdict.succeeded:
            return Succeeded(
                results=verdict.results,
                reason=verdict.reason,
                message=verdict.message,
                extra_fields=fields,
            )
        return Failed(verdict.reason, verdict.message, results=verdict.results, extra_fields=fields)

    def _timeouts(self, run: Run[PipelineInPodInput]) -> dict[str, datetime.timedelta]:
        """``timeouts.pipeline``, ``tasks`` and ``finally`` that are set (0: none)."""
        limits: dict[str, datetime.timedelta] = {}
        given = run.params.timeouts
        for key in ("pipeline", "tasks", "finally"):
            text = getattr(given, "finally_" if key == "finally" else key) if given else None
            if not text:
                continue
            try:
                limit = parse_go_duration(text)
            except ValueError as exc:
                raise _input_error("InvalidTimeouts", f"timeouts.{key}: {exc}") from None
            if limit > datetime.timedelta(0):
                limits[key] = limit
        return limits

    async def _running(
        self,
        run: Run[PipelineInPodInput],
        pod: JSON,
        tasks: list[JSON],
        fields: JSON,
        limits: Mapping[str, datetime.timedelta],
        timed_out: bool,
    ) -> Outcome:
        """Act on the pipeline's own timeouts while it runs; else wait for the Pod."""
        now, wake = run.now, []
        ends = {key: run.started_at + limit for key, limit in limits.items()}
        barrier = container_state(pod, BARRIER_CONTAINER).get("terminated") or {}
        if "finally" in limits and barrier.get("finishedAt"):
            ends["finally"] = parse_time(barrier["finishedAt"]) + limits["finally"]
        elif "finally" in ends:
            del ends["finally"]  # counted from when the finally tasks start
        for key in ("pipeline", "finally"):
            if key in ends and now >= ends[key]:
                await self._delete_pod(run)
                end_unfinished(tasks, "timedOut", "TaskRunTimeout")
                limit = format_go_duration(limits[key])
                return Failed(TIMEOUT, f"timeouts.{key} ({limit}) passed", extra_fields=fields)
        dag_done = all(
            t["state"] not in ("pending", "running") for t in tasks if not t.get("finally")
        )
        if "tasks" in ends and now >= ends["tasks"] and not dag_done and not timed_out:
            meta = pod["metadata"]
            await self.client.patch(
                PODS.path(meta["namespace"], meta["name"]),
                {"metadata": {"annotations": {CANCEL_ANNOTATION: "CANCEL"}}},
            )
            timed_out = True
        if timed_out:
            fields["tasksTimedOut"] = True
        wake = [end - now for end in ends.values() if end > now]
        running = [t["name"] for t in tasks if t["state"] == "running"]
        return Running(
            message=f"running {', '.join(running)}" if running else "waiting",
            extra_fields=fields,
            requeue_after=min(wake) if wake else None,
        )

    async def _sync_task_runs(
        self, run: Run[PipelineInPodInput], frozen: JSON, plan: Plan, pod: JSON, tasks: list[JSON]
    ) -> None:
        """Keep one TaskRun per task that ran (``<run>-<task>``; ``-retry<n>`` for later
        attempts) in Tekton's format (taskruns.py)."""
        pipeline = frozen["pipeline"]
        ptasks = {
            p["name"]: {**p, "taskSpec": frozen["tasks"][p["name"]]}
            for p in [*pipeline.get("tasks", []), *pipeline.get("finally", [])]
            if p["name"] in frozen["tasks"]
        }
        suffix = f"-retry{run.attempt}" if run.attempt else ""
        owner = taskruns.Owner(
            name=f"{run.name}{suffix}",
            namespace=run.namespace,
            reference=run.owner_reference(),
            labels={
                **MANAGED,
                "tekton.dev/customRun": run.name,
                **{k: v for k, v in run.labels.items() if k.startswith("tekton.dev/pipeline")},
            },
            managed_by=taskruns.MANAGED_BY,
            template={"podTemplate": run.params.podTemplate} if run.params.podTemplate else {},
        )
        existing = {t["metadata"]["name"]: t for t in run.owned(TASK_RUNS)}
        why = "TaskRun cancelled as the CustomRun it belongs to has been cancelled."
        await taskruns.sync(self.client, owner, plan, pod, tasks, existing, ptasks, _now(run), why)

    async def _delete_pod(self, run: Run[PipelineInPodInput]) -> None:
        await self.client.delete(
            PODS.path(run.namespace, self.pod_name(run)), params={"gracePeriodSeconds": "1"}
        )

    def _last_tasks(self, run: Run[PipelineInPodInput]) -> list[JSON] | None:
        """Each task's status as the Pod shows it now, else as last written (``None``:
        the run never got as far as its Pod). A Pod being deleted is not read: its steps
        end by a signal, which is not how they would have ended."""
        written = run.extra_fields.get("tasks")
        frozen = self._frozen(run)
        pod = next(
            (p for p in run.owned(PODS) if p["metadata"]["name"] == self.pod_name(run)), None
        )
        if frozen is None or pod is None or pod["metadata"].get("deletionTimestamp"):
            return list(written) if isinstance(written, list) else None
        try:
            plan = self.compile(run, frozen)
        except RunFailed:  # its input was bad: it never had a Pod
            return None
        return self._read(run, plan, pod, bool(run.extra_fields.get("tasksTimedOut"))).tasks

    @staticmethod
    def _read(run: Run[PipelineInPodInput], plan: Plan, pod: JSON, timed_out: bool) -> PodView:
        """The Pod read back; a custom task's entry tells its CustomRun's story."""
        children = {c["metadata"]["name"]: c for c in run.owned(CUSTOM_RUNS)}
        hook = customtasks.overlay(plan.custom, children, pod, run.name, run.attempt)
        return read_pod(plan, pod, timed_out=timed_out, overlay=hook if plan.custom else None)

    async def _stopped(
        self,
        run: Run[PipelineInPodInput],
        state: str,
        reason: str,
        custom_state: str,
        *,
        keep_spec: bool,
    ) -> JSON | None:
        """Delete the attempt's Pod and cancel its custom tasks' CustomRuns (with
        ``custom_state``); its final ``extraFields``: unfinished tasks marked."""
        tasks = self._last_tasks(run)
        await self._delete_pod(run)
        await customtasks.cancel_all(self.client, run, custom_state)
        why = f"TaskRun stopped as the CustomRun it belongs to was {state}."
        task_runs = run.owned(TASK_RUNS)
        await taskruns.cancel_unfinished(self.client, run.namespace, task_runs, _now(run), why)
        if tasks is None:
            return None
        fields = {k: v for k, v in run.extra_fields.items() if keep_spec or k != "spec"}
        fields["tasks"] = end_unfinished(tasks, state, reason)
        return fields

    async def on_cancel(self, run: Run[PipelineInPodInput]) -> JSON | None:
        """Stop the Pod's work at once: delete the Pod (its steps get SIGTERM); every
        unfinished task ends cancelled, as Tekton cancels a PipelineRun's TaskRuns; the
        custom tasks' CustomRuns are cancelled."""
        return await self._stopped(
            run, "cancelled", "TaskRunCancelled", customtasks.CANCELLED, keep_spec=False
        )

    async def on_timeout(self, run: Run[PipelineInPodInput]) -> JSON | None:
        """The attempt timed out: delete its Pod; every unfinished task ends timed out
        (the frozen spec is kept for a retry)."""
        retried = run.attempt < run.retries
        return await self._stopped(
            run, "timedOut", "TaskRunTimeout", customtasks.TIMED_OUT, keep_spec=retried
        )


def _now(run: Run[PipelineInPodInput]) -> str:
    return format_time(run.now)


def end_unfinished(tasks: list[JSON], state: str, reason: str) -> list[JSON]:
    """``tasks`` with each pending or running one ended in ``state`` (``reason``)."""
    for task in tasks:
        if task.get("state") in ("pending", "running"):
            task.update(state=state, reason=reason)
    return tasks
