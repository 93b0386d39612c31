"""Test integrators' controllers against a real control plane (etcd, kube-apiserver, Tekton).

``customtask-sdk testbin install`` builds the binaries once; :class:`ControlPlane` runs
them; the pytest plugin ``customtask_sdk.testing.pytest_plugin`` provides the
``control_plane``, ``kube`` and ``namespace`` fixtures; :class:`Node` (root) runs Pods for
real beside its own control plane (the ``node`` fixture). See ``docs/testing.md``.
"""

from customtask_sdk.testing.controlplane import TEKTON_NAMESPACE, ControlPlane, ControlPlaneError
from customtask_sdk.testing.node import Node, NodeError, NodeNetwork
from customtask_sdk.testing.testbin import (
    PINNED,
    Binaries,
    TestbinMissingError,
    Versions,
    install,
    locate,
)
from customtask_sdk.testing.waiting import condition, wait_deleted, wait_for

__all__ = [
    "PINNED",
    "TEKTON_NAMESPACE",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "Node",
    "NodeError",
    "NodeNetwork",
    "TestbinMissingError",
    "Versions",
    "condition",
    "install",
    "locate",
    "wait_deleted",
    "wait_for",
]
