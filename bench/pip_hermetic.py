"""The per-step cost of hermetic execution: the same step, with and without
``TEKTON_HERMETIC=1`` (new user, mount, PID and network namespaces per step). Root only.

    sudo .venv/bin/python bench/pip_hermetic.py [--runs 200] [--trials 3] [--no-node]

Prints three figures, hermetic against not, interleaved:

1. on this machine: Tekton's entrypoint run as a process on ``/bin/true`` (process start
   included, the same for both): milliseconds per step;
2. on the real node, inside one container (containerd + runc, the securityContext
   Pipeline-in-Pod's steps get): the same loop, timed by ``/proc/uptime``;
3. on the real node, end to end: a Pipeline-in-Pod run of one task of 1 and of 5 steps,
   create -> Succeeded (the hermetic one also runs its check init container).

Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from customtask_sdk.client import CUSTOM_RUNS, JSON, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.node import Node
from customtask_sdk.testing.testbin import cache_dir
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import PipelineInPod, custom_run
from examples.pipeline_in_pod.hermetic import EXECUTION_MODE

PODS = Resource("", "v1", "pods", "Pod")
NAMESPACE = "bench-hermetic"
MODES = ("plain", "hermetic")


def entrypoint() -> Path:
    return sorted(cache_dir().glob("testbin/tekton-*/entrypoint"))[-1]


def on_host(runs: int) -> dict[str, list[float]]:
    """Milliseconds per entrypoint run of ``/bin/true``, per mode, interleaved."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        argv = [str(entrypoint()), "-post_file", f"{tmp}/out", "-termination_path"]
        argv += [f"{tmp}/term", "-step_metadata_dir", f"{tmp}/status", "-entrypoint", "true"]
        argv.append("--")
        for _ in range(runs):
            for mode in MODES:
                env = {"PATH": os.environ["PATH"]}
                if mode == "hermetic":
                    env["TEKTON_HERMETIC"] = "1"
                Path(f"{tmp}/term").unlink(missing_ok=True)  # the entrypoint appends to it
                started = time.perf_counter()
                done = subprocess.run(argv, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{mode}: {done.stderr}")
                times[mode].append((time.perf_counter() - started) * 1000)
    return times


def loop_pod(node: Node, runs: int, rounds: int) -> JSON:
    """A Pod whose container runs the entrypoint ``runs`` times per mode, ``rounds`` times."""
    script = (
        "run() { rm -f /tmp/t; /tekton/bin/entrypoint -post_file /tmp/o -termination_path /tmp/t"
        " -step_metadata_dir /tmp/s -entrypoint true -- >/dev/null 2>&1; }\n"
        f"for r in $(seq {rounds}); do for mode in {' '.join(MODES)}; do\n"
        "  if [ $mode = hermetic ]; then export TEKTON_HERMETIC=1; else unset TEKTON_HERMETIC; fi\n"
        "  read a _ < /proc/uptime\n"
        f"  i=0; while [ $i -lt {runs} ]; do run || exit 1; i=$((i+1)); done\n"
        "  read b _ < /proc/uptime\n"
        '  echo "$mode $a $b"\n'
        "done; done\n"
    )
    bin_mount = [{"name": "bin", "mountPath": "/tekton/bin"}]
    image = node.tekton_images["entrypoint-image"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"loop-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {
                    "name": "prepare",
                    "image": image,
                    "command": [
                        "/ko-app/entrypoint",
                        "cp",
                        "/ko-app/entrypoint",
                        "/tekton/bin/entrypoint",
                    ],
                    "volumeMounts": bin_mount,
                }
            ],
            "containers": [
                {
                    "name": "loop",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "volumeMounts": bin_mount,
                }
            ],
            "volumes": [{"name": "bin", "emptyDir": {}}],
        },
    }


async def in_container(node: Node, runs: int, rounds: int) -> dict[str, list[float]]:
    body = loop_pod(node, runs, rounds)
    name = body["metadata"]["name"]
    await node.client.create(PODS.path(NAMESPACE), body)

    def ended(pod: JSON) -> bool:
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    pod = await wait_for(node.client, PODS, NAMESPACE, name, ended, timeout=600)
    kubectl = [str(node.node_binaries.kubectl), f"--kubeconfig={node.control_plane.kubeconfig}"]
    done = await asyncio.create_subprocess_exec(
        *kubectl, "logs", "-n", NAMESPACE, name, stdout=asyncio.subprocess.PIPE
    )
    logs = (await done.communicate())[0].decode()
    if pod["status"]["phase"] != "Succeeded":
        raise SystemExit(f"the loop Pod failed: {logs}")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for line in logs.splitlines():
        mode, start, end = line.split()
        times[mode].append((float(end) - float(start)) * 1000 / runs)
    return times


def pipeline(steps: int, hermetic: bool) -> JSON:
    spec: JSON = {
        "steps": [{"name": f"s{i}", "image": "busybox", "command": ["true"]} for i in range(steps)]
    }
    if hermetic:
        spec["metadata"] = {"annotations": {EXECUTION_MODE: "hermetic"}}
    return {"pipelineSpec": {"tasks": [{"name": "t", "taskSpec": spec}]}}


async def end_to_end(node: Node, steps: int, hermetic: bool) -> float:
    name = f"h-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    await node.client.create(
        CUSTOM_RUNS.path(NAMESPACE), custom_run(name, pipeline(steps, hermetic))
    )

    def done(run: JSON) -> bool:
        return (condition(run) or {}).get("status") in ("True", "False")

    run = await wait_for(node.client, CUSTOM_RUNS, NAMESPACE, name, done, timeout=300)
    assert (condition(run) or {}).get("status") == "True", run["status"]
    return time.monotonic() - started


def show(what: str, times: dict[str, list[float]], unit: str = "ms") -> None:
    plain, hermetic = (statistics.median(times[mode]) for mode in MODES)
    print(
        f"{what}: not hermetic {plain:.2f} {unit}, hermetic {hermetic:.2f} {unit}, "
        f"difference {hermetic - plain:+.2f} {unit} (medians, n={len(times['plain'])} each)"
    )


async def on_node(runs: int, trials: int) -> None:
    async with Node() as node:
        await node.control_plane.ensure_namespace(NAMESPACE, {})
        await node.wait_service_account(NAMESPACE)
        show("per step, in a container on the node", await in_container(node, runs, 3))
        reconciler = PipelineInPod(images=Images.served(node.tekton_images))
        async with running(node.client, reconciler, namespace=NAMESPACE):
            await end_to_end(node, 1, True)  # warm: images, caches
            for steps in (1, 5):
                times: dict[str, list[float]] = {mode: [] for mode in MODES}
                for _ in range(trials):
                    for mode in MODES:
                        times[mode].append(await end_to_end(node, steps, mode == "hermetic"))
                show(f"a {steps}-step task, create -> Succeeded", times, "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-node", action="store_true", help="only the figure on this machine")
    args = parser.parse_args()
    show("per step, the entrypoint as a process on this machine", on_host(args.runs))
    if not args.no_node:
        asyncio.run(on_node(args.runs, args.trials))


if __name__ == "__main__":
    main()
