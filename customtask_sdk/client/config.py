"""Where the cluster is and how to authenticate: kubeconfig files or the in-cluster account.

Client certificates, bearer tokens, token files and basic auth are read here directly.
Exec credential plugins and auth providers (cloud logins) are delegated to
kubernetes-asyncio, imported only then: its generated client costs ~40 MB of memory.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from customtask_sdk.client.proxy import proxy_from_environment

__all__ = ["ClientConfig", "ConfigurationError", "load_configuration"]

_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TOKEN_REREAD_SECONDS = 60.0  # projected tokens rotate; client-go re-reads every minute

TokenSource = Callable[[], Awaitable[str | None]]


class ConfigurationError(RuntimeError):
    """No usable cluster configuration was found; the message says what was tried."""


@dataclass
class ClientConfig:
    """How to reach one apiserver: its URL, TLS material and credentials."""

    host: str
    ca_pem: str | None = None
    verify: bool = True
    tls_server_name: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    #: Returns the ``Authorization`` header value (``Bearer ...``), re-read as it rotates.
    authorization: TokenSource | None = None
    #: The namespace of the kubeconfig context (or the pod's, in a cluster).
    namespace: str | None = None
    #: The cluster's ``proxy-url`` (an ``http://`` proxy); ``None`` defers to the environment.
    proxy_url: str | None = None

    def proxy(self) -> str | None:
        """The proxy to reach ``host`` through, as client-go picks it: ``proxy_url``, else
        ``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` exempts the host (see
        :mod:`customtask_sdk.client.proxy`); ``None`` to connect directly."""
        return self.proxy_url or proxy_from_environment(self.host)

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting the cluster CA and presenting the client certificate."""
        context = (
            ssl.create_default_context(cadata=self.ca_pem)
            if self.ca_pem
            else (ssl.create_default_context())
        )
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            # load_cert_chain reads files only: hand it private, short-lived ones.
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
                cert.write_bytes(self.cert_pem)
                key.touch(mode=0o600)
                key.write_bytes(self.key_pem)
                context.load_cert_chain(cert, key)
        return context


class _FileToken:
    """A bearer token read from a file, re-read every minute (rotation-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: str | None = None
        self._read_at = 0.0

    async def __call__(self) -> str | None:
        now = time.monotonic()
        if self._value is None or now - self._read_at > _TOKEN_REREAD_SECONDS:
            self._value = "Bearer " + self.path.read_text().strip()
            self._read_at = now
        return self._value


def _static(value: str) -> TokenSource:
    async def source() -> str:
        return value

    return source


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(str(entry[f"{key}-data"]))
    if entry.get(key):
        return (base / str(entry[key])).read_bytes()
    return None


def _named(items: list[dict[str, Any]] | None, name: str, what: str, path: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            found: dict[str, Any] = item.get(what) or {}
            return found
    raise ConfigurationError(f"{path}: no {what} named {name!r}")


def _from_kubeconfig(path: Path, context_name: str | None) -> ClientConfig | tuple[str, str | None]:
    """The configuration, or (context, namespace) when a credential plugin must be run."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read kubeconfig {path}: {exc}") from exc
    context_name = context_name or document.get("current-context")
    if not context_name:
        raise ConfigurationError(f"{path}: no current-context; pass --context")
    context = _named(document.get("contexts"), context_name, "context", str(path))
    cluster = _named(document.get("clusters"), context.get("cluster", ""), "cluster", str(path))
    user = _named(document.get("users"), context.get("user", ""), "user", str(path))
    if user.get("exec") or user.get("auth-provider"):
        return context_name, context.get("namespace")
    base = path.parent
    ca = _data_or_file(cluster, "certificate-authority", base)
    config = ClientConfig(
        host=str(cluster["server"]).rstrip("/"),
        ca_pem=ca.decode() if ca else None,
        verify=not cluster.get("insecure-skip-tls-verify", False),
        tls_server_name=cluster.get("tls-server-name"),
        cert_pem=_data_or_file(user, "client-certificate", base),
        key_pem=_data_or_file(user, "client-key", base),
        namespace=context.get("namespace"),
        proxy_url=cluster.get("proxy-url"),
    )
    if user.get("token"):
        config.authorization = _static("Bearer " + str(user["token"]))
    elif user.get("tokenFile"):
        config.authorization = _FileToken(base / user["tokenFile"])
    elif user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        config.authorization = _static("Basic " + basic)
    return config


async def _delegate(path: str, context: str, namespace: str | None) -> ClientConfig:
    """Exec plugins and auth providers, through kubernetes-asyncio's loader."""
    from kubernetes_asyncio.client import Configuration
    from kubernetes_asyncio.config import load_kube_config

    loaded = Configuration()
    loader = await load_kube_config(config_file=path, context=context, client_configuration=loaded)
    loaded_at = time.monotonic()
    loads = 0  # how many times the credential was loaded
    lock = asyncio.Lock()

    async def authorization() -> str | None:
        nonlocal loaded_at, loads
        if time.monotonic() - loaded_at > _TOKEN_REREAD_SECONDS:
            # One refresh for all the requests that find it due: the others wait for it.
            # The loader runs the exec plugin again unless its credential's expiry is ahead.
            seen = loads
            async with lock:
                if loads == seen:
                    await loader.load_and_set(loaded)
                    loaded_at, loads = time.monotonic(), loads + 1
        value = await loaded.get_api_key_with_prefix("BearerToken")
        return str(value) if value else None

    def read(name: str | None) -> bytes | None:
        return Path(name).read_bytes() if name else None

    ca = read(loaded.ssl_ca_cert)
    return ClientConfig(
        host=str(loaded.host).rstrip("/"),
        ca_pem=ca.decode() if ca else None,
        verify=bool(loaded.verify_ssl),
        tls_server_name=loaded.tls_server_name,
        cert_pem=read(loaded.cert_file),
        key_pem=read(loaded.key_file),
        authorization=authorization,
        namespace=namespace,
        proxy_url=loaded.proxy,
    )


def _in_cluster() -> ClientConfig:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token = _SERVICE_ACCOUNT / "token"
    if not host or not port or not token.exists():
        raise ConfigurationError(
            "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG, create "
            "~/.kube/config, or run inside a cluster with a service account"
        )
    namespace_file = _SERVICE_ACCOUNT / "namespace"
    return ClientConfig(
        host=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
        ca_pem=(_SERVICE_ACCOUNT / "ca.crt").read_text(),
        authorization=_FileToken(token),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else None,
    )


async def load_configuration(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> ClientConfig:
    """Load ``kubeconfig``, else ``$KUBECONFIG`` (first file), ``~/.kube/config``, in-cluster.

    Raises:
        ConfigurationError: nothing usable; the message lists what to provide.
    """
    path = _locate(kubeconfig)
    if path is None:
        return _in_cluster()
    loaded = _from_kubeconfig(path, context)
    if isinstance(loaded, ClientConfig):
        return loaded
    return await _delegate(str(path), *loaded)


def _locate(kubeconfig: str | os.PathLike[str] | None) -> Path | None:
    explicit = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG", "")
    candidates = [p for p in explicit.split(os.pathsep) if p] or [str(Path.home() / ".kube/config")]
    for candidate in candidates:
        if Path(candidate).exists():
            return Path(candidate)
    if explicit:
        raise ConfigurationError(f"kubeconfig not found: {explicit}")
    return None
