"""A real worker node beside a local control plane: Pods run, with no Docker and no registry.

:class:`Node` starts a :class:`~customtask_sdk.testing.controlplane.ControlPlane` bound to
the Pod bridge's own address, kube-controller-manager with the controllers a node needs,
kube-scheduler, containerd (its own config, root, state and socket), the kubelet,
kube-proxy, CoreDNS (cluster DNS: :mod:`~customtask_sdk.testing.cluster_dns`), a registry
of images built here (see :mod:`customtask_sdk.testing.images`) and Tekton's controller
using those images. It needs root. Stopping leaves nothing
behind: processes (container shims too), mounts, network namespaces, the bridge,
iptables rules, cgroups; kernel settings changed are restored. One node runs on a machine
at a time (:data:`LOCK_PATH`): others wait, and the next one removes what a node whose
process died left behind.

Networking sends nothing off the machine: the bridge has no masquerade, Pods have routes
to the bridge's subnet and the Service range only, forwarding between the bridge and any
other interface is dropped, and the cluster DNS answers only names in ``cluster.local``
(NXDOMAIN for any other, at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from customtask_sdk.client import JSON, ConflictError, KubeClient, Resource
from customtask_sdk.testing.certs import CertificateAuthority
from customtask_sdk.testing.cluster_dns import CLUSTER_DOMAIN, DNS_SERVICE_IP, ClusterDNS, routed
from customtask_sdk.testing.controlplane import (
    NODE_CONTROLLERS,
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
)
from customtask_sdk.testing.images import ImageStore
from customtask_sdk.testing.processes import (
    AsyncService,
    ManagedProcess,
    free_port,
    has_exited,
    tail_file,
)
from customtask_sdk.testing.testbin import Binaries, NodeBinaries, locate, locate_node
from customtask_sdk.testing.waiting import condition, wait_for

__all__ = [
    "LOCAL_REGISTRY",
    "LOCK_PATH",
    "Node",
    "NodeError",
    "NodeNetwork",
    "lock_holder",
    "processes_mentioning",
]

_log = logging.getLogger(__name__)

#: The registry name of images built here (any name works: containerd sends every
#: registry to the local one).
LOCAL_REGISTRY = "customtask.local"

_NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
_PODS = Resource("", "v1", "pods", "Pod")
_SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
_STORAGE_CLASSES = Resource("storage.k8s.io", "v1", "storageclasses", "", namespaced=False)
_MIRRORED = ("docker.io", "mirror.gcr.io", "gcr.io", "ghcr.io", "quay.io", "_default")
# Registry hosts the HTTPS proxy answers for (Tekton's entrypoint lookups).
_PROXIED_HOSTS = (
    "index.docker.io",
    "registry-1.docker.io",
    "docker.io",
    "*.docker.io",
    "mirror.gcr.io",
    "gcr.io",
    "*.gcr.io",
    "*.pkg.dev",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "cgr.dev",
    "public.ecr.aws",
    LOCAL_REGISTRY,
)
# Kernel settings the kubelet, kube-proxy or the CNI bridge plugin may change.
_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_GUARD_CHAIN = "CUSTOMTASK-NODE"
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_NETNS_DIR = Path("/run/netns")
_HOSTPATH_PV_DIR = Path("/tmp/hostpath_pv")  # kube-controller-manager's hostPath provisioner
_CONTAINER_LOGS = Path("/var/log/containers")  # fixed in the kubelet
_CNI_CACHE = Path("/var/lib/cni")  # libcni's cache, fixed in containerd 1.6
_SHIM_SOCKETS = Path("/run/containerd")  # shims' sockets, fixed in containerd 1.6
#: The machine-wide lock a running node's process holds (``flock``); its PID is inside.
LOCK_PATH = Path("/run/customtask-sdk/node.lock")
# What the running node changed, to undo if its process dies before stopping.
_STATE_PATH = LOCK_PATH.with_name("node-state.json")
#: A node's own folder: ``<tmp>/customtask-node-*``, with the PID of its process inside.
_WORKDIR_PREFIX = "customtask-node-"
_OWNER_FILE = "owner.pid"


_CONTAINERD_CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # The VM's capability bounding set lacks CAP_SYS_RESOURCE: negative oom_score_adj fails.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{dir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"""


