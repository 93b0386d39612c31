"""The client reaches the real apiserver through an HTTP proxy named by the kubeconfig."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

from customtask_sdk.client import KubeClient
from customtask_sdk.testing import ControlPlane

if TYPE_CHECKING:
    from conftest import HttpProxy


async def test_the_apiserver_through_a_kubeconfig_proxy_url(
    control_plane: ControlPlane, namespace: str, http_proxy: HttpProxy, tmp_path: Path
) -> None:
    document = yaml.safe_load(control_plane.kubeconfig.read_text())
    for cluster in document["clusters"]:
        cluster["cluster"]["proxy-url"] = http_proxy.url
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(document))
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    body = {"metadata": {"name": "through-proxy"}, "data": {"a": "1"}}
    async with await KubeClient.from_kubeconfig(str(kubeconfig)) as client:
        await client.create(path, body)
        assert (await client.get(f"{path}/through-proxy"))["data"] == {"a": "1"}
    server = urlsplit(document["clusters"][0]["cluster"]["server"]).netloc
    assert http_proxy.heads
    assert all(head.startswith(f"CONNECT {server} HTTP/1.1\r\n") for head in http_proxy.heads)
