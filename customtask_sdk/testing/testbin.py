"""Control-plane and node binaries built from pinned Go modules, cached outside the project.

``customtask-sdk testbin install`` builds etcd, kube-apiserver, kube-controller-manager,
Tekton's controller and entrypoint, and copies Tekton's CRDs and ConfigMaps from the same
module version. As root it also provides what a real node needs (:func:`locate_node`):
kubelet, kube-scheduler, kube-proxy and kubectl from the same Kubernetes module, Tekton's
image binaries (nop, workingdirinit, sidecarlogresults), a static pause, CoreDNS (cluster
DNS, with only the plugins the node uses: none sends queries upstream), and Debian's
containerd, runc, CNI plugins, iptables, busybox-static and bash-static through apt-get.
Builds are idempotent: a component whose files are present is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PINNED",
    "Binaries",
    "NodeBinaries",
    "NodeMissingError",
    "TestbinMissingError",
    "Versions",
    "cache_dir",
    "install",
    "locate",
    "locate_node",
    "locate_tkn",
]


@dataclass(frozen=True)
class Versions:
    """Pinned releases of the control-plane components (the one place they are recorded)."""

    kubernetes: str = "v1.36.3"
    etcd: str = "v3.6.16"
    tekton: str = "v1.15.1"
    coredns: str = "v1.15.0"
    #: Tekton's CLI (``github.com/tektoncd/cli``), a test dependency: node tests check what
    #: ``tkn`` shows. v0.43.0: v0.42.0 needs a tektoncd/hub the module proxy refuses.
    tkn: str = "v0.43.0"


PINNED = Versions()

_KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager")
_NODE_COMMANDS = ("kubelet", "kube-scheduler", "kube-proxy", "kubectl")
# How each component is built; a cached build made another way is rebuilt.
_RECIPES = {
    "etcd": "static",
    "kubernetes": "static, version stamped",
    "kubernetes-node": "static, version stamped",
    "tekton": "static, knative probes port from KNATIVE_HEALTH_PROBES_PORT, listen host from "
    "CUSTOMTASK_SDK_LISTEN_HOST",
    "tekton-images": "static",
    "tekton-resolvers": "static, knative probes port from KNATIVE_HEALTH_PROBES_PORT, listen "
    "host from CUSTOMTASK_SDK_LISTEN_HOST",
    "pause": "static, v1",
    "coredns": "static, plugins: bind errors kubernetes log template",
    "tkn": "static, built inside its module",
}
_TEKTON_COMMANDS = ("controller", "entrypoint")
_TEKTON_IMAGE_COMMANDS = ("nop", "workingdirinit", "sidecarlogresults")
#: Debian packages a node uses (Debian 12 gives containerd 1.6.20, runc 1.1.5, CNI plugins
#: 1.1.1, iptables 1.8.9, busybox 1.35, bash 5.2): a container runtime that kubelet 1.36
#: accepts, without building containerd (and its cgo-free runc) from source.
DEBIAN_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "busybox-static",
    "bash-static",
)
# A pause process for Pod sandboxes: holds the namespaces, reaps orphans, exits on TERM/INT.
_PAUSE_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\treturn
\t\t}
\t\tfor {
\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""
# CoreDNS with only what the node's Corefile uses (no forward plugin: nothing can be sent
# upstream), which also keeps the build small.
_COREDNS_SOURCE = """package main

import (
\t"github.com/coredns/coredns/coremain"

\t_ "github.com/coredns/coredns/plugin/bind"
\t_ "github.com/coredns/coredns/plugin/errors"
\t_ "github.com/coredns/coredns/plugin/kubernetes"
\t_ "github.com/coredns/coredns/plugin/log"
\t_ "github.com/coredns/coredns/plugin/template"
)

func main() {
\tcoremain.Run()
}
"""


class TestbinMissingError(RuntimeError):
    """A control-plane binary is missing; the message says how to build it."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class Binaries:
    """Where each control-plane executable and Tekton's config folder are."""

    __test__ = False

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    tekton_controller: Path
    tekton_entrypoint: Path
    tekton_config: Path
    versions: Versions


class NodeMissingError(TestbinMissingError):
    """Something a node needs is missing (or this process is not root)."""


