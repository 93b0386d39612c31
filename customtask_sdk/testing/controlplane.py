"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, and optionally
kube-controller-manager (garbage collection) and Tekton's controller, all out of cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from customtask_sdk.client import JSON, ConflictError, KubeClient, Resource
from customtask_sdk.testing.certs import CertificateAuthority, KeyPair
from customtask_sdk.testing.processes import AsyncService, ManagedProcess, free_port, tail_file
from customtask_sdk.testing.testbin import (
    LISTEN_HOST_ENV,
    Binaries,
    locate,
    locate_tekton_resolvers,
)

__all__ = [
    "DEFAULT_CONTROLLERS",
    "NODE_CONTROLLERS",
    "TEKTON_NAMESPACE",
    "ControlPlane",
    "ControlPlaneError",
]

#: The namespace Tekton's controller reads its ConfigMaps from.
TEKTON_NAMESPACE = "tekton-pipelines"
#: Where Tekton's remote resolvers read their ConfigMaps.
RESOLVERS_NAMESPACE = "tekton-pipelines-resolvers"

_CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "", namespaced=False)
_CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
_NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
_FIELD_MANAGER = "customtask-sdk-testing"
#: kube-controller-manager's controllers without a node: garbage collection, namespaces.
DEFAULT_CONTROLLERS = ("garbage-collector-controller", "namespace-controller")
#: What a cluster with a node needs on top: the node's not-ready taint lifted, ``default``
#: ServiceAccounts and their tokens, the root CA for in-cluster clients, Service endpoints,
#: PVCs bound (with the hostPath provisioner), workloads (Tekton's affinity assistant is a
#: StatefulSet), finished Pods collected, and the aggregated roles (``view``, ``edit``) filled.
NODE_CONTROLLERS = (
    *DEFAULT_CONTROLLERS,
    "node-lifecycle-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "statefulset-controller",
    "deployment-controller",
    "replicaset-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
)
# Tekton's controller needs every image flag set, though custom tasks never run an image.
_TEKTON_IMAGE_FLAGS = (
    "entrypoint-image",
    "nop-image",
    "sidecarlogresults-image",
    "workingdirinit-image",
    "shell-image",
    "shell-image-win",
)


#: The Service IP range, and the ``kubernetes`` Service's address in it.
SERVICE_CIDR = "10.0.0.0/24"
_KUBERNETES_SERVICE_IP = "10.0.0.1"


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries its log tail."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _load_yaml_documents(paths: Iterable[Path]) -> list[JSON]:
    documents: list[JSON] = []
    for path in paths:
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


