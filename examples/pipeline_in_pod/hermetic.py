"""Pre and post steps, and hermetic execution (TEP-0080; TEP-0044's fences between tasks).

A task runs ``append(preSteps, steps, postSteps)``. When it is hermetic, its ``steps`` run
with no network at all, while its pre steps (fetch sources, download dependencies) and post
steps (publish) keep it. A hermetic step runs under Tekton's entrypoint with
``TEKTON_HERMETIC=1``: the entrypoint starts the command in new user, mount, PID and network
namespaces (``cmd/entrypoint/namespaces_linux.go``). The new network namespace has only a
loopback interface, down: the command reaches neither the network nor other tasks'
processes over the Pod's localhost (a connect fails at once, "Network is unreachable", and
no packet leaves the namespace). Its inputs come through the Pod's volumes (workspaces,
results) and its params.

Where users say so (Tekton's webhook rejects unknown fields in ``Task`` objects, so
annotations carry it on Tekton objects; precedence as Tekton's for a TaskRun's
annotations):

- ``experimental.tekton.dev/execution-mode: hermetic`` (Tekton's own annotation): on the
  run's ``taskRunSpecs[].metadata`` (one task), on the CustomRun (every task; Tekton copies
  a PipelineRun's annotations, and its Pipeline's, onto it), on the Pipeline, on an
  embedded ``taskSpec``'s ``metadata``, or on the Task;
- ``pipelineinpod.customtask.dev/pre-steps`` and ``.../post-steps``: comma-separated names
  of the task's first and last steps (so the Task stays a valid Tekton Task, whose steps
  Tekton runs in the same order): on the Task, an embedded ``taskSpec``'s ``metadata`` or
  ``taskRunSpecs[].metadata``; or, in an inline ``taskSpec`` this controller reads, the
  fields ``preSteps`` and ``postSteps``.

Where the runtime cannot create the namespaces (a non-root step, a seccomp profile that
forbids them, user namespaces disabled), the entrypoint fails the step rather than run it
with the network. Before any step runs, an init container per distinct image and
``securityContext`` of the hermetic steps (``pip-hermetic-check-<i>``) runs the entrypoint
the same way: if it fails, nothing ran and the run fails ``HermeticUnavailable``.
What is known to fail is rejected before the Pod exists, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import PipelineSpec, Step, StepTemplate, TaskMetadata, TaskSpec

__all__ = [
    "CHECK_CONTAINER",
    "EXECUTION_MODE",
    "KEYS",
    "POST_STEPS",
    "PRE_STEPS",
    "UNAVAILABLE",
    "across_phases",
    "add_checks",
    "all_steps",
    "fence",
    "is_fenced",
    "kept",
    "phase",
    "resolve_tasks",
    "task_spec",
    "unavailable",
]

JSON = dict[str, Any]

#: Tekton's annotation for hermetic execution (its only value: ``hermetic``).
EXECUTION_MODE = "experimental.tekton.dev/execution-mode"
HERMETIC = "hermetic"
PRE_STEPS = "pipelineinpod.customtask.dev/pre-steps"
POST_STEPS = "pipelineinpod.customtask.dev/post-steps"
#: The annotations this module reads (the controller freezes these at the start).
KEYS = (EXECUTION_MODE, PRE_STEPS, POST_STEPS)
#: Prefix of the init containers checking that hermetic steps can run here.
CHECK_CONTAINER = "pip-hermetic-check"
#: The run's reason when the runtime refuses hermetic execution.
UNAVAILABLE = "HermeticUnavailable"
#: Env the entrypoint reads: ``1`` isolates the step, unless ``TEKTON_RESOURCE_NAME`` is set.
_RESERVED_ENV = ("TEKTON_HERMETIC", "TEKTON_RESOURCE_NAME")
_CHECK_DIR = "/tekton/pip-hermetic-check"
_NEEDS = (
    "hermetic steps need to run as root (uid 0) with CAP_SETUID and CAP_SETGID, under a "
    "seccomp profile that allows new namespaces (containerd's and CRI-O's RuntimeDefault "
    "forbid them; Unconfined or a Localhost profile), with user namespaces enabled"
)


def kept(annotations: Mapping[str, str] | None) -> dict[str, str]:
    """The annotations of ``annotations`` that this module reads."""
    return {key: value for key, value in (annotations or {}).items() if key in KEYS}


def task_spec(task: Mapping[str, Any]) -> JSON:
    """A Task object's spec, with the annotations read here in the form of an embedded
    ``taskSpec``'s ``metadata`` (Tekton copies a Task's annotations onto its TaskRun)."""
    spec = dict(task.get("spec") or {})
    own = kept((task.get("metadata") or {}).get("annotations"))
    if own:
        spec["metadata"] = {"annotations": own}
    return spec


def all_steps(spec: TaskSpec) -> list[Step]:
    """Every step of the task, in the order they run: pre steps, steps, post steps."""
    return [*spec.preSteps, *spec.steps, *spec.postSteps]


def phase(spec: TaskSpec, index: int) -> str:
    """``pre``, ``steps`` or ``post``: the phase of step ``index`` of :func:`all_steps`."""
    if index < len(spec.preSteps):
        return "pre"
    return "steps" if index < len(spec.preSteps) + len(spec.steps) else "post"


def across_phases(spec: TaskSpec, change: Callable[[TaskSpec], TaskSpec]) -> TaskSpec:
    """``change`` (which maps each step to one step, as inlining StepActions does) applied
    to the steps of every phase, which keep their phases."""
    if not spec.preSteps and not spec.postSteps:
        return change(spec)
    flat = spec.model_copy(update={"preSteps": [], "steps": all_steps(spec), "postSteps": []})
    changed = change(flat)
    steps, pre, end = changed.steps, len(spec.preSteps), len(changed.steps) - len(spec.postSteps)
    return changed.model_copy(
        update={"preSteps": steps[:pre], "steps": steps[pre:end], "postSteps": steps[end:]}
    )


def is_fenced(spec: TaskSpec, index: int) -> bool:
    """Whether step ``index`` of :func:`all_steps` runs hermetically."""
    annotations = spec.metadata.annotations if spec.metadata else {}
    return annotations.get(EXECUTION_MODE) == HERMETIC and phase(spec, index) == "steps"


def fence(container: JSON) -> None:
    """Make the entrypoint run this step's command without network (set last, so they win
    over the step's ``env`` and ``envFrom``)."""
    container.setdefault("env", []).extend(
        [{"name": "TEKTON_HERMETIC", "value": "1"}, {"name": "TEKTON_RESOURCE_NAME", "value": ""}]
    )