@dataclass(frozen=True)
class NodeBinaries:
    """Where each executable a node runs is, and the files its images are built from."""

    __test__ = False

    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    kubectl: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    iptables: Path
    cni_bin_dir: Path
    busybox: Path
    bash: Path
    pause: Path
    coredns: Path
    tekton_nop: Path
    tekton_workingdirinit: Path
    tekton_sidecarlogresults: Path


def cache_dir() -> Path:
    """The build cache: ``$CUSTOMTASK_SDK_CACHE``, else ``$XDG_CACHE_HOME/customtask-sdk``."""
    explicit = os.environ.get("CUSTOMTASK_SDK_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "customtask-sdk"


def _component_dir(name: str, version: str) -> Path:
    return cache_dir() / "testbin" / f"{name}-{version}"


def _missing(executables: Iterable[Path], folder: Path) -> list[str]:
    """Which of ``executables`` are not executable files, and ``folder`` if it is none."""
    missing = [str(path) for path in executables if not os.access(path, os.X_OK)]
    return missing if folder.is_dir() else [*missing, str(folder)]


def locate(versions: Versions = PINNED) -> Binaries:
    """Find every binary, preferring ``KUBEBUILDER_ASSETS`` for etcd and the kube binaries.

    Raises:
        TestbinMissingError: something is not built yet.
    """
    k8s = _component_dir("kubernetes", versions.kubernetes)
    etcd = _component_dir("etcd", versions.etcd) / "etcd"
    apiserver = k8s / "kube-apiserver"
    kcm = k8s / "kube-controller-manager"
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        etcd, apiserver = Path(assets) / "etcd", Path(assets) / "kube-apiserver"
        if (Path(assets) / "kube-controller-manager").exists():
            kcm = Path(assets) / "kube-controller-manager"
    tekton = _component_dir("tekton", versions.tekton)
    binaries = Binaries(
        etcd=etcd,
        kube_apiserver=apiserver,
        kube_controller_manager=kcm,
        tekton_controller=tekton / "controller",
        tekton_entrypoint=tekton / "entrypoint",
        tekton_config=tekton / "config",
        versions=versions,
    )
    executables = (etcd, apiserver, kcm, binaries.tekton_controller, binaries.tekton_entrypoint)
    missing = _missing(executables, binaries.tekton_config / "300-crds")
    if missing:
        raise TestbinMissingError(
            "control-plane binaries are missing: "
            + ", ".join(missing)
            + ". Build them with `customtask-sdk testbin install` (or `hack/testbin.sh`);"
            " the first build takes a while, later ones are skipped."
        )
    return binaries


def locate_node(versions: Versions = PINNED) -> NodeBinaries:
    """Find everything a node needs; it must run as root.

    Raises:
        NodeMissingError: not root, or something is not installed yet.
    """
    if os.geteuid() != 0:
        raise NodeMissingError("a node needs root (containerd, mounts, network namespaces)")
    k8s = _component_dir("kubernetes-node", versions.kubernetes)
    images = _component_dir("tekton-images", versions.tekton)
    node = NodeBinaries(
        kubelet=k8s / "kubelet",
        kube_scheduler=k8s / "kube-scheduler",
        kube_proxy=k8s / "kube-proxy",
        kubectl=k8s / "kubectl",
        containerd=Path("/usr/bin/containerd"),
        containerd_shim=Path("/usr/bin/containerd-shim-runc-v2"),
        ctr=Path("/usr/bin/ctr"),
        runc=Path("/usr/sbin/runc"),
        iptables=Path("/usr/sbin/iptables"),
        cni_bin_dir=Path("/usr/lib/cni"),
        busybox=Path("/bin/busybox"),
        bash=Path("/bin/bash-static"),
        pause=_component_dir("pause", "v1") / "pause",
        coredns=_component_dir("coredns", versions.coredns) / "coredns",
        tekton_nop=images / "nop",
        tekton_workingdirinit=images / "workingdirinit",
        tekton_sidecarlogresults=images / "sidecarlogresults",
    )
    executables = [p for p in vars(node).values() if isinstance(p, Path) and p != node.cni_bin_dir]
    missing = _missing([*executables, node.cni_bin_dir / "bridge"], node.cni_bin_dir)
    if missing:
        raise NodeMissingError(
            "node binaries are missing: "
            + ", ".join(missing)
            + ". Install them with `customtask-sdk testbin install` as root."
        )
    return node


def locate_tkn(versions: Versions = PINNED) -> Path:
    """Where ``tkn`` is.

    Raises:
        TestbinMissingError: it is not built yet.
    """
    return _built("tkn", versions.tkn, "tkn")


def _built(component: str, version: str, name: str) -> Path:
    """Executable ``name`` of a built component.

    Raises:
        TestbinMissingError: it is not built yet.
    """
    path = _component_dir(component, version) / name
    if not os.access(path, os.X_OK):
        raise TestbinMissingError(
            f"{path} is missing. Build it with `customtask-sdk testbin install`."
        )
    return path


Log = Callable[[str], None]


def _run(cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Log) -> str:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _go_env(toolchain: str = "local") -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN=toolchain, GOFLAGS="-buildvcs=false", CGO_ENABLED="0", GOWORK="off")
    return env


