"""Install the cluster-wide parts of Approval (CRD, admission policies, RBAC) from
``config/``, as ``kubectl apply`` would: for tests, benchmarks and local runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from pathlib import Path

import yaml

from customtask_sdk.client import (
    JSON,
    Discovery,
    ForbiddenError,
    KubeClient,
    Resource,
    ServerError,
)

CONFIG = Path(__file__).parent / "config"
#: The user Tekton's controller runs as in a standard install (see admission/requester.yaml).
TEKTON_CONTROLLER = "system:serviceaccount:tekton-pipelines:tekton-pipelines-controller"
#: The user the controller runs as (config/serviceaccount.yaml, bound by clusterrolebinding).
CONTROLLER = "system:serviceaccount:customtask-approval:approval-controller"
CONTROLLER_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:customtask-approval")

_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
_CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
#: The manifests that are not namespaced (what a platform team installs once).
CLUSTER_FILES = (
    "crd.yaml",
    "clusterrole.yaml",
    "clusterrolebinding.yaml",
    "approver-clusterrole.yaml",
    "admission/responses.yaml",
    "admission/requester.yaml",
)


def documents(
    files: Iterable[str] = CLUSTER_FILES, *, tekton_user: str = TEKTON_CONTROLLER
) -> list[JSON]:
    """The manifests in ``files`` (relative to ``config/``), with the Tekton controller's
    user name replaced by ``tekton_user`` (it differs outside a standard install)."""
    docs: list[JSON] = []
    for name in files:
        text = (CONFIG / name).read_text().replace(TEKTON_CONTROLLER, tekton_user)
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


async def install(
    client: KubeClient, *, tekton_user: str = TEKTON_CONTROLLER, admission: bool = True
) -> list[JSON]:
    """Server-side apply the cluster-wide manifests; return what was applied.

    The CRD is applied first and waited for (``Established``); ``admission=False``
    leaves the policies out.
    """
    files = [f for f in CLUSTER_FILES if admission or not f.startswith("admission/")]
    docs = documents(files, tekton_user=tekton_user)
    discovery = Discovery(client)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for crd in crds:
        await client.apply(_CRDS, crd, "approval-install")
        await _wait_established(client, crd["metadata"]["name"])
    for doc in docs:
        if doc["kind"] != "CustomResourceDefinition":
            resource = await discovery.resource(doc["apiVersion"], doc["kind"])
            await client.apply(resource, doc, "approval-install")
    return docs


async def uninstall_admission(client: KubeClient) -> None:
    """Delete the admission policies and their bindings."""
    discovery = Discovery(client)
    for doc in documents([f for f in CLUSTER_FILES if f.startswith("admission/")]):
        resource = await discovery.resource(doc["apiVersion"], doc["kind"])
        await client.delete(resource.path(name=doc["metadata"]["name"]))


async def wait_enforced(client: KubeClient, *, enforced: bool = True) -> None:
    """Wait until the apiserver enforces the policies (or, ``enforced=False``, no longer
    does): they take effect once its policy cache has them, and a policy on a new CRD's
    kind once the apiserver knows its schema. Probes by dry runs in a namespace of its
    own: a PipelineRun's requester is stamped, a gate created with a response is refused,
    the caller's own response on a gate gets its groups stamped."""
    me = (await client.create(_REVIEWS, {"kind": "SelfSubjectReview"}))["status"]["userInfo"]
    namespace = f"approval-probe-{uuid.uuid4().hex[:6]}"
    await client.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    gates = f"/apis/approval.customtask.dev/v1alpha1/namespaces/{namespace}/approvaltasks"
    gate: JSON = {
        "apiVersion": "approval.customtask.dev/v1alpha1",
        "kind": "ApprovalTask",
        "metadata": {"name": "probe"},
        "spec": {"approvers": [me["username"]], "numberOfApprovalsRequired": 1},
    }
    pipeline_run = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": "probe"},
        "spec": {"pipelineSpec": {"tasks": []}},
    }
    dry_run = {"dryRun": "All"}
    response = {"spec": {"responses": {me["username"]: {"decision": "approve"}}}}
    try:
        await client.create(gates, gate)
        async with asyncio.timeout(30):
            while True:
                try:
                    stamped = await client.create(
                        f"/apis/tekton.dev/v1/namespaces/{namespace}/pipelineruns",
                        pipeline_run,
                        dry_run,
                    )
                    answered = await client.patch(f"{gates}/probe", response, params=dry_run)
                    try:
                        decided = {
                            **gate,
                            "metadata": {"name": "probe-decided"},
                            "spec": {**gate["spec"], **response["spec"]},
                        }
                        await client.create(gates, decided, dry_run)
                        refusing = False
                    except ForbiddenError:
                        refusing = True
                # 503 while the apiserver learns the CRD's schema; 403 while the validating
                # policy is in force and the groups-stamping one not (yet, or any more)
                except (ServerError, ForbiddenError):
                    await asyncio.sleep(0.1)
                    continue
                annotations = stamped["metadata"].get("annotations") or {}
                mine = answered["spec"]["responses"][me["username"]]
                probes = (
                    "approval.customtask.dev/requester" in annotations,
                    refusing,
                    "groups" in mine,
                )
                if probes == (enforced, enforced, enforced):
                    return
                await asyncio.sleep(0.1)
    finally:
        await client.delete(f"/api/v1/namespaces/{namespace}")


async def grant_team(client: KubeClient, namespace: str, subjects: list[JSON]) -> None:
    """Let ``subjects`` (RBAC subjects) start runs in ``namespace`` and respond to its
    gates (the approver ClusterRole); the admission policies decide whose response counts."""
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    runner = {
        "metadata": {"name": "run-pipelines"},
        "rules": [
            {
                "apiGroups": ["tekton.dev"],
                "resources": ["customruns", "pipelineruns"],
                "verbs": ["create", "get", "list", "watch"],
            }
        ],
    }
    await client.create(f"{rbac}/roles", runner)
    for name, role_kind, role in (
        ("approvers", "ClusterRole", "customtask-approval-approver"),
        ("runners", "Role", "run-pipelines"),
    ):
        body = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": subjects,
        }
        await client.create(f"{rbac}/rolebindings", body)


async def _wait_established(client: KubeClient, name: str, timeout: float = 30.0) -> None:
    path = _CRDS.path(name=name)
    async with asyncio.timeout(timeout):
        while True:
            crd = await client.get(path)
            conditions = (crd.get("status") or {}).get("conditions") or ()
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.05)