# -- resolving: where each task's phases and mode come from ---------------------------


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _split(where: str, spec: TaskSpec, annotations: Mapping[str, str]) -> TaskSpec:
    """``spec`` with pre and post steps named by annotations moved to its fields."""
    given = {key: _names(annotations[key]) for key in (PRE_STEPS, POST_STEPS) if key in annotations}
    if not given:
        return spec
    if spec.preSteps or spec.postSteps:
        raise CompileError(
            f"{where}.metadata.annotations[{next(iter(given))}]",
            "the task also has preSteps or postSteps: give its pre and post steps one way",
        )
    names = [step.name for step in spec.steps]
    pre, post = given.get(PRE_STEPS, []), given.get(POST_STEPS, [])
    for key, wanted, actual in (
        (PRE_STEPS, pre, names[: len(pre)]),
        (POST_STEPS, post, names[len(names) - len(post) :]),
    ):
        if wanted != actual:
            first = "first" if key == PRE_STEPS else "last"
            raise CompileError(
                f"{where}.metadata.annotations[{key}]",
                f"names {', '.join(wanted) or 'no step'}, but these must be the task's {first} "
                f"{len(wanted)} step(s), in order (its steps: {', '.join(names)})",
            )
    if len(pre) + len(post) >= len(names):
        raise CompileError(
            f"{where}.metadata.annotations", "pre and post steps leave no steps to run between"
        )
    steps = list(spec.steps)
    return spec.model_copy(
        update={
            "preSteps": steps[: len(pre)],
            "steps": steps[len(pre) : len(steps) - len(post)],
            "postSteps": steps[len(steps) - len(post) :],
        }
    )