def _module_info(module: str, version: str, workdir: Path, log: Log) -> dict[str, str]:
    out = _run(["go", "mod", "download", "-json", f"{module}@{version}"], workdir, _go_env(), log)
    info: dict[str, str] = json.loads(out)
    return info


def _go_directive(gomod: str) -> str:
    match = re.search(r"^go (\d+\.\d+(?:\.\d+)?)$", gomod, re.MULTILINE)
    if not match:
        raise RuntimeError("no go directive in go.mod")
    return match.group(1)


def _toolchain_for(required: str, log: Log) -> str:
    """Build with the local Go unless it is a newer minor than the module names.

    A kube-apiserver built by a newer Go minor than its release names can misbehave (one
    built by Go 1.27 for Kubernetes 1.36 serves a broken ``/openapi/v2``), so then the
    named toolchain is fetched through the module proxy instead.
    """
    local = subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, env=_go_env()
    ).stdout.strip()
    local_minor = tuple(int(p) for p in local.removeprefix("go").split(".")[:2])
    required_minor = tuple(int(p) for p in required.split(".")[:2])
    if local_minor <= required_minor:
        return "local"
    log(f"local {local} is newer than Go {required} that the release names; using go{required}")
    return f"go{required}"


Prepare = Callable[[Path, dict[str, str], Log], None]


def _is_built(dest: Path, files: Sequence[str], recipe: str) -> bool:
    marker = dest / ".recipe"
    built = all((dest / f).exists() for f in files)
    return built and marker.exists() and marker.read_text() == recipe


def _publish(staging: Path, dest: Path, recipe: str) -> None:
    """Move a finished build into its cache folder, marked with the recipe that made it."""
    (staging / ".recipe").write_text(recipe)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(staging), str(dest))


def _build_module(
    name: str,
    gomod: str,
    packages: dict[str, str],
    dest: Path,
    log: Log,
    toolchain: str = "local",
    ldflags: str = "",
    prepare: Prepare | None = None,
    recipe: str = "",
) -> None:
    """Build ``packages`` (output name -> import path) from a throwaway module into ``dest``.

    ``prepare`` may adjust the module (after ``go mod tidy``) before the build.
    """
    build_root = cache_dir() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=build_root) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(gomod)
        imports = "\n".join(f'\t_ "{pkg}"' for pkg in packages.values())
        (work / "tools.go").write_text(
            f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
        )
        env = _go_env(toolchain)
        _run(["go", "mod", "tidy"], work, env, log)
        staging = work / "bin"
        staging.mkdir()
        if prepare is not None:
            prepare(work, env, log)
        for out, pkg in packages.items():
            command = ["go", "build", f"-ldflags={ldflags}", "-o", str(staging / out), pkg]
            _run(command, work, env, log)
        _publish(staging, dest, recipe)


