"""Running reconcilers inside a test, and creating CustomRuns for them."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customtask_sdk.client import CUSTOM_RUNS, JSON, KubeClient, Resource
from customtask_sdk.reconciler import Reconciler
from customtask_sdk.reconciler.objects import ObjectReconciler
from customtask_sdk.runtime import Manager
from customtask_sdk.testing.processes import ManagedProcess

if TYPE_CHECKING:  # the control plane needs the [testing] extra; running() does not
    from customtask_sdk.testing.controlplane import ControlPlane

__all__ = ["controller_process", "create_custom_run", "create_object", "running"]


@contextlib.asynccontextmanager
async def running(
    client: KubeClient, *reconcilers: Reconciler[Any] | ObjectReconciler, **manager_options: Any
) -> AsyncIterator[Manager]:
    """Run a :class:`Manager` for ``reconcilers`` in the background while the block runs.

    Yields once its caches are synced; stops it gracefully afterwards. Options go to
    :class:`Manager` (``health_port`` defaults to 0: any free port).
    """
    manager_options.setdefault("health_port", 0)
    manager = Manager(client, reconcilers, **manager_options)
    stop = asyncio.Event()
    task: asyncio.Future[Any] = asyncio.create_task(manager.run(stop))
    synced: asyncio.Future[Any] = asyncio.gather(*(i.synced.wait() for i in manager.informers))
    done, _ = await asyncio.wait([task, synced], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        synced.cancel()
        await task  # raises what stopped it
    try:
        yield manager
    finally:
        stop.set()
        await task


async def create_custom_run(
    client: KubeClient,
    namespace: str,
    api_version: str,
    kind: str,
    params: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    embedded_spec: Mapping[str, Any] | None = None,
    **spec: Any,
) -> JSON:
    """Create a CustomRun as Tekton would: ``customRef`` (or ``customSpec`` when
    ``embedded_spec`` is given), params, and any other spec fields (``timeout="10s"``,
    ``retries=1``...)."""
    body_spec: JSON = dict(spec)
    if embedded_spec is not None:
        body_spec["customSpec"] = {
            "apiVersion": api_version,
            "kind": kind,
            "spec": dict(embedded_spec),
        }
    else:
        body_spec["customRef"] = {"apiVersion": api_version, "kind": kind}
    if params:
        body_spec["params"] = [{"name": k, "value": v} for k, v in params.items()]
    body = {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": name or f"{kind.lower()}-{uuid.uuid4().hex[:8]}"},
        "spec": body_spec,
    }
    return await client.create(CUSTOM_RUNS.path(namespace), body)


async def create_object(
    client: KubeClient,
    resource: Resource,
    namespace: str,
    spec: Mapping[str, Any],
    *,
    name: str | None = None,
) -> JSON:
    """Create an object of ``resource`` (a PipelineRun, a Task, a TaskRun...) with ``spec``,
    named ``name`` or ``<kind>-<random>``; returns it as the apiserver stored it."""
    body = {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name or f"{resource.kind.lower()}-{uuid.uuid4().hex[:6]}"},
        "spec": dict(spec),
    }
    return await client.create(resource.path(namespace), body)


def controller_process(
    control_plane: ControlPlane,
    reconciler: str,
    *args: str,
    namespace: str | None = None,
    app_dir: Path | None = None,
    name: str | None = None,
) -> ManagedProcess:
    """``customtask-sdk run <pkg.module:Class> [args]`` on the control plane, as a process of
    its own: for crash, restart and signal tests. Start it with ``await proc.start()``."""
    argv = [
        sys.executable,
        "-m",
        "customtask_sdk.cli",
        "run",
        reconciler,
        f"--kubeconfig={control_plane.kubeconfig}",
        "--health-port=0",
    ]
    if namespace:
        argv.append(f"--namespace={namespace}")
    if app_dir:
        argv.append(f"--app-dir={app_dir}")
    argv += args
    label = name or f"controller-{namespace or 'all'}"
    return ManagedProcess(label, argv, control_plane.log_dir, cwd=app_dir)
