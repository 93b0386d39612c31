"""Pipeline-in-Pod's command line: compile a Pipeline offline, or watch a run's tasks.

    python -m examples.pipeline_in_pod compile pipeline.yaml [-p name=value ...]
    python -m examples.pipeline_in_pod watch <namespace> <customrun>
    python -m examples.pipeline_in_pod demo [--namespace default]

``compile`` prints the Pod (YAML) that one run of the Pipeline would make: a file holding
a ``tekton.dev/v1`` Pipeline and the Tasks its ``taskRef``\\ s name (and the StepActions
their steps ``ref``). ``watch`` prints each
task's state whenever it changes, until the run ends. ``demo`` runs the sample
build-and-test PipelineRun (``pipelinerun.yaml``) on the cluster of your kubeconfig (Tekton
and a node needed, e.g. ``sudo hack/up.sh``), with the controller in this process, and
watches its tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from customtask_sdk.client import CUSTOM_RUNS, PIPELINE_RUNS, KubeClient
from customtask_sdk.runtime import Manager
from customtask_sdk.testing import condition, wait_for
from examples.pipeline_in_pod.compiler import CompileError, RunContext, compile_pipeline
from examples.pipeline_in_pod.controller import PIPELINES, TASKS, PipelineInPod, images_from_env
from examples.pipeline_in_pod.hermetic import kept, task_spec
from examples.pipeline_in_pod.model import PipelineSpec, TaskSpec
from examples.pipeline_in_pod.stepactions import StepActionSpec


def _task_specs(
    path: Path, spec: PipelineSpec, named: dict[str, Any], prefix: str = ""
) -> dict[str, TaskSpec]:
    """Each task's spec by name (an embedded child pipeline's as ``<child>-<task>``)."""
    tasks: dict[str, TaskSpec] = {}
    for ptask in [*spec.tasks, *spec.finally_]:
        name = f"{prefix}{ptask.name}"
        if ptask.taskSpec is not None:
            tasks[name] = ptask.taskSpec
        elif ptask.pipelineSpec is not None:
            tasks.update(_task_specs(path, ptask.pipelineSpec, named, f"{name}-"))
        elif ptask.taskRef is not None and ptask.taskRef.is_custom:
            continue  # runs as a CustomRun
        elif ptask.taskRef is not None and ptask.taskRef.name in named:
            tasks[name] = TaskSpec.model_validate(named[ptask.taskRef.name])
        else:
            raise SystemExit(f"{path}: task {name!r} names a Task (or Pipeline) not in the file")
    return tasks


def compile_file(path: Path, params: dict[str, str]) -> dict[str, Any]:
    """The Pod spec for the Pipeline in ``path`` (its Tasks and StepActions from the same
    file)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    pipelines = [d for d in docs if d.get("kind") == "Pipeline"]
    if len(pipelines) != 1:
        raise SystemExit(f"{path}: expected one Pipeline, found {len(pipelines)}")
    named = {d["metadata"]["name"]: task_spec(d) for d in docs if d.get("kind") == "Task"}
    spec = PipelineSpec.model_validate(pipelines[0]["spec"])
    tasks = _task_specs(path, spec, named)
    name = pipelines[0]["metadata"]["name"]
    annotations = kept(pipelines[0]["metadata"].get("annotations"))
    ctx = RunContext(
        name=name,
        namespace="default",
        uid="",
        pipeline=name,
        pipeline_run=name,
        annotations=annotations,
    )
    actions = {
        d["metadata"]["name"]: StepActionSpec.model_validate(d.get("spec") or {})
        for d in docs
        if d.get("kind") == "StepAction"
    }
    plan = compile_pipeline(spec, tasks, dict(params), [], ctx, images_from_env(), actions)
    return plan.pod_spec


async def watch(namespace: str, name: str) -> bool:
    """Print each task's state as it changes; True when the run succeeded."""
    async with await KubeClient.from_kubeconfig() as kube:
        return await follow(kube, namespace, name)


async def follow(kube: KubeClient, namespace: str, name: str, timeout: float = 86400) -> bool:
    """Print run ``name``'s task states as they change until it ends; True if it succeeded."""
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

    run = await wait_for(kube, CUSTOM_RUNS, namespace, name, changed, timeout)
    found = condition(run) or {}
    print(f"{name}: {found.get('reason')}: {found.get('message')}")
    return found.get("status") == "True"


SAMPLE = Path(__file__).with_name("pipelinerun.yaml")


async def demo(namespace: str, timeout: float) -> bool:
    """Run the sample with the controller in this process; True if it succeeded."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    async with await KubeClient.from_kubeconfig() as kube:
        for doc in docs[:-1]:  # the Task and the Pipeline, as written here
            resource = TASKS if doc["kind"] == "Task" else PIPELINES
            body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
            await kube.apply(resource, body, "pipeline-in-pod-demo")
        manager = Manager(kube, [PipelineInPod()], namespace=namespace, health_port=None)
        stop = asyncio.Event()
        running = asyncio.create_task(manager.run(stop))
        try:
            made = await kube.create(PIPELINE_RUNS.path(namespace), docs[-1])
            name = made["metadata"]["name"]
            print(f"PipelineRun {namespace}/{name}", flush=True)

            def child(obj: dict[str, Any]) -> bool:
                return bool((obj.get("status") or {}).get("childReferences"))

            listed = await wait_for(kube, PIPELINE_RUNS, namespace, name, child, timeout)
            run = listed["status"]["childReferences"][0]["name"]
            print(f"CustomRun {run}: one Pod for the pipeline build-and-test", flush=True)
            return await follow(kube, namespace, run, timeout)
        finally:
            stop.set()
            await running


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
    demoing = commands.add_parser("demo", help="run the sample build-and-test pipeline")
    demoing.add_argument("--namespace", default="default")
    demoing.add_argument("--timeout", type=float, default=600, help="seconds")
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
    if args.command == "demo":
        return 0 if asyncio.run(demo(args.namespace, args.timeout)) else 1
    return 0 if asyncio.run(watch(args.namespace, args.name)) else 1


if __name__ == "__main__":
    sys.exit(main())
