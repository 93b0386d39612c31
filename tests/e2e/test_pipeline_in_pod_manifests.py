"""Pipeline-in-Pod's deployment manifests (examples/pipeline_in_pod/config) on the apiserver.

Every manifest is server-side applied with a dry run (validated and admitted, not stored),
the controller's Pod passes the restricted Pod Security Standard, and the roles grant
exactly the calls the controller makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml

from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.testing.devenv import apply_manifests

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "pipeline_in_pod" / "config"
NAMESPACE = "customtask-pipeline-in-pod"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")

#: The SDK's calls (CustomRuns, their status, Events), the Pipeline and Tasks read at the
#: start, and the Pods: created, watched, patched (ready, sidecars), deleted (cancel).
CLUSTER_WIDE = {
    ("tekton.dev", "customruns"): {"get", "list", "watch", "create", "patch"},
    ("tekton.dev", "customruns/status"): {"get", "patch", "update"},
    ("tekton.dev", "pipelines"): {"get"},
    ("tekton.dev", "tasks"): {"get"},
    ("", "pods"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
}


def documents() -> list[JSON]:
    listed = yaml.safe_load((CONFIG / "kustomization.yaml").read_text())["resources"]
    return [d for name in listed for d in yaml.safe_load_all((CONFIG / name).read_text()) if d]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_namespace(kube: KubeClient) -> AsyncIterator[str]:
    existed = await kube.get_or_none(NAMESPACES.path(name=NAMESPACE))
    await apply_manifests(
        kube, [CONFIG / "namespace.yaml", CONFIG / "serviceaccount.yaml"], NAMESPACE
    )
    yield NAMESPACE
    if existed is None:
        await kube.delete(NAMESPACES.path(name=NAMESPACE))


async def test_every_manifest_is_accepted_and_the_pod_is_restricted(
    kube: KubeClient, own_namespace: str
) -> None:
    listed = yaml.safe_load((CONFIG / "kustomization.yaml").read_text())["resources"]
    assert set(listed) == {p.name for p in CONFIG.glob("*.yaml")} - {"kustomization.yaml"}
    applied = await apply_manifests(kube, [CONFIG / n for n in listed], own_namespace, dry_run=True)
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == [
        (d["kind"], d["metadata"]["name"]) for d in documents()
    ]
    deployment = next(d for d in documents() if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pip-admission", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    admitted = await kube.create(PODS.path(own_namespace), pod, {"dryRun": "All"})
    assert admitted["metadata"]["namespace"] == own_namespace


def test_the_cluster_role_grants_exactly_what_the_controller_calls() -> None:
    (role,) = [d for d in documents() if d["kind"] == "ClusterRole"]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == CLUSTER_WIDE
