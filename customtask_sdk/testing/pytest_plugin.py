"""pytest fixtures for testing custom task controllers against a real control plane.

Enable it in your ``conftest.py`` with ``pytest_plugins = ["customtask_sdk.testing.pytest_plugin"]``
(it needs the ``customtask-sdk[testing]`` extra). Fixtures:

- ``control_plane`` (session): a started :class:`ControlPlane` with Tekton's controller
  and kube-controller-manager running.
- ``kube`` (session): its admin :class:`~customtask_sdk.client.KubeClient`.
- ``namespace`` (test): a fresh namespace, deleted afterwards.

When the binaries are missing the tests are skipped with a hint, except where ``CI`` or
``CUSTOMTASK_SDK_REQUIRE_TESTBIN`` is set, where they fail: CI never skips them silently.
When a test using the control plane fails, the tail of every component's log is added to
its report.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Generator

import pytest
import pytest_asyncio

from customtask_sdk.client import KubeClient, Resource
from customtask_sdk.testing.controlplane import ControlPlane
from customtask_sdk.testing.testbin import Binaries, TestbinMissingError, locate

_NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
_ACTIVE: list[ControlPlane] = []


def _required() -> bool:
    return any(
        os.environ.get(var, "").lower() not in ("", "0", "false")
        for var in ("CI", "CUSTOMTASK_SDK_REQUIRE_TESTBIN")
    )


def _binaries() -> Binaries:
    try:
        return locate()
    except TestbinMissingError as exc:
        if _required():
            pytest.fail(f"{exc} (CI requires the real control plane)", pytrace=False)
        pytest.skip(str(exc))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def control_plane() -> AsyncIterator[ControlPlane]:
    """A real control plane for the whole session, with Tekton's controller running."""
    async with ControlPlane(_binaries()) as cp:
        await cp.start_controller_manager()
        await cp.start_tekton_controller()
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
        sys.stderr.write(f"\n[customtask-sdk] control plane up: {timings}\n")
        _ACTIVE.append(cp)
        try:
            yield cp
        finally:
            _ACTIVE.remove(cp)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kube(control_plane: ControlPlane) -> KubeClient:
    """The control plane's admin client."""
    return control_plane.client


@pytest_asyncio.fixture(loop_scope="session")
async def namespace(control_plane: ControlPlane) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (with its contents) afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    await control_plane.ensure_namespace(name, labels={"customtask-sdk/test": "true"})
    yield name
    await control_plane.client.delete(_NAMESPACES.path(name=name))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the control plane's log tails to the report of a failing test."""
    report = yield
    if report.failed and _ACTIVE and "control_plane" in getattr(item, "fixturenames", ()):
        report.sections.append(("control plane logs", _ACTIVE[-1].log_tails()))
    return report
