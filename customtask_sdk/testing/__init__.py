"""Test integrators' controllers: offline with a fake clock, or against a real control plane.

Without a cluster: :class:`Harness` steps a CustomRun through a reconciler with a
:class:`FakeClock` (no extra needed). With one: ``customtask-sdk testbin install`` builds
the binaries once; :class:`ControlPlane` runs them (etcd, kube-apiserver, Tekton);
:func:`running` runs a reconciler in the test; :class:`Node` (root) runs Pods for real
beside its own control plane; the pytest plugin ``customtask_sdk.testing.pytest_plugin``
provides the ``control_plane``, ``kube``, ``namespace`` and ``node`` fixtures. See
``docs/testing.md``.

Names are imported on first use, so the offline helpers work without the ``[testing]``
extra (cryptography, pytest), which only the control plane and the plugin need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customtask_sdk.testing.clock import FakeClock
    from customtask_sdk.testing.controllers import (
        controller_process,
        create_custom_run,
        create_object,
        running,
    )
    from customtask_sdk.testing.controlplane import (
        TEKTON_NAMESPACE,
        ControlPlane,
        ControlPlaneError,
    )
    from customtask_sdk.testing.harness import Harness, SimulatedRun, StepRecord
    from customtask_sdk.testing.node import Node, NodeError, NodeNetwork
    from customtask_sdk.testing.proxy import TcpProxy
    from customtask_sdk.testing.testbin import (
        PINNED,
        Binaries,
        TestbinMissingError,
        Versions,
        install,
        locate,
    )
    from customtask_sdk.testing.waiting import condition, wait_deleted, wait_for

_MODULES = {
    "clock": ["FakeClock"],
    "controllers": ["controller_process", "create_custom_run", "create_object", "running"],
    "controlplane": ["TEKTON_NAMESPACE", "ControlPlane", "ControlPlaneError"],
    "harness": ["Harness", "SimulatedRun", "StepRecord"],
    "node": ["Node", "NodeError", "NodeNetwork"],
    "proxy": ["TcpProxy"],
    "testbin": ["PINNED", "Binaries", "TestbinMissingError", "Versions", "install", "locate"],
    "waiting": ["condition", "wait_deleted", "wait_for"],
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "PINNED",
    "TEKTON_NAMESPACE",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "FakeClock",
    "Harness",
    "Node",
    "NodeError",
    "NodeNetwork",
    "SimulatedRun",
    "StepRecord",
    "TcpProxy",
    "TestbinMissingError",
    "Versions",
    "condition",
    "controller_process",
    "create_custom_run",
    "create_object",
    "install",
    "locate",
    "running",
    "wait_deleted",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
