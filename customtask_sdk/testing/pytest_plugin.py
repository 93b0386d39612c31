"""pytest fixtures for testing custom task controllers against a real control plane.

Enable it in your ``conftest.py`` with ``pytest_plugins = ["customtask_sdk.testing.pytest_plugin"]``
(it needs the ``customtask-sdk[testing]`` extra). Fixtures:

- ``cluster`` (session): where tests run (a :class:`Cluster`).
- ``control_plane`` (session): the local :class:`ControlPlane`, with Tekton's controller
  and kube-controller-manager running (tests needing it are skipped on an external
  cluster).
- ``kube`` (session): an admin :class:`~customtask_sdk.client.KubeClient`.
- ``namespace`` (test): a fresh namespace, deleted afterwards.
- ``node`` (session): a :class:`~customtask_sdk.testing.node.Node`, a cluster of its own
  where Pods, TaskRuns and PipelineRuns run for real (root only).
- ``node_namespace`` (test): a fresh namespace on the node's cluster, with its ``default``
  ServiceAccount in place.

By default everything runs on a local control plane. With ``CUSTOMTASK_SDK_KUBECONFIG``
set, tests run against that cluster instead (say, kind with Tekton installed).

When the binaries are missing (or, for ``node``, without root) the tests are skipped
with a hint, except where ``CI`` or ``CUSTOMTASK_SDK_REQUIRE_TESTBIN`` is set, where they
fail: CI never skips them silently.
When a test using the local control plane fails, the tail of every component's log is
added to its report.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

import pytest
import pytest_asyncio

from customtask_sdk.client import KubeClient, Resource
from customtask_sdk.testing.controlplane import ControlPlane
from customtask_sdk.testing.node import Node
from customtask_sdk.testing.testbin import (
    Binaries,
    TestbinMissingError,
    locate,
    locate_node,
)

_NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
_ACTIVE: list[ControlPlane] = []
_Found = TypeVar("_Found")
_NODES: list[Node] = []


@dataclass
class Cluster:
    """Where the tests run: an admin client, and the local control plane if there is one."""

    client: KubeClient
    control_plane: ControlPlane | None

    @property
    def external(self) -> bool:
        """True when testing a cluster named by ``CUSTOMTASK_SDK_KUBECONFIG``."""
        return self.control_plane is None


def _required() -> bool:
    return any(
        os.environ.get(var, "").lower() not in ("", "0", "false")
        for var in ("CI", "CUSTOMTASK_SDK_REQUIRE_TESTBIN")
    )


def _located(find: Callable[[], _Found], what: str) -> _Found:
    """``find()``, or skip (fail where required) with why it is missing."""
    try:
        return find()
    except TestbinMissingError as exc:
        if _required():
            pytest.fail(f"{exc} (CI requires the real {what})", pytrace=False)
        pytest.skip(str(exc))


def _binaries() -> Binaries:
    return _located(locate, "control plane")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster() -> AsyncIterator[Cluster]:
    """The cluster under test, for the whole session."""
    external = os.environ.get("CUSTOMTASK_SDK_KUBECONFIG")
    if external:
        async with await KubeClient.from_kubeconfig(external) as client:
            yield Cluster(client, None)
        return
    async with ControlPlane(_binaries()) as cp:
        await cp.start_controller_manager()
        await cp.start_tekton_controller()
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
        sys.stderr.write(f"\n[customtask-sdk] control plane up: {timings}\n")
        _ACTIVE.append(cp)
        try:
            yield Cluster(cp.client, cp)
        finally:
            _ACTIVE.remove(cp)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def node() -> AsyncIterator[Node]:
    """A local cluster with a real node, for the whole session (a cluster of its own)."""
    if os.environ.get("CUSTOMTASK_SDK_KUBECONFIG"):
        pytest.skip("needs the local node; CUSTOMTASK_SDK_KUBECONFIG names another cluster")
    async with Node(_binaries(), _located(locate_node, "node")) as started:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in started.timings.items())
        sys.stderr.write(f"\n[customtask-sdk] node up: {timings}\n")
        _NODES.append(started)
        try:
            yield started
        finally:
            _NODES.remove(started)


@pytest_asyncio.fixture(loop_scope="session")
async def node_namespace(node: Node) -> AsyncIterator[str]:
    """A fresh namespace on the node's cluster (its ``default`` ServiceAccount exists),
    deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    await node.control_plane.ensure_namespace(name, {"customtask-sdk/test": "true"})
    await node.wait_service_account(name)
    yield name
    await node.client.delete(_NAMESPACES.path(name=name))


@pytest.fixture(scope="session")
def control_plane(cluster: Cluster) -> ControlPlane:
    """The local control plane (tests that control its processes need it)."""
    if cluster.control_plane is None:
        pytest.skip("needs the local control plane; CUSTOMTASK_SDK_KUBECONFIG names another")
    return cluster.control_plane


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> KubeClient:
    """An admin client of the cluster under test."""
    return cluster.client


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (with its contents) afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"customtask-sdk/test": "true"}},
    }
    await cluster.client.create(_NAMESPACES.path(), body)
    yield name
    await cluster.client.delete(_NAMESPACES.path(name=name))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the control plane's (or node's) log tails to the report of a failing test."""
    report = yield
    fixtures = getattr(item, "fixturenames", ())
    if report.failed and _ACTIVE and "cluster" in fixtures:
        report.sections.append(("control plane logs", _ACTIVE[-1].log_tails()))
    if report.failed and _NODES and "node" in fixtures:
        report.sections.append(("node logs", _NODES[-1].log_tails()))
    return report
