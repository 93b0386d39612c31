"""Pods on the real node: they run, their logs come back through the apiserver, and they
reach the API with in-cluster configuration through the ``kubernetes`` Service."""

from __future__ import annotations

import subprocess

from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.cluster_dns import DNS_SERVICE_IP
from customtask_sdk.testing.node import Node

PODS = Resource("", "v1", "pods", "Pod")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")


def finished(pod: JSON) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


async def run_pod(kube: KubeClient, namespace: str, name: str, container: JSON) -> JSON:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", **container}]},
    }
    await kube.create(PODS.path(namespace), body)
    return await wait_for(kube, PODS, namespace, name, finished, timeout=60)


def host(*argv: str) -> str:
    """Run a command on this machine; its output."""
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def kubectl(node: Node, *args: str) -> str:
    kubeconfig = f"--kubeconfig={node.control_plane.kubeconfig}"
    return host(str(node.node_binaries.kubectl), kubeconfig, *args)


async def test_pod_runs_and_its_logs_come_through_the_apiserver(
    node: Node, node_namespace: str
) -> None:
    # No tag: the kubelet always pulls, and containerd's mirror is the local registry.
    container = {"image": "busybox", "command": ["sh", "-c", "echo hello from $(hostname)"]}
    pod = await run_pod(node.client, node_namespace, "hello", container)

    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert pod["spec"]["nodeName"] == node.name
    logs = kubectl(node, "logs", "-n", node_namespace, "hello")
    assert logs == "hello from hello\n"


async def test_pod_reads_the_api_in_cluster_through_the_kubernetes_service(
    node: Node, node_namespace: str
) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "default-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": node_namespace}],
    }
    await node.client.create(ROLE_BINDINGS.path(node_namespace), binding)
    version = node.binaries.versions.kubernetes
    # kubectl without a kubeconfig uses the in-cluster one: the ServiceAccount token and
    # KUBERNETES_SERVICE_HOST, the `kubernetes` Service's ClusterIP (kube-proxy's rules).
    container = {
        "image": node.image("kubectl", version),
        "command": ["/ko-app/kubectl", "get", "pods", "-o", "name", "-v=6"],
    }
    pod = await run_pod(node.client, node_namespace, "in-cluster", container)

    logs = kubectl(node, "logs", "-n", node_namespace, "in-cluster")
    assert pod["status"]["phase"] == "Succeeded", logs
    assert "pod/in-cluster" in logs
    assert f'url="https://10.0.0.1:443/api/v1/namespaces/{node_namespace}/pods' in logs


async def test_pods_reach_this_machine_only(node: Node, node_namespace: str) -> None:
    # A Pod's routes lead to the bridge's subnet and the Service range only, its resolver
    # is the cluster DNS (test_node_dns.py), and the host drops anything forwarded off the
    # bridge.
    script = "ip route; cat /etc/resolv.conf; ping -c 1 -W 1 192.0.2.1 || echo unreachable"
    container = {"image": "busybox", "command": ["sh", "-c", script]}
    await run_pod(node.client, node_namespace, "net", container)

    logs = kubectl(node, "logs", "-n", node_namespace, "net")
    routes = [line for line in logs.splitlines() if " dev eth0" in line]
    assert sorted(r.split()[0] for r in routes) == ["10.0.0.0/24", "10.0.1.0/24"], logs
    nameservers = [line.split()[1] for line in logs.splitlines() if line.startswith("nameserver")]
    assert nameservers == [DNS_SERVICE_IP], logs
    assert "Network is unreachable" in logs, logs
    guard = host("iptables", "-w", "-S", "CUSTOMTASK-NODE")
    assert (
        f"-A CUSTOMTASK-NODE -i {node.network.bridge} ! -o {node.network.bridge} -j DROP" in guard
    )


async def test_a_pod_of_many_always_pulled_containers_starts_them_all_without_pull_limits(
    node: Node, node_namespace: str
) -> None:
    # A Pipeline-in-Pod Pod has a container per step, all pulled (no tag: always). With the
    # kubelet's default pull limit (5 a second, a burst of 10) the last ones were refused
    # ("pull QPS exceeded") and backed off for about 10 s.
    containers = [{"name": f"c{i}", "image": "busybox", "command": ["true"]} for i in range(24)]
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "many"},
        "spec": {"restartPolicy": "Never", "containers": containers},
    }
    await node.client.create(PODS.path(node_namespace), body)
    reasons: set[str] = set()

    def done_noting_waits(pod: JSON) -> bool:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            reasons.add((status["state"].get("waiting") or {}).get("reason", ""))
        return finished(pod)

    pod = await wait_for(node.client, PODS, node_namespace, "many", done_noting_waits, 120)

    assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert not reasons & {"ErrImagePull", "ImagePullBackOff"}, reasons
