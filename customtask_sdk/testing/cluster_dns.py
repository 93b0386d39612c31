"""Cluster DNS for the node: CoreDNS answering for ``cluster.local`` from the API, and
NXDOMAIN for every other name.

CoreDNS (built by :mod:`~customtask_sdk.testing.testbin` with only the plugins used here,
none of which forwards a query) runs as a node process on the Pod bridge's own address, at
a free port. The ``kube-system/kube-dns`` Service has the conventional ClusterIP (the tenth
address of the Service range) and port 53, and an EndpointSlice naming CoreDNS's address
and port: kube-proxy's rules carry Pods' queries there, as on a cluster whose CoreDNS runs
in Pods. The kubelet names that ClusterIP in Pods' ``resolv.conf`` with the usual search
path (``clusterDNS``, ``clusterDomain``).
"""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from customtask_sdk.client import KubeClient, Resource
from customtask_sdk.testing.controlplane import SERVICE_CIDR

__all__ = ["CLUSTER_DOMAIN", "DNS_SERVICE_IP", "ClusterDNS", "routed"]

#: The cluster's DNS domain (the kubelet's ``clusterDomain``).
CLUSTER_DOMAIN = "cluster.local"
#: The ``kube-dns`` Service's ClusterIP, Pods' nameserver (the kubelet's ``clusterDNS``).
DNS_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CIDR)[10])

_SERVICES = Resource("", "v1", "services", "Service")
_ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
_NAME, _NAMESPACE = "kube-dns", "kube-system"
_PORTS = (("dns", "UDP"), ("dns-tcp", "TCP"))
# The readiness probe goes straight to loopback, never through a configured proxy.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_COREFILE = """{domain}:{port} in-addr.arpa:{port} ip6.arpa:{port} {{
    bind {address}
    errors
    log
    ready 127.0.0.1:{ready_port}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
    }}
}}

# Every other name: NXDOMAIN at once. No plugin here sends a query anywhere.
.:{port} {{
    bind {address}
    errors
    log
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


@dataclass(frozen=True)
class ClusterDNS:
    """CoreDNS serving the cluster at ``address:port``, published as ``kube-system/kube-dns``.

    Args:
        address: where CoreDNS listens (the node's bridge address, which Pods reach).
        port: its DNS port (UDP and TCP); the Service maps port 53 to it.
        ready_port: its readiness endpoint on 127.0.0.1 (ready once the API is synced).
        kubeconfig: how it reads Services and EndpointSlices.
    """

    address: str
    port: int
    ready_port: int
    kubeconfig: Path

    def corefile(self) -> str:
        """The Corefile: ``cluster.local`` and reverse zones from the API, NXDOMAIN else."""
        return _COREFILE.format(
            domain=CLUSTER_DOMAIN,
            port=self.port,
            address=self.address,
            ready_port=self.ready_port,
            kubeconfig=self.kubeconfig,
        )

    async def publish(self, client: KubeClient) -> None:
        """Create the ``kube-dns`` Service and the EndpointSlice naming CoreDNS."""
        labels = {"k8s-app": _NAME, "kubernetes.io/name": "CoreDNS"}
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": _NAME, "namespace": _NAMESPACE, "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": name, "protocol": protocol, "port": 53, "targetPort": self.port}
                    for name, protocol in _PORTS
                ],
            },
        }
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": _NAME,
                "namespace": _NAMESPACE,
                "labels": {
                    **labels,
                    "kubernetes.io/service-name": _NAME,
                    "endpointslice.kubernetes.io/managed-by": "customtask-sdk-node",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
            "ports": [
                {"name": name, "protocol": protocol, "port": self.port} for name, protocol in _PORTS
            ],
        }
        for resource, body in ((_SERVICES, service), (_ENDPOINT_SLICES, endpoints)):
            await client.create(resource.path(_NAMESPACE), body)

    def ready(self) -> bool:
        """Whether CoreDNS has synced with the API and answers."""
        try:
            with _NO_PROXY.open(f"http://127.0.0.1:{self.ready_port}/ready", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def routed(iptables: Path, cluster_ip: str, protocols: tuple[str, ...] = ("udp", "tcp")) -> bool:
    """Whether kube-proxy's rules send ``cluster_ip``'s ports of each protocol to endpoints."""
    rules = subprocess.run(
        [str(iptables), "-w", "-t", "nat", "-S", "KUBE-SERVICES"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    wanted = [f"-d {cluster_ip}/32 -p {protocol}" for protocol in protocols]
    return all(any(w in rule for rule in rules) for w in wanted)
