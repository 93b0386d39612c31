"""Loading API configuration: a kubeconfig file, or the in-cluster service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import ConfigException, load_incluster_config, load_kube_config

__all__ = ["ConfigurationError", "load_configuration"]


class ConfigurationError(RuntimeError):
    """No usable cluster configuration was found; the message lists what was tried."""


async def load_configuration(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> Configuration:
    """Load ``kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``, else in-cluster.

    In-cluster configuration re-reads the projected service-account token as it rotates.
    """
    explicit = kubeconfig or os.environ.get("KUBECONFIG")
    default = Path.home() / ".kube" / "config"
    configuration = Configuration()
    if explicit or default.exists():
        path = str(explicit or default)
        await load_kube_config(
            config_file=path, context=context, client_configuration=configuration
        )
        return configuration
    try:
        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise ConfigurationError(
            "no Kubernetes configuration: pass --kubeconfig, set $KUBECONFIG, create "
            f"~/.kube/config, or run inside a cluster ({exc})"
        ) from exc
    return configuration
