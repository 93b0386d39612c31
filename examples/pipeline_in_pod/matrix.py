"""Matrix: fan a pipeline task out over its params' combinations, as Tekton does.

Each combination becomes a task of its own, ``<task>-<i>`` (the suffix of Tekton's TaskRun
names), in ``tasks`` or in ``finally``. What Tekton computes from the fanned-out TaskRuns
(``pkg/reconciler/pipelinerun/resources``: ``createResultsCacheMatrixedTaskRuns``,
``ApplyPipelineTaskContexts``) is computed here too:

- ``$(tasks.<t>.matrix.length)``: the number of combinations, known when compiling;
- ``$(tasks.<t>.results.<r>[*])``: each instance's string result ``r`` aggregated into an
  array, in TaskRun-name order, of the instances that produced it; and
  ``$(tasks.<t>.matrix.<r>.length)``, that array's length. Both are only known in the Pod:
  a *join* task named ``<t>`` (one shell step after every instance) writes them where a
  consumer reads any producer's results, so order, skipping and gating work as for any
  task. The join is not a task of the pipeline: per-task status leaves it out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import (
    Param,
    PipelineSpec,
    PipelineTask,
    Step,
    TaskSpec,
)
from examples.pipeline_in_pod.substitution import Scope

__all__ = [
    "IN_DIR",
    "LENGTHS_DIR",
    "LENGTH_REF",
    "Fanout",
    "combinations",
    "expand_matrix",
    "join_script",
]

#: Where a join step mounts each instance's results (``<IN_DIR>/<instance>``).
IN_DIR = "/pip/in"
#: The folder of a join's results volume holding each aggregated result's length.
LENGTHS_DIR = "pip-length"
#: ``$(tasks.<t>.matrix.<r>.length)``.
LENGTH_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.matrix\.([^).]+)\.length\)")
_COUNT_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.matrix\.length\)")
_CONSUMED = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.results\.([^)\[.]+)([^)]*)\)")

#: A file's bytes as a JSON string: busybox ``od`` and ``awk``, byte for byte.
_ENCODE = r"""enc() {
  od -An -v -tx1 "$1" | awk '
    BEGIN { for (i = 0; i < 256; i++) d[sprintf("%02x", i)] = i; printf "\"" }
    { for (i = 1; i <= NF; i++) { c = d[$i]
        if (c == 34) printf "\\\""; else if (c == 92) printf "\\\\"
        else if (c < 32) printf "\\u%04x", c; else printf "%c", c } }
    END { printf "\"" }'
}
"""


@dataclass(frozen=True)
class Fanout:
    """A pipeline with its matrices fanned out.

    Attributes:
        pipeline: instances in place of each matrixed task, joins among ``tasks``.
        tasks: each (instance's, join's) pipeline task name to its Task spec.
        instances: each matrixed task (DAG or finally) to its instances, in order.
        joins: the matrixed DAG tasks whose results other tasks read: a join task each.
    """

    pipeline: PipelineSpec
    tasks: dict[str, TaskSpec]
    instances: dict[str, tuple[str, ...]]
    joins: frozenset[str]


def combinations(ptask: PipelineTask, scope: Scope) -> list[dict[str, str]]:
    """A matrix's combinations, as Tekton fans it out: the cross product of its params,
    then each ``include``: added to the combinations its matrix params match (to every
    one when it names none), else a combination of its own.

    Raises:
        CompileError: a matrix param is not an array.
    """
    assert ptask.matrix is not None
    names: list[str] = []
    combos: list[dict[str, str]] = [{}]
    for param in ptask.matrix.params:
        values = scope.value(param.value)
        if not isinstance(values, list):
            raise CompileError(
                f"tasks[{ptask.name}].matrix.params[{param.name}]", "must be an array"
            )
        names.append(param.name)
        combos = [{**combo, param.name: value} for combo in combos for value in values]
    for include in ptask.matrix.include:
        given = {p["name"]: scope.string(str(p["value"])) for p in include.get("params") or []}
        keys = {k: v for k, v in given.items() if k in names}
        matched = [c for c in combos if all(c.get(k) == v for k, v in keys.items())]
        if matched:
            for combo in matched:
                combo.update({k: v for k, v in given.items() if k not in names})
        else:
            combos.append(dict(given))
    return combos


def _fan(
    ptasks: Sequence[PipelineTask],
    where: str,
    tasks: Mapping[str, TaskSpec],
    scope: Scope,
    taken: set[str],
    out: Fanout,
    scopes: Mapping[str, Scope],
) -> list[PipelineTask]:
    """``ptasks`` with each matrixed one replaced by its instances (recorded in ``out``)."""
    expanded: list[PipelineTask] = []
    for ptask in ptasks:
        if ptask.matrix is None:
            expanded.append(ptask)
            continue
        made = []
        for index, combo in enumerate(combinations(ptask, scopes.get(ptask.name, scope))):
            name = f"{ptask.name}-{index}"
            if name in taken:
                raise CompileError(
                    f"{where}[{name}]", f"is also an instance of matrix {ptask.name!r}"
                )
            # Tekton's order (``createTaskRun``): the combination, sorted by name, first.
            params = [*(Param(name=k, value=combo[k]) for k in sorted(combo)), *ptask.params]
            expanded.append(
                ptask.model_copy(update={"name": name, "matrix": None, "params": params})
            )
            out.tasks[name] = tasks[ptask.name]
            made.append(name)
        out.instances[ptask.name] = tuple(made)
    return expanded


def _with_counts(ptask: PipelineTask, counts: Mapping[str, int]) -> PipelineTask:
    """``$(tasks.<t>.matrix.length)`` replaced by the number of ``t``'s combinations."""
    text = ptask.model_dump_json(by_alias=True, exclude_none=True)
    replaced = _COUNT_REF.sub(
        lambda m: str(counts[m.group(1)]) if m.group(1) in counts else m.group(0), text
    )
    if replaced == text:
        return ptask
    return PipelineTask.model_validate_json(replaced)


