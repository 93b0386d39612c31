"""Every reference controller's deployment (``examples/<name>/config`` and its target in
``examples/Dockerfile``), checked the same way against the real apiserver.

Each manifest is listed in ``kustomization.yaml`` and server-side applied as a dry run
(validated and admitted, not stored); the controller's Pod passes the ``restricted`` Pod
Security Standard its namespace enforces; the image's entrypoint with the Deployment's
arguments parses with the real CLI and loads the controller; the roles grant exactly what
the controller calls, to its own service account. What is particular to one controller is
tested beside it (``test_manifests.py``: Wait's access reviews; ``test_approval.py``: the
Approval controller running with this RBAC).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from customtask_sdk.cli import _parser, load_reconciler
from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.testing import wait_deleted
from customtask_sdk.testing.devenv import apply_manifests

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "examples" / "Dockerfile"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")

Grants = dict[tuple[str, str], set[str]]

#: What the SDK calls for every controller: the CustomRun informer (list, watch), the
#: re-read after a status conflict (get), the finalizer (patch), status writes, Events.
SDK_CALLS: Grants = {
    ("tekton.dev", "customruns"): {"get", "list", "watch", "patch"},
    ("tekton.dev", "customruns/status"): {"get", "patch", "update"},
    ("", "events"): {"create", "patch"},
}
#: Leader election, in the controller's own namespace only.
LEADER_ELECTION: Grants = {
    ("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update"}
}


@dataclasses.dataclass(frozen=True)
class Deployed:
    """One reference controller as a platform team deploys it."""

    package: str  # examples/<package>
    target: str  # its stage in examples/Dockerfile
    reconcilers: tuple[str, ...]  # what the image runs
    namespace: str
    service_account: str
    cluster_wide: Grants  # its ClusterRole, exactly
    kinds: frozenset[str] = frozenset()  # what its manifests hold beyond the common ones
    workers: int = 16  # concurrent reconciles it runs (its reconciler's own default)

    @property
    def config(self) -> Path:
        return ROOT / "examples" / self.package / "config"

    def paths(self) -> list[Path]:
        listed = yaml.safe_load((self.config / "kustomization.yaml").read_text())["resources"]
        return [self.config / name for name in listed]

    def documents(self) -> list[JSON]:
        return [doc for path in self.paths() for doc in yaml.safe_load_all(path.read_text()) if doc]

    def one(self, kind: str, name: str | None = None) -> JSON:
        found = [
            d
            for d in self.documents()
            if d["kind"] == kind and name in (None, d["metadata"]["name"])
        ]
        assert len(found) == 1, f"expected one {kind} {name or ''} in {self.config}: {found}"
        return found[0]

    def stage(self, name: str | None = None) -> list[str]:
        """The lines of a stage of examples/Dockerfile (and of the stages it is built on):
        by default the controller's image."""
        stages: dict[str, list[str]] = {}
        current: list[str] = []
        # One instruction per line: continuation lines joined.
        text = DOCKERFILE.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("FROM "):
                words = line.split()
                base = stages.get(words[1], [])
                current = stages.setdefault(words[-1], list(base))
            current.append(line)
        name = name or self.target
        assert name in stages, f"no stage {name!r} in {DOCKERFILE}"
        return stages[name]

    def instruction(self, name: str) -> list[str]:
        """The exec-form (JSON) value of the stage's last ``name`` instruction."""
        values = [line.split(None, 1)[1] for line in self.stage() if line.startswith(f"{name} ")]
        assert values, f"no {name} in stage {self.target!r} of {DOCKERFILE}"
        value: list[str] = json.loads(values[-1])
        return value


CONTROLLERS = [
    Deployed(
        "wait",
        "wait",
        ("examples.wait.controller:Wait",),
        "customtask-wait",
        "wait-controller",
        SDK_CALLS,
        frozenset({"Service"}),
    ),
    Deployed(
        "approval",
        "approval",
        ("examples.approval.controller:Approval",),
        "customtask-approval",
        "approval-controller",
        {
            **SDK_CALLS,
            ("approval.customtask.dev", "approvaltasks"): {"get", "list", "watch", "create"},
            ("approval.customtask.dev", "approvaltasks/status"): {"get", "patch", "update"},
        },
        frozenset(
            {
                "CustomResourceDefinition",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "MutatingAdmissionPolicy",
                "MutatingAdmissionPolicyBinding",
            }
        ),
        workers=64,  # a decision holds its worker for two writes in sequence
    ),
    Deployed(
        "pipeline_in_pod",
        "pipeline-in-pod",
        (
            "examples.pipeline_in_pod.controller:PipelineInPod",
            "examples.pipeline_in_pod.delegated:DelegatedPipelineRun",
        ),
        "customtask-pipeline-in-pod",
        "pipeline-in-pod-controller",
        {
            **SDK_CALLS,
            # The Pipeline, Tasks and StepActions read at a run's start; its Pod:
            # created, watched, patched (ready, sidecars), deleted (cancel).
            ("tekton.dev", "pipelines"): {"get"},
            ("tekton.dev", "tasks"): {"get"},
            ("tekton.dev", "stepactions"): {"get"},
            ("resolution.tekton.dev", "resolutionrequests"): {"get", "create"},
            ("", "pods"): {"get", "list", "watch", "create", "patch", "delete"},
            ("", "persistentvolumeclaims"): {"create"},
            # The CustomRuns of custom tasks in the pipeline: created, and cancelled.
            ("tekton.dev", "customruns"): {"get", "list", "watch", "create", "patch"},
            # One TaskRun per task (both front doors): created, its status written,
            # deleted when its task turns out skipped; delegated PipelineRuns: watched,
            # their status written.
            ("tekton.dev", "taskruns"): {"get", "list", "watch", "create", "delete"},
            ("tekton.dev", "pipelineruns"): {"get", "list", "watch"},
            ("tekton.dev", "pipelineruns/status"): {"get", "patch"},
            ("tekton.dev", "taskruns/status"): {"get", "patch"},
        },
    ),
]
COMMON_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Deployment",
}


