"""Pipeline-in-Pod's command line: compile a Pipeline offline, or watch a run's tasks.

    python -m examples.pipeline_in_pod compile pipeline.yaml [-p name=value ...]
    python -m examples.pipeline_in_pod watch <namespace> <customrun>

``compile`` prints the Pod (YAML) that one run of the Pipeline would make: a file holding
a ``tekton.dev/v1`` Pipeline and the Tasks its ``taskRef``\\ s name. ``watch`` prints each
task's state whenever it changes, until the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from customtask_sdk.client import CUSTOM_RUNS, KubeClient
from customtask_sdk.testing import condition, wait_for
from examples.pipeline_in_pod.compiler import CompileError, RunContext, compile_pipeline
from examples.pipeline_in_pod.controller import images_from_env
from examples.pipeline_in_pod.model import PipelineSpec, TaskSpec


def compile_file(path: Path, params: dict[str, str]) -> dict[str, Any]:
    """The Pod spec for the Pipeline in ``path`` (its Tasks from the same file)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pipelines = [d for d in docs if d.get("kind") == "Pipeline"]
    if len(pipelines) != 1:
        raise SystemExit(f"{path}: expected one Pipeline, found {len(pipelines)}")
    named = {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "Task"}
    spec = PipelineSpec.model_validate(pipelines[0]["spec"])
    tasks: dict[str, TaskSpec] = {}
    for ptask in [*spec.tasks, *spec.finally_]:
        if ptask.taskSpec is not None:
            tasks[ptask.name] = ptask.taskSpec
        elif ptask.taskRef is not None and ptask.taskRef.name in named:
            tasks[ptask.name] = TaskSpec.model_validate(named[ptask.taskRef.name])
        else:
            raise SystemExit(f"{path}: task {ptask.name!r} names a Task not in the file")
    name = pipelines[0]["metadata"]["name"]
    ctx = RunContext(name=name, namespace="default", uid="", pipeline=name, pipeline_run=name)
    plan = compile_pipeline(spec, tasks, dict(params), [], ctx, images_from_env())
    return plan.pod_spec


async def watch(namespace: str, name: str) -> bool:
    """Print each task's state as it changes; True when the run succeeded."""
    async with await KubeClient.from_kubeconfig() as kube:
        seen: dict[str, str] = {}

        def changed(run: dict[str, Any]) -> bool:
            tasks = ((run.get("status") or {}).get("extraFields") or {}).get("tasks") or []
            for task in tasks:
                state = f"{task['state']} ({task.get('reason', '')})"
                if seen.get(task["name"]) != state:
                    seen[task["name"]] = state
                    print(f"{task['name']:<24} {state}", flush=True)
            found = condition(run) or {}
            return found.get("status") in ("True", "False")

        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, changed, timeout=24 * 3600)
        found = condition(run) or {}
        print(f"{name}: {found.get('reason')}: {found.get('message')}")
        return found.get("status") == "True"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m examples.pipeline_in_pod")
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser("compile", help="print the Pod a Pipeline compiles to")
    compile_.add_argument("file", type=Path)
    compile_.add_argument("-p", "--param", action="append", default=[], help="name=value")
    watching = commands.add_parser("watch", help="print a run's task states as they change")
    watching.add_argument("namespace")
    watching.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "compile":
        params = dict(item.split("=", 1) for item in args.param)
        try:
            pod = compile_file(args.file, params)
        except CompileError as exc:
            print(f"{exc.reason}: {exc.field}: {exc.message}", file=sys.stderr)
            return 1
        yaml.safe_dump(pod, sys.stdout, sort_keys=False)
        return 0
    return 0 if asyncio.run(watch(args.namespace, args.name)) else 1


if __name__ == "__main__":
    sys.exit(main())
