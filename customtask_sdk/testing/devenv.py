"""A local development environment: the control plane, Tekton's controller, your controllers.

``customtask-sdk dev up -c pkg.module:Class -f pipeline.yaml`` starts everything, applies
the manifests, and prints every PipelineRun and CustomRun state change until the
PipelineRuns finish. As root, with the node installed, it runs a real node too, so Tekton
tasks run in Pods beside the custom tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from customtask_sdk.client import (
    CUSTOM_RUNS,
    JSON,
    PIPELINE_RUNS,
    TASK_RUNS,
    Discovery,
    KubeClient,
    Resource,
)
from customtask_sdk.reconciler import Reconciler
from customtask_sdk.reconciler.objects import ObjectReconciler
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.controlplane import ControlPlane
from customtask_sdk.testing.node import Node
from customtask_sdk.testing.testbin import TestbinMissingError, locate_node
from customtask_sdk.testing.waiting import condition

__all__ = ["apply_manifests", "follow", "run_dev"]

_FIELD_MANAGER = "customtask-sdk-dev"


async def apply_manifests(
    client: KubeClient, paths: Sequence[Path], namespace: str, *, dry_run: bool = False
) -> list[JSON]:
    """Server-side apply every document of ``paths`` (namespaced ones into ``namespace``);
    one with ``generateName`` and no ``name`` is created, as ``kubectl create`` does."""
    discovery = Discovery(client)
    applied = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            resource = await discovery.resource(doc["apiVersion"], doc["kind"])
            if resource.namespaced:
                doc["metadata"].setdefault("namespace", namespace)
            meta = doc["metadata"]
            if "name" not in meta and "generateName" in meta:
                params = {"dryRun": "All"} if dry_run else None
                collection = resource.path(meta.get("namespace"))
                applied.append(await client.create(collection, doc, params=params))
            else:
                applied.append(await client.apply(resource, doc, _FIELD_MANAGER, dry_run=dry_run))
    return applied


def _describe(obj: JSON) -> str:
    cond = condition(obj) or {}
    state = cond.get("status", "-")
    reason = cond.get("reason", "")
    message = cond.get("message", "")
    return f"Succeeded={state:<7} {reason:<22} {message}".rstrip()


async def follow(
    client: KubeClient,
    namespace: str,
    pipeline_runs: Sequence[str],
    out: TextIO,
    timeout: float,
) -> bool:
    """Print PipelineRun, CustomRun and TaskRun state changes until ``pipeline_runs`` are
    done.

    Returns True if they all succeeded, False on failure or after ``timeout`` seconds.
    """
    started = time.monotonic()
    seen: dict[str, str] = {}
    done: dict[str, bool] = {}

    def show(kind: str, obj: JSON) -> None:
        key = f"{kind}/{obj['metadata']['name']}"
        line = _describe(obj)
        if seen.get(key) != line:
            seen[key] = line
            out.write(f"{time.monotonic() - started:7.1f}s  {key:<48} {line}\n")
            out.flush()

    async def watch(resource: Resource, kind: str) -> None:
        page = await client.get(resource.path(namespace))
        for item in page["items"]:
            show(kind, item)
        params = {"resourceVersion": page["metadata"]["resourceVersion"]}
        async for event in client.watch(resource.path(namespace), params):
            obj = event["object"]
            if event["type"] == "BOOKMARK":
                continue
            show(kind, obj)
            name = obj["metadata"]["name"]
            cond = condition(obj) or {}
            if (
                kind == "pipelinerun"
                and name in pipeline_runs
                and cond.get("status")
                in (
                    "True",
                    "False",
                )
            ):
                done[name] = cond["status"] == "True"
                if len(done) == len(pipeline_runs):
                    return

    runs_watches = [
        asyncio.create_task(watch(CUSTOM_RUNS, "customrun")),
        asyncio.create_task(watch(TASK_RUNS, "taskrun")),
    ]
    try:
        await asyncio.wait_for(watch(PIPELINE_RUNS, "pipelinerun"), timeout)
    except TimeoutError:
        out.write(f"not finished after {timeout:.0f}s\n")
        idle = [k for k, line in seen.items() if k.startswith("customrun/") and "=-" in line]
        if idle:
            names = ", ".join(idle)
            out.write(f"no controller acted on {names}: is a controller for its kind running?\n")
        return False
    finally:
        for runs_watch in runs_watches:
            runs_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runs_watch
    return all(done.values())


async def run_dev(
    manifests: Sequence[Path],
    out: TextIO,
    *,
    reconcilers: Sequence[Reconciler[Any] | ObjectReconciler] = (),
    namespace: str = "default",
    timeout: float = 300.0,
    keep_running: bool = False,
    node: bool | None = None,
) -> bool:
    """Start the control plane, Tekton's controller and ``reconcilers`` (in this process),
    apply ``manifests`` and follow their PipelineRuns until they finish.

    With ``node`` (by default: when :func:`locate_node` finds it, as root) a real node
    runs Tekton's tasks in Pods.
    """
    if node is None:
        try:
            locate_node()
            node = True
        except TestbinMissingError as exc:
            out.write(f"no node ({exc}): Tekton tasks will not run, custom tasks will\n")
            node = False
    async with contextlib.AsyncExitStack() as stack:
        if node:
            started = await stack.enter_async_context(Node())
            cp = started.control_plane
            ready = started.timings["node-ready"]
            out.write(f"node {started.name} ready in {ready:.1f}s ({cp.host})\n")
        else:
            cp = await stack.enter_async_context(ControlPlane())
            out.write(f"control plane ready in {cp.timings['total']:.1f}s ({cp.host})\n")
            await cp.start_controller_manager()
            await cp.start_tekton_controller()
        out.write(f"Tekton {cp.binaries.versions.tekton} controller running\n")
        for reconciler in reconcilers:
            await stack.enter_async_context(running(cp.client, reconciler, health_port=None))
            out.write(f"{reconciler.name} controller running\n")
        out.write(f"  export KUBECONFIG={cp.kubeconfig}\n  logs: {cp.log_dir}\n")
        applied = await apply_manifests(cp.client, manifests, namespace)
        names = [o["metadata"]["name"] for o in applied if o["kind"] == "PipelineRun"]
        out.write(f"applied {len(applied)} objects; following PipelineRuns {names}\n")
        ok = await follow(cp.client, namespace, names, out, timeout) if names else True
        out.write("all PipelineRuns succeeded\n" if ok else "some PipelineRuns did not succeed\n")
        if keep_running:
            out.write("control plane still running; Ctrl-C (or SIGTERM) to stop\n")
            out.flush()
            await asyncio.Event().wait()
        return ok
