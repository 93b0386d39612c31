"""Approval's deployment manifests (examples/approval/config) against the real apiserver:
every one is server-side applied as a dry run, and the Deployment's arguments are parsed
by the real CLI parser. (test_approval.py runs the controller with this RBAC for real.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml

from customtask_sdk.cli import _parser, load_reconciler
from customtask_sdk.client import KubeClient, Resource
from customtask_sdk.testing.devenv import apply_manifests
from examples.approval.controller import Approval
from examples.approval.install import CLUSTER_FILES, CONFIG

NAMESPACE = "customtask-approval"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)


def resources() -> list[Path]:
    kustomization = yaml.safe_load((CONFIG / "kustomization.yaml").read_text())
    return [CONFIG / name for name in kustomization["resources"]]


@pytest_asyncio.fixture(loop_scope="session")
async def approval_namespace(kube: KubeClient) -> AsyncIterator[str]:
    existed = await kube.get_or_none(NAMESPACES.path(name=NAMESPACE))
    await apply_manifests(kube, [CONFIG / "namespace.yaml"], NAMESPACE)
    yield NAMESPACE
    if existed is None:
        await kube.delete(NAMESPACES.path(name=NAMESPACE))


async def test_every_manifest_is_accepted_by_the_apiserver(
    kube: KubeClient, approval_namespace: str
) -> None:
    listed = {path.relative_to(CONFIG).as_posix() for path in resources()}
    present = {
        path.relative_to(CONFIG).as_posix()
        for path in CONFIG.rglob("*.yaml")
        if path.name != "kustomization.yaml"
    }
    assert listed == present, "every manifest in config/ is listed in kustomization.yaml"
    assert set(CLUSTER_FILES) <= listed
    applied = await apply_manifests(kube, resources(), approval_namespace, dry_run=True)
    kinds = {obj["kind"] for obj in applied}
    assert {
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "ClusterRole",
        "Deployment",
    } <= kinds


def test_the_deployment_runs_the_approval_reconciler() -> None:
    (deployment,) = [
        doc
        for doc in yaml.safe_load_all((CONFIG / "deployment.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = _parser().parse_args(
        ["run", "examples.approval.controller:Approval", *container["args"]]
    )
    assert args.lease_name == "customtask-approval"
    assert args.workers == 64  # a decision holds a worker for two writes in sequence
    assert isinstance(load_reconciler("examples.approval.controller:Approval"), Approval)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "approval-controller"
