"""The Wait controller's deployment manifests (examples/wait/config) against the real apiserver.

Every manifest the kustomization lists is server-side applied with a dry run (the apiserver
validates and admits it, nothing is stored); the RBAC is applied for real and checked with
SubjectAccessReviews; the Deployment's arguments are parsed by the real CLI parser.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from customtask_sdk.cli import _parser, load_reconciler
from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.testing.devenv import apply_manifests
from examples.wait.controller import Wait

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "wait" / "config"
DOCKERFILE = ROOT / "examples" / "wait" / "Dockerfile"
WAIT_NAMESPACE = "customtask-wait"
SERVICE_ACCOUNT = f"system:serviceaccount:{WAIT_NAMESPACE}:wait-controller"

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")
CLUSTER_ROLES = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
)
CLUSTER_ROLE_BINDINGS = Resource(
    "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
)
ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False
)

#: What the SDK calls: the CustomRun informer (list, watch), the re-read after a status
#: conflict (get), the finalizer (patch), status writes, Events, and the leader Lease.
CLUSTER_WIDE = {
    ("tekton.dev", "customruns"): {"get", "list", "watch", "patch"},
    ("tekton.dev", "customruns/status"): {"get", "patch", "update"},
    ("", "events"): {"create", "patch"},
}
IN_OWN_NAMESPACE = {("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update"}}


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


def dockerfile(instruction: str) -> list[str]:
    """The exec-form (JSON) value of the last ``instruction`` of the Wait Dockerfile."""
    lines = [
        line.split(None, 1)[1]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith(f"{instruction} ")
    ]
    assert lines, f"no {instruction} in {DOCKERFILE}"
    value: list[str] = json.loads(lines[-1])
    return value


def grants(rules: list[JSON]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


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


async def test_every_manifest_is_accepted_by_the_apiserver(
    kube: KubeClient, wait_namespace: str
) -> None:
    paths = resources()
    assert {path.name for path in paths} == {
        path.name for path in CONFIG.glob("*.yaml") if path.name != "kustomization.yaml"
    }, "every manifest in the folder is listed in kustomization.yaml"
    expected = [(doc["kind"], doc["metadata"]["name"]) for path in paths for doc in documents(path)]

    applied = await apply_manifests(kube, paths, wait_namespace, dry_run=True)

    assert [(obj["kind"], obj["metadata"]["name"]) for obj in applied] == expected
    assert {obj["kind"] for obj in applied} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    }
    for obj in applied:
        assert obj["metadata"]["uid"], obj["metadata"]
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == WAIT_NAMESPACE
    deployment = next(obj for obj in applied if obj["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/customtask-sdk/wait-controller:latest"
    )
    service = next(obj for obj in applied if obj["kind"] == "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["name"] == "http-metrics"


async def test_the_pod_passes_the_restricted_pod_security_standard(
    kube: KubeClient, wait_namespace: str
) -> None:
    """The namespace enforces ``restricted``: a Pod of the template must be admitted."""
    labels = yaml.safe_load((CONFIG / "namespace.yaml").read_text())["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    template = manifest("Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "wait-controller-admission", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    admitted = await kube.create(PODS.path(wait_namespace), pod, {"dryRun": "All"})
    assert admitted["kind"] == "Pod"
    assert admitted["metadata"]["namespace"] == wait_namespace


def test_the_roles_grant_exactly_what_the_sdk_needs() -> None:
    cluster_role = manifest("ClusterRole")
    role = manifest("Role")
    assert grants(cluster_role["rules"]) == CLUSTER_WIDE
    assert grants(role["rules"]) == IN_OWN_NAMESPACE
    assert role["metadata"]["namespace"] == WAIT_NAMESPACE
    # The calls that matter most, spelled out.
    assert "patch" in CLUSTER_WIDE[("tekton.dev", "customruns")]
    assert "patch" in CLUSTER_WIDE[("tekton.dev", "customruns/status")]
    assert "create" in CLUSTER_WIDE[("", "events")]
    assert "update" in IN_OWN_NAMESPACE[("coordination.k8s.io", "leases")]
    for binding_kind, role_kind, role_name in (
        ("ClusterRoleBinding", "ClusterRole", cluster_role["metadata"]["name"]),
        ("RoleBinding", "Role", role["metadata"]["name"]),
    ):
        binding = manifest(binding_kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role_name,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "wait-controller", "namespace": WAIT_NAMESPACE}
        ]
    deployment = manifest("Deployment")["spec"]["template"]["spec"]
    assert deployment["serviceAccountName"] == "wait-controller"


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


def test_the_deployment_arguments_parse_with_the_real_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entrypoint = dockerfile("ENTRYPOINT")
    assert entrypoint == ["customtask-sdk", "run", "examples.wait.controller:Wait"]
    main = container()
    monkeypatch.setenv("POD_NAMESPACE", WAIT_NAMESPACE)  # as the downward API sets it

    args = _parser().parse_args([*entrypoint[1:], *main["args"]])

    assert args.command == "run"
    assert args.reconcilers == ["examples.wait.controller:Wait"]
    assert args.leader_elect
    assert args.log_format == "json"
    assert args.lease_namespace == WAIT_NAMESPACE == manifest("Role")["metadata"]["namespace"]
    assert args.namespace is None  # every namespace, as the ClusterRole allows
    assert not args.no_events
    assert isinstance(load_reconciler(args.reconcilers[0]), Wait)
    # The image's default CMD parses too, and agrees on the essentials.
    default = _parser().parse_args([*entrypoint[1:], *dockerfile("CMD")])
    assert (default.leader_elect, default.log_format) == (True, "json")
    assert default.health_port == args.health_port

    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"http-metrics": args.health_port}
    assert f"EXPOSE {args.health_port}" in DOCKERFILE.read_text().splitlines()
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    service = manifest("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(args.health_port)


def test_the_deployment_runs_two_hardened_replicas_with_their_identity() -> None:
    deployment = manifest("Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    main = container()
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert manifest("Service")["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    env = {item["name"]: item.get("valueFrom", {}).get("fieldRef") for item in main["env"]}
    assert env == {
        "POD_NAME": {"fieldPath": "metadata.name"},  # the leader-election identity
        "POD_NAMESPACE": {"fieldPath": "metadata.namespace"},  # the lease namespace
    }
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532
    assert "USER 65532:65532" in DOCKERFILE.read_text().splitlines()
    assert main["resources"]["limits"]["memory"] == "256Mi"
    assert set(main["resources"]["requests"]) == {"cpu", "memory"}


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
