"""The Wait controller's deployment manifests (examples/wait/config) against the real apiserver.

What only Wait's deployment holds: its RBAC applied for real and checked with
SubjectAccessReviews, its replicas and metrics Service. What every reference controller's
deployment holds (dry-run apply, restricted Pod, image and CLI arguments, exact grants) is
checked in test_controller_manifests.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml

from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.testing.devenv import apply_manifests

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "wait" / "config"
WAIT_NAMESPACE = "customtask-wait"
SERVICE_ACCOUNT = f"system:serviceaccount:{WAIT_NAMESPACE}:wait-controller"

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CLUSTER_ROLES = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False
)


def resources() -> list[Path]:
    kustomization = yaml.safe_load((CONFIG / "kustomization.yaml").read_text())
    return [CONFIG / name for name in kustomization["resources"]]


def documents(path: Path) -> list[JSON]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest(kind: str) -> JSON:
    found = [doc for path in resources() for doc in documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {CONFIG}, found {len(found)}"
    return found[0]


def container() -> JSON:
    (only,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    return only


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wait_namespace(kube: KubeClient) -> AsyncIterator[str]:
    """``customtask-wait`` and its ServiceAccount, really applied (namespaced objects can
    only be dry-run into a namespace that exists); deleted afterwards if created here."""
    existed = await kube.get_or_none(NAMESPACES.path(name=WAIT_NAMESPACE))
    await apply_manifests(
        kube, [CONFIG / "namespace.yaml", CONFIG / "serviceaccount.yaml"], WAIT_NAMESPACE
    )
    yield WAIT_NAMESPACE
    if existed is None:
        await kube.delete(NAMESPACES.path(name=WAIT_NAMESPACE))


def test_two_replicas_elect_a_leader_by_pod_name_and_expose_their_metrics() -> None:
    """What only Wait's deployment holds; what every controller's holds is checked in
    test_controller_manifests.py."""
    deployment = manifest("Deployment")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        template["metadata"]["labels"].items()
    )
    assert container()["image"] == "ghcr.io/customtask-sdk/wait-controller:latest"
    env = {item["name"]: item.get("valueFrom", {}).get("fieldRef") for item in container()["env"]}
    assert env == {
        "POD_NAME": {"fieldPath": "metadata.name"},  # the leader-election identity
        "POD_NAMESPACE": {"fieldPath": "metadata.namespace"},  # the lease namespace
    }
    service = manifest("Service")
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    port = str(container()["ports"][0]["containerPort"])
    assert service["metadata"]["annotations"]["prometheus.io/port"] == port


async def can(
    kube: KubeClient, verb: str, group: str, resource: str, namespace: str | None
) -> bool:
    plural, _, subresource = resource.partition("/")
    attributes: JSON = {"verb": verb, "group": group, "resource": plural}
    if subresource:
        attributes["subresource"] = subresource
    if namespace is not None:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": SERVICE_ACCOUNT,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{WAIT_NAMESPACE}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = await kube.create(ACCESS_REVIEWS.path(), review)
    return bool(answer["status"].get("allowed"))


async def test_the_service_account_may_do_what_the_controller_does_and_no_more(
    kube: KubeClient, wait_namespace: str, namespace: str
) -> None:
    rbac = [CONFIG / name for name in ("clusterrole.yaml", "clusterrolebinding.yaml")]
    rbac += [CONFIG / name for name in ("role.yaml", "rolebinding.yaml")]
    try:
        await apply_manifests(kube, rbac, wait_namespace)
        allowed: list[tuple[str, str, str, str | None]] = [
            ("list", "tekton.dev", "customruns", None),  # the informer, all namespaces
            ("watch", "tekton.dev", "customruns", None),
            ("get", "tekton.dev", "customruns", namespace),
            ("patch", "tekton.dev", "customruns", namespace),
            ("patch", "tekton.dev", "customruns/status", namespace),
            ("create", "", "events", namespace),
            ("get", "coordination.k8s.io", "leases", wait_namespace),
            ("create", "coordination.k8s.io", "leases", wait_namespace),
            ("update", "coordination.k8s.io", "leases", wait_namespace),
        ]
        denied: list[tuple[str, str, str, str | None]] = [
            ("update", "coordination.k8s.io", "leases", namespace),  # only its own
            ("create", "coordination.k8s.io", "leases", None),
            ("create", "tekton.dev", "customruns", namespace),
            ("delete", "tekton.dev", "customruns", namespace),
            ("update", "tekton.dev", "customruns", namespace),
            ("create", "tekton.dev", "pipelineruns", namespace),
            ("get", "", "secrets", wait_namespace),
            ("list", "", "pods", namespace),
        ]
        for check in allowed:
            assert await can(kube, *check), f"{SERVICE_ACCOUNT} should be allowed to {check}"
        for check in denied:
            assert not await can(kube, *check), f"{SERVICE_ACCOUNT} should not be allowed {check}"
    finally:
        name = manifest("ClusterRoleBinding")["metadata"]["name"]
        await kube.delete(CLUSTER_ROLE_BINDINGS.path(name=name))
        await kube.delete(CLUSTER_ROLES.path(name=manifest("ClusterRole")["metadata"]["name"]))


async def test_a_manifest_with_generate_name_is_created_each_time(
    kube: KubeClient, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "cm.yaml"
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}
    manifest.write_text(yaml.safe_dump(config_map))
    first, second = [(await apply_manifests(kube, [manifest], namespace))[0] for _ in range(2)]
    names = {first["metadata"]["name"], second["metadata"]["name"]}
    assert len(names) == 2
    assert all(name.startswith("x-") for name in names)