class ControlPlane(AsyncService):
    """etcd + kube-apiserver (envtest-style), with Tekton's CRDs and, on request, controllers.

    Use it as an async context manager::

        async with ControlPlane() as cp:
            await cp.start_tekton_controller()
            client = cp.client  # admin KubeClient
            ...

    Everything lives in ``workdir`` (a temporary folder unless given): certificates, the
    admin kubeconfig (``cp.kubeconfig``), etcd's data and one log per component under
    ``logs/``. Stopping ends only the processes this object started.

    Args:
        binaries: located binaries; defaults to :func:`~customtask_sdk.testing.testbin.locate`.
        workdir: where to keep state; removed on stop only if it was created here.
        install_tekton: install Tekton's namespace, CRDs and ConfigMaps on start.
        bind_address: where kube-apiserver listens and what it advertises (the ``kubernetes``
            Service's endpoint). Loopback by default; a node's Pods need an address they
            reach, such as the Pod bridge's own (see :class:`~customtask_sdk.testing.node.Node`).
        service_accounts: admit Pods with ServiceAccount tokens (a node needs it; it also
            needs kube-controller-manager's ServiceAccount controllers).
        apiserver_args: more kube-apiserver flags (e.g. an audit log for a benchmark).
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        workdir: Path | None = None,
        *,
        install_tekton: bool = True,
        bind_address: str = "127.0.0.1",
        service_accounts: bool = False,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries or locate()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="customtask-cp-"))
        self.log_dir = self.workdir / "logs"
        self.install_tekton = install_tekton
        self.etcd_port = free_port()
        self.bind_address = bind_address
        self.service_accounts = service_accounts
        self.apiserver_args = list(apiserver_args)
        self.apiserver_port = free_port()  # free on loopback: no wildcard listener has it
        self.host = f"https://{bind_address}:{self.apiserver_port}"
        #: The admin kubeconfig (user ``default`` in ``system:masters``), written on start.
        self.kubeconfig = self.workdir / "kubeconfig-admin.yaml"
        #: Seconds each start-up phase took (``etcd``, ``apiserver``, ``tekton-crds``...).
        self.timings: dict[str, float] = {}
        self._processes: dict[str, ManagedProcess] = {}
        self._client: KubeClient | None = None
        self._pki = self.workdir / "pki"
        self._serving_ca = CertificateAuthority("customtask-sdk-serving-ca")
        self._client_ca = CertificateAuthority("customtask-sdk-client-ca")

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start etcd and kube-apiserver, wait until ready, then install Tekton's resources."""
        started = time.monotonic()
        self._write_pki()
        await self._start_etcd()
        self.timings["etcd"] = time.monotonic() - started
        await self.start_apiserver()
        self.timings["apiserver"] = time.monotonic() - started
        self.kubeconfig_for("default", ["system:masters"], name="admin")
        self._client = await KubeClient.from_kubeconfig(str(self.kubeconfig))
        if self.install_tekton:
            phase = time.monotonic()
            await self._install_tekton_resources()
            self.timings["tekton-resources"] = time.monotonic() - phase
        self.timings["total"] = time.monotonic() - started

    async def stop(self) -> None:
        """Stop every process started here (controllers first) and remove a temp workdir."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        for name in reversed(list(self._processes)):
            await self._processes.pop(name).stop()
        if self._own_workdir and not os.environ.get("CUSTOMTASK_SDK_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def client(self) -> KubeClient:
        """A shared admin client (``system:masters``)."""
        if self._client is None:
            raise ControlPlaneError("the control plane is not started")
        return self._client

    def process(self, name: str) -> ManagedProcess:
        """The managed process of a component: ``etcd``, ``kube-apiserver``, ``tekton``..."""
        return self._processes[name]

    # -- certificates and kubeconfigs ---------------------------------------------------

    def _write_pki(self) -> None:
        self._pki.mkdir(parents=True, exist_ok=True)
        hosts = ["localhost", "127.0.0.1", self.bind_address, _KUBERNETES_SERVICE_IP]
        hosts += [f"kubernetes.default.svc{suffix}" for suffix in ("", ".cluster.local")]
        self._serving_ca.issue_serving(["kubernetes", "kubernetes.default", *hosts]).write(
            self._pki / "apiserver.crt", self._pki / "apiserver.key"
        )
        (self._pki / "client-ca.crt").write_bytes(self._client_ca.cert_pem)
        (self._pki / "serving-ca.crt").write_bytes(self._serving_ca.cert_pem)
        # The signer's certificate carries the public key the apiserver verifies tokens with.
        CertificateAuthority("service-account-signer").key_pair.write(
            self._pki / "sa.crt", self._pki / "sa.key"
        )

    def kubeconfig_for(
        self, user: str, groups: Sequence[str] = (), *, name: str | None = None
    ) -> Path:
        """Write a kubeconfig authenticating as ``user`` in ``groups`` (a client cert).

        The apiserver authorizes it through RBAC, so grant it roles as a real user.
        """
        pair: KeyPair = self._client_ca.issue_client(user, groups)
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.host,
                        "certificate-authority-data": _b64(self._serving_ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(pair.cert_pem),
                        "client-key-data": _b64(pair.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path = self.workdir / f"kubeconfig-{name or user}.yaml"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    # -- components ---------------------------------------------------------------------

    async def _start(self, process: ManagedProcess) -> None:
        self._processes[process.name] = process
        await process.start()

    async def _start_etcd(self) -> None:
        url = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{free_port()}"
        argv = [
            str(self.binaries.etcd),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        await self._start(ManagedProcess("etcd", argv, self.log_dir))
        await self._wait_http("etcd", f"{url}/health", None)

    async def start_apiserver(self) -> None:
        """Start (or restart, after :meth:`stop_apiserver`) kube-apiserver on the same port."""
        pki = self._pki
        argv = [
            str(self.binaries.kube_apiserver),
            f"--advertise-address={self.bind_address}",
            f"--bind-address={self.bind_address}",
            f"--secure-port={self.apiserver_port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.host}/",
            f"--service-account-key-file={pki / 'sa.crt'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            *([] if self.service_accounts else ["--disable-admission-plugins=ServiceAccount"]),
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # The lease reconciler publishes the `kubernetes` Service's endpoint; it cannot
            # be a loopback address, so without a node there is none.
            "--endpoint-reconciler-type="
            + ("none" if self.bind_address.startswith("127.") else "lease"),
            "--kubelet-preferred-address-types=InternalIP",
            "--v=1",
            *self.apiserver_args,
        ]
        await self._start(ManagedProcess("kube-apiserver", argv, self.log_dir))
        context = ssl.create_default_context(cafile=str(pki / "serving-ca.crt"))
        admin = self._client_ca.issue_client("readiness-probe", ["system:masters"])
        with tempfile.TemporaryDirectory() as tmp:
            admin.write(Path(tmp) / "c.crt", Path(tmp) / "c.key")
            context.load_cert_chain(Path(tmp) / "c.crt", Path(tmp) / "c.key")
        await self._wait_http("kube-apiserver", f"{self.host}/readyz", context)

    async def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop kube-apiserver (SIGKILL with ``kill=True``), keeping etcd's data."""
        process = self._processes.pop("kube-apiserver")
        await (process.kill() if kill else process.stop())

    async def _wait_http(
        self, name: str, url: str, context: ssl.SSLContext | None, timeout: float = 60.0
    ) -> None:
        process = self._processes[name]
        deadline = time.monotonic() + timeout
        connector = aiohttp.TCPConnector(ssl=context) if context else aiohttp.TCPConnector()
        last = "no answer yet"
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < deadline:
                try:
                    process.check_alive()
                except RuntimeError as exc:
                    raise ControlPlaneError(str(exc)) from None
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        body = await resp.text()
                        if resp.status == 200:
                            return
                        last = f"{resp.status}: {body[:300]}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                await asyncio.sleep(0.05)
        raise ControlPlaneError(
            f"{name} was not ready at {url} after {timeout:.0f}s ({last}); log tail:\n"
            + process.tail()
        )

    async def start_controller_manager(
        self, controllers: Sequence[str] = DEFAULT_CONTROLLERS
    ) -> None:
        """Start kube-controller-manager with ``controllers`` (by default garbage collection
        and namespace deletion; :data:`NODE_CONTROLLERS` for a node)."""
        argv = [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(controllers)}",
            f"--service-account-private-key-file={self._pki / 'sa.key'}",
            f"--root-ca-file={self._pki / 'serving-ca.crt'}",
            "--enable-hostpath-provisioner",
            "--node-monitor-period=1s",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]
        await self._start(ManagedProcess("kube-controller-manager", argv, self.log_dir))
        await asyncio.sleep(0)
        self._processes["kube-controller-manager"].check_alive()

    async def start_tekton_controller(
        self,
        *,
        threads_per_controller: int = 2,
        images: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        """Start Tekton's PipelineRun/TaskRun controller out of cluster and wait for it.

        ``images`` sets its image flags (``entrypoint-image``...: a node's local images);
        without a node they name an image that never runs. Every port it opens is a free
        one, so several control planes can share a machine. ``environment`` adds variables.
        """
        probes = free_port()
        env = dict(os.environ)
        env.update(
            SYSTEM_NAMESPACE=TEKTON_NAMESPACE,
            PROBES_PORT=str(probes),
            METRICS_DOMAIN="tekton.dev/pipeline",
            KUBERNETES_MIN_VERSION="v1.28.0",
            PROFILING_PORT=str(free_port()),
            # knative's metrics server: loopback and a free port, not every interface's 9090.
            METRICS_PROMETHEUS_HOST="127.0.0.1",
            METRICS_PROMETHEUS_PORT=str(free_port()),
            KNATIVE_HEALTH_PROBES_PORT=str(free_port()),  # see testbin's knative overlay
            # Its probe, knative probe and profiling servers: loopback, not every interface.
            **{LISTEN_HOST_ENV: "127.0.0.1"},
        )
        env.update(environment or {})
        argv = [
            str(self.binaries.tekton_controller),
            f"-kubeconfig={self.kubeconfig}",
            "-disable-ha",
            f"-threads-per-controller={threads_per_controller}",
        ]
        chosen = images or {}
        argv += [
            f"-{flag}={chosen.get(flag, 'customtask-sdk.invalid/unused')}"
            for flag in _TEKTON_IMAGE_FLAGS
        ]
        await self._start(ManagedProcess("tekton", argv, self.log_dir, env=env))
        await self._wait_http("tekton", f"http://127.0.0.1:{probes}/readiness", None)

    async def start_tekton_resolvers(self) -> None:
        """Start Tekton's remote resolvers (``cmd/resolvers``: cluster, git, http, hub,
        bundle) out of cluster, with their ConfigMaps, and wait until they are ready. Once:
        a second call does nothing.

        Raises:
            TestbinMissingError: the resolvers are not built (``testbin install``).
        """
        if "tekton-resolvers" in self._processes:
            return
        binary = locate_tekton_resolvers(self.binaries.versions)
        await self.ensure_namespace(RESOLVERS_NAMESPACE)
        config_maps = [
            doc
            for doc in _load_yaml_documents(sorted((binary.parent / "config").glob("*.yaml")))
            if doc.get("kind") == "ConfigMap"
        ]
        await asyncio.gather(
            *(self.client.apply(_CONFIG_MAPS, cm, _FIELD_MANAGER) for cm in config_maps)
        )
        probes = free_port()
        env = dict(os.environ)
        env.update(
            SYSTEM_NAMESPACE=RESOLVERS_NAMESPACE,
            CONFIG_LOGGING_NAME="config-logging",
            CONFIG_OBSERVABILITY_NAME="config-observability",
            CONFIG_FEATURE_FLAGS_NAME="feature-flags",
            CONFIG_LEADERELECTION_NAME="config-leader-election-resolvers",
            METRICS_DOMAIN="tekton.dev/resolution",
            KUBERNETES_MIN_VERSION="v1.28.0",
            PROFILING_PORT=str(free_port()),
            METRICS_PROMETHEUS_HOST="127.0.0.1",
            METRICS_PROMETHEUS_PORT=str(free_port()),
            KNATIVE_HEALTH_PROBES_PORT=str(probes),
            **{LISTEN_HOST_ENV: "127.0.0.1"},
        )
        argv = [str(binary), f"-kubeconfig={self.kubeconfig}"]
        await self._start(ManagedProcess("tekton-resolvers", argv, self.log_dir, env=env))
        await self._wait_http("tekton-resolvers", f"http://127.0.0.1:{probes}/readiness", None)

    # -- Tekton's resources ------------------------------------------------------------

    async def _install_tekton_resources(self) -> None:
        config = self.binaries.tekton_config
        await self.ensure_namespace(TEKTON_NAMESPACE)
        crds = _load_yaml_documents(sorted((config / "300-crds").glob("*.yaml")))
        for crd in crds:
            # No Tekton webhook runs here: clients use storage versions, and anything that
            # reads other versions (the namespace controller does) gets a plain re-label.
            crd["spec"]["conversion"] = {"strategy": "None"}
        await asyncio.gather(*(self.client.apply(_CRDS, crd, _FIELD_MANAGER) for crd in crds))
        config_maps = [
            doc
            for doc in _load_yaml_documents(sorted(config.glob("config-*.yaml")))
            if doc.get("kind") == "ConfigMap"
        ]
        await asyncio.gather(
            *(self.client.apply(_CONFIG_MAPS, cm, _FIELD_MANAGER) for cm in config_maps)
        )
        await self.wait_crds_established([crd["metadata"]["name"] for crd in crds])

    async def wait_crds_established(self, names: Sequence[str], timeout: float = 30.0) -> None:
        """Wait until every named CRD is ``Established`` (served by the apiserver)."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                crd = await self.client.get(_CRDS.path(name=name))
                conditions = crd.get("status", {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    pending.discard(name)
            if pending:
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRDs not established after {timeout}s: {pending}")
                await asyncio.sleep(0.05)

    async def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace unless it exists."""
        metadata: JSON = {"name": name, "labels": labels or {}}
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
        with contextlib.suppress(ConflictError):
            await self.client.create(_NAMESPACES.path(), body)

    # -- diagnostics --------------------------------------------------------------------

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failing test's report."""
        sections = []
        for path in sorted(self.log_dir.glob("*.log")):
            sections.append(f"===== {path.name} ({path}) =====\n{tail_file(path, lines)}")
        return "\n".join(sections)
