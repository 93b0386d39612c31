"""Install the cluster-wide parts of Approval (CRD, admission policies, RBAC) from
``config/``, as ``kubectl apply`` would: for tests, benchmarks and local runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import yaml

from customtask_sdk.client import JSON, Discovery, KubeClient, Resource

CONFIG = Path(__file__).parent / "config"
#: The user Tekton's controller runs as in a standard install (see admission/requester.yaml).
TEKTON_CONTROLLER = "system:serviceaccount:tekton-pipelines:tekton-pipelines-controller"
#: The user the controller runs as (config/serviceaccount.yaml, bound by clusterrolebinding).
CONTROLLER = "system:serviceaccount:customtask-approval:approval-controller"
CONTROLLER_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:customtask-approval")

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


async def _wait_established(client: KubeClient, name: str, timeout: float = 30.0) -> None:
    path = _CRDS.path(name=name)
    async with asyncio.timeout(timeout):
        while True:
            crd = await client.get(path)
            conditions = (crd.get("status") or {}).get("conditions") or ()
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.05)
