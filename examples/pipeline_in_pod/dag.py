"""The order of a Pipeline's tasks: ``runAfter`` plus what result references imply."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["CompileError", "order", "task_refs"]

#: ``$(tasks.<task>.results.<result>...)``, ``$(tasks.<task>.status)`` and a matrix's
#: ``$(tasks.<task>.matrix.<result>.length)``.
_TASK_REF = re.compile(r"\$\(tasks\.([a-z0-9][-a-z0-9]*)\.(results|status|matrix)\b")


class CompileError(ValueError):
    """What one Pod cannot run, or what is wrong with the Pipeline: ``field`` says where."""

    def __init__(self, field: str, message: str, reason: str = "InvalidPipeline") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason


def task_refs(texts: Iterable[str]) -> set[str]:
    """Names of the tasks whose results (or status) ``texts`` reference."""
    return {match.group(1) for text in texts for match in _TASK_REF.finditer(text)}


def order(deps: Mapping[str, Sequence[str]], where: str = "tasks") -> list[str]:
    """The tasks in an order that runs each after its dependencies (Kahn, stable).

    Raises:
        CompileError: a dependency names no task, or the dependencies form a cycle.
    """
    for task, needs in deps.items():
        for need in needs:
            if need not in deps:
                raise CompileError(
                    f"{where}[{task}]", f"depends on {need!r}, which is not a task of the pipeline"
                )
            if need == task:
                raise CompileError(f"{where}[{task}]", "depends on itself")
    done: list[str] = []
    placed: set[str] = set()
    remaining = list(deps)
    while remaining:
        ready = [task for task in remaining if all(need in placed for need in deps[task])]
        if not ready:
            raise CompileError(
                where, f"the tasks {', '.join(sorted(remaining))} depend on each other (a cycle)"
            )
        for task in ready:
            done.append(task)
            placed.add(task)
        remaining = [task for task in remaining if task not in placed]
    return done
