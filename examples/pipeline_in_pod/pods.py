"""What both front doors (the CustomRun and the delegated PipelineRun) do to the API:
resolve a Pipeline and its Tasks, and tend the running Pod."""

from __future__ import annotations

from typing import Any

from customtask_sdk import KubeClient, NotFoundError, Resource
from examples.pipeline_in_pod.compiler import READY_ANNOTATION
from examples.pipeline_in_pod.hermetic import task_spec
from examples.pipeline_in_pod.model import PipelineSpec

__all__ = [
    "PIPELINES",
    "PODS",
    "TASKS",
    "Unresolvable",
    "container_state",
    "mark_ready",
    "resolve_pipeline",
    "resolve_tasks",
    "stop_sidecars",
]

JSON = dict[str, Any]
PODS = Resource("", "v1", "pods", "Pod")
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


async def resolve_tasks(client: KubeClient, namespace: str, spec: PipelineSpec) -> dict[str, JSON]:
    """Each pipeline task's spec: its ``taskSpec``, or the named Task's spec with the
    annotations Pipeline-in-Pod reads (none for a custom task, run by its own controller).

    Raises:
        Unresolvable: ``TaskNotFound``, naming the pipeline task.
    """
    tasks: dict[str, JSON] = {}
    for ptask in [*spec.tasks, *spec.finally_]:
        if ptask.taskSpec is not None:
            tasks[ptask.name] = ptask.taskSpec.model_dump(by_alias=True, exclude_unset=True)
            continue
        assert ptask.taskRef is not None
        if ptask.taskRef.is_custom:
            continue
        try:
            task = await client.get(TASKS.path(namespace, ptask.taskRef.name))
        except NotFoundError:
            raise Unresolvable(
                "TaskNotFound",
                f"tasks[{ptask.name}].taskRef: Task {ptask.taskRef.name!r} not found",
            ) from None
        tasks[ptask.name] = task_spec(task)
    return tasks


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