class NodeError(ControlPlaneError):
    """The node failed to start or become ready; the message carries log tails."""


@dataclass(frozen=True)
class NodeNetwork:
    """The Pod bridge and its addresses. The bridge's own address is the node's and the
    apiserver's, reachable from this machine and its Pods only."""

    bridge: str = "ctsdk0"
    host_ip: str = "10.0.1.1"
    prefix: int = 24
    #: First and last Pod address handed out in the bridge's subnet.
    range_start: str = "10.0.1.10"
    range_end: str = "10.0.1.250"

    @property
    def subnet(self) -> str:
        """The bridge's subnet in CIDR notation."""
        return str(ipaddress.ip_interface(f"{self.host_ip}/{self.prefix}").network)


def _sh(*argv: str, check: bool = True) -> str:
    """Run a short host command (ip, iptables, ctr); its output, or raise with stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _read_sysctls() -> dict[str, str]:
    values = {}
    for name in _SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


def _iptables_state(binary: str) -> dict[str, set[str]]:
    """Each table's chain declarations and rules (``iptables -S`` lines)."""
    state = {}
    for table in ("filter", "nat", "mangle"):
        out = _sh(binary, "-w", "-t", table, "-S", check=False)
        state[table] = set(out.splitlines())
    return state


def _mount_points_under(root: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _cgroup_dirs(name: str) -> set[Path]:
    return {path for path in _CGROUP_ROOT.glob(f"*/{name}") if path.is_dir()}


def _remove_cgroup_tree(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _kill_and_reap(pids: set[int], timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait until they have exited (zombies count)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    deadline = time.monotonic() + timeout
    while any(not has_exited(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def processes_mentioning(marker: str) -> set[int]:
    """The processes whose command line contains ``marker``: ``f"{node.workdir}/"`` finds
    every process of a node (components and container shims), running or left behind."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in (proc / "cmdline").read_bytes():
                    found.add(int(proc.name))
    return found


def _kill_cgroup_processes(cgroups: set[Path]) -> None:
    """SIGKILL every process in ``cgroups`` and below (containers whose shim is gone)."""
    pids: set[int] = set()
    for cgroup in cgroups:
        for procs in cgroup.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(pid) for pid in procs.read_text().split())
    _kill_and_reap(pids)


def lock_holder() -> int | None:
    """The PID of the process running a node on this machine, or ``None``."""
    try:
        fd = os.open(LOCK_PATH, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class _MachineLock:
    """:data:`LOCK_PATH`, held (``flock``) from a node's start to the end of its stop.

    The kernel drops it when the holding process dies, however it dies: a free lock with
    a state file left means the node that wrote it is dead.
    """

    def __init__(self) -> None:
        self._fd: int | None = None

    async def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for the node holding it."""
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await self._wait(fd, timeout)
        except BaseException:  # timed out or cancelled
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @staticmethod
    async def _wait(fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode().strip() or "?"
                if time.monotonic() >= deadline:
                    raise NodeError(
                        f"another node runs on this machine (process {holder} holds "
                        f"{LOCK_PATH}); waited {timeout:g}s for it to stop"
                    ) from None
                if not waiting:
                    _log.info("waiting up to %gs for the node of process %s", timeout, holder)
                    waiting = True
                await asyncio.sleep(0.2)

    def release(self) -> None:
        """Let the next node start."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None


@dataclass
class _HostState:
    """What the node changes on the host, recorded on start and undone on stop."""

    network: NodeNetwork
    sysctls: dict[str, str]
    iptables: dict[str, dict[str, set[str]]]
    netns: set[str]
    cgroups: set[Path]
    existed: dict[Path, bool]

    @classmethod
    def capture(cls, network: NodeNetwork) -> _HostState:
        """The host as it is now."""
        created_here = (_HOSTPATH_PV_DIR, _CONTAINER_LOGS, _NETNS_DIR, _CNI_CACHE, _SHIM_SOCKETS)
        return cls(
            network=network,
            sysctls=_read_sysctls(),
            iptables={b: _iptables_state(b) for b in ("iptables", "ip6tables")},
            netns=set(os.listdir(_NETNS_DIR)) if _NETNS_DIR.exists() else set(),
            cgroups=_cgroup_dirs("kubepods"),
            existed={path: path.exists() for path in created_here},
        )

    def to_json(self) -> JSON:
        """The record as JSON (the state file's ``host``)."""
        return {
            "network": asdict(self.network),
            "sysctls": self.sysctls,
            "iptables": {
                b: {t: sorted(r) for t, r in ts.items()} for b, ts in self.iptables.items()
            },
            "netns": sorted(self.netns),
            "cgroups": sorted(map(str, self.cgroups)),
            "existed": {str(path): existed for path, existed in self.existed.items()},
        }

    @classmethod
    def from_json(cls, data: JSON) -> _HostState:
        """The record :meth:`to_json` wrote."""
        return cls(
            network=NodeNetwork(**data["network"]),
            sysctls=data["sysctls"],
            iptables={b: {t: set(r) for t, r in ts.items()} for b, ts in data["iptables"].items()},
            netns=set(data["netns"]),
            cgroups=set(map(Path, data["cgroups"])),
            existed={Path(path): existed for path, existed in data["existed"].items()},
        )

    def check_free(self) -> None:
        """Raise unless the bridge is free (another node would own it)."""
        bridge = self.network.bridge
        if Path(f"/sys/class/net/{bridge}").exists():
            raise NodeError(
                f"interface {bridge} exists but no node recorded it in {_STATE_PATH}: a node "
                f"of an older version runs, or it was made by hand (`ip link del {bridge}`)"
            )

    def create_bridge(self) -> None:
        net = self.network
        _sh("ip", "link", "add", net.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{net.host_ip}/{net.prefix}", "dev", net.bridge)
        _sh("ip", "link", "set", net.bridge, "up")
        # Pods' traffic stays on the bridge: nothing is forwarded to or from elsewhere.
        guard = ("iptables", "-w", "-A", _GUARD_CHAIN)
        _sh("iptables", "-w", "-N", _GUARD_CHAIN)
        _sh(*guard, "-i", net.bridge, "!", "-o", net.bridge, "-j", "DROP")
        _sh(*guard, "!", "-i", net.bridge, "-o", net.bridge, "-j", "DROP")
        _sh("iptables", "-w", "-I", "FORWARD", "1", "-j", _GUARD_CHAIN)

    def restore(self, node_dir: Path) -> list[str]:
        """Undo everything; returns what could not be undone."""
        problems: list[str] = []
        _kill_cgroup_processes(_cgroup_dirs("kubepods") - self.cgroups)
        for point in _mount_points_under(node_dir):
            _sh("umount", "-l", point, check=False)
            if Path(point).is_mount():
                problems.append(f"mount {point}")
        if _NETNS_DIR.exists():
            for name in set(os.listdir(_NETNS_DIR)) - self.netns:
                _sh("umount", "-l", str(_NETNS_DIR / name), check=False)
                with contextlib.suppress(OSError):
                    (_NETNS_DIR / name).unlink()
        if Path(f"/sys/class/net/{self.network.bridge}").exists():
            _sh("ip", "link", "del", self.network.bridge, check=False)
        for binary, before in self.iptables.items():
            problems += _restore_iptables(binary, before)
        for name, value in self.sysctls.items():
            path = Path("/proc/sys") / name
            with contextlib.suppress(OSError):
                if path.read_text().strip() != value:
                    path.write_text(value)
        for path in _cgroup_dirs("kubepods") - self.cgroups:
            _remove_cgroup_tree(path)
            if path.exists():
                problems.append(f"cgroup {path}")
        if _CONTAINER_LOGS.exists():
            for link in _CONTAINER_LOGS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(f"{node_dir}/"):
                    link.unlink()
        for leftover in _CNI_CACHE.glob("results/customtask-sdk-pods-*"):
            leftover.unlink()
        for path, existed in self.existed.items():
            if not existed and path.exists():
                shutil.rmtree(path, ignore_errors=True)
        return problems


def _restore_iptables(binary: str, before: dict[str, set[str]]) -> list[str]:
    """Delete the rules and chains added since ``before`` (kubelet, kube-proxy, guard)."""
    after = _iptables_state(binary)
    for table, lines in after.items():
        added = [line for line in lines if line not in before[table]]
        for rule in (line for line in added if line.startswith("-A ")):
            _sh(binary, "-w", "-t", table, "-D", *shlex.split(rule[3:]), check=False)
        chains = [line.split()[1] for line in added if line.startswith("-N ")]
        for chain in chains:
            _sh(binary, "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            _sh(binary, "-w", "-t", table, "-X", chain, check=False)
    left = _iptables_state(binary)
    return [
        f"{binary} -t {table} {line}"
        for table, lines in left.items()
        for line in sorted(lines - before[table])
    ]


class Node(AsyncService):
    """A local cluster with one real worker node. Needs root; one per machine.

    Use it as an async context manager::

        async with Node() as node:
            client = node.client             # admin KubeClient
            await node.wait_service_account("default")
            ...                               # Pods, TaskRuns, PipelineRuns run for real

    ``node.control_plane`` is the :class:`ControlPlane`; ``node.images`` the
    :class:`~customtask_sdk.testing.images.ImageStore` Pods pull from (add images to it
    at any time). Each component logs to ``<workdir>/logs/<name>.log``.

    Args:
        binaries: control-plane binaries (default: :func:`locate`).
        node_binaries: node binaries (default: :func:`locate_node`).
        workdir: where to keep state; removed on stop if created here.
        network: the Pod bridge and addresses.
        name: the node's name.
        kubelet_port: the kubelet's API port on the node's address.
        tekton: start Tekton's controller with the local images.
        lock_timeout: seconds to wait for another process's node to stop (one node runs
            on a machine at a time: :data:`LOCK_PATH`).
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        node_binaries: NodeBinaries | None = None,
        workdir: Path | None = None,
        *,
        network: NodeNetwork | None = None,
        name: str = "customtask-node",
        kubelet_port: int = 10250,
        tekton: bool = True,
        lock_timeout: float = 1800.0,
    ) -> None:
        self.binaries = binaries or locate()
        self.node_binaries = node_binaries or locate_node(self.binaries.versions)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        self.workdir.chmod(0o755)
        if self._own_workdir:  # a process killed before start() ends leaves it: swept
            (self.workdir / _OWNER_FILE).write_text(str(os.getpid()))
        self.network = network or NodeNetwork()
        self.name = name
        self.kubelet_port = kubelet_port
        self.tekton = tekton
        self.lock_timeout = lock_timeout
        self._lock = _MachineLock()
        self.log_dir = self.workdir / "logs"
        self.control_plane = ControlPlane(
            self.binaries,
            self.workdir / "control-plane",
            bind_address=self.network.host_ip,
            service_accounts=True,
        )
        self.control_plane.log_dir = self.log_dir
        self.images = ImageStore(self.workdir / "registry")
        self.registry_port = free_port()
        #: The cluster DNS (CoreDNS on the bridge address, Service ``kube-system/kube-dns``).
        self.dns = ClusterDNS(self.network.host_ip, free_port(), self.control_plane.kubeconfig)
        #: Seconds each start-up phase took, from the start (``node-ready``...).
        self.timings: dict[str, float] = {}
        #: Image references of the Tekton images and the base image (``entrypoint-image``...).
        self.tekton_images: dict[str, str] = {}
        self._processes: dict[str, ManagedProcess] = {}
        self._host: _HostState | None = None
        self._socket = self.workdir / "containerd" / "containerd.sock"

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def client(self) -> KubeClient:
        """The admin client of the node's control plane."""
        return self.control_plane.client

    def image(self, repository: str, tag: str = "latest") -> str:
        """A reference to an image in :attr:`images`, as Pods name it."""
        return f"{LOCAL_REGISTRY}/{repository}:{tag}"

    async def start(self) -> None:
        """Start everything and wait until the node is Ready and untainted."""
        started = time.monotonic()

        def mark(phase: str) -> None:
            self.timings[phase] = time.monotonic() - started

        await self._lock.acquire(self.lock_timeout)
        _remove_dead_node(self.node_binaries.kube_proxy)
        remove_orphan_workdirs(self.workdir.parent, keep=self.workdir)
        host = _HostState.capture(self.network)
        host.check_free()
        self._host = host  # from here on, stop() undoes what start() did
        _write_atomically(
            _STATE_PATH,
            json.dumps(
                {
                    "workdir": str(self.workdir),
                    "own_workdir": self._own_workdir,
                    "host": host.to_json(),
                }
            ),
        )
        host.create_bridge()
        self._write_configs()
        await self._start_registry()
        proxy_env = await self._start_registry_proxy()
        # Images are built while the control plane starts; nothing pulls before the kubelet.
        await asyncio.gather(
            self.control_plane.start(),
            self._start_containerd(),
            asyncio.to_thread(self._build_images),
        )
        mark("control-plane")
        await self.control_plane.start_controller_manager(NODE_CONTROLLERS)
        await self._start_process("kube-scheduler", self._scheduler_argv())
        await self._start_process("kube-proxy", self._proxy_argv())
        await self.dns.publish(self.client)
        coredns = self.workdir / "coredns" / "Corefile"
        dns = await self._start_process(
            "coredns", [str(self.node_binaries.coredns), "-conf", str(coredns)]
        )
        kubelet_started = time.monotonic()
        await self._start_process("kubelet", self._kubelet_argv())
        iptables = self.node_binaries.iptables
        await asyncio.gather(
            self._wait_node_ready(),
            self._wait(
                "cluster DNS",
                lambda: self.dns.ready() and routed(iptables, DNS_SERVICE_IP),
                dns,
                30.0,
            ),
        )
        mark("node-ready")
        self.timings["kubelet-to-ready"] = time.monotonic() - kubelet_started
        await self._create_storage_class()
        if self.tekton:
            await self.control_plane.start_tekton_controller(
                images=self.tekton_images, environment=proxy_env
            )
            mark("tekton")
        self.timings["total"] = time.monotonic() - started

    async def stop(self) -> None:
        """Stop Pods and every process, then undo every change to the host."""
        problems: list[str] = []
        if "kubelet" in self._processes:
            with contextlib.suppress(Exception):  # best effort: containers are removed below
                await self._delete_all_pods()
        for name in ("kubelet", "kube-proxy", "coredns", "kube-scheduler"):
            if name in self._processes:
                await self._processes.pop(name).stop()
        if self._host is not None:  # kube-proxy's own rule removal, before ours
            _sh(str(self.node_binaries.kube_proxy), "--cleanup", check=False)
        if "containerd" in self._processes:
            self._remove_containers()
            await self._processes.pop("containerd").stop()
        self._kill_shims()
        await self.control_plane.stop()
        for name in reversed(list(self._processes)):
            await self._processes.pop(name).stop()
        if self._host is not None:
            problems = self._host.restore(self.workdir)
            self._host = None
            if not problems:  # else the next node retries from the record
                _STATE_PATH.unlink(missing_ok=True)
        self._lock.release()
        if self._own_workdir and not os.environ.get("CUSTOMTASK_SDK_KEEP_WORKDIR"):
            for _attempt in range(3):  # a lazily unmounted folder can be busy a moment
                shutil.rmtree(self.workdir, ignore_errors=True)
                if not self.workdir.exists():
                    break
                await asyncio.sleep(0.5)
            else:
                problems.append(f"folder {self.workdir}")
        if problems:
            raise NodeError("the node left behind: " + "; ".join(problems))

    def process(self, name: str) -> ManagedProcess:
        """A node component's process: ``kubelet``, ``containerd``, ``kube-scheduler``,
        ``kube-proxy``, ``coredns``, ``registry``, ``registry-proxy`` (the control plane's are
        ``node.control_plane.process(name)``)."""
        return self._processes[name]

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failing test's report."""
        return "\n".join(
            f"===== {path.name} ({path}) =====\n{tail_file(path, lines)}"
            for path in sorted(self.log_dir.glob("*.log"))
        )

    async def wait_service_account(
        self, namespace: str, name: str = "default", timeout: float = 30.0
    ) -> None:
        """Wait until kube-controller-manager has made ``namespace``'s ServiceAccount
        (Pods are refused until then)."""
        await wait_for(self.client, _SERVICE_ACCOUNTS, namespace, name, bool, timeout)

    # -- images -------------------------------------------------------------------------

    def _build_images(self) -> None:
        nb = self.node_binaries
        version = self.binaries.versions.tekton
        base = self.images.add_base(nb.busybox, nb.bash)
        tekton = {
            "entrypoint-image": self.binaries.tekton_entrypoint,
            "nop-image": nb.tekton_nop,
            "workingdirinit-image": nb.tekton_workingdirinit,
            "sidecarlogresults-image": nb.tekton_sidecarlogresults,
        }
        for flag, binary in tekton.items():
            repository = f"tekton/{binary.name}"
            self.images.add_binary(repository, version, binary)
            self.tekton_images[flag] = self.image(repository, version)
        self.tekton_images["shell-image"] = self.image("busybox")
        self.tekton_images["shell-image-win"] = self.image("unused-windows-shell")
        self.images.add_binary("pause", "v1", nb.pause)
        self.images.add_binary("kubectl", self.binaries.versions.kubernetes, nb.kubectl, base=base)

    # -- configuration ------------------------------------------------------------------

    def _write_configs(self) -> None:
        net, nb = self.network, self.node_binaries
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "customtask-sdk-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni / "ipam"),
                        "ranges": [
                            [
                                {
                                    "subnet": net.subnet,
                                    "gateway": net.host_ip,
                                    "rangeStart": net.range_start,
                                    "rangeEnd": net.range_end,
                                }
                            ]
                        ],
                        # Only this machine and Services: no default route off it.
                        "routes": [{"dst": SERVICE_CIDR}],
                    },
                },
                {"type": "loopback"},
            ],
        }
        (cni / "net.d" / "10-customtask.conflist").write_text(json.dumps(conflist, indent=1))
        registry = f"http://127.0.0.1:{self.registry_port}"
        for upstream in _MIRRORED:
            hosts = self.workdir / "containerd" / "certs.d" / upstream
            hosts.mkdir(parents=True)
            (hosts / "hosts.toml").write_text(
                f'server = "{registry}"\n\n[host."{registry}"]\n'
                '  capabilities = ["pull", "resolve"]\n'
            )
        ctd = self.workdir / "containerd"
        (ctd / "config.toml").write_text(
            _CONTAINERD_CONFIG.format(
                dir=ctd,
                socket=self._socket,
                pause=self.image("pause", "v1"),
                runc=nb.runc,
                cni_bin=nb.cni_bin_dir,
                cni_conf=cni / "net.d",
            )
        )
        kubelet = self.workdir / "kubelet"
        kubelet.mkdir()
        # Pods with dnsPolicy Default resolve nothing: their own loopback serves no DNS.
        (kubelet / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (self.workdir / "coredns").mkdir()
        (self.workdir / "coredns" / "Corefile").write_text(self.dns.corefile())
        config: JSON = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": net.host_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            # Only the apiserver and this machine reach this address.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self._socket}",
            "resolvConf": str(kubelet / "resolv.conf"),
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "podLogsDir": str(kubelet / "pod-logs"),
            "volumePluginDir": str(kubelet / "volume-plugins"),
            # Images built here cannot be pulled back from anywhere: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The disk is shared: evict only when it is really full.
            "evictionHard": {
                "memory.available": "10Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "10s",
            "serializeImagePulls": False,
            # Every image comes from this machine's loopback registry: no pull rate limit
            # (the default, 5 a second, made a Pod of many containers wait ~10 s for its
            # last ones, whose pulls were refused with "pull QPS exceeded" and backed off).
            "registryPullQPS": 0,
            "registerNode": True,
            "maxPods": 110,
        }
        (kubelet / "config.yaml").write_text(yaml.safe_dump(config))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.control_plane.kubeconfig)},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "bindAddress": net.host_ip,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": net.subnet,
            "nodePortAddresses": [f"{net.host_ip}/32"],
            # Leave the host's conntrack settings and route_localnet alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }
        (self.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy))

    def _kubelet_argv(self) -> list[str]:
        kubelet = self.workdir / "kubelet"
        return [
            str(self.node_binaries.kubelet),
            f"--config={kubelet / 'config.yaml'}",
            f"--kubeconfig={self.control_plane.kubeconfig}",
            f"--root-dir={kubelet / 'root'}",
            f"--cert-dir={kubelet / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.network.host_ip}",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(self.node_binaries.kube_scheduler),
            f"--kubeconfig={self.control_plane.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ]

    def _proxy_argv(self) -> list[str]:
        return [
            str(self.node_binaries.kube_proxy),
            f"--config={self.workdir / 'kube-proxy.yaml'}",
            "--v=1",
        ]

    # -- processes ----------------------------------------------------------------------

    async def _start_process(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir, env=env)
        self._processes[name] = process
        await process.start()
        return process

    async def _start_registry(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "customtask_sdk.testing.images",
            "serve",
            f"--root={self.images.root}",
            f"--port={self.registry_port}",
        ]
        process = await self._start_process("registry", argv)
        await self._wait(
            "registry", lambda: _port_open("127.0.0.1", self.registry_port), process, 20.0
        )

    async def _start_registry_proxy(self) -> dict[str, str]:
        """Start the HTTPS proxy to the registry; the environment that sends a Go program's
        registry lookups through it (and nothing else anywhere)."""
        folder = self.workdir / "registry-proxy"
        folder.mkdir()
        ca = CertificateAuthority("customtask-sdk-registry-ca")
        (folder / "ca.crt").write_bytes(ca.cert_pem)
        ca.issue_serving(_PROXIED_HOSTS).write(folder / "tls.crt", folder / "tls.key")
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "customtask_sdk.testing.images",
            "proxy",
            f"--port={port}",
            f"--registry-port={self.registry_port}",
            f"--cert={folder / 'tls.crt'}",
            f"--key={folder / 'tls.key'}",
        ]
        process = await self._start_process("registry-proxy", argv)
        await self._wait("registry-proxy", lambda: _port_open("127.0.0.1", port), process, 20.0)
        url = f"http://127.0.0.1:{port}"
        return {
            "HTTPS_PROXY": url,
            "HTTP_PROXY": url,  # plain HTTP (a cloud metadata probe) is refused there
            "NO_PROXY": f"{self.network.host_ip},127.0.0.1,localhost",
            "SSL_CERT_FILE": str(folder / "ca.crt"),
            "GOOGLE_APPLICATION_CREDENTIALS": str(folder / "none.json"),  # no gcloud lookup
        }

    async def _start_containerd(self) -> None:
        config = self.workdir / "containerd" / "config.toml"
        env = dict(os.environ, PATH=f"/usr/sbin:/usr/bin:/sbin:/bin:{os.environ.get('PATH', '')}")
        argv = [str(self.node_binaries.containerd), f"--config={config}", "--log-level=warn"]
        process = await self._start_process("containerd", argv, env)
        await self._wait("containerd", self._socket.exists, process, 30.0)

    async def _wait(
        self, name: str, ready: Callable[[], bool], process: ManagedProcess, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            try:
                process.check_alive()
            except RuntimeError as exc:
                raise NodeError(str(exc)) from None
            if time.monotonic() > deadline:
                raise NodeError(f"{name} not ready after {timeout}s; log tail:\n{process.tail()}")
            await asyncio.sleep(0.05)

    async def _wait_node_ready(self, timeout: float = 60.0) -> None:
        def ready(node: JSON) -> bool:
            found = condition(node, "Ready")
            untainted = not node.get("spec", {}).get("taints")
            return found is not None and found.get("status") == "True" and untainted

        try:
            await wait_for(self.client, _NODES, None, self.name, ready, timeout)
        except TimeoutError as exc:
            raise NodeError(f"{exc}\n{self.log_tails()}") from None

    async def _create_storage_class(self) -> None:
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "hostpath",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        with contextlib.suppress(ConflictError):
            await self.client.create(_STORAGE_CLASSES.path(), body)

    # -- teardown -----------------------------------------------------------------------

    async def _delete_all_pods(self, timeout: float = 30.0) -> None:
        """Delete every Pod and wait until the kubelet has stopped them all."""
        pods = await self.client.list_all(_PODS.path())
        for pod in pods["items"]:
            meta = pod["metadata"]
            # A grace period (unlike 0) lets the kubelet stop the Pod before it is gone.
            path = _PODS.path(meta["namespace"], meta["name"])
            await self.client.delete(path, {"gracePeriodSeconds": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (await self.client.list_all(_PODS.path()))["items"]:
                return
            await asyncio.sleep(0.1)

    def _ctr(self, *args: str) -> str:
        return _sh(
            str(self.node_binaries.ctr),
            "--address",
            str(self._socket),
            "-n",
            "k8s.io",
            *args,
            check=False,
        )

    def _remove_containers(self) -> None:
        """Kill and remove what the kubelet left (its Pods were deleted first)."""
        for task in self._ctr("tasks", "ls", "-q").split():
            self._ctr("tasks", "kill", "-s", "SIGKILL", task)
            self._ctr("tasks", "delete", "-f", task)
        for container in self._ctr("containers", "ls", "-q").split():
            self._ctr("containers", "delete", container)

    def _kill_shims(self) -> None:
        """SIGKILL container shims started by this node's containerd (by its socket)."""
        _kill_and_reap(processes_mentioning(str(self._socket)))


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def remove_orphan_workdirs(parent: Path, keep: Path) -> list[Path]:
    """Remove the folders ``Node()`` made in ``parent`` for processes that died before
    their node started or stopped (killed while waiting for the lock, say): their owner
    process is gone, and nothing is mounted in them (a dead node's mounts are
    :func:`_remove_dead_node`'s). Returns what was removed."""
    removed = []
    for folder in parent.glob(f"{_WORKDIR_PREFIX}*"):
        try:
            owner = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or being made right now
        if folder == keep or _alive(owner) or _mount_points_under(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_node(kube_proxy: Path) -> None:
    """Undo what a node left when its process died before stopping (the state file it
    wrote is still there; holding the lock, we know it is dead): its processes (container
    shims and containers too), mounts, bridge, iptables rules, cgroups, kernel settings."""
    try:
        state = json.loads(_STATE_PATH.read_text())
    except FileNotFoundError:
        return
    workdir = Path(state["workdir"])
    _log.warning("removing what the dead node in %s left behind", workdir)
    _kill_and_reap(processes_mentioning(f"{workdir}/"))  # every command line names it
    _sh(str(kube_proxy), "--cleanup", check=False)
    problems = _HostState.from_json(state["host"]).restore(workdir)
    if state["own_workdir"]:
        shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        raise NodeError(f"the dead node in {workdir} left behind: " + "; ".join(problems))
    _STATE_PATH.unlink()