def _drops_needed(context: Mapping[str, Any]) -> list[str]:
    caps = context.get("capabilities") or {}
    norm = [str(c).upper().removeprefix("CAP_") for c in caps.get("drop") or []]
    added = {str(c).upper().removeprefix("CAP_") for c in caps.get("add") or []}
    needed = {"SETUID", "SETGID"} - added
    return sorted(needed) if "ALL" in norm else sorted(needed & set(norm))


def _check_step(
    where: str, step: Step, template: StepTemplate | None, pod_security: Mapping[str, Any]
) -> None:
    """Reject a hermetic step the runtime is known to refuse, naming the field."""
    for env in [*step.env, *(template.env if template else [])]:
        if env.name in _RESERVED_ENV:
            raise CompileError(f"{where}.env[{env.name}]", "is set by hermetic execution")
    context: Mapping[str, Any] = (
        step.securityContext
        if step.securityContext is not None
        else (template.securityContext if template else None)
    ) or {}
    at = f"{where}.securityContext"
    for key in ("runAsUser", "runAsNonRoot"):
        value, field = context.get(key), f"{at}.{key}"
        if value is None:
            value, field = pod_security.get(key), f"podTemplate.securityContext.{key}"
        if value not in (None, 0, False):
            raise CompileError(
                field,
                f"is {json.dumps(value)}: {_NEEDS} (Tekton's entrypoint maps every user id "
                "into the new user namespace)",
                "HermeticUnsupported",
            )
    dropped = _drops_needed(context)
    if dropped:
        raise CompileError(
            f"{at}.capabilities.drop",
            f"drops {' and '.join(dropped)}: {_NEEDS}",
            "HermeticUnsupported",
        )


def _resolve(
    where: str,
    spec: TaskSpec,
    annotations: Mapping[str, str],
    pod_security: Mapping[str, Any],
) -> TaskSpec:
    mode = annotations.get(EXECUTION_MODE)
    if mode is not None and mode != HERMETIC:
        raise CompileError(
            f"{where}.metadata.annotations[{EXECUTION_MODE}]",
            f"is {mode!r}: the only execution mode is {HERMETIC!r}",
        )
    spec = _split(where, spec, annotations)
    meta = spec.metadata or TaskMetadata()
    own = {k: v for k, v in meta.annotations.items() if k != EXECUTION_MODE}
    if mode == HERMETIC:
        own[EXECUTION_MODE] = HERMETIC
        if spec.sidecars:
            raise CompileError(
                f"{where}.sidecars",
                "a hermetic task cannot have sidecars: they keep the network and share "
                "volumes with its steps; do that work in preSteps",
            )
        offset = 0 if PRE_STEPS not in annotations else len(spec.preSteps)
        for index, step in enumerate(spec.steps):
            _check_step(f"{where}.steps[{index + offset}]", step, spec.stepTemplate, pod_security)
    return spec.model_copy(update={"metadata": meta.model_copy(update={"annotations": own})})


