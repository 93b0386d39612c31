"""The Wait controller deployed from its own manifests (examples/wait/config) on the node.

Its image is built here from this checkout (the SDK, the controller module and this
Python), its name set with kustomize as a platform team would. Two replicas, both ready,
one Lease holder; the samples of hack/up.sh succeed; when the leader's Pod is deleted another
replica takes over and runs still complete.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, Discovery, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import create_custom_run
from customtask_sdk.testing.devenv import apply_manifests
from customtask_sdk.testing.images import SITE_PACKAGES
from customtask_sdk.testing.node import Node

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "customtask-wait"
PLACEHOLDER = "ghcr.io/customtask-sdk/wait-controller"
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
PODS = Resource("", "v1", "pods", "Pod")


def build_image(node: Node) -> str:
    """The controller's image, as examples/Dockerfile (target wait) builds it, without Docker."""
    node.images.add_python_app(
        "customtask-sdk/wait-controller",
        "test",
        distributions=["customtask-sdk"],
        folders={
            f"{SITE_PACKAGES}/customtask_sdk": ROOT / "customtask_sdk",
            "/app/examples/wait": ROOT / "examples" / "wait",
        },
        entrypoint=["python3", "-m", "customtask_sdk.cli", "run", "examples.wait.controller:Wait"],
        cmd=["--leader-elect", "--log-format=json"],
        env={"HOME": "/home/nonroot"},
    )
    return node.image("customtask-sdk/wait-controller", "test")


def kustomize(node: Node, image: str, workdir: Path) -> Path:
    """examples/wait/config with its image overridden by an overlay, rendered by kubectl."""
    shutil.copytree(ROOT / "examples" / "wait" / "config", workdir / "base")
    name, tag = image.rsplit(":", 1)
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["base"],
        "images": [{"name": PLACEHOLDER, "newName": name, "newTag": tag}],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    rendered = subprocess.run(
        [str(node.node_binaries.kubectl), "kustomize", str(workdir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = workdir / "rendered.yaml"
    path.write_text(rendered)
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def deployed(node: Node, tmp_path: Path) -> AsyncIterator[list[JSON]]:
    image = await asyncio.to_thread(build_image, node)
    manifests = kustomize(node, image, tmp_path)
    applied = await apply_manifests(node.client, [manifests], NAMESPACE)
    yield applied
    discovery = Discovery(node.client)
    for obj in reversed(applied):  # the namespace goes last and takes what is left in it
        resource = await discovery.resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        await node.client.delete(resource.path(meta.get("namespace"), meta["name"]))


def both_ready(deployment: JSON) -> bool:
    status = deployment.get("status", {})
    return status.get("availableReplicas") == 2 == status.get("readyReplicas")


def succeeded(run: JSON) -> bool:
    return (condition(run) or {}).get("status") == "True"


async def test_wait_controller_from_its_manifests_elects_a_leader_and_fails_over(
    node: Node, node_namespace: str, deployed: list[JSON]
) -> None:
    image = next(o for o in deployed if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == "customtask.local/customtask-sdk/wait-controller:test"
    await wait_for(node.client, DEPLOYMENTS, NAMESPACE, "wait-controller", both_ready, 120)
    pods = await node.client.get(
        PODS.path(NAMESPACE), {"labelSelector": "app.kubernetes.io/name=wait-controller"}
    )
    names = {p["metadata"]["name"] for p in pods["items"]}
    lease = await wait_for(
        node.client,
        LEASES,
        NAMESPACE,
        "customtask-wait",
        lambda lease: lease["spec"].get("holderIdentity") in names,
        60,
    )
    leader = lease["spec"]["holderIdentity"]

    # The samples of hack/up.sh: Wait custom tasks, and Tekton tasks in Pods beside them.
    samples = [
        ROOT / "examples" / "wait" / f for f in ("pipelinerun.yaml", "pipelinerun-node.yaml")
    ]
    await apply_manifests(node.client, samples, node_namespace)
    for name in ("wait-demo", "wait-and-build"):
        await wait_for(node.client, PIPELINE_RUNS, node_namespace, name, succeeded, 120)

    await node.client.delete(PODS.path(NAMESPACE, leader))
    # The leader releases the Lease on SIGTERM; the standby or the leader's replacement,
    # whichever asks first, takes it.
    lease = await wait_for(
        node.client,
        LEASES,
        NAMESPACE,
        "customtask-wait",
        lambda lease: lease["spec"].get("holderIdentity") not in (None, "", leader),
        60,
    )
    assert lease["spec"]["leaseTransitions"] == 1
    run = await create_custom_run(
        node.client, node_namespace, "wait.customtask.dev/v1alpha1", "Wait", {"duration": "1s"}
    )
    await wait_for(node.client, CUSTOM_RUNS, node_namespace, run["metadata"]["name"], succeeded, 60)
