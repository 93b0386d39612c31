"""Pipelines in Pipelines (TEP-0056; ``pipelineRef``/``pipelineSpec`` on a pipeline task).

Tekton v1.15.1 runs such a task (an alpha feature) as a child PipelineRun ``<run>-<task>``
whose TaskRuns are ``<run>-<task>-<inner>``. Here the child's tasks join the Pod: each
inner task becomes a task ``<task>-<inner>`` of the pipeline, in the child's own scope
(its params bound from the task's, ``$(context.pipelineRun.name)`` the child run's), after
what the child task waited for. In the child task's place an *end* task, named as the
child task, stands for the child run: it starts with the child and holds the child's
barrier (the child's statuses, then its ``finally`` tasks released, as the pipeline's own
barrier does), then ends as Tekton ends the child run: failed if a task or a ``finally``
task of the child failed. So the parent's dependants wait for the child's ``finally``,
and ``$(tasks.<task>.status)``, ``$(tasks.status)`` and the parent's outcome count the
child as one task, as Tekton's ``GetPipelineTaskStatus`` does. A failure stops only its
own pipeline (a child run stops alone; the parent learns of it when the child ends).

A child's ``finally`` tasks read the child's statuses; a child in ``finally`` starts
when its owner's barrier releases it; a matrix inside a child fans out in the child's
scope (``matrix.py``), ``<task>-<inner>-<i>`` as Tekton names those TaskRuns.

As in Tekton: the child's results are not surfaced (a reference to them is rejected
with Tekton's reason), and it cannot be fanned out by a matrix. Not here: a ``timeout``
on the child task (Tekton ignores it; nothing is silently ignored here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from examples.pipeline_in_pod.dag import CompileError, task_refs
from examples.pipeline_in_pod.model import (
    ParamValue,
    PipelineSpec,
    PipelineTask,
    TaskSpec,
    WhenExpression,
    WorkspacePipelineTaskBinding,
)
from examples.pipeline_in_pod.substitution import Scope

__all__ = [
    "Child",
    "ChildScope",
    "Flat",
    "end_script",
    "end_spec",
    "flatten",
    "inner_name",
    "status_subdir",
]

#: Makes a child pipeline's scope: (the child task's name, the child's spec, its params).
ChildScope = Callable[[str, PipelineSpec, Mapping[str, ParamValue]], Scope]

_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.")


def inner_name(child: str, task: str) -> str:
    """The name of task ``task`` of child pipeline task ``child`` (Tekton's TaskRun suffix)."""
    return f"{child}-{task}"


def _check(ptask: PipelineTask, where: str) -> PipelineSpec:
    spec = ptask.pipelineSpec
    assert spec is not None
    at = f"{where}[{ptask.name}]"
    if ptask.matrix is not None:
        raise CompileError(
            f"{at}.matrix",
            "Tekton does not fan out a pipelineTask that uses pipelineRef or pipelineSpec",
        )
    if ptask.timeout is not None:
        raise CompileError(
            f"{at}.timeout",
            "Tekton does not apply a timeout to a child pipeline; set timeouts on the run",
            "Unsupported",
        )
    return spec


def _workspaces(
    inner: Sequence[WorkspacePipelineTaskBinding], outer: Sequence[WorkspacePipelineTaskBinding]
) -> list[WorkspacePipelineTaskBinding]:
    """An inner task's bindings of the child's workspaces, as the parent's workspaces."""
    parent = {b.name: b for b in outer}
    out = []
    for binding in inner:
        child_ws = binding.workspace or binding.name
        mapped = parent.get(child_ws)
        if mapped is None:  # not bound by the child task: unbound (fails if not optional)
            continue
        sub = "/".join(p for p in (mapped.subPath, binding.subPath) if p)
        out.append(
            binding.model_copy(
                update={"workspace": mapped.workspace or mapped.name, "subPath": sub}
            )
        )
    return out


def _renamed(ptask: PipelineTask, child: str, names: set[str]) -> PipelineTask:
    """``ptask`` with the child's task names prefixed, in references and ``runAfter``."""
    text = ptask.model_dump_json(by_alias=True, exclude_none=True, exclude_unset=True)
    text = _REF.sub(
        lambda m: f"$(tasks.{inner_name(child, m.group(1))}." if m.group(1) in names else m[0],
        text,
    )
    data = json.loads(text)
    data["name"] = inner_name(child, ptask.name)
    data["runAfter"] = [inner_name(child, r) if r in names else r for r in ptask.runAfter]
    return PipelineTask.model_validate(data)


def _in_scope(when: WhenExpression, scope: Scope) -> WhenExpression:
    """``when`` with ``scope``'s variables replaced (the child's tasks see other ones)."""
    return when.model_copy(
        update={
            "input": scope.string(when.input) if when.input is not None else None,
            "values": scope.strings_list(when.values) if when.values is not None else None,
            "cel": scope.string(when.cel) if when.cel is not None else None,
        }
    )


def _prefixed(child_scope: ChildScope, prefix: str) -> ChildScope:
    """``child_scope`` for the children of child ``prefix`` (their names prefixed)."""

    def scope(name: str, spec: PipelineSpec, given: Mapping[str, ParamValue]) -> Scope:
        return child_scope(inner_name(prefix, name), spec, given)

    return scope


@dataclass(frozen=True)
class Child:
    """A child pipeline task, flattened: its *end* task, named as the child task, stands
    for it in its parent (see :func:`end_spec`).

    Attributes:
        owner: the child it is a task of (``""``: the pipeline itself).
        final: it is one of its owner's ``finally`` tasks.
    """

    owner: str
    final: bool


@dataclass(frozen=True)
class Flat:
    """A pipeline with its children flattened.

    Attributes:
        pipeline: every task of every child among ``tasks`` (the children's ``finally``
            tasks among ``finally``), each child's end task in its place.
        scopes: the scope each child's task is read in (absent: the pipeline's).
        owner: each task's child (``""``: the pipeline's own).
        children: each child, by its end task's name.
        specs: each end task's Task spec, and each inline one of a child's task (its
            references to the child's tasks renamed).
    """

    pipeline: PipelineSpec
    scopes: dict[str, Scope] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    specs: dict[str, TaskSpec] = field(default_factory=dict)

    def members(self, child: str) -> list[str]:
        """The DAG tasks of ``child`` (``""``: of the pipeline), deeper children's ends
        included."""
        return [
            p.name
            for p in self.pipeline.tasks
            if self.owner.get(p.name, "") == child
            and not (p.name in self.children and self.children[p.name].final)
        ]

    def finals(self, child: str) -> list[str]:
        """The ``finally`` tasks of ``child`` (``""``: of the pipeline), each final child's
        end among them."""
        own = [p.name for p in self.pipeline.finally_ if self.owner.get(p.name, "") == child]
        return own + [n for n, c in self.children.items() if c.owner == child and c.final]

    def final_child(self, task: str) -> str | None:
        """The innermost child in a ``finally`` that ``task`` (or its end) belongs to."""
        name: str | None = task if task in self.children else self.owner.get(task) or None
        while name:
            if self.children[name].final:
                return name
            name = self.children[name].owner or None
        return None

    def in_finally(self, task: str) -> bool:
        """``task`` runs in the pipeline's ``finally`` (it is in a child there)."""
        name: str | None = task if task in self.children else self.owner.get(task) or None
        while name:
            child = self.children[name]
            if child.final and not child.owner:
                return True
            name = child.owner or None
        return False

    def cut(self, deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """``deps`` without what a task in a child in ``finally`` waits for outside that
        child: it starts when its owner's barrier releases the child."""
        out = {task: list(needs) for task, needs in deps.items()}
        for task in out:
            final = self.final_child(task)
            if final is not None:
                out[task] = [d for d in out[task] if self.final_child(d) == final]
        return out

    def deciding(self, task: str, deps: Mapping[str, Sequence[str]]) -> str:
        """The child (``""``: the pipeline) whose failure stops ``task`` from starting: its
        own, once it has started; before, that of the child's parent (Tekton makes no
        child run once the parent is stopping, and a child run stops alone)."""
        scope = self.owner.get(task, "")
        while scope and not any(self.owner.get(d, "") == scope for d in deps[task]):
            task, scope = scope, self.children[scope].owner
        return scope

    def skip_children(self, skipped: Mapping[str, str]) -> dict[str, str]:
        """``skipped``, and every task of a skipped child skipped for the same reason
        (Tekton makes no child run for a skipped child task)."""
        out = dict(skipped)
        for child in self.children:  # parents before their children
            if child in out:
                for task in [*self.members(child), *self.finals(child)]:
                    out.setdefault(task, out[child])
        return out

    def fanned(self, pipeline: PipelineSpec, instances: Mapping[str, Sequence[str]]) -> Flat:
        """This, for ``pipeline`` with matrices fanned out into ``instances``."""
        owner, scopes = dict(self.owner), dict(self.scopes)
        for matrix, made in instances.items():
            for instance in made:
                owner[instance] = owner.get(matrix, "")
                if matrix in scopes:
                    scopes[instance] = scopes[matrix]
        return Flat(pipeline, scopes, owner, self.children, self.specs)


#: A child's end task waits for this file, which its barrier writes (``Failed`` or not).
OUTCOME = "outcome"


#: The volume of statuses (``$(tasks.status)``...) and where barriers write them: the
#: pipeline's at its root, a child's in :func:`status_subdir`.
STATUS_VOLUME = "pip-status"
STATUS_DIR = "/pip/status"


def end_spec(shell: str) -> TaskSpec:
    """A child's end task: one shell step, given the child's barrier by the compiler."""
    mount = {"name": STATUS_VOLUME, "mountPath": STATUS_DIR}
    step = {"name": "end", "image": shell, "script": "#!/bin/sh\n", "volumeMounts": [mount]}
    return TaskSpec.model_validate(
        {"steps": [step], "volumes": [{"name": STATUS_VOLUME, "emptyDir": {}}]}
    )


def status_subdir(child: str) -> str:
    """Where the statuses that child ``child``'s ``finally`` tasks read are written."""
    return f"child-{child}"


def end_script(barrier: str, finals: Mapping[str, tuple[str, str]]) -> str:
    """A child's end: its ``barrier`` (statuses, then its ``finally`` tasks released),
    then each ``finals`` task's end awaited (its last post file and its gate), then the
    child's outcome as Tekton's for a PipelineRun: failed if a task or a ``finally`` task
    failed (a skipped one did not)."""
    lines = ["#!/bin/sh", barrier, 'failed=; [ "$agg" = Failed ] && failed=1']
    for post, gate in finals.values():
        lines.append(f'until [ -e "{post}" ] || [ -e "{post}.err" ]; do sleep 0.2; done')
        lines.append(f'[ -e "{post}.err" ] && [ ! -e "{gate}.err" ] && failed=1')
    lines.append('[ -z "$failed" ]')
    return "\n".join(lines) + "\n"


def _results_refs(texts: Sequence[str]) -> set[str]:
    return {m.group(1) for text in texts for m in _RESULTS_REF.finditer(text)}


_RESULTS_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.(?:results|matrix)\b")


def _reject_results(pipeline: PipelineSpec, children: set[str]) -> None:
    """Tekton's validation: no result of a child pipeline is read (its status may be)."""
    for ptask in [*pipeline.tasks, *pipeline.finally_]:
        text = ptask.model_dump_json(by_alias=True, exclude_none=True)
        used = _results_refs([text]) & children
        if used:
            name = sorted(used)[0]
            raise CompileError(
                f"tasks[{ptask.name}]",
                f'result reference to pipelineTask "{name}" is not supported: referenced task '
                "uses pipelineRef or pipelineSpec and result propagation from child Pipelines "
                "is not yet implemented",
            )


def flatten(pipeline: PipelineSpec, outer: Scope, child_scope: ChildScope, shell: str) -> Flat:
    """``pipeline`` with each child pipeline task (in ``tasks`` or ``finally``) replaced by
    the child's tasks, named by :func:`inner_name` (children of children too), its
    ``finally`` tasks among the pipeline's ``finally`` ones, and its end task (``shell``:
    its image); and the scope each inner task's params, ``when`` and inline spec are read
    in.

    Raises:
        CompileError: what Tekton rejects (a child's results read), or a name taken twice.
    """
    children = {
        p.name: (_check(p, where), where == "finally")
        for where, ptasks in (("tasks", pipeline.tasks), ("finally", pipeline.finally_))
        for p in ptasks
        if p.pipelineSpec is not None
    }
    if not children:
        return Flat(pipeline)
    _reject_results(pipeline, set(children))
    out = Flat(pipeline.model_copy(update={"tasks": [], "finally_": []}))
    taken = {p.name for p in [*pipeline.tasks, *pipeline.finally_]}
    tasks: list[PipelineTask] = []
    finals: list[PipelineTask] = []
    for ptask in [*pipeline.tasks, *pipeline.finally_]:
        found = children.get(ptask.name)
        if found is None:
            (finals if ptask in pipeline.finally_ else tasks).append(ptask)
            continue
        child, final = found
        values = {param.name: outer.value(param.value) for param in ptask.params}
        when = [_in_scope(w, outer) for w in ptask.when]  # read in the parent's scope
        inner_scope = child_scope(ptask.name, child, values)
        deeper = flatten(child, inner_scope, _prefixed(child_scope, ptask.name), shell)
        names = {p.name for p in [*deeper.pipeline.tasks, *deeper.pipeline.finally_]}
        waits = [] if final else [*ptask.runAfter, *sorted(task_refs([json.dumps(values)]))]
        end = ptask.model_copy(
            update={
                "pipelineSpec": None,
                "pipelineRef": None,
                "taskSpec": end_spec(shell),
                "runAfter": [] if final else ptask.runAfter,
                "workspaces": [],
            }
        )
        tasks.append(end)
        out.specs[ptask.name] = end_spec(shell)
        out.children[ptask.name] = Child("", final)
        out.scopes[ptask.name] = outer
        for name, grand in deeper.children.items():
            owner = inner_name(ptask.name, grand.owner) if grand.owner else ptask.name
            out.children[inner_name(ptask.name, name)] = Child(owner, grand.final)
        for name, spec in deeper.specs.items():
            out.specs[inner_name(ptask.name, name)] = spec
        for inner in [*deeper.pipeline.tasks, *deeper.pipeline.finally_]:
            renamed = _renamed(inner, ptask.name, names)
            if renamed.name in taken:
                raise CompileError(
                    f"tasks[{renamed.name}]",
                    f"is also the name of task {inner.name!r} of child pipeline {ptask.name!r}",
                )
            taken.add(renamed.name)
            is_final = inner in deeper.pipeline.finally_
            renamed = renamed.model_copy(
                update={
                    "runAfter": [] if is_final else [*waits, *renamed.runAfter],
                    "when": [*when, *renamed.when],
                    "workspaces": _workspaces(renamed.workspaces, ptask.workspaces),
                }
            )
            (finals if is_final else tasks).append(renamed)
            if renamed.taskSpec is not None:  # its references to the child's tasks renamed
                out.specs[renamed.name] = renamed.taskSpec
            out.scopes[renamed.name] = deeper.scopes.get(inner.name, inner_scope)
            owner = deeper.owner.get(inner.name, "")
            out.owner[renamed.name] = inner_name(ptask.name, owner) if owner else ptask.name
    flat = pipeline.model_copy(update={"tasks": tasks, "finally_": finals})
    return Flat(flat, out.scopes, out.owner, out.children, out.specs)
