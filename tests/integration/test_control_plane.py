"""The local control plane itself: a real apiserver with RBAC, users, GC and Tekton's CRDs."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import pytest

from customtask_sdk.client import CUSTOM_RUNS, ForbiddenError, KubeClient, Resource
from customtask_sdk.testing import TEKTON_NAMESPACE, ControlPlane, wait_deleted
from customtask_sdk.testing.processes import child_pids, kill_leftovers

CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROOT = Path(__file__).resolve().parents[2]
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


async def test_tekton_crds_and_config_are_installed(kube: KubeClient) -> None:
    runs = await kube.get(CUSTOM_RUNS.path())
    assert runs["kind"] == "CustomRunList"
    names = {
        cm["metadata"]["name"]
        for cm in (await kube.get(CONFIG_MAPS.path(TEKTON_NAMESPACE)))["items"]
    }
    assert {
        "config-defaults",
        "feature-flags",
        "config-observability",
        "config-spire",
        "config-events",
        "config-tracing",
        "config-wait-exponential-backoff",
    } <= names


async def test_minted_users_are_authorized_through_rbac(
    control_plane: ControlPlane, namespace: str
) -> None:
    user = f"alice-{uuid.uuid4().hex[:4]}"
    kubeconfig = control_plane.kubeconfig_for(user, ["approvers"])
    async with await KubeClient.from_kubeconfig(str(kubeconfig)) as alice:
        with pytest.raises(ForbiddenError) as denied:
            await alice.get(CONFIG_MAPS.path(namespace))
        assert user in denied.value.message
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "configmap-reader", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }
        await control_plane.client.create(ROLES.path(namespace), role)
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "approvers-read", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "approvers"}
            ],
        }
        await control_plane.client.create(ROLE_BINDINGS.path(namespace), binding)
        # Polls for the grant to arrive (nothing to watch for it), not to prove an absence.
        for _ in range(100):  # the authorizer's cache picks the binding up within moments
            try:
                listed = await alice.get(CONFIG_MAPS.path(namespace))
                break
            except ForbiddenError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the RoleBinding never took effect")
        assert listed["kind"] == "ConfigMapList"


async def test_garbage_collection_deletes_owned_objects(kube: KubeClient, namespace: str) -> None:
    owner = await kube.create(
        CONFIG_MAPS.path(namespace),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
    )
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await kube.create(
        CONFIG_MAPS.path(namespace),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "owned", "ownerReferences": [ref]},
        },
    )
    await kube.delete(CONFIG_MAPS.path(namespace, "owner"))
    await wait_deleted(kube, CONFIG_MAPS, namespace, "owned", timeout=30)


@pytest.mark.usefixtures("control_plane")  # the binaries are built (else skip, or fail in CI)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_dev_up_stops_every_process_it_started_on_a_signal(sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "customtask_sdk.cli", "dev", "up", "--keep-running", "--no-node"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    output = b""
    started: list[int] = []
    try:
        async with asyncio.timeout(180):
            while b"control plane still running" not in output:
                line = await proc.stdout.readline()
                assert line, f"dev up exited early:\n{output.decode()}"
                output += line
        started = child_pids(proc.pid)
        assert len(started) == 4, output  # etcd, kube-apiserver, -controller-manager, Tekton
        proc.send_signal(sig)
        async with asyncio.timeout(60):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            started = started or child_pids(proc.pid)
            proc.kill()
            await proc.wait()
        left = kill_leftovers(started)
    assert not left, f"dev up left {left} running after {sig.name}"
    assert code == 128 + sig


@pytest.mark.usefixtures("control_plane")  # the binaries are built (else skip, or fail in CI)
async def test_extra_apiserver_flags_are_passed(tmp_path: Path) -> None:
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "- level: Metadata\n  resources: [{group: '', resources: [configmaps]}]\n"
        "- level: None\n"
    )
    log = tmp_path / "audit.log"
    flags = [f"--audit-policy-file={policy}", f"--audit-log-path={log}"]
    async with ControlPlane(install_tekton=False, apiserver_args=flags) as cp:
        body = {"metadata": {"name": "audited"}, "data": {}}
        await cp.client.create("/api/v1/namespaces/default/configmaps", body)
        async with asyncio.timeout(10):  # the audit event is written as the answer goes out
            while True:
                lines = log.read_text().splitlines() if log.exists() else []
                events = [json.loads(line) for line in lines]
                if any(e["objectRef"].get("name") == "audited" for e in events):
                    break
                await asyncio.sleep(0.05)
