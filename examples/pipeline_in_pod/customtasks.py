"""Custom tasks inside a Pipeline-in-Pod pipeline: their logic runs elsewhere (TEP-0044).

A pipeline task whose ``taskRef`` names another ``apiVersion`` and ``kind`` (a Wait, an
Approval...) runs as a CustomRun that the controller creates and owns, as Tekton's
PipelineRun controller would (:mod:`~examples.pipeline_in_pod.customruns`, either front
door). Inside the Pod it is a stand-in task of two steps, compiled like any other, so
order, ``when``, skipping, the scheduler and ``finally`` treat it as Tekton treats the
custom task:

- ``start`` (``:``) runs once the entrypoint has let the task go (its dependencies ended,
  its ``when`` held): its clean exit tells the controller to create the CustomRun, with
  its params substituted, results of earlier tasks read from the Pod;
- ``wait`` polls a downward-API file for the CustomRun's outcome, which the controller
  writes as Pod annotations once the CustomRun ends (outcome and results in one patch;
  the kubelet swaps the volume's files atomically); it copies the results the pipeline
  uses into its task results and exits 0 on success, 1 otherwise: dependants then run,
  or are skipped, through the entrypoint's own post files.

Pure, compile time: the compiler calls :func:`with_stand_ins` and :func:`add_downward_items`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import ParamValue, PipelineSpec, PipelineTask, TaskSpec
from examples.pipeline_in_pod.substitution import Scope

JSON = dict[str, Any]

__all__ = [
    "GROUP",
    "MOUNT",
    "RESULT_REF",
    "START_STEP",
    "SUCCEEDED",
    "WAIT_STEP",
    "CustomTask",
    "add_downward_items",
    "find_custom_tasks",
    "stand_in",
    "used_results",
    "with_stand_ins",
]

#: Prefix of the Pod annotations carrying a CustomRun's outcome and results into the Pod.
GROUP = "pipelineinpod.customtask.dev"
#: Where a stand-in's ``wait`` step mounts the downward-API volume.
MOUNT = "/pip/downward"
START_STEP = "start"
WAIT_STEP = "wait"
#: The outcome a stand-in's ``wait`` step takes for success.
SUCCEEDED = "Succeeded"

#: A reference to a task result: ``$(tasks.<task>.results.<result>``.
RESULT_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.results\.([^)\[.]+)")
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
    found = {m.group(2) for text in texts for m in RESULT_REF.finditer(text) if m.group(1) == task}
    return tuple(sorted(found))


def find_custom_tasks(pipeline: PipelineSpec) -> dict[str, CustomTask]:
    """The pipeline's custom tasks (``taskRef`` with another ``apiVersion`` and ``kind``).

    Raises:
        CompileError: a custom task has a ``matrix``, or is in a child pipeline (not yet).
    """
    found: dict[str, CustomTask] = {}
    for where, ptasks in (("tasks", pipeline.tasks), ("finally", pipeline.finally_)):
        for ptask in ptasks:
            if ptask.pipelineSpec is not None:
                _no_custom_tasks(ptask.pipelineSpec, f"{where}[{ptask.name}].pipelineSpec")
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


def _no_custom_tasks(child: PipelineSpec, at: str) -> None:
    """Reject a custom task anywhere in child pipeline ``child`` (at field ``at``)."""
    for where, ptasks in (("tasks", child.tasks), ("finally", child.finally_)):
        for ptask in ptasks:
            if ptask.pipelineSpec is not None:
                _no_custom_tasks(ptask.pipelineSpec, f"{at}.{where}[{ptask.name}].pipelineSpec")
            if ptask.taskRef is not None and ptask.taskRef.is_custom:
                raise CompileError(
                    f"{at}.{where}[{ptask.name}].taskRef",
                    "a custom task inside a child pipeline is not supported yet",
                    "Unsupported",
                )


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


def with_stand_ins(
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