def consumed(
    ptasks: Iterable[PipelineTask], matrices: Mapping[str, TaskSpec]
) -> dict[str, set[str]]:
    """The results of each matrixed task (``matrices``: their Task specs) that ``ptasks``
    read, as arrays (``[*]``) or lengths.

    Raises:
        CompileError: a result is read otherwise than whole, or is not a string (Tekton's
            validation of consumed matrix results).
    """
    used: dict[str, set[str]] = {}
    for ptask in ptasks:
        text = ptask.model_dump_json(by_alias=True, exclude_none=True)
        for match in _CONSUMED.finditer(text):
            task, result, rest = match.groups()
            if task not in matrices:
                continue
            if rest != "[*]":
                raise CompileError(
                    f"tasks[{ptask.name}]",
                    "A matrixed pipelineTask can only be consumed in aggregate using [*] "
                    f"notation, but is currently set to tasks.{task}.results.{result}{rest}",
                )
            declared = {r.name: r.type for r in matrices[task].results}
            if declared.get(result, "string") != "string":
                raise CompileError(
                    f"tasks[{ptask.name}]",
                    "Matrixed PipelineTasks emitting results must have an underlying type "
                    f"string, but result {result} has type {declared[result]} in pipelineTask",
                )
            used.setdefault(task, set()).add(result)
        for match in LENGTH_REF.finditer(text):
            if match.group(1) in matrices:
                used.setdefault(match.group(1), set()).add(match.group(2))
    return used


def join_script(instances: Sequence[str], results: Iterable[str], results_dir: str) -> str:
    """Shell: each result of ``instances`` aggregated into a JSON array (instances in
    TaskRun-name order, those without the result left out; none: no file, as Tekton
    finds no result), and its length in ``<results_dir>/pip-length``."""
    names = " ".join(sorted(instances))  # Tekton sorts the TaskRuns by name
    lengths = f"{results_dir}/{LENGTHS_DIR}"
    return (
        _ENCODE
        + f"mkdir -p {lengths}\n"
        + f"for r in {' '.join(sorted(results))}; do\n"
        + "  out= ; n=0\n"
        + f"  for i in {names}; do\n"
        + f'    f="{IN_DIR}/$i/$r"; [ -e "$f" ] || continue\n'
        + '    out="$out${out:+,}$(enc "$f")"; n=$((n + 1))\n'
        + "  done\n"
        + f'  [ "$n" = 0 ] || printf \'[%s]\' "$out" > "{results_dir}/$r"\n'
        + f'  printf %s "$n" > "{lengths}/$r"\n'
        + "done\n"
    )


def _join(
    ptask: PipelineTask, instances: Sequence[str], results: Iterable[str], shell: str, where: str
) -> tuple[PipelineTask, TaskSpec]:
    script = join_script(instances, results, where)
    step = Step.model_validate({"name": "aggregate", "image": shell, "script": script})
    spec = TaskSpec(steps=[step])
    join = PipelineTask(name=ptask.name, taskSpec=spec, runAfter=list(instances), when=ptask.when)
    return join, spec


def expand_matrix(
    pipeline: PipelineSpec,
    tasks: Mapping[str, TaskSpec],
    scope: Scope,
    shell: str,
    results_dir: str,
    scopes: Mapping[str, Scope] | None = None,
) -> Fanout:
    """Each matrixed task as one task per combination (``<task>-<i>``): a dependant of the
    matrixed task waits for all of them; a task reading its results reads its join's
    (``shell``: the join's image; ``results_dir``: where a task writes its results;
    ``scopes``: where a task's matrix is read in another scope than ``scope``, a child
    pipeline's task).

    Raises:
        CompileError: an instance's name is taken, or a matrix's results are read in a way
            Tekton rejects.
    """
    out = Fanout(pipeline, dict(tasks), {}, frozenset())
    taken = {p.name for p in [*pipeline.tasks, *pipeline.finally_]}
    dag = _fan(pipeline.tasks, "tasks", tasks, scope, taken, out, scopes or {})
    final = _fan(pipeline.finally_, "finally", tasks, scope, taken, out, scopes or {})
    if not out.instances:
        return out
    counts = {name: len(made) for name, made in out.instances.items()}
    dag = [_with_counts(p, counts) for p in dag]
    final = [_with_counts(p, counts) for p in final]
    fanned = {p.name: tasks[p.name] for p in pipeline.tasks if p.name in out.instances}
    used = consumed([*dag, *final], fanned)
    joins = []
    for ptask in pipeline.tasks:
        if ptask.name in used:
            strings = {r.name for r in tasks[ptask.name].results if r.type == "string"}
            instances = out.instances[ptask.name]
            join, spec = _join(ptask, instances, strings | used[ptask.name], shell, results_dir)
            joins.append(join)
            out.tasks[ptask.name] = spec
    dag = [
        p.model_copy(
            update={"runAfter": [i for r in p.runAfter for i in out.instances.get(r, [r])]}
        )
        for p in dag
    ]
    expanded = pipeline.model_copy(update={"tasks": [*dag, *joins], "finally_": final})
    return Fanout(expanded, out.tasks, out.instances, frozenset(used))
