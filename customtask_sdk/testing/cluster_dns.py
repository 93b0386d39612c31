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
import secrets
import socket
import struct
import subprocess
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

_COREFILE = """{domain}:{port} in-addr.arpa:{port} ip6.arpa:{port} {{
    bind {address}
    errors
    log
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
        kubeconfig: how it reads Services and EndpointSlices.
    """

    address: str
    port: int
    kubeconfig: Path

    def corefile(self) -> str:
        """The Corefile: ``cluster.local`` and reverse zones from the API, NXDOMAIN else."""
        return _COREFILE.format(
            domain=CLUSTER_DOMAIN,
            port=self.port,
            address=self.address,
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

    def resolve(self, name: str, timeout: float = 1.0) -> tuple[int, list[str]]:
        """Ask CoreDNS itself for ``name``'s A records: the response code and addresses.

        Raises:
            OSError: no answer within ``timeout`` seconds.
        """
        ident = secrets.randbelow(1 << 16)
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
        query = struct.pack(">6H", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + b"\0\1\0\1"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(query, (self.address, self.port))
            while True:
                reply = sock.recv(4096)
                if reply[:2] == query[:2]:
                    return reply[3] & 0xF, _addresses(reply, 12 + len(labels) + 5)

    def ready(self) -> bool:
        """Whether CoreDNS answers, with the ``kubernetes`` Service's ClusterIP (so it has
        read the API)."""
        try:
            code, addresses = self.resolve(f"kubernetes.default.svc.{CLUSTER_DOMAIN}", 0.2)
        except OSError:
            return False
        return code == 0 and bool(addresses)


def _addresses(reply: bytes, offset: int) -> list[str]:
    """The IPv4 addresses in the answer section of a DNS reply; ``offset``: where it starts."""
    found = []
    for _ in range(struct.unpack(">H", reply[6:8])[0]):
        while reply[offset] and reply[offset] < 0xC0:  # an owner name's labels
            offset += 1 + reply[offset]
        offset += 2 if reply[offset] else 1  # a compression pointer, or the root label
        rtype, _class, _ttl, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return found


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
