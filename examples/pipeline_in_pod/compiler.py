"""Compile a resolved Pipeline (every Task in it), its params and bindings into one Pod.

Written like Tekton's ``pkg/pod``: one function per concern, pure, testable without a
cluster. The Pod, as Tekton's TaskRun Pod but for a whole Pipeline:

- init ``prepare`` copies Tekton's entrypoint to ``/tekton/bin``; ``place-scripts``
  writes each script (base64, decoded by ``entrypoint decode-script``), as Tekton does;
- one container per step, all started together; each runs under the entrypoint, which
  waits for its ``-wait_file``\\ s: the previous step of its task, or, for a task's first
  step, the last step of every task it depends on (comma-separated: fan-in). Tasks on
  separate branches wait on nothing in common, so they really run in parallel. A failed
  step writes ``<post>.err``, and everything after it is skipped, as Tekton skips
  the dependants of a failed task;
- results of a task go to its own ``/tekton/results`` volume (no collisions); a later task
  mounts it read-only at ``/tekton/steps/step-pip-<task>/results`` and references it as
  ``$(steps.pip-<task>.results.<r>)``, which the entrypoint substitutes at step start in
  command, args, env and ``when`` (a script reads it through an env var);
- a ``finally`` barrier (a shell container) waits for every task's last post file,
  computes ``$(tasks.status)`` and ``$(tasks.<t>.status)`` as Tekton does, writes them as
  results and releases the finally tasks;
- sidecars run beside the steps; the controller stops them (Tekton's nop-image swap).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any

from examples.pipeline_in_pod.claims import bind_claims
from examples.pipeline_in_pod.customtasks import CustomTask, add_downward_items, with_stand_ins
from examples.pipeline_in_pod.dag import CompileError, order, task_refs
from examples.pipeline_in_pod.hermetic import (
    across_phases,
    add_checks,
    all_steps,
    fence,
    is_fenced,
    phase,
    resolve_tasks,
)
from examples.pipeline_in_pod.matrix import IN_DIR, LENGTH_REF, LENGTHS_DIR, expand_matrix
from examples.pipeline_in_pod.model import (
    EnvVar,
    ParamSpec,
    ParamValue,
    PipelineSpec,
    PipelineTask,
    Step,
    StepTemplate,
    TaskSpec,
    WhenExpression,
    WorkspaceBinding,
)
from examples.pipeline_in_pod.nested import (
    STATUS_DIR,
    STATUS_VOLUME,
    Flat,
    end_script,
    flatten,
    status_subdir,
)
from examples.pipeline_in_pod.stepactions import StepActionSpec, inline_step_actions
from examples.pipeline_in_pod.substitution import Scope

__all__ = [
    "RUN_DIR",
    "CompileError",
    "Images",
    "Plan",
    "RunContext",
    "StepPlan",
    "TaskPlan",
    "compile_pipeline",
]

JSON = dict[str, Any]

BIN = "/tekton/bin/entrypoint"
RUN_DIR = "/tekton/run"
SCRIPTS_DIR = "/tekton/scripts"
RESULTS_DIR = "/tekton/results"
DOWNWARD_DIR = "/tekton/downward"
TERMINATION_PATH = "/tekton/termination"
#: Tekton's preamble for a script without a shebang.
DEFAULT_SHEBANG = "#!/bin/sh\nset -e\n"
#: The ``$(steps.<name>...)`` name under which the finally barrier publishes statuses.
STATUS_REF = "pip-status"
BARRIER_CONTAINER = "pip-finally-barrier"
SCHEDULER_CONTAINER = "pip-scheduler"
GATE_DIR = f"{RUN_DIR}/pip-gate"
#: The annotation the controller sets to ``READY`` once the sidecars are ready.
READY_ANNOTATION = "tekton.dev/ready"
#: The annotation the controller sets to ``CANCEL`` to stop every running DAG step
#: (Tekton's ``keep-pod-on-cancel`` mechanism; finally steps do not watch it).
CANCEL_ANNOTATION = "tekton.dev/cancel"

_RESULT_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.results\.([^)]+)\)")
#: The step named by a run-time reference ``$(steps.<name>.``.
_STEP_NAME = re.compile(r"\$\(steps\.([^.()]+)\.")
_STATUS_REF = re.compile(r"\$\(tasks\.(?:([a-z0-9][-a-z0-9]*)\.)?status\)")
_WHOLE_ARRAY_RESULT = re.compile(r"\$\(tasks\.[a-z0-9][-a-z0-9]*\.results\.[^)\[.]+\[\*\]\)")
_STEP_RESULT_VALUE = re.compile(r"\$\(steps\.([a-z0-9][-a-z0-9]*)\.results\.([^.)\[]+)\)")
_SHELLS = {"sh", "bash", "ash", "dash", "zsh", "ksh"}


@dataclass(frozen=True)
class Images:
    """Images the Pod needs beside the steps': Tekton's entrypoint and nop, and a shell."""

    entrypoint: str
    nop: str
    shell: str

    @classmethod
    def served(cls, images: Mapping[str, str]) -> Images:
        """The images a test node serves (``Node.tekton_images``)."""
        return cls(images["entrypoint-image"], images["nop-image"], images["shell-image"])


@dataclass(frozen=True)
class RunContext:
    """Where the pipeline runs: names for ``$(context...)`` and the Pod."""

    name: str
    namespace: str
    uid: str
    pipeline: str
    pipeline_run: str
    service_account: str | None = None
    pod_template: Mapping[str, Any] = field(default_factory=dict)
    #: The run's annotations read by :mod:`~examples.pipeline_in_pod.hermetic` (and its
    #: Pipeline's), and per pipeline task those of ``taskRunSpecs``.
    annotations: Mapping[str, str] = field(default_factory=dict)
    task_annotations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StepPlan:
    """A step's container, and how the controller reads its state."""

    name: str
    container: str
    on_error: str | None = None
    #: The step has its own ``when``: skipped, it does not make its task skipped.
    when: bool = False
    #: ``pre``, ``steps`` or ``post``; and whether it runs without network.
    phase: str = "steps"
    hermetic: bool = False