def _install_kubernetes(
    version: str, log: Log, name: str = "kubernetes", commands: Sequence[str] = _KUBERNETES_COMMANDS
) -> None:
    dest = _component_dir(name, version)
    if _is_built(dest, commands, _RECIPES[name]):
        return
    info = _module_info("k8s.io/kubernetes", version, Path(tempfile.gettempdir()), log)
    upstream = Path(info["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", upstream, re.M)))
    staging_version = "v0." + version.removeprefix("v1.")
    go = _go_directive(upstream)
    replaces = "\n".join(f"\t{mod} => {mod} {staging_version}" for mod in staging)
    gomod = (
        f"module testbin/kubernetes\n\ngo {go}\n\nrequire k8s.io/kubernetes {version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )
    packages = {cmd: f"k8s.io/kubernetes/cmd/{cmd}" for cmd in commands}
    # Stamp the version as Kubernetes' own build does: a module build reports
    # v0.0.0-master, which clients with a minimum version (Tekton's controller) refuse.
    major, minor = version.removeprefix("v").split(".")[:2]
    stamp = "k8s.io/component-base/version"
    ldflags = (
        f"-X {stamp}.gitVersion={version} -X {stamp}.gitMajor={major} "
        f"-X {stamp}.gitMinor={minor} -X {stamp}.gitTreeState=clean"
    )
    toolchain = _toolchain_for(go, log)
    _build_module(name, gomod, packages, dest, log, toolchain, ldflags, recipe=_RECIPES[name])


def _install_etcd(version: str, log: Log) -> None:
    dest = _component_dir("etcd", version)
    if _is_built(dest, ["etcd"], _RECIPES["etcd"]):
        return
    gomod = f"module testbin/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {version}\n"
    packages = {"etcd": "go.etcd.io/etcd/server/v3"}
    _build_module("etcd", gomod, packages, dest, log, recipe=_RECIPES["etcd"])


_PROBES_CONST = "const HealthCheckDefaultPort = 8080"
#: Where the patched Tekton controller's probe and profiling servers listen (all
#: interfaces when unset, as upstream).
LISTEN_HOST_ENV = "CUSTOMTASK_SDK_LISTEN_HOST"
_LISTEN_HOST = f'os.Getenv("{LISTEN_HOST_ENV}") + '


def _patch(path: Path, old: str, new: str, count: int = -1) -> None:
    source = path.read_text()
    if old not in source:
        raise RuntimeError(f"{path} changed upstream; update its patch in testbin.py")
    path.write_text(source.replace(old, new, count))


def _writable_copy(module: str, work: Path, env: dict[str, str], log: Log) -> Path:
    """A writable copy of the resolved ``module``, used by the build through ``replace``."""
    out = _run(["go", "list", "-m", "-json", module], work, env, log)
    copy = work / module.replace("/", "_")
    shutil.copytree(json.loads(out)["Dir"], copy)
    for item in copy.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)  # the module cache is read-only
    copy.chmod(0o755)
    with (work / "go.mod").open("a") as gomod:
        gomod.write(f"\nreplace {module} => ./{copy.name}\n")
    return copy


def _tekton_listeners_from_env(work: Path, env: dict[str, str], log: Log) -> None:
    """Let the environment choose where Tekton's controller listens.

    knative always puts its probe server on :8080 and, like Tekton's own probe server and
    knative's profiling server, on every interface: two control planes on one machine would
    collide, and the servers would be reachable from other machines. The build uses copies
    of ``knative.dev/pkg`` and Tekton with ``KNATIVE_HEALTH_PROBES_PORT`` read for that port
    and ``CUSTOMTASK_SDK_LISTEN_HOST`` prefixed to the three listen addresses.
    """
    knative = _writable_copy("knative.dev/pkg", work, env, log)
    health = knative / "injection" / "health_check.go"
    _patch(
        health,
        _PROBES_CONST,
        "var HealthCheckDefaultPort = func() int {\n"
        '\tif p, err := strconv.Atoi(os.Getenv("KNATIVE_HEALTH_PROBES_PORT")); err == nil {\n'
        "\t\treturn p\n\t}\n\treturn 8080\n}()",
    )
    _patch(health, '\t"strconv"\n', '\t"os"\n\t"strconv"\n', 1)
    _patch(health, 'Addr: ":" + ', f'Addr: {_LISTEN_HOST}":" + ')
    _patch(
        knative / "observability" / "runtime" / "pprof.go",
        'Addr:    ":" + ',
        f'Addr: {_LISTEN_HOST}":" + ',
    )
    tekton = _writable_copy("github.com/tektoncd/pipeline", work, env, log)
    main = tekton / "cmd" / "controller" / "main.go"
    _patch(main, 'http.ListenAndServe(":"+port, ', f'http.ListenAndServe({_LISTEN_HOST}":"+port, ')