@pytest.fixture(scope="module", params=CONTROLLERS, ids=[c.package for c in CONTROLLERS])
def deployed(request: pytest.FixtureRequest) -> Deployed:
    controller: Deployed = request.param
    return controller


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_namespace(kube: KubeClient, deployed: Deployed) -> AsyncIterator[str]:
    """The controller's namespace and service account, really applied (namespaced objects
    can only be dry-run into a namespace that exists); deleted afterwards if made here, and
    waited for, so a later test may make it again."""
    existed = await kube.get_or_none(NAMESPACES.path(name=deployed.namespace))
    await apply_manifests(
        kube,
        [deployed.config / "namespace.yaml", deployed.config / "serviceaccount.yaml"],
        deployed.namespace,
    )
    yield deployed.namespace
    if existed is None:
        await kube.delete(NAMESPACES.path(name=deployed.namespace))
        await wait_deleted(kube, NAMESPACES, None, deployed.namespace, timeout=120)


def grants(rules: list[JSON]) -> Grants:
    granted: Grants = {}
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


async def test_every_manifest_is_listed_and_accepted_by_the_apiserver(
    kube: KubeClient, deployed: Deployed, own_namespace: str
) -> None:
    listed = {path.relative_to(deployed.config).as_posix() for path in deployed.paths()}
    present = {
        path.relative_to(deployed.config).as_posix()
        for path in deployed.config.rglob("*.yaml")
        if path.name != "kustomization.yaml"
    }
    assert listed == present, "every manifest in config/ is listed in kustomization.yaml"

    applied = await apply_manifests(kube, deployed.paths(), own_namespace, dry_run=True)

    expected = [(d["kind"], d["metadata"]["name"]) for d in deployed.documents()]
    assert [(o["kind"], o["metadata"]["name"]) for o in applied] == expected
    assert COMMON_KINDS | deployed.kinds <= {o["kind"] for o in applied}
    for obj in applied:
        assert obj["metadata"]["uid"], obj["metadata"]
        if obj["kind"] in ("ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"):
            assert obj["metadata"]["namespace"] == own_namespace


async def test_the_pod_passes_the_restricted_pod_security_standard(
    kube: KubeClient, deployed: Deployed, own_namespace: str
) -> None:
    """The namespace enforces ``restricted``: a Pod of the template must be admitted."""
    labels = deployed.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    template = deployed.one("Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "controller-admission", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    admitted = await kube.create(PODS.path(own_namespace), pod, {"dryRun": "All"})
    assert admitted["metadata"]["namespace"] == own_namespace


def test_the_image_runs_the_deployments_reconciler_with_its_arguments(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    entrypoint = deployed.instruction("ENTRYPOINT")
    assert entrypoint == ["customtask-sdk", "run", *deployed.reconcilers]
    deployment = deployed.one("Deployment")
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    monkeypatch.setenv("POD_NAMESPACE", deployed.namespace)  # as the downward API sets it

    args = _parser().parse_args([*entrypoint[1:], *main["args"]])

    assert args.reconcilers == list(deployed.reconcilers)
    assert (args.leader_elect, args.log_format) == (True, "json")
    assert args.lease_namespace == deployed.namespace
    assert args.namespace is None  # every namespace, as the ClusterRole allows
    reconcilers = [load_reconciler(reconciler) for reconciler in deployed.reconcilers]
    # The image's default CMD parses too, and agrees on the essentials.
    default = _parser().parse_args([*entrypoint[1:], *deployed.instruction("CMD")])
    assert (default.leader_elect, default.log_format) == (True, "json")
    assert (default.lease_name, default.health_port) == (args.lease_name, args.health_port)
    for given in (default, args):  # as the Manager counts workers: --workers, else its own
        assert {r.workers if given.workers is None else given.workers for r in reconcilers} == {
            deployed.workers
        }
    stage = deployed.stage()
    assert f"EXPOSE {args.health_port}" in stage
    assert "USER 65532:65532" in stage
    assert f"COPY --from=app-{deployed.target} /app /app" in stage
    package = f"COPY examples/{deployed.package}/ /app/examples/{deployed.package}/"
    assert package in deployed.stage(f"app-{deployed.target}")
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"http-metrics": args.health_port}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}


def test_the_pod_is_hardened_and_runs_as_the_controllers_service_account(
    deployed: Deployed,
) -> None:
    deployment = deployed.one("Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert pod["serviceAccountName"] == deployed.service_account
    assert pod["securityContext"]["runAsUser"] == 65532
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(main["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in main["resources"]["limits"]


def test_the_roles_grant_exactly_what_the_controller_calls(deployed: Deployed) -> None:
    bindings = [
        ("ClusterRoleBinding", deployed.cluster_wide),
        ("RoleBinding", LEADER_ELECTION),
    ]
    for binding_kind, expected in bindings:
        binding = deployed.one(binding_kind)
        role = deployed.one(binding["roleRef"]["kind"], binding["roleRef"]["name"])
        assert grants(role["rules"]) == expected, role["metadata"]["name"]
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": deployed.service_account,
                "namespace": deployed.namespace,
            }
        ]
    assert deployed.one("Role")["metadata"]["namespace"] == deployed.namespace