@dataclass(frozen=True)
class TaskPlan:
    """A pipeline task as compiled: its containers, results, dependencies, or why skipped."""

    name: str
    is_finally: bool
    steps: tuple[StepPlan, ...]
    sidecars: tuple[str, ...]
    results: tuple[str, ...]
    deps: tuple[str, ...]
    skipped: str | None = None
    timeout: str | None = None
    #: Its params as its TaskRun gets them (``name``, ``value``): a matrix instance's
    #: combination first, pipeline variables substituted (results not: run-time).
    params: tuple[JSON, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The compiled Pod spec and what the controller needs to read its state back."""

    pod_spec: JSON
    tasks: tuple[TaskPlan, ...]
    results: Mapping[str, ParamValue]
    waits_for_ready: bool
    #: Each matrixed task to its instances; a task of this name in ``tasks`` is a join.
    matrices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: PersistentVolumeClaims to make (owned by the run) before the Pod: volumeClaimTemplates.
    claims: Sequence[JSON] = ()
    #: Custom tasks, by name: run through CustomRuns (``customruns.py``).
    custom: Mapping[str, CustomTask] = field(default_factory=dict)
    #: Child pipelines' end tasks (``nested.py``): no tasks of the pipeline.
    children: frozenset[str] = frozenset()

    def task(self, name: str) -> TaskPlan:
        """The plan of pipeline task ``name``."""
        return next(task for task in self.tasks if task.name == name)


# -- checks: what one Pod cannot do -------------------------------------------------


def check_one_pod(pipeline: PipelineSpec, tasks: Mapping[str, TaskSpec]) -> None:
    """Reject what cannot run in one Pod (or is not done yet), naming the field and why."""
    for where, ptasks in (("tasks", pipeline.tasks), ("finally", pipeline.finally_)):
        for ptask in ptasks:
            at = f"{where}[{ptask.name}]"
            if ptask.retries:
                raise CompileError(
                    f"{at}.retries",
                    "a task cannot be retried alone inside one Pod; set retries on the "
                    "pipeline task running the PipelineInPod (the whole Pod is re-run)",
                    "Unsupported",
                )
            if ptask.matrix is not None:
                texts = [json.dumps(p.value) for p in ptask.matrix.params]
                if task_refs(texts) or "$(tasks." in json.dumps(ptask.matrix.include):
                    raise CompileError(
                        f"{at}.matrix",
                        "a matrix fanned out from results is impossible in one Pod: its "
                        "containers are fixed when the Pod is created",
                        "Unsupported",
                    )
            if where == "finally" and ptask.runAfter:
                raise CompileError(f"{at}.runAfter", "finally tasks cannot use runAfter")
            spec = tasks[ptask.name]
            if ptask.timeout is not None and len(all_steps(spec)) > 1:
                raise CompileError(
                    f"{at}.timeout",
                    "a timeout on a task of several steps is not supported yet (one Pod "
                    "has no per-task deadline); give each step a timeout instead",
                    "Unsupported",
                )
            for index, step in enumerate(all_steps(spec)):
                if step.ref is not None:  # checked once resolved (stepactions.py)
                    continue
                if step.command is None and step.script is None:
                    raise CompileError(
                        f"{at}.steps[{index}]",
                        "give the step a command or a script: the image's own entrypoint "
                        "cannot be looked up here",
                    )
                if step.image is None and (
                    spec.stepTemplate is None or not spec.stepTemplate.image
                ):
                    raise CompileError(f"{at}.steps[{index}].image", "is required")


# -- params and context -------------------------------------------------------------


def _check_type(where: str, spec: ParamSpec, value: ParamValue) -> ParamValue:
    kind = spec.kind
    if kind == "array" and isinstance(value, str) and _WHOLE_ARRAY_RESULT.fullmatch(value):
        value = [value]  # a whole array result, as Tekton replaces it at run time
    actual = (
        "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "string"
    )
    if actual != kind:
        raise CompileError(where, f"param {spec.name!r} is a {kind}, but a {actual} was given")
    if isinstance(value, dict) and isinstance(spec.default, dict):
        value = {**spec.default, **value}  # Tekton fills missing keys from the default
    if spec.enum and isinstance(value, str) and value not in spec.enum:
        raise CompileError(where, f"param {spec.name!r} must be one of {spec.enum}, not {value!r}")
    return value


def bind_params(
    where: str, specs: Sequence[ParamSpec], given: Mapping[str, ParamValue], scope: Scope
) -> None:
    """Add each declared param to ``scope``: the given value, else the default.

    Raises:
        CompileError: a param has neither, or its value has the wrong type.
    """
    for spec in specs:
        value = given.get(spec.name, spec.default)
        if value is None:
            raise CompileError(where, f"param {spec.name!r} has no value and no default")
        scope.add_param(spec.name, _check_type(where, spec, value))


def pipeline_scope(
    pipeline: PipelineSpec, params: Mapping[str, ParamValue], ctx: RunContext
) -> Scope:
    """The pipeline-level variables: its params and ``$(context...)``."""
    scope = Scope()
    scope.strings.update(
        {
            "context.pipelineRun.name": ctx.pipeline_run,
            "context.pipelineRun.namespace": ctx.namespace,
            "context.pipelineRun.uid": ctx.uid,
            "context.pipeline.name": ctx.pipeline,
            "context.pipelineTask.retries": "0",
        }
    )
    bind_params("params", pipeline.params, params, scope)
    return scope


def _child_scope(
    ctx: RunContext, name: str, child: PipelineSpec, params: Mapping[str, ParamValue]
) -> Scope:
    """The scope of child pipeline task ``name``: Tekton's child run is ``<run>-<name>``."""
    run = f"{ctx.pipeline_run}-{name}"
    return pipeline_scope(child, params, replace(ctx, pipeline_run=run, pipeline=run))


def task_scope(ptask: PipelineTask, spec: TaskSpec, outer: Scope, ctx: RunContext) -> Scope:
    """A task's variables: its params (given or default; an inline ``taskSpec`` also sees
    the pipeline's params: propagation), ``$(context.taskRun...)``, results and workspaces.
    """
    given = {param.name: outer.value(param.value) for param in ptask.params}
    scope = outer.child() if ptask.taskSpec is not None else Scope()
    if ptask.taskSpec is not None:  # propagated params: any given, even undeclared
        for name, value in given.items():
            scope.add_param(name, value)
    bind_params(f"tasks[{ptask.name}].params", spec.params, given, scope)
    scope.strings.update(
        {
            "context.taskRun.name": f"{ctx.pipeline_run}-{ptask.name}",
            "context.taskRun.namespace": ctx.namespace,
            "context.taskRun.uid": ctx.uid,
            "context.task.name": (ptask.taskRef.name or "") if ptask.taskRef else "",
            "context.task.retry-count": "0",
            "context.pipelineTask.retries": "0",
        }
    )
    for result in spec.results:
        scope.strings[f"results.{result.name}.path"] = f"{RESULTS_DIR}/{result.name}"
    return scope


# -- order --------------------------------------------------------------------------


def _task_texts(ptask: PipelineTask) -> list[str]:
    """Where a pipeline task may reference other tasks: its params and ``when`` (as in
    Tekton), and its inline ``taskSpec`` (read at run time here, so it orders too)."""
    texts = [json.dumps(param.value) for param in ptask.params]
    for when in ptask.when:
        texts.extend([when.input or "", *(when.values or []), when.cel or ""])
    if ptask.taskSpec is not None:
        texts.append(ptask.taskSpec.model_dump_json())
    return texts


def dependencies(pipeline: PipelineSpec) -> dict[str, list[str]]:
    """Each DAG task's dependencies: ``runAfter`` and the tasks whose results it uses.

    Raises:
        CompileError: a reference names no DAG task, or the tasks form a cycle.
    """
    names = [ptask.name for ptask in pipeline.tasks]
    finals = [ptask.name for ptask in pipeline.finally_]
    for name in {*names, *finals}:
        if (names + finals).count(name) > 1:
            raise CompileError(f"tasks[{name}]", "two pipeline tasks have this name")
    deps: dict[str, list[str]] = {}
    for ptask in pipeline.tasks:
        refs = task_refs(_task_texts(ptask))
        for ref in sorted(refs):
            if ref not in names:
                raise CompileError(
                    f"tasks[{ptask.name}]", f"references $(tasks.{ref}...), which is not a task"
                )
        deps[ptask.name] = list(dict.fromkeys([*ptask.runAfter, *sorted(refs)]))
    order(deps)
    for ptask in pipeline.finally_:
        for ref in sorted(task_refs(_task_texts(ptask))):
            if ref not in names:
                raise CompileError(
                    f"finally[{ptask.name}]",
                    f"references $(tasks.{ref}...): a finally task may only use DAG tasks",
                )
    return deps


def levels(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each task's depth: 0 for a root, else one more than its deepest dependency."""
    depth: dict[str, int] = {}
    for task in order(deps):
        depth[task] = 1 + max((depth[need] for need in deps[task]), default=-1)
    return depth


# -- when ---------------------------------------------------------------------------


def _is_dynamic(text: str) -> bool:
    return bool(_RESULT_REF.search(text) or _STATUS_REF.search(text) or LENGTH_REF.search(text))


def static_when(ptask: PipelineTask, scope: Scope) -> bool | None:
    """Whether ``when`` allows the task, decided now (``None``: only at run time)."""
    verdict = True
    for when in ptask.when:
        if when.cel is not None:
            return None
        assert when.input is not None
        assert when.values is not None
        value = scope.string(when.input)
        values = scope.strings_list(when.values)
        if _is_dynamic(value) or any(_is_dynamic(v) for v in values):
            return None
        verdict = verdict and ((value in values) == (when.operator == "in"))
    return verdict


def skipped_tasks(
    pipeline: PipelineSpec, deps: Mapping[str, Sequence[str]], verdicts: Mapping[str, bool | None]
) -> dict[str, str]:
    """Tasks skipped before the Pod starts, with Tekton's reason: their ``when`` is false,
    or they use results of a skipped task (a ``runAfter`` alone does not skip)."""
    skipped: dict[str, str] = {}
    by_name = {ptask.name: ptask for ptask in pipeline.tasks}
    for name in order(deps):
        if verdicts.get(name) is False:
            skipped[name] = "WhenExpressionsEvaluatedFalse"
        elif task_refs(_task_texts(by_name[name])) & skipped.keys():
            skipped[name] = "ResultsMissing"
    for ptask in pipeline.finally_:
        if verdicts.get(ptask.name) is False:
            skipped[ptask.name] = "WhenExpressionsEvaluatedFalse"
        elif task_refs(_task_texts(ptask)) & skipped.keys() - {
            m.group(1) for t in _task_texts(ptask) for m in _STATUS_REF.finditer(t) if m.group(1)
        }:
            skipped[ptask.name] = "ResultsMissing"
    return skipped


def when_flag(ptask: PipelineTask, scope: Scope) -> list[JSON]:
    """The task's ``when`` for the entrypoint's ``-when_expressions`` (run-time results)."""
    return when_json(ptask.when, scope)


def when_json(whens: Sequence[WhenExpression], scope: Scope) -> list[JSON]:
    """``when`` expressions (a task's or a step's) as the entrypoint reads them."""
    out: list[JSON] = []
    for when in whens:
        if when.cel is not None:
            out.append({"cel": runtime_refs(scope.string(when.cel))})
        else:
            assert when.input is not None
            assert when.values is not None
            out.append(
                {
                    "input": runtime_refs(scope.string(when.input)),
                    "operator": when.operator,
                    "values": [runtime_refs(v) for v in scope.strings_list(when.values)],
                }
            )
    return out


# -- results ------------------------------------------------------------------------


def step_ref_name(task: str) -> str:
    """The ``$(steps.<name>...)`` name under which task ``task``'s results are read."""
    return f"pip-{task}"


def length_ref_name(task: str) -> str:
    """The ``$(steps.<name>...)`` name under which matrix ``task``'s result lengths are read."""
    return f"piplen-{task}"


def results_mount(task: str) -> str:
    """Where a consumer mounts task ``task``'s results (the entrypoint's step-results dir)."""
    return f"/tekton/steps/step-{step_ref_name(task)}/results"


def runtime_refs(text: str) -> str:
    """``$(tasks.<t>.results.<r>)`` and ``$(tasks[.<t>].status)`` as the entrypoint's
    run-time ``$(steps...)`` references."""
    text = _RESULT_REF.sub(
        lambda m: f"$(steps.{step_ref_name(m.group(1))}.results.{m.group(2)})", text
    )
    text = LENGTH_REF.sub(
        lambda m: f"$(steps.{length_ref_name(m.group(1))}.results.{m.group(2)})", text
    )
    return _STATUS_REF.sub(
        lambda m: f"$(steps.{STATUS_REF}.results.{_status_file(m.group(1))})", text
    )


def _status_file(task: str | None) -> str:
    return "aggregate" if task is None else f"task-{task}"


def fetched_results(
    where: str, task: str, spec: TaskSpec, steps: Mapping[str, int], volume: str
) -> list[tuple[str, str, str]]:
    """Task results whose ``value`` is ``$(steps.<s>.results.<r>)`` (Tekton fetches them
    from that step's termination message): ``(results volume, result, step result file)``,
    for :func:`link_results`.

    Raises:
        CompileError: a ``value`` is not a result reference of a named step of the task.
    """
    links = []
    for result in spec.results:
        if result.value is None:
            continue
        value = result.value if isinstance(result.value, str) else ""
        match = _STEP_RESULT_VALUE.fullmatch(value)
        if match is None or match.group(1) not in steps:
            raise CompileError(
                f"{where}.results[{result.name}].value",
                "must be $(steps.<step>.results.<result>) of a named step of this task",
            )
        status = post_file(task, steps[match.group(1)]).rsplit("/", 1)[0] + "/status"
        links.append((volume, result.name, f"{status}/results/{match.group(2)}"))
    return links


def link_results(links: Sequence[tuple[str, str, str]], image: str) -> JSON:
    """The init container linking each task result fetched from a step result to the
    step's result file: the task's last step then reports it (``-results``) and later tasks
    read it like any other result."""
    volumes = sorted({volume for volume, _, _ in links})
    lines = [f'ln -s "{target}" "/pip/{volume}/{name}"' for volume, name, target in links]
    return {
        "name": "pip-link-results",
        "image": image,
        "command": ["sh", "-c", "\n".join(lines)],
        "volumeMounts": [_mount(volume, f"/pip/{volume}") for volume in volumes],
    }


def pipeline_results(pipeline: PipelineSpec, scope: Scope) -> dict[str, ParamValue]:
    """Pipeline results, substituted but for task result references (read from the Pod)."""
    names = {ptask.name for ptask in [*pipeline.tasks, *pipeline.finally_]}
    out: dict[str, ParamValue] = {}
    for result in pipeline.results:
        value = scope.value(result.value)
        refs = task_refs([json.dumps(value)])
        if refs - names:
            raise CompileError(
                f"results[{result.name}]", f"references unknown tasks {sorted(refs - names)}"
            )
        out[result.name] = value
    return out


# -- scripts ------------------------------------------------------------------------


def script_text(script: str) -> str:
    """A script as Tekton runs it: with its shebang, or ``#!/bin/sh`` and ``set -e``."""
    return script if script.startswith("#!") else DEFAULT_SHEBANG + script


def is_shell(script: str) -> bool:
    """Whether a script (as run) is a shell script: ``$VAR`` means an env var there."""
    words = script.splitlines()[0][2:].split()
    if words and words[0].endswith("/env"):
        words = words[1:]
    return bool(words) and words[0].rsplit("/", 1)[-1] in _SHELLS


def script_refs(where: str, script: str, env: list[JSON]) -> str:
    """A script's run-time references as env vars the entrypoint fills in.

    Raises:
        CompileError: the script is not a shell script (it could not read the env var).
    """
    found = list(dict.fromkeys(m.group(0) for m in _RESULT_REF.finditer(script)))
    found += list(dict.fromkeys(m.group(0) for m in _STATUS_REF.finditer(script)))
    found += list(dict.fromkeys(m.group(0) for m in LENGTH_REF.finditer(script)))
    if not found:
        return script
    if not is_shell(script):
        raise CompileError(
            f"{where}.script",
            "a result or status used in a script that is not a shell script: pass it "
            "through env (env values are substituted when the step starts)",
            "Unsupported",
        )
    for index, ref in enumerate(found):
        variable = f"PIP_REF_{index}"
        env.append({"name": variable, "value": runtime_refs(ref)})
        script = script.replace(ref, "${" + variable + "}")
    return script


def place_scripts(scripts: Mapping[str, str], image: str) -> JSON:
    """The init container writing each script, as Tekton's ``place-scripts`` does."""
    lines = []
    for path, text in scripts.items():
        encoded = base64.b64encode(text.encode()).decode()
        lines.append(
            f'scriptfile="{path}"\ntouch ${{scriptfile}} && chmod +x ${{scriptfile}}\n'
            f"cat > ${{scriptfile}} << '_EOF_'\n{encoded}\n_EOF_\n"
            f'{BIN} decode-script "${{scriptfile}}"\n'
        )
    return {
        "name": "place-scripts",
        "image": image,
        "command": ["sh"],
        "args": ["-c", "".join(lines)],
        "volumeMounts": [
            _mount("tekton-internal-scripts", SCRIPTS_DIR),
            _mount("tekton-internal-bin", "/tekton/bin", True),
        ],
    }


def prepare(image: str) -> JSON:
    """The init container placing Tekton's entrypoint binary where the steps run it."""
    return {
        "name": "prepare",
        "image": image,
        "command": ["/ko-app/entrypoint", "cp", "/ko-app/entrypoint", BIN],
        "volumeMounts": [_mount("tekton-internal-bin", "/tekton/bin")],
    }


def make_subpaths(containers: Sequence[JSON], volumes: Sequence[JSON], image: str) -> JSON | None:
    """The init container creating every ``subPath`` the containers mount of an
    ``emptyDir``, before any of them starts (``None``: there are none).

    The kubelet creates a missing ``subPath`` as it creates the container, while the
    Pod's earlier containers already run and may be creating the same directories (a
    step writing its results): it then refuses the container
    (``CreateContainerConfigError``, "failed to create subPath directory"). Made here
    first, the kubelet only finds them. ``umask 0``: any step's user may write there, as
    in the ``emptyDir`` itself.
    """
    empty = {volume["name"] for volume in volumes if "emptyDir" in volume}
    paths = sorted(
        {
            (mount["name"], mount["subPath"])
            for container in containers
            for mount in container.get("volumeMounts", [])
            if mount["name"] in empty and mount.get("subPath") and "$(" not in mount["subPath"]
        }
    )
    if not paths:
        return None
    names = sorted({name for name, _ in paths})
    dirs = " ".join(shlex.quote(f"/pip/{name}/{sub}") for name, sub in paths)
    return {
        "name": "pip-subpaths",
        "image": image,
        "command": ["sh", "-c", f"umask 0 && mkdir -p {dirs}"],
        "volumeMounts": [_mount(name, f"/pip/{name}") for name in names],
    }


# -- workspaces ---------------------------------------------------------------------


def workspace_volumes(
    pipeline: PipelineSpec, bindings: Sequence[WorkspaceBinding]
) -> dict[str, JSON]:
    """One volume per pipeline workspace: as bound by the run, else a shared ``emptyDir``.

    Raises:
        CompileError: a binding names no workspace of the pipeline.
    """
    declared = {ws.name for ws in pipeline.workspaces}
    bound = {binding.name: binding for binding in bindings}
    for name in bound.keys() - declared:
        raise CompileError(f"workspaces[{name}]", "the pipeline declares no such workspace")
    volumes: dict[str, JSON] = {}
    for ws in pipeline.workspaces:
        binding = bound.get(ws.name)
        source: JSON = {"emptyDir": {}}
        if binding is not None:
            for key in ("persistentVolumeClaim", "configMap", "secret", "emptyDir"):
                value = getattr(binding, key)
                if value is not None:
                    source = {key: dict(value)}
        volumes[ws.name] = {"name": f"ws-{_dns(ws.name)}", **source}
    return volumes


def task_workspaces(
    ptask: PipelineTask,
    spec: TaskSpec,
    volumes: Mapping[str, JSON],
    bindings: Sequence[WorkspaceBinding],
    scope: Scope,
) -> list[JSON]:
    """Mounts of the task's declared workspaces, and ``$(workspaces.<w>...)`` in ``scope``.

    Raises:
        CompileError: a required workspace is not bound by the pipeline task.
    """
    by_task = {binding.name: binding for binding in ptask.workspaces}
    run_sub = {binding.name: binding.subPath for binding in bindings}
    mounts: list[JSON] = []
    for decl in spec.workspaces:
        binding = by_task.get(decl.name)
        path = decl.mountPath or f"/workspace/{decl.name}"
        key = f"workspaces.{decl.name}"
        if binding is None or (binding.workspace or decl.name) not in volumes:
            if not decl.optional:
                raise CompileError(
                    f"tasks[{ptask.name}].workspaces[{decl.name}]",
                    "the task needs this workspace; bind it to a pipeline workspace",
                )
            scope.strings.update({f"{key}.bound": "false", f"{key}.path": ""})
            continue
        pipeline_ws = binding.workspace or decl.name
        volume = volumes[pipeline_ws]
        sub = "/".join(p for p in (run_sub.get(pipeline_ws, ""), binding.subPath) if p)
        mount = _mount(volume["name"], path, decl.readOnly)
        if sub:
            mount["subPath"] = scope.string(sub)
        mounts.append(mount)
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName", "")
        scope.strings.update(
            {
                f"{key}.bound": "true",
                f"{key}.path": path,
                f"{key}.claim": claim,
                f"{key}.volume": volume["name"],
            }
        )
    return mounts


# -- steps and sidecars -------------------------------------------------------------


def _mount(name: str, path: str, read_only: bool = False) -> JSON:
    mount: JSON = {"name": name, "mountPath": path}
    if read_only:
        mount["readOnly"] = True
    return mount


def _dns(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:40] or "x"


def merge_template(template: StepTemplate | None, step: Step) -> Step:
    """A step with its Task's ``stepTemplate`` applied: the step's values win; env merged by
    name (Tekton's ``MergeStepsWithStepTemplate``)."""
    if template is None:
        return step
    base = template.model_dump(exclude_none=True, by_alias=True)
    own = step.model_dump(exclude_none=True, by_alias=True, exclude_unset=True)
    env = {item["name"]: item for item in base.pop("env", [])}
    env.update({item["name"]: item for item in own.pop("env", [])})
    return Step.model_validate({**base, **own, "env": list(env.values())})


def _env(scope: Scope, env: Sequence[EnvVar]) -> list[JSON]:
    out: list[JSON] = []
    for var in env:
        item = var.model_dump(exclude_none=True)
        if "value" in item:
            item["value"] = runtime_refs(scope.string(item["value"]))
        out.append(item)
    return out


def container_name(prefix: str, task: str, name: str, taken: set[str]) -> str:
    """A unique container name ``<prefix>-<task>-<name>``, at most 63 characters."""
    base = f"{prefix}-{_dns(task)}-{_dns(name)}"[:63].rstrip("-")
    candidate, index = base, 1
    while candidate in taken:
        suffix = f"-{index}"
        candidate = base[: 63 - len(suffix)] + suffix
        index += 1
    taken.add(candidate)
    return candidate


def step_container(
    where: str,
    name: str,
    step: Step,
    scope: Scope,
    scripts: dict[str, str],
) -> JSON:
    """A step's container before entrypoint wiring: substituted, script placed."""
    env = _env(scope, step.env)
    if step.script is not None:
        path = f"{SCRIPTS_DIR}/{name}"
        scripts[path] = script_refs(where, script_text(scope.string(step.script)), env)
        command = [path, *scope.strings_list(step.args or [])]
    else:
        command = scope.strings_list([*(step.command or []), *(step.args or [])])
    container: JSON = {
        "name": name,
        "image": scope.string(step.image or ""),
        "command": [runtime_refs(part) for part in command],
    }
    if env:
        container["env"] = env
    if step.workingDir:
        container["workingDir"] = scope.string(step.workingDir)
    for key in ("envFrom", "resources", "securityContext", "imagePullPolicy"):
        value = getattr(step, key)
        if value is not None:
            container[key] = value
    container["volumeMounts"] = list(step.volumeMounts or [])
    return container


def entrypoint_args(
    command: Sequence[str],
    waits: Sequence[str],
    post: str,
    *,
    wait_content: bool = False,
    results: Sequence[str] = (),
    timeout: str | None = None,
    on_error: str | None = None,
    when: Sequence[JSON] = (),
    step_results: Sequence[str] = (),
    marker: str | None = None,
) -> list[str]:
    """The entrypoint's flags for one step, then ``-entrypoint <cmd> -- <args>``."""
    args: list[str] = []
    if waits:
        args += ["-wait_file", ",".join(waits)]
    if wait_content:
        args.append("-wait_file_content")
    args += [
        "-post_file",
        post,
        "-termination_path",
        TERMINATION_PATH,
        "-step_metadata_dir",
        post.rsplit("/", 1)[0] + "/status",
    ]
    if results:
        args += ["-results", ",".join(results)]
    if step_results:
        args += ["-step_results", ",".join(step_results)]
    if marker:  # the entrypoint creates it only when it runs the command
        args += ["-stdout_path", marker]
    if timeout:
        args += ["-timeout", timeout]
    if on_error:
        args += ["-on_error", on_error]
    if when:
        args += ["-when_expressions", json.dumps(list(when), separators=(",", ":"))]
    return [*args, "-entrypoint", command[0], "--", *command[1:]]


def step_result_mounts(
    task: str, container: JSON, earlier: Mapping[str, int], when: str = ""
) -> list[JSON]:
    """Mounts for ``$(steps.<s>.results.<r>)`` of an earlier step ``s`` of the same task
    (in command, args, env or the step's ``when``): its results folder, read-only, where
    the entrypoint reads it at step start."""
    texts = [
        *container["command"],
        *(e.get("value", "") for e in container.get("env", [])),
        when,
    ]
    mounts = []
    for step, index in earlier.items():
        if any(f"$(steps.{step}.results." in text for text in texts):
            mount = _mount("tekton-internal-run", f"/tekton/steps/step-{step}/results", True)
            mount["subPath"] = f"{task}/{index}/status/results"
            mounts.append(mount)
    return mounts


def ran_marker(task: str) -> str:
    """The file a task whose ``when`` is decided in the Pod creates when it does run."""
    return f"{RUN_DIR}/{task}/ran"


def post_file(task: str, index: int) -> str:
    """Where step ``index`` of task ``task`` writes its post file."""
    return f"{RUN_DIR}/{task}/{index}/out"


# -- resources ----------------------------------------------------------------------

_SUFFIXES = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def quantity(text: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2``) as a number."""
    raw = str(text)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if raw.endswith(suffix):
            return Decimal(raw[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(raw)


def _format(amount: Decimal, resource: str) -> str:
    if resource == "cpu":
        return f"{int((amount * 1000).to_integral_value(rounding='ROUND_CEILING'))}m"
    return str(int(amount.to_integral_value(rounding="ROUND_CEILING")))


def size_requests(containers: Mapping[str, Sequence[JSON]], depth: Mapping[str, int]) -> None:
    """Size the Pod's requests as what can run at once, not the sum of every step.

    Steps of a task run one after another (their largest request is the task's); tasks at
    the same depth may run together (they add up); depths run one after another. The Pod's
    need, the largest over depths, is requested by the first step (the rest by the next ones
    where a step's limit caps it); the other steps request 0. Tekton v1.15 itself leaves
    each step's request, so a TaskRun Pod asks for the sum.
    """
    need: dict[str, Decimal] = {}
    by_depth: dict[int, dict[str, Decimal]] = {}
    for task, steps in containers.items():
        largest: dict[str, Decimal] = {}
        for container in steps:
            asked = (container.get("resources") or {}).get("requests") or {}
            for resource, value in asked.items():
                largest[resource] = max(largest.get(resource, Decimal(0)), quantity(value))
        level = by_depth.setdefault(depth[task], {})
        for resource, value in largest.items():
            level[resource] = level.get(resource, Decimal(0)) + value
    for level in by_depth.values():
        for resource, value in level.items():
            need[resource] = max(need.get(resource, Decimal(0)), value)
    if not need:
        return
    everything = [container for steps in containers.values() for container in steps]
    for container in everything:  # first come first served, never over a step's limit
        resources = dict(container.get("resources") or {})
        limits = resources.get("limits") or {}
        requests: dict[str, str] = {}
        for resource, remaining in need.items():
            give = remaining
            if resource in limits:
                give = min(give, quantity(limits[resource]))
            requests[resource] = _format(give, resource) if give else "0"
            need[resource] = remaining - give
        resources["requests"] = requests
        container["resources"] = resources


# -- finally ------------------------------------------------------------------------


def barrier_script(
    deps: Mapping[str, Sequence[str]],
    last_posts: Mapping[str, str],
    skipped: Iterable[str],
    markers: Mapping[str, str] | None = None,
    unmet: Mapping[str, Sequence[str]] | None = None,
    finals: Mapping[str, Sequence[str]] | None = None,
    out: str = STATUS_DIR,
) -> str:
    """Shell: wait for every DAG task to end, then write each ``$(tasks.<t>.status)`` and
    ``$(tasks.status)`` as Tekton computes them, and release the finally tasks: each
    ``finals`` task through its own gate, closed (skipped, as Tekton skips a finally task
    whose results are missing) unless every task whose results it uses succeeded.

    ``markers``: for a task whose ``when`` is decided in the Pod, the file its first step
    creates only if it runs: an ended task without it was skipped (``None``). ``unmet``: as
    for :func:`scheduler_script` (a task skipped for want of results is ``None`` too).
    ``out``: where the statuses go (a child pipeline's own, for its ``finally``)."""
    markers, unmet = markers or {}, unmet or {}
    skipped = set(skipped)
    lines = [f"out={out}", 'mkdir -p "$out"']
    for post in last_posts.values():
        lines.append(f'until [ -e "{post}" ] || [ -e "{post}.err" ]; do sleep 0.2; done')
    variables = {task: f"s{index}" for index, task in enumerate(deps)}
    for task in order(deps):
        var = variables[task]
        if task in skipped:
            lines.append(f"{var}=None")
            continue
        post = last_posts[task]
        blocked = " || ".join(
            [
                *(
                    f'[ "${variables[d]}" = Failed ] || [ "${variables[d]}" = Blocked ]'
                    for d in deps[task]
                    if d not in skipped
                ),
                *(f'[ ! -e "{m}" ]' for m in unmet.get(task, ())),
            ]
        )
        if task in markers:  # skipped by its when: None, and its dependants still run
            lines.append(f'if [ -e "{post}" ] && [ ! -e "{markers[task]}" ]; then {var}=None')
            lines.append(f'elif [ -e "{post}" ]; then {var}=Succeeded')
        else:
            lines.append(f'if [ -e "{post}" ]; then {var}=Succeeded')
        if blocked:
            lines.append(f"elif {blocked}; then {var}=Blocked")
        lines.append(f"else {var}=Failed; fi")
    for task, var in variables.items():
        lines.append(f'v=${var}; [ "$v" = Blocked ] && v=None')
        lines.append(f'printf %s "$v" > "$out/{_status_file(task)}"')
    states = " ".join(f"${var}" for var in variables.values())
    lines += [
        "agg=Succeeded",
        f"for s in {states}; do",
        '  [ "$s" = Failed ] && agg=Failed',
        '  [ "$s" != Succeeded ] && [ "$agg" = Succeeded ] && agg=Completed',
        "done",
        f'printf %s "$agg" > "$out/{_status_file(None)}"',
        f"mkdir -p {RUN_DIR}/{BARRIER_CONTAINER}",
    ]
    for final, producers in (finals or {}).items():
        met = " && ".join(f'[ "${variables[p]}" = Succeeded ]' for p in producers) or "true"
        gate = f"{RUN_DIR}/{BARRIER_CONTAINER}/{final}"
        lines.append(f'if {met}; then touch "{gate}"; else touch "{gate}.err"; fi')
    return "\n".join(lines) + "\n"


def scheduler_script(
    gates: Mapping[str, Sequence[str]],
    unmet: Mapping[str, Sequence[str]] | None = None,
    owner: Mapping[str, str] | None = None,
    deciding: Mapping[str, str] | None = None,
) -> str:
    """Shell: open each task's gate once its dependencies have ended, as Tekton schedules:
    ``<gate>`` to go, ``<gate>.err`` once any step has failed (the pipeline is stopping:
    no new task starts, and the entrypoint skips the task).

    ``unmet``: for a task, the markers of the tasks whose results it uses that a ``when``
    may skip in the Pod (``ran_marker``): such a task that ended without its marker left
    no results, so the user is skipped, and it and what follows it are "excused": their
    skips are not failures that stop the pipeline.

    ``owner``: each child pipeline's task to its child; ``deciding``: the child whose
    failure closes a task's gate (``nested.Flat.deciding``; else the pipeline's): a
    failure stops only its own pipeline, as a child PipelineRun fails alone.

    Each round first notes which tasks' dependencies have ended, then reads excuses and
    failures: a dependency ending in between is seen by both or by neither, so a task is
    never let go unexcused because its dependency ended a moment after its excuse was
    read."""
    unmet, owner, deciding = unmet or {}, owner or {}, deciding or {}
    scopes = {"": 0, **{c: i + 1 for i, c in enumerate(sorted(set(owner.values())))}}
    task_of = {post: post.split("/")[3] for posts in gates.values() for post in posts}
    lines = [
        f"mkdir -p {GATE_DIR}",
        f"pending='{' '.join(gates)}'",
        "excused=' '",
        'excused() { case "$excused" in *" $1 "*) return 0 ;; esac; return 1; }',
        f'scope() {{ case "$1" in {_cases(owner, scopes)}*) echo 0 ;; esac; }}',
        f'stops() {{ case "$1" in {_cases(deciding, scopes)}*) echo 0 ;; esac; }}',
        'while [ -n "$pending" ]; do',
        "  ended=' '",
        "  for t in $pending; do",
        "    case $t in",
    ]
    for task, posts in gates.items():
        ended = " && ".join(f'{{ [ -e "{p}" ] || [ -e "{p}.err" ]; }}' for p in posts)
        lines.append(f'      {task}) if {ended}; then ended="$ended$t "; fi ;;')
    lines += ["    esac", "  done"]
    for task, posts in gates.items():  # in order: an excuse flows to what follows
        why = [f"excused {task_of[p]}" for p in posts]
        for marker in unmet.get(task, ()):
            post = f"{marker.rsplit('/', 1)[0]}/"
            why.append(f'{{ ls {post}*/out >/dev/null 2>&1 && [ ! -e "{marker}" ]; }}')
        lines.append(
            f'  excused {task} || {{ {" || ".join(why)}; }} && excused="${{excused}}{task} "'
        )
    lines += [
        "  failed=' '",
        f"  for f in {RUN_DIR}/*/*/out.err; do",
        '    [ -e "$f" ] || continue',
        f'    d=${{f#{RUN_DIR}/}}; d=${{d%%/*}}; excused "$d" || failed="$failed$(scope "$d") "',
        "  done",
        "  next=",
        "  for t in $pending; do",
        '    case "$ended" in',
        '      *" $t "*) skip=; case "$failed" in *" $(stops "$t") "*) skip=.err ;; esac',
        f'        excused $t && skip=.err; touch "{GATE_DIR}/$t$skip" ;;',
        '      *) next="$next $t" ;;',
        "    esac",
        "  done",
        "  pending=${next# }",
        '  [ -n "$pending" ] && sleep 0.1',
        "done",
        "exit 0",
    ]
    return "\n".join(lines) + "\n"


def _cases(scope_of: Mapping[str, str], scopes: Mapping[str, int]) -> str:
    """Shell ``case`` branches: each task to the number of its child's scope (not the
    pipeline's: ``*)`` says 0)."""
    by_scope: dict[int, list[str]] = {}
    for task, child in sorted(scope_of.items()):
        if child:
            by_scope.setdefault(scopes[child], []).append(task)
    return "".join(f"{'|'.join(tasks)}) echo {i} ;; " for i, tasks in sorted(by_scope.items()))


# -- the Pod ------------------------------------------------------------------------


@dataclass
class _Build:
    """What compiling gathers on its way to the Pod."""

    containers: dict[str, list[JSON]] = field(default_factory=dict)
    sidecars: list[JSON] = field(default_factory=list)
    scripts: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, JSON] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    plans: list[TaskPlan] = field(default_factory=list)
    #: (results volume, task result, step result file): results a task fetches from a step.
    links: list[tuple[str, str, str]] = field(default_factory=list)


def _consumer_mounts(container: JSON, produced: Mapping[str, str]) -> None:
    """Mount, read-only, the results and statuses a container references at run time."""
    texts = [
        *container.get("command", []),
        *container.get("args", []),
        *(e.get("value", "") for e in container.get("env", [])),
    ]
    named = {match.group(1) for text in texts for match in _STEP_NAME.finditer(text)}
    if not named:
        return
    for task, volume in produced.items():
        if step_ref_name(task) in named:
            container["volumeMounts"].append(_mount(volume, results_mount(task), True))
        lengths = length_ref_name(task)
        if lengths in named:  # a matrix join's
            mount = _mount(volume, f"/tekton/steps/step-{lengths}/results", True)
            container["volumeMounts"].append({**mount, "subPath": LENGTHS_DIR})
    if STATUS_REF in named:
        container["volumeMounts"].append(
            _mount("pip-status", f"/tekton/steps/step-{STATUS_REF}/results", True)
        )


def compile_task(
    ptask: PipelineTask,
    spec: TaskSpec,
    scope: Scope,
    waits: Sequence[str],
    build: _Build,
    *,
    wait_content: bool,
    when: Sequence[JSON],
    mounts: Sequence[JSON],
    ptask_is_finally: bool = False,
) -> list[StepPlan]:
    """The containers of one task: its steps (wired one after another) and sidecars."""
    where = f"tasks[{ptask.name}]"
    results_volume = f"pip-results-{len(build.plans)}"
    build.volumes[results_volume] = {"name": results_volume, "emptyDir": {}}
    common = [
        _mount("tekton-internal-bin", "/tekton/bin", True),
        _mount("tekton-internal-scripts", SCRIPTS_DIR, True),
        _mount("tekton-internal-run", RUN_DIR),
        _mount(results_volume, RESULTS_DIR),
        *mounts,
    ]
    steps: list[StepPlan] = []
    containers: list[JSON] = []
    count = len(all_steps(spec))
    earlier: dict[str, int] = {}  # step name -> index, for $(steps.<s>.results.<r>)
    for index, raw in enumerate(all_steps(spec)):
        step = merge_template(spec.stepTemplate, raw)
        name = container_name("step", ptask.name, step.name or f"unnamed-{index}", build.taken)
        own = scope.child()
        status_dir = post_file(ptask.name, index).rsplit("/", 1)[0] + "/status"
        for result in step.results:
            own.strings[f"step.results.{result.name}.path"] = f"{status_dir}/results/{result.name}"
        container = step_container(f"{where}.steps[{index}]", name, step, own, build.scripts)
        step_when = when_json(step.when, own)
        if step_when and when and index == 0:
            raise CompileError(
                f"{where}.steps[0].when",
                "a first step's own when, in a task whose when is decided in the Pod, is not "
                "supported yet: move it to a later step or into the task's when",
                "Unsupported",
            )
        container["volumeMounts"] = [
            *common,
            *container["volumeMounts"],
            *step_result_mounts(ptask.name, container, earlier, json.dumps(step_when)),
        ]
        if step.name:
            earlier[step.name] = index
        if not ptask_is_finally:  # the entrypoint watches <downward>/cancel while it runs
            container["volumeMounts"].append(_mount("tekton-internal-downward", DOWNWARD_DIR, True))
        last = index == count - 1
        command = container["command"]
        container["command"] = [BIN]
        container["args"] = entrypoint_args(
            command,
            waits if index == 0 else [post_file(ptask.name, index - 1)],
            post_file(ptask.name, index),
            wait_content=wait_content and index == 0,
            results=[r.name for r in spec.results] if last else (),
            timeout=step.timeout or (ptask.timeout if count == 1 else None),
            on_error=step.onError,
            when=[*when, *step_when],
            step_results=[r.name for r in step.results],
            marker=ran_marker(ptask.name) if when and index == 0 else None,
        )
        container["terminationMessagePath"] = TERMINATION_PATH
        container["terminationMessagePolicy"] = "File"
        if is_fenced(spec, index):
            fence(container)
        containers.append(container)
        steps.append(
            StepPlan(
                step.name or f"unnamed-{index}",
                name,
                step.onError,
                bool(step.when),
                phase=phase(spec, index),
                hermetic=is_fenced(spec, index),
            )
        )
    build.containers[ptask.name] = containers
    build.links += fetched_results(where, ptask.name, spec, earlier, results_volume)
    for volume in spec.volumes:  # the Task's own volumes, for its steps' volumeMounts
        known = build.volumes.setdefault(volume["name"], volume)
        if known != volume:
            raise CompileError(
                f"{where}.volumes[{volume['name']}]",
                "another task declares a different volume of this name; one Pod has one",
                "Unsupported",
            )
    for sidecar in spec.sidecars:
        name = container_name("sidecar", ptask.name, sidecar.name, build.taken)
        data = sidecar.model_dump(exclude_none=True)  # field names: a container's
        fields = {key: data.pop(key) for key in list(data) if key in Step.model_fields}
        container = step_container(
            f"{where}.sidecars[{sidecar.name}]",
            name,
            Step.model_validate(fields),
            scope,
            build.scripts,
        )
        if not container["command"]:
            del container["command"]  # the image's own entrypoint
        container["volumeMounts"] = [*common[:2], *mounts, *container["volumeMounts"]]
        build.sidecars.append({**data, **container})
    return steps


def compile_pipeline(
    pipeline: PipelineSpec,
    tasks: Mapping[str, TaskSpec],
    params: Mapping[str, ParamValue],
    bindings: Sequence[WorkspaceBinding],
    ctx: RunContext,
    images: Images,
    step_actions: Mapping[str, StepActionSpec] | None = None,
) -> Plan:
    """The Pod running ``pipeline`` (``tasks``: each pipeline task's resolved spec, none
    for a custom task, which runs as a stand-in: :mod:`~examples.pipeline_in_pod.customtasks`;
    ``step_actions``: the StepActions its steps reference, by name).

    Raises:
        CompileError: the pipeline is invalid, or cannot run in one Pod (``field`` names it).
    """
    outer = pipeline_scope(pipeline, params, ctx)
    pipeline, tasks, custom = with_stand_ins(pipeline, tasks, images.shell, outer)
    flat = flatten(pipeline, outer, partial(_child_scope, ctx), images.shell)
    pipeline, tasks = flat.pipeline, {**tasks, **flat.specs}
    tasks = resolve_tasks(pipeline, tasks, ctx.annotations, ctx.task_annotations, ctx.pod_template)
    check_one_pod(pipeline, tasks)
    fanout = expand_matrix(pipeline, tasks, outer, images.shell, RESULTS_DIR, flat.scopes)
    pipeline, tasks = fanout.pipeline, fanout.tasks
    flat = flat.fanned(pipeline, fanout.instances)
    outers = flat.scopes
    deps = flat.cut(dependencies(pipeline))
    bindings, claims = bind_claims(bindings, ctx.uid)
    volumes = workspace_volumes(pipeline, bindings)
    scopes: dict[str, Scope] = {}
    given: dict[str, tuple[JSON, ...]] = {}
    mounts: dict[str, list[JSON]] = {}
    verdicts: dict[str, bool | None] = {}
    for ptask in [*pipeline.tasks, *pipeline.finally_]:
        own = outers.get(ptask.name, outer)  # a child pipeline's task: the child's
        scope = task_scope(ptask, tasks[ptask.name], own, ctx)
        inline = partial(
            inline_step_actions, f"tasks[{ptask.name}]", actions=step_actions or {}, scope=scope
        )
        tasks[ptask.name] = across_phases(tasks[ptask.name], inline)
        mounts[ptask.name] = task_workspaces(ptask, tasks[ptask.name], volumes, bindings, scope)
        scopes[ptask.name] = scope
        verdicts[ptask.name] = static_when(ptask, own)
        given[ptask.name] = tuple(
            {"name": p.name, "value": own.value(p.value)} for p in ptask.params
        )
    skipped = flat.skip_children(skipped_tasks(pipeline, deps, verdicts))
    has_sidecars = any(
        tasks[p.name].sidecars
        for p in [*pipeline.tasks, *pipeline.finally_]
        if p.name not in skipped
    )
    build = _Build()
    by_name = {ptask.name: ptask for ptask in pipeline.tasks}
    last_posts: dict[str, str] = {}
    gates: dict[str, list[str]] = {}
    first_waits: dict[str, list[str]] = {}
    for name in order(deps):
        ptask = by_name[name]
        spec = tasks[name]
        live = [d for d in deps[name] if d not in skipped]
        in_finally = flat.in_finally(name)
        if name in skipped:
            build.plans.append(_skipped_plan(ptask, spec, in_finally, deps[name], skipped[name]))
            continue
        waits = [last_posts[d] for d in live]
        root = not waits
        released = flat.final_child(name)
        if root and released is not None:  # a child in finally: its barrier releases it
            waits = [f"{RUN_DIR}/{BARRIER_CONTAINER}/{released}"]
        elif root and has_sidecars:  # released once the sidecars are ready
            waits = [f"{DOWNWARD_DIR}/ready"]
        elif not root:  # and once the scheduler says the pipeline is not stopping
            gates[name] = list(waits)
            waits.append(f"{GATE_DIR}/{name}")
        if name in fanout.joins:  # reads what each instance produced
            mounts[name] = _instance_mounts(fanout.instances[name], build.plans)
        first_waits[name] = waits
        steps = compile_task(
            ptask,
            spec,
            scopes[name],
            waits,
            build,
            wait_content=root and has_sidecars and released is None,
            when=when_flag(ptask, outers.get(name, outer)) if verdicts[name] is None else (),
            mounts=mounts[name],
            ptask_is_finally=in_finally,
        )
        last_posts[name] = post_file(name, len(steps) - 1)
        build.plans.append(_plan(ptask, spec, in_finally, steps, build, deps[name]))
    helpers: list[JSON] = []
    markers = {
        p.name: ran_marker(p.name)
        for p in pipeline.tasks
        if p.name not in skipped and p.when and verdicts[p.name] is None
    }
    unmet = {
        p.name: [markers[r] for r in sorted(task_refs(_task_texts(p)) & markers.keys())]
        for p in pipeline.tasks
        if p.name in gates
    }
    if gates:
        deciding = {name: flat.deciding(name, deps) for name in gates}
        script = scheduler_script(gates, unmet, flat.owner, deciding)
        helpers.append(_helper(SCHEDULER_CONTAINER, images.shell, script))
    every = {p.name: p for p in [*pipeline.tasks, *pipeline.finally_]}

    def barrier(child: str) -> str:
        """The barrier of ``child`` (``""``: the pipeline's): its statuses, its finals."""
        members = flat.members(child)
        reads = {
            name: sorted(
                {m.group(1) for t in _task_texts(every[name]) for m in _RESULT_REF.finditer(t)}
                - skipped.keys()
            )
            for name in flat.finals(child)
            if name not in skipped
        }
        return barrier_script(
            {t: [d for d in deps[t] if d in members] for t in members},
            {t: last_posts[t] for t in members if t in last_posts},
            skipped,
            markers,
            unmet,
            reads,
            out=f"{STATUS_DIR}/{status_subdir(child)}" if child else STATUS_DIR,
        )

    if any(name not in skipped for name in flat.finals("")):
        script = barrier("")
        helpers.append(_helper(BARRIER_CONTAINER, images.shell, script, status=True))
        build.volumes[STATUS_VOLUME] = {"name": STATUS_VOLUME, "emptyDir": {}}
    final_posts = _child_finals(pipeline, flat, tasks, scopes, build, first_waits, skipped, mounts)
    for child in flat.children:
        if child in skipped:
            continue
        ends = {
            name: (final_posts.get(name) or last_posts[name], _gate(name))
            for name in flat.finals(child)
            if name not in skipped
        }
        build.scripts[f"{SCRIPTS_DIR}/{build.containers[child][0]['name']}"] = end_script(
            barrier(child), ends
        )
    for ptask in pipeline.finally_:
        if flat.owner.get(ptask.name):
            continue  # a child's: compiled above
        spec = tasks[ptask.name]
        if ptask.name in skipped:
            build.plans.append(_skipped_plan(ptask, spec, True, (), skipped[ptask.name]))
            continue
        steps = compile_task(
            ptask,
            spec,
            scopes[ptask.name],
            [_gate(ptask.name)],
            build,
            wait_content=False,
            when=when_flag(ptask, outer) if verdicts[ptask.name] is None else (),
            mounts=mounts[ptask.name],
            ptask_is_finally=True,
        )
        build.plans.append(_plan(ptask, spec, True, steps, build, ()))
    produced = {
        plan.name: f"pip-results-{index}"
        for index, plan in enumerate(build.plans)
        if plan.skipped is None
    }
    everything = [c for containers in build.containers.values() for c in containers]
    for container in everything + build.sidecars:
        _consumer_mounts(container, produced)
    for name, child in flat.owner.items():  # a child's finally reads the child's statuses
        if child and name in final_posts:
            for container in build.containers[name]:
                for mount in container["volumeMounts"]:
                    if mount["name"] == STATUS_VOLUME:
                        mount["subPath"] = status_subdir(child)
    depth = levels(deps)
    final_depth = max(depth.values(), default=0) + 1
    size_requests(
        build.containers,
        {name: depth.get(name, final_depth) for name in build.containers},
    )
    pod_spec = _pod_spec(ctx, images, build, helpers, volumes)
    add_checks(pod_spec, BIN)
    add_downward_items(pod_spec, custom)
    check_message_budget(pod_spec, build.plans)
    return Plan(
        pod_spec=pod_spec,
        tasks=tuple(replace(p, params=given[p.name]) for p in build.plans),
        results=pipeline_results(pipeline, outer),
        waits_for_ready=has_sidecars,
        matrices=fanout.instances,
        claims=claims,
        custom=custom,
        children=frozenset(flat.children),
    )


def _gate(final: str) -> str:
    """The file a barrier creates to release ``finally`` task ``final`` (``.err``: skip)."""
    return f"{RUN_DIR}/{BARRIER_CONTAINER}/{final}"


def _child_finals(
    pipeline: PipelineSpec,
    flat: Flat,
    tasks: Mapping[str, TaskSpec],
    scopes: Mapping[str, Scope],
    build: _Build,
    first_waits: Mapping[str, Sequence[str]],
    skipped: Mapping[str, str],
    mounts: Mapping[str, Sequence[JSON]],
) -> dict[str, str]:
    """Compile each child pipeline's ``finally`` tasks: started with the child (what its
    end task waits for), released by the child's barrier; each one's last post file."""
    posts: dict[str, str] = {}
    for ptask in pipeline.finally_:
        child = flat.owner.get(ptask.name)
        if not child:
            continue
        spec = tasks[ptask.name]
        in_finally = flat.in_finally(ptask.name)
        deps = flat.members(child)
        if ptask.name in skipped:
            plan = _skipped_plan(ptask, spec, in_finally, deps, skipped[ptask.name])
            build.plans.append(plan)
            continue
        ready = f"{DOWNWARD_DIR}/ready"
        waits = [w for w in first_waits[child] if w != ready] + [_gate(ptask.name)]
        own = flat.scopes.get(ptask.name)
        assert own is not None
        steps = compile_task(
            ptask,
            spec,
            scopes[ptask.name],
            waits,
            build,
            wait_content=False,
            when=when_flag(ptask, own) if static_when(ptask, own) is None else (),
            mounts=mounts[ptask.name],
            ptask_is_finally=in_finally,
        )
        posts[ptask.name] = post_file(ptask.name, len(steps) - 1)
        build.plans.append(_plan(ptask, spec, in_finally, steps, build, deps))
    return posts


#: What the kubelet keeps of all termination messages of a Pod, split evenly between its
#: containers (``normalizeStatus`` in the kubelet's status manager).
POD_MESSAGE_BUDGET = 12 * 1024
#: Least room a step's termination message needs: start time, reason, a few short results.
MIN_MESSAGE_BYTES = 256


def check_message_budget(pod_spec: JSON, plans: Sequence[TaskPlan]) -> None:
    """Reject a Pod whose containers are too many for results to fit their messages.

    Raises:
        CompileError: tasks declare results, and each container's share of the Pod's
            12 KiB of termination messages is under :data:`MIN_MESSAGE_BYTES`.
    """
    count = len(pod_spec["containers"]) + len(pod_spec["initContainers"])
    share = POD_MESSAGE_BUDGET // count
    producers = [plan.name for plan in plans if plan.results and plan.skipped is None]
    if producers and share < MIN_MESSAGE_BYTES:
        raise CompileError(
            f"tasks[{producers[0]}].results",
            f"the Pod would have {count} containers: the kubelet keeps {share} bytes of each "
            f"one's termination message, too little to carry results (the Pod's "
            f"{POD_MESSAGE_BUDGET} bytes are split between its containers); split the "
            "pipeline into fewer tasks or steps per Pod",
            "Unsupported",
        )


def _instance_mounts(instances: Sequence[str], plans: Sequence[TaskPlan]) -> list[JSON]:
    """A join's mounts: each instance's results (``pip-results-<plan index>``), read-only."""
    index = {plan.name: i for i, plan in enumerate(plans) if plan.skipped is None}
    return [
        _mount(f"pip-results-{index[name]}", f"{IN_DIR}/{name}", True)
        for name in instances
        if name in index
    ]


def _plan(
    ptask: PipelineTask,
    spec: TaskSpec,
    is_finally: bool,
    steps: Sequence[StepPlan],
    build: _Build,
    deps: Sequence[str],
) -> TaskPlan:
    sidecars = tuple(
        c["name"] for c in build.sidecars if c["name"].startswith(f"sidecar-{_dns(ptask.name)}-")
    )
    return TaskPlan(
        ptask.name,
        is_finally,
        tuple(steps),
        sidecars,
        tuple(r.name for r in spec.results),
        tuple(deps),
        timeout=ptask.timeout,
    )


def _skipped_plan(
    ptask: PipelineTask, spec: TaskSpec, is_finally: bool, deps: Sequence[str], reason: str
) -> TaskPlan:
    return TaskPlan(
        ptask.name, is_finally, (), (), tuple(r.name for r in spec.results), tuple(deps), reason
    )


def _helper(name: str, image: str, script: str, *, status: bool = False) -> JSON:
    """A shell container beside the steps: the scheduler, or the finally barrier."""
    mounts = [_mount("tekton-internal-run", RUN_DIR)]
    if status:
        mounts.append(_mount("pip-status", "/pip/status"))
    return {
        "name": name,
        "image": image,
        "command": ["sh", "-c", script],
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "0", "memory": "0"}},
    }


def _pod_spec(
    ctx: RunContext,
    images: Images,
    build: _Build,
    helpers: list[JSON],
    workspaces: Mapping[str, JSON],
) -> JSON:
    init = [prepare(images.entrypoint)]
    if build.scripts:
        init.append(place_scripts(build.scripts, images.shell))
    if build.links:
        init.append(link_results(build.links, images.shell))
    containers = [*_dag_first(build, helpers), *build.sidecars]
    volumes = [
        {"name": "tekton-internal-bin", "emptyDir": {}},
        {"name": "tekton-internal-scripts", "emptyDir": {}},
        {"name": "tekton-internal-run", "emptyDir": {}},
        *build.volumes.values(),
        *workspaces.values(),
    ]
    subpaths = make_subpaths(containers, volumes, images.shell)
    if subpaths is not None:
        init.append(subpaths)
    items = [
        {"path": path, "fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"}}
        for path, annotation in (("ready", READY_ANNOTATION), ("cancel", CANCEL_ANNOTATION))
    ]
    volumes.append({"name": "tekton-internal-downward", "downwardAPI": {"items": items}})
    spec: JSON = {
        "restartPolicy": "Never",
        "initContainers": init,
        "containers": containers,
        "volumes": volumes,
    }
    if ctx.service_account:
        spec["serviceAccountName"] = ctx.service_account
    for key in (
        "nodeSelector",
        "tolerations",
        "securityContext",
        "imagePullSecrets",
        "affinity",
        "priorityClassName",
        "schedulerName",
        "runtimeClassName",
        "hostAliases",
        "dnsConfig",
    ):
        if key in ctx.pod_template:
            spec[key] = ctx.pod_template[key]
    return spec


def _dag_first(build: _Build, helpers: list[JSON]) -> list[JSON]:
    """Containers in order: DAG tasks' steps, the helpers, then finally tasks' steps."""
    out: list[JSON] = []
    for plan in build.plans:
        if plan.is_finally and helpers:
            out += helpers
            helpers = []
        out += build.containers.get(plan.name, [])
    return out + helpers