def resolve_tasks(
    pipeline: PipelineSpec,
    tasks: Mapping[str, TaskSpec],
    run_annotations: Mapping[str, str],
    task_annotations: Mapping[str, Mapping[str, str]],
    pod_template: Mapping[str, Any],
) -> dict[str, TaskSpec]:
    """Each task with its pre and post steps in ``preSteps`` and ``postSteps``, and its
    effective execution mode in ``metadata.annotations``.

    A task's annotations, first found wins (Tekton's order for a TaskRun's): the run's
    ``taskRunSpecs``, the run (and its Pipeline), the embedded ``taskSpec`` or the Task.

    Raises:
        CompileError: a pre or post step annotation names steps that are not the task's
            first or last ones, is set on the whole run, or a hermetic task cannot be
            hermetic (sidecars, a non-root step, dropped capabilities).
    """
    for key in (PRE_STEPS, POST_STEPS):
        if key in run_annotations:
            raise CompileError(
                f"metadata.annotations[{key}]",
                "names steps of one task: set it on the Task, its taskSpec's metadata, or "
                "the run's taskRunSpecs",
            )
    unknown = task_annotations.keys() - {p.name for p in [*pipeline.tasks, *pipeline.finally_]}
    if unknown:
        raise CompileError(f"taskRunSpecs[{sorted(unknown)[0]}]", "names no pipeline task")
    pod_security = pod_template.get("securityContext") or {}
    out: dict[str, TaskSpec] = {}
    for where, ptasks in (("tasks", pipeline.tasks), ("finally", pipeline.finally_)):
        for ptask in ptasks:
            spec = tasks[ptask.name]
            own = spec.metadata.annotations if spec.metadata else {}
            merged = {**kept(own), **run_annotations, **kept(task_annotations.get(ptask.name))}
            out[ptask.name] = _resolve(f"{where}[{ptask.name}]", spec, merged, pod_security)
    return out


# -- checking, in the Pod, that the runtime allows it ---------------------------------


def add_checks(pod_spec: JSON, entrypoint: str) -> None:
    """Add an init container per distinct image and ``securityContext`` of the Pod's
    hermetic steps: each runs the entrypoint hermetically, as the steps will, on a command
    that cannot fail (a copy to ``/dev/null``). If the runtime refuses the namespaces, the
    Pod stops there: no step has run."""
    seen: dict[str, JSON] = {}
    for container in pod_spec["containers"]:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if env.get("TEKTON_HERMETIC") != "1" or "TEKTON_RESOURCE_NAME" not in env:
            continue
        shape = {
            k: container[k]
            for k in ("image", "imagePullPolicy", "securityContext")
            if k in container
        }
        seen.setdefault(json.dumps(shape, sort_keys=True), shape)
    if not seen:
        return
    mounts = [
        {"name": "tekton-internal-bin", "mountPath": "/tekton/bin", "readOnly": True},
        {"name": CHECK_CONTAINER, "mountPath": _CHECK_DIR},
    ]
    for index, shape in enumerate(seen.values()):
        where = f"{_CHECK_DIR}/{index}"
        pod_spec["initContainers"].append(
            {
                "name": f"{CHECK_CONTAINER}-{index}",
                **shape,
                "command": [entrypoint],
                "args": [
                    "-post_file",
                    f"{where}/out",
                    "-termination_path",
                    f"{where}/termination",
                    "-step_metadata_dir",
                    f"{where}/status",
                    "-entrypoint",
                    entrypoint,
                    "--",
                    "cp",
                    entrypoint,
                    "/dev/null",
                ],
                "env": [{"name": "TEKTON_HERMETIC", "value": "1"}],
                "volumeMounts": mounts,
                "resources": {"requests": {"cpu": "0", "memory": "0"}},
            }
        )
    pod_spec["volumes"].append({"name": CHECK_CONTAINER, "emptyDir": {}})


def unavailable(meta: Mapping[str, Any], pod_spec: JSON, container: str) -> str:
    """Why check ``container`` of the Pod (``meta``, compiled ``pod_spec``) failed."""
    spec: JSON = next((c for c in pod_spec["initContainers"] if c["name"] == container), {})
    context = json.dumps(spec.get("securityContext") or {}, sort_keys=True)
    logs = f"kubectl logs -n {meta.get('namespace', '')} {meta.get('name', '')} -c {container}"
    return (
        f"the container runtime refused the user and network namespaces of hermetic steps "
        f"(image {spec.get('image', '?')}, securityContext {context}); no step ran, none ran "
        f"with the network instead. {_NEEDS}. {logs}"
    )
