"""What both front doors (the CustomRun and the delegated PipelineRun) do to the API:
resolve a Pipeline and its Tasks, and tend the running Pod."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from customtask_sdk import ConflictError, KubeClient, NotFoundError, Resource
from examples.pipeline_in_pod.compiler import READY_ANNOTATION
from examples.pipeline_in_pod.hermetic import task_spec
from examples.pipeline_in_pod.model import PipelineSpec, PipelineTask

__all__ = [
    "CLAIMS",
    "PIPELINES",
    "PODS",
    "TASKS",
    "Unresolvable",
    "container_state",
    "create_claims",
    "embed_children",
    "mark_ready",
    "resolve_pipeline",
    "resolve_tasks",
    "stop_sidecars",
]

JSON = dict[str, Any]
PODS = Resource("", "v1", "pods", "Pod")
CLAIMS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PIPELINES = Resource("tekton.dev", "v1", "pipelines", "Pipeline")
TASKS = Resource("tekton.dev", "v1", "tasks", "Task")


class Unresolvable(Exception):
    """A named Pipeline or Task is missing: ``reason`` and a message for the run."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def resolve_pipeline(client: KubeClient, namespace: str, name: str) -> JSON:
    """Pipeline ``name`` (the whole object: its annotations count too).

    Raises:
        Unresolvable: ``PipelineNotFound``.
    """
    try:
        found = await client.get(PIPELINES.path(namespace, name))
    except NotFoundError:
        raise Unresolvable(
            "PipelineNotFound", f"Pipeline {name!r} not found in {namespace!r}"
        ) from None
    return found


async def embed_children(
    client: KubeClient, namespace: str, spec: PipelineSpec, seen: tuple[str, ...] = ()
) -> PipelineSpec:
    """``spec`` with each child pipeline's ``pipelineRef`` resolved into its
    ``pipelineSpec``, children of children too (``seen``: the Pipelines named on the way).

    Raises:
        Unresolvable: ``PipelineNotFound``, or ``InvalidPipeline`` for a Pipeline that
            runs itself, naming the chain.
    """
    resolved: dict[str, list[PipelineTask]] = {"tasks": [], "finally_": []}
    for where, ptasks in (("tasks", spec.tasks), ("finally_", spec.finally_)):
        for ptask in ptasks:
            child, chain = ptask.pipelineSpec, seen
            if ptask.pipelineRef is not None:
                chain = (*seen, ptask.pipelineRef.name)
                if ptask.pipelineRef.name in seen:
                    raise Unresolvable(
                        "InvalidPipeline",
                        f"tasks[{ptask.name}].pipelineRef: Pipeline {ptask.pipelineRef.name!r} "
                        f"runs itself ({' -> '.join(chain)})",
                    )
                found = await resolve_pipeline(client, namespace, ptask.pipelineRef.name)
                try:
                    child = PipelineSpec.model_validate(found.get("spec") or {})
                except ValidationError as exc:
                    raise Unresolvable(
                        "InvalidPipeline", f"Pipeline {ptask.pipelineRef.name!r}: {exc}"
                    ) from None
            if child is not None:
                child = await embed_children(client, namespace, child, chain)
                ptask = ptask.model_copy(update={"pipelineRef": None, "pipelineSpec": child})
            resolved[where].append(ptask)
    # Only what was set: a spec frozen from this dumps as it was written.
    set_here = {k: v for k, v in resolved.items() if v or k in spec.model_fields_set}
    return spec.model_copy(update=set_here)


async def resolve_tasks(
    client: KubeClient, namespace: str, spec: PipelineSpec, prefix: str = ""
) -> dict[str, JSON]:
    """Each pipeline task's spec: its ``taskSpec``, or the named Task's spec with the
    annotations Pipeline-in-Pod reads (none for a custom task, run by its own controller);
    an embedded child pipeline's (:func:`embed_children`) as ``<child>-<task>``.

    Raises:
        Unresolvable: ``TaskNotFound``, naming the pipeline task.
    """
    tasks: dict[str, JSON] = {}
    for ptask in [*spec.tasks, *spec.finally_]:
        name = f"{prefix}{ptask.name}"
        if ptask.pipelineSpec is not None:
            tasks.update(await resolve_tasks(client, namespace, ptask.pipelineSpec, f"{name}-"))
            continue
        if ptask.pipelineRef is not None:
            raise Unresolvable(
                "InvalidPipeline", f"tasks[{name}].pipelineRef: resolve it first (embed_children)"
            )
        if ptask.taskSpec is not None:
            tasks[name] = ptask.taskSpec.model_dump(by_alias=True, exclude_unset=True)
            continue
        assert ptask.taskRef is not None
        if ptask.taskRef.is_custom:
            continue
        try:
            task = await client.get(TASKS.path(namespace, ptask.taskRef.name))
        except NotFoundError:
            raise Unresolvable(
                "TaskNotFound",
                f"tasks[{name}].taskRef: Task {ptask.taskRef.name!r} not found",
            ) from None
        tasks[name] = task_spec(task)
    return tasks


async def create_claims(
    client: KubeClient, namespace: str, claims: Sequence[JSON], owner_reference: JSON
) -> None:
    """Create the run's claims (``Plan.claims``, from ``volumeClaimTemplate`` bindings),
    owned by the run as Tekton owns them (a controller reference: deleted with the run);
    one made earlier (an earlier reconcile or attempt) is kept."""
    for claim in claims:
        meta = {**claim["metadata"], "namespace": namespace, "ownerReferences": [owner_reference]}
        with contextlib.suppress(ConflictError):
            await client.create(CLAIMS.path(namespace), {**claim, "metadata": meta})


def container_state(pod: JSON, name: str) -> JSON:
    """The state of container ``name`` in ``pod`` (``{}`` before it has one)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == name:
            state: JSON = status.get("state") or {}
            return state
    return {}


async def mark_ready(client: KubeClient, pod: JSON) -> None:
    """Release the steps once every sidecar is ready (Tekton's ``tekton.dev/ready``)."""
    if (pod["metadata"].get("annotations") or {}).get(READY_ANNOTATION) == "READY":
        return
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    sidecars = [c for c in statuses if c["name"].startswith("sidecar-")]
    if not sidecars or not all(c.get("ready") for c in sidecars):
        return
    meta = pod["metadata"]
    await client.patch(
        PODS.path(meta["namespace"], meta["name"]),
        {"metadata": {"annotations": {READY_ANNOTATION: "READY"}}},
    )


async def stop_sidecars(client: KubeClient, pod: JSON, nop_image: str) -> None:
    """Swap each still-running sidecar's image for nop, as Tekton stops sidecars."""
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
    ops = [
        {"op": "replace", "path": f"/spec/containers/{index}/image", "value": nop_image}
        for index, c in enumerate(containers)
        if c["name"].startswith("sidecar-")
        and c.get("image") != nop_image
        and "terminated" not in (statuses.get(c["name"], {}).get("state") or {})
    ]
    if ops:
        meta = pod["metadata"]
        await client.patch(PODS.path(meta["namespace"], meta["name"]), ops, "json")
