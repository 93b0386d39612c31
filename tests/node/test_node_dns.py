"""Cluster DNS on the real node: Pods resolve Services (and ``kubernetes.default``) through
the ``kube-dns`` Service's ClusterIP and CoreDNS, and every other name gets NXDOMAIN from
CoreDNS itself, so no query leaves the machine."""

from __future__ import annotations

import asyncio
import re

from customtask_sdk.client import JSON, Resource
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.cluster_dns import DNS_SERVICE_IP, routed
from customtask_sdk.testing.node import Node
from customtask_sdk.testing.waiting import condition
from tests.node.test_node_pods import PODS, host, kubectl, run_pod

SERVICES = Resource("", "v1", "services", "Service")


def logs(node: Node, namespace: str, pod: str) -> str:
    return kubectl(node, "logs", "-n", namespace, pod)


async def start_web_service(node: Node, namespace: str) -> str:
    """A busybox web server behind Service ``web`` (port 80); its ClusterIP once kube-proxy
    routes it (the barrier: Pods started later reach it)."""
    script = "mkdir /www && echo served-by-web > /www/index.html && exec httpd -f -p 8080 -h /www"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ]
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    await node.client.create(PODS.path(namespace), pod)
    created = await node.client.create(SERVICES.path(namespace), service)
    cluster_ip: str = created["spec"]["clusterIP"]

    def ready(found: JSON) -> bool:
        status = condition(found, "Ready")
        return status is not None and status.get("status") == "True"

    await wait_for(node.client, PODS, namespace, "web", ready, timeout=60)
    # kube-proxy's rules follow the EndpointSlice: poll them (the Service does not change).
    deadline = asyncio.get_running_loop().time() + 30
    while not routed(node.node_binaries.iptables, cluster_ip, ("tcp",)):
        assert asyncio.get_running_loop().time() < deadline, "kube-proxy never routed web"
        await asyncio.sleep(0.1)
    return cluster_ip


async def test_pod_resolves_a_service_by_each_name_and_connects_through_its_cluster_ip(
    node: Node, node_namespace: str
) -> None:
    cluster_ip = await start_web_service(node, node_namespace)
    fqdn = f"web.{node_namespace}.svc.cluster.local"
    names = ["web", f"web.{node_namespace}", fqdn]
    # kubectl (Go's own resolver, as most controllers use) fetches the page by each name;
    # busybox's wget cannot resolve (static glibc has no NSS), its nslookup can.
    kubectl_get = "/ko-app/kubectl --request-timeout=5s get --raw /index.html --server"
    fetches = "; ".join(f"echo $({kubectl_get}=http://{name}) from {name}" for name in names)
    script = f"{fetches}; nslookup {fqdn}"
    image = node.image("kubectl", node.binaries.versions.kubernetes)
    container = {"image": image, "command": ["sh", "-c", script]}
    pod = await run_pod(node.client, node_namespace, "client", container)

    output = logs(node, node_namespace, "client")
    assert pod["status"]["phase"] == "Succeeded", output
    for name in names:
        assert f"served-by-web from {name}\n" in output, output
    assert re.search(rf"Name:\s+{re.escape(fqdn)}\nAddress:\s+{cluster_ip}\n", output), output
    assert f"Server:\t\t{DNS_SERVICE_IP}\n" in output, output


async def test_pods_resolv_conf_names_the_cluster_dns_and_kubernetes_default_resolves(
    node: Node, node_namespace: str
) -> None:
    script = "cat /etc/resolv.conf; nslookup kubernetes.default.svc.cluster.local"
    container = {"image": "busybox", "command": ["sh", "-c", script]}
    await run_pod(node.client, node_namespace, "resolver", container)

    output = logs(node, node_namespace, "resolver")
    search = f"search {node_namespace}.svc.cluster.local svc.cluster.local cluster.local"
    lines = output.splitlines()
    assert f"nameserver {DNS_SERVICE_IP}" in lines, output
    assert search in lines, output
    assert "options ndots:5" in lines, output
    api = await node.client.get(SERVICES.path("default", "kubernetes"))
    name = r"kubernetes\.default\.svc\.cluster\.local"
    expected = rf"Name:\s+{name}\nAddress:\s+{api['spec']['clusterIP']}\n"
    assert re.search(expected, output), output


async def test_names_outside_the_cluster_get_nxdomain_from_coredns_itself(
    node: Node, node_namespace: str
) -> None:
    # busybox's nslookup prints the answer's code; a resolver that got no answer prints
    # "connection timed out" instead. CoreDNS's log shows it answered the query itself.
    script = (
        "nslookup -type=a example.com.; nslookup -type=a no-such-svc.default.svc.cluster.local."
    )
    container = {"image": "busybox", "command": ["sh", "-c", script]}
    await run_pod(node.client, node_namespace, "outside", container)

    output = logs(node, node_namespace, "outside")
    assert re.search(r"can't find example\.com\.?: NXDOMAIN", output), output
    assert re.search(
        r"can't find no-such-svc\.default\.svc\.cluster\.local\.?: NXDOMAIN", output
    ), output
    assert "timed out" not in output, output
    answered = node.process("coredns").tail(200)
    assert re.search(r'"A IN example\.com\. udp \d+ false \d+" NXDOMAIN ', answered), answered
    # No plugin that could send a query anywhere is even built in.
    plugins = host(str(node.node_binaries.coredns), "-plugins").split()
    assert "forward" not in plugins, plugins
    assert "grpc" not in plugins, plugins