def _install_tekton(version: str, log: Log) -> None:
    dest = _component_dir("tekton", version)
    module = "github.com/tektoncd/pipeline"
    if not _is_built(dest, _TEKTON_COMMANDS, _RECIPES["tekton"]):
        gomod = f"module testbin/tekton\n\ngo 1.24\n\nrequire {module} {version}\n"
        packages = {cmd: f"{module}/cmd/{cmd}" for cmd in _TEKTON_COMMANDS}
        _build_module(
            "tekton",
            gomod,
            packages,
            dest,
            log,
            prepare=_tekton_listeners_from_env,
            recipe=_RECIPES["tekton"],
        )
    if not (dest / "config" / "300-crds").is_dir():
        source = Path(_module_info(module, version, Path(tempfile.gettempdir()), log)["Dir"])
        config = dest / "config"
        shutil.copytree(source / "config" / "300-crds", config / "300-crds")
        for path in sorted((source / "config").glob("*.yaml")):
            shutil.copyfile(path, config / path.name)
        for path in config.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache is read-only


def _install_tekton_resolvers(version: str, log: Log) -> None:
    """Tekton's remote resolvers (``cmd/resolvers``: git, hub, bundle, cluster, http), built
    as the controller is (the same knative patch: its servers on chosen ports, loopback)."""
    dest = _component_dir("tekton-resolvers", version)
    module = "github.com/tektoncd/pipeline"
    if not _is_built(dest, ("resolvers",), _RECIPES["tekton-resolvers"]):
        gomod = f"module testbin/tekton\n\ngo 1.24\n\nrequire {module} {version}\n"
        _build_module(
            "tekton-resolvers",
            gomod,
            {"resolvers": f"{module}/cmd/resolvers"},
            dest,
            log,
            prepare=_tekton_listeners_from_env,
            recipe=_RECIPES["tekton-resolvers"],
        )
    if not (dest / "config").is_dir():  # its namespace and ConfigMaps
        source = Path(_module_info(module, version, Path(tempfile.gettempdir()), log)["Dir"])
        shutil.copytree(source / "config" / "resolvers", dest / "config")
        for path in (dest / "config").rglob("*"):
            path.chmod(0o644)
        (dest / "config").chmod(0o755)


def locate_tekton_resolvers(versions: Versions = PINNED) -> Path:
    """Tekton's resolvers binary.

    Raises:
        TestbinMissingError: it is not built yet.
    """
    return _built("tekton-resolvers", versions.tekton, "resolvers")


def _install_kubernetes_node(version: str, log: Log) -> None:
    _install_kubernetes(version, log, "kubernetes-node", _NODE_COMMANDS)


def _install_tekton_images(version: str, log: Log) -> None:
    dest = _component_dir("tekton-images", version)
    if _is_built(dest, _TEKTON_IMAGE_COMMANDS, _RECIPES["tekton-images"]):
        return
    module = "github.com/tektoncd/pipeline"
    gomod = f"module testbin/tekton\n\ngo 1.24\n\nrequire {module} {version}\n"
    packages = {cmd: f"{module}/cmd/{cmd}" for cmd in _TEKTON_IMAGE_COMMANDS}
    recipe = _RECIPES["tekton-images"]
    _build_module("tekton-images", gomod, packages, dest, log, recipe=recipe)


