"""Pipelines in Pipelines (TEP-0056; ``pipelineRef``/``pipelineSpec`` on a pipeline task).

Tekton v1.15.1 runs such a task (an alpha feature) as a child PipelineRun ``<run>-<task>``
whose TaskRuns are ``<run>-<task>-<inner>``. Here the child's tasks join the Pod: each
inner task becomes a task ``<task>-<inner>`` of the pipeline, in the child's own scope
(its params bound from the task's, ``$(context.pipelineRun.name)`` the child run's), after
what the child task waited for; a task after the child waits for all of its tasks.

As in Tekton: the child's results and status are not surfaced (a reference to them is
rejected with Tekton's reason), and it cannot be fanned out by a matrix. Not yet here: a
child's ``finally`` (it would need its own barrier), a matrix inside a child, a ``timeout``
on the child task (Tekton ignores it; nothing is silently ignored here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from examples.pipeline_in_pod.dag import CompileError, task_refs
from examples.pipeline_in_pod.model import (
    ParamValue,
    PipelineSpec,
    PipelineTask,
    WhenExpression,
    WorkspacePipelineTaskBinding,
)
from examples.pipeline_in_pod.substitution import Scope

__all__ = ["ChildScope", "flatten", "inner_name"]

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
    if where == "finally":
        raise CompileError(at, "a child pipeline in finally is not supported yet", "Unsupported")
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
    if spec.finally_:
        raise CompileError(
            f"{at}.pipelineSpec.finally",
            "finally tasks of a child pipeline are not supported yet in one Pod",
            "Unsupported",
        )
    if any(p.matrix is not None for p in spec.tasks):
        raise CompileError(
            f"{at}.pipelineSpec.tasks",
            "a matrix inside a child pipeline is not supported yet in one Pod",
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
    text = ptask.model_dump_json(by_alias=True, exclude_none=True)
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


def flatten(
    pipeline: PipelineSpec, outer: Scope, child_scope: ChildScope
) -> tuple[PipelineSpec, dict[str, Scope]]:
    """``pipeline`` with each child pipeline task replaced by the child's tasks, named by
    :func:`inner_name` (children of children too), and the scope each inner task's params,
    ``when`` and inline spec are read in.

    Raises:
        CompileError: what Tekton rejects (a child's results or status read), or what one
            Pod does not do yet.
    """
    children = {p.name: _check(p, "tasks") for p in pipeline.tasks if p.pipelineSpec}
    for ptask in pipeline.finally_:
        if ptask.pipelineSpec is not None:
            _check(ptask, "finally")
    if not children:
        return pipeline, {}
    for ptask in [*pipeline.tasks, *pipeline.finally_]:
        text = ptask.model_dump_json(by_alias=True, exclude_none=True)
        used = task_refs([text]) & children.keys()
        if used:
            name = sorted(used)[0]
            raise CompileError(
                f"tasks[{ptask.name}]",
                f'result reference to pipelineTask "{name}" is not supported: referenced task '
                "uses pipelineRef or pipelineSpec and result propagation from child Pipelines "
                "is not yet implemented (nor its status)",
            )
    scopes: dict[str, Scope] = {}
    members: dict[str, list[str]] = {}
    flat: list[PipelineTask] = []
    taken = {p.name for p in [*pipeline.tasks, *pipeline.finally_]}
    for ptask in pipeline.tasks:
        child = children.get(ptask.name)
        if child is None:
            flat.append(ptask)
            continue
        values = {param.name: outer.value(param.value) for param in ptask.params}
        when = [_in_scope(w, outer) for w in ptask.when]  # read in the parent's scope
        inner_scope = child_scope(ptask.name, child, values)
        child, deeper = flatten(child, inner_scope, _prefixed(child_scope, ptask.name))
        names = {p.name for p in child.tasks}
        waits = [*ptask.runAfter, *sorted(task_refs([json.dumps(values)]))]
        members[ptask.name] = []
        for inner in child.tasks:
            renamed = _renamed(inner, ptask.name, names)
            if renamed.name in taken:
                raise CompileError(
                    f"tasks[{renamed.name}]",
                    f"is also the name of task {inner.name!r} of child pipeline {ptask.name!r}",
                )
            taken.add(renamed.name)
            renamed = renamed.model_copy(
                update={
                    "runAfter": [*waits, *renamed.runAfter],
                    "when": [*when, *renamed.when],
                    "workspaces": _workspaces(renamed.workspaces, ptask.workspaces),
                }
            )
            flat.append(renamed)
            scopes[renamed.name] = deeper.get(inner.name, inner_scope)
            members[ptask.name].append(renamed.name)
    out = [
        p.model_copy(update={"runAfter": [m for r in p.runAfter for m in members.get(r, [r])]})
        for p in flat
    ]
    return pipeline.model_copy(update={"tasks": out}), scopes
