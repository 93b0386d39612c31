"""Resolving 50 StepAction refs: Pipeline-in-Pod's controller against Tekton's.

    PYTHONPATH=. .venv/bin/python bench/stepactions.py [--trials 5]

One local control plane (etcd + kube-apiserver, Tekton's CRDs; no node). 50 StepActions
are created; a pipeline of 10 tasks of 5 steps refers to them, either to 50 distinct
StepActions or to 5 (each task the same 5). Printed, per case:

- Pipeline-in-Pod: the wall time of the controller's resolution at a run's start (all
  StepActions of the run, fetched concurrently, then frozen in its status), its GETs of
  StepActions as the apiserver counts them (``apiserver_request_total``), and the time to
  compile the pipeline with its 50 steps inlined;
- Tekton v1.15.1's controller on the same pipeline (a PipelineRun: 10 TaskRuns, resolved
  in each TaskRun's first reconcile, 5 at a time per TaskRun): its GETs, and the time from
  creating the PipelineRun until every TaskRun's stored spec has its steps resolved.

Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import time

from customtask_sdk.client import JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient
from customtask_sdk.testing import ControlPlane
from customtask_sdk.testing.controllers import create_object
from customtask_sdk.testing.testbin import cache_dir
from examples.pipeline_in_pod.compiler import Images, RunContext, compile_pipeline
from examples.pipeline_in_pod.model import PipelineSpec, TaskSpec
from examples.pipeline_in_pod.step_action_sources import STEP_ACTIONS, fetch_step_actions
from examples.pipeline_in_pod.stepactions import StepActionSpec

NAMESPACE = "bench-stepactions"
TASKS, STEPS = 10, 5
_GETS = re.compile(
    r'^apiserver_request_total\{[^}]*resource="stepactions"[^}]*verb="GET"[^}]*\} (\d+)', re.M
)


def action(index: int) -> JSON:
    return {
        "params": [{"name": "word", "default": f"w{index}"}],
        "results": [{"name": "out"}],
        "image": "busybox",
        "env": [{"name": "W", "value": "$(params.word)"}],
        "script": 'printf "%s" "$W" > $(step.results.out.path)',
    }


def pipeline(distinct: int) -> JSON:
    """10 tasks of 5 steps; step ``j`` of task ``i`` refers to one of ``distinct`` actions."""
    tasks = []
    for i in range(TASKS):
        steps = [
            {
                "name": f"s{j}",
                "ref": {"name": f"sa-{(i * STEPS + j) % distinct}"},
                "params": [{"name": "word", "value": f"t{i}s{j}"}],
            }
            for j in range(STEPS)
        ]
        tasks.append({"name": f"t{i}", "taskSpec": {"steps": steps}})
    return {"tasks": tasks}


def gets(cp: ControlPlane) -> int:
    """StepAction GETs the apiserver has answered so far (summed over codes)."""
    kubectl = sorted(cache_dir().glob("testbin/kubernetes-node-*/kubectl"))[-1]
    text = subprocess.run(
        [str(kubectl), f"--kubeconfig={cp.kubeconfig}", "get", "--raw", "/metrics"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(int(count) for count in _GETS.findall(text))


async def ours(cp: ControlPlane, spec: JSON, trials: int) -> dict[str, float]:
    parsed = PipelineSpec.model_validate(spec)
    tasks = {p.name: p.taskSpec.model_dump(exclude_unset=True) for p in parsed.tasks if p.taskSpec}
    seconds, calls = [], []
    frozen: JSON = {}
    for _ in range(trials):
        before = gets(cp)
        start = time.perf_counter()
        frozen = await fetch_step_actions(cp.client, NAMESPACE, tasks)
        seconds.append(time.perf_counter() - start)
        calls.append(gets(cp) - before)
    actions = {name: StepActionSpec.model_validate(body) for name, body in frozen.items()}
    specs = {name: TaskSpec.model_validate(body) for name, body in tasks.items()}
    ctx = RunContext(name="r", namespace=NAMESPACE, uid="u", pipeline="p", pipeline_run="r")
    compiles = []
    for _ in range(trials):
        start = time.perf_counter()
        compile_pipeline(parsed, specs, {}, [], ctx, Images("ep", "nop", "sh"), actions)
        compiles.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(seconds),
        "gets": statistics.median(calls),
        "compile": statistics.median(compiles),
    }


def resolved(run: JSON) -> bool:
    steps = ((run.get("status") or {}).get("taskSpec") or {}).get("steps") or []
    return bool(steps) and all("ref" not in step for step in steps)


async def tekton(cp: ControlPlane, kube: KubeClient, spec: JSON) -> dict[str, float]:
    before = gets(cp)
    start = time.perf_counter()
    run = await create_object(kube, PIPELINE_RUNS, NAMESPACE, {"pipelineSpec": spec})
    name = run["metadata"]["name"]
    params = {"labelSelector": f"tekton.dev/pipelineRun={name}"}
    while True:
        runs = (await kube.get(TASK_RUNS.path(NAMESPACE), params))["items"]
        if len(runs) == TASKS and all(resolved(run) for run in runs):
            break
        if time.perf_counter() - start > 120:
            raise TimeoutError("Tekton did not resolve every TaskRun in 120 s")
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - start
    await asyncio.sleep(2)  # let late reconciles land before counting
    calls = gets(cp) - before
    await kube.delete(PIPELINE_RUNS.path(NAMESPACE, name))
    return {"seconds": seconds, "gets": calls}


async def main(args: argparse.Namespace) -> None:
    async with ControlPlane() as cp:
        kube = cp.client
        await cp.ensure_namespace(NAMESPACE)
        for index in range(TASKS * STEPS):
            await create_object(kube, STEP_ACTIONS, NAMESPACE, action(index), name=f"sa-{index}")
        rows = []
        for distinct in (TASKS * STEPS, STEPS):
            rows.append((distinct, await ours(cp, pipeline(distinct), args.trials)))
        await cp.start_tekton_controller()
        theirs = [(d, await tekton(cp, kube, pipeline(d))) for d in (TASKS * STEPS, STEPS)]
    print(f"\n{TASKS * STEPS} step refs (10 tasks x 5 steps), median of {args.trials}:")
    print(
        "distinct StepActions | Pipeline-in-Pod resolve | its GETs | compile | "
        "Tekton resolve | Tekton GETs"
    )
    for (distinct, mine), (_, other) in zip(rows, theirs, strict=True):
        print(
            f"{distinct} | {mine['seconds'] * 1000:.0f} ms | {mine['gets']:.0f} | "
            f"{mine['compile'] * 1000:.0f} ms | {other['seconds'] * 1000:.0f} ms | "
            f"{other['gets']:.0f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