def _install_tkn(version: str, log: Log) -> None:
    """Build ``tkn`` inside a copy of its own module: its go.mod ``replace``s dependencies,
    which ``go install module@version`` refuses."""
    dest = _component_dir("tkn", version)
    if _is_built(dest, ["tkn"], _RECIPES["tkn"]):
        return
    info = _module_info("github.com/tektoncd/cli", version, Path(tempfile.gettempdir()), log)
    build_root = cache_dir() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tkn-", dir=build_root) as tmp:
        work = Path(tmp) / "cli"
        shutil.copytree(info["Dir"], work)
        for item in work.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)  # the module cache is read-only
        work.chmod(0o755)
        env = _go_env()
        staging = Path(tmp) / "bin"
        staging.mkdir()
        stamp = "github.com/tektoncd/cli/pkg/cmd/version.clientVersion"
        ldflags = f"-s -w -X {stamp}={version.removeprefix('v')}"
        _run(
            ["go", "build", f"-ldflags={ldflags}", "-o", str(staging / "tkn"), "./cmd/tkn"],
            work,
            env,
            log,
        )
        _publish(staging, dest, _RECIPES["tkn"])


def _build_main(name: str, gomod: str, source: str, dest: Path, log: Log, recipe: str) -> None:
    """Build a one-file ``main`` package (``gomod`` names its requirements) into ``dest``."""
    build_root = cache_dir() / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=build_root) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(gomod)
        (work / "main.go").write_text(source)
        staging = work / "bin"
        staging.mkdir()
        env = _go_env()
        _run(["go", "mod", "tidy"], work, env, log)
        _run(["go", "build", "-ldflags=-s -w", "-o", str(staging / name), "."], work, env, log)
        _publish(staging, dest, recipe)


def _install_pause(version: str, log: Log) -> None:
    dest = _component_dir("pause", version)
    if _is_built(dest, ["pause"], _RECIPES["pause"]):
        return
    gomod = "module testbin/pause\n\ngo 1.24\n"
    _build_main("pause", gomod, _PAUSE_SOURCE, dest, log, _RECIPES["pause"])


def _install_coredns(version: str, log: Log) -> None:
    dest = _component_dir("coredns", version)
    if _is_built(dest, ["coredns"], _RECIPES["coredns"]):
        return
    module = "github.com/coredns/coredns"
    info = _module_info(module, version, Path(tempfile.gettempdir()), log)
    go = _go_directive(Path(info["GoMod"]).read_text())
    gomod = f"module testbin/coredns\n\ngo {go}\n\nrequire {module} {version}\n"
    _build_main("coredns", gomod, _COREDNS_SOURCE, dest, log, _RECIPES["coredns"])


def _install_debian_packages(log: Log) -> None:
    """``apt-get install`` the node's Debian packages that are not installed yet."""
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *DEBIAN_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")
    }
    wanted = [pkg for pkg in DEBIAN_PACKAGES if pkg not in installed]
    if not wanted:
        return
    log(f"node: installing Debian packages with apt-get (root): {' '.join(wanted)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cwd = Path(tempfile.gettempdir())
    _run(["apt-get", "update", "-q"], cwd, env, log)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted], cwd, env, log)


def _node_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        return "no apt-get (the node uses Debian's containerd, runc and CNI plugins)"
    return None


def install(versions: Versions = PINNED, log: Log = print, *, node: bool = True) -> Binaries:
    """Build whatever is missing and return the located control-plane binaries.

    With ``node`` (the default) and as root on Debian, also install what a node needs
    (:func:`locate_node`); otherwise say why the node parts are skipped.
    """
    steps: list[tuple[str, Callable[[str, Log], None], str]] = [
        ("etcd", _install_etcd, versions.etcd),
        ("kubernetes", _install_kubernetes, versions.kubernetes),
        ("tekton", _install_tekton, versions.tekton),
        ("tekton-resolvers", _install_tekton_resolvers, versions.tekton),
        ("tkn", _install_tkn, versions.tkn),
    ]
    skip = _node_skip_reason() if node else "not requested"
    if skip is None:
        steps += [
            ("debian-packages", lambda _version, log: _install_debian_packages(log), "(apt)"),
            ("kubernetes-node", _install_kubernetes_node, versions.kubernetes),
            ("tekton-images", _install_tekton_images, versions.tekton),
            ("pause", _install_pause, "v1"),
            ("coredns", _install_coredns, versions.coredns),
        ]
    for name, step, version in steps:
        started = time.monotonic()
        step(version, log)
        log(f"{name} {version}: ready in {time.monotonic() - started:.1f}s")
    if skip is not None:
        log(f"node parts skipped ({skip}): node tests will skip, the control plane works")
    return locate(versions)
