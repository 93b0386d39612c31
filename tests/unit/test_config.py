"""Loading cluster configuration: kubeconfig variants, exec plugins, in-cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from customtask_sdk.client import ConfigurationError, KubeClient, load_configuration
from customtask_sdk.client.proxy import proxy_from_environment, use_proxy
from customtask_sdk.testing.certs import CertificateAuthority


def write_kubeconfig(
    path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None
) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://10.0.0.1:6443/", **(cluster or {})}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "team"}}
        ],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def test_client_certificate_data_and_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority("ca")
    pair = ca.issue_client("alice", ["dev"])
    path = write_kubeconfig(
        tmp_path / "config",
        {
            "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
            "client-key-data": base64.b64encode(pair.key_pem).decode(),
        },
        {"certificate-authority-data": base64.b64encode(ca.cert_pem).decode()},
    )
    config = await load_configuration(path)
    assert config.host == "https://10.0.0.1:6443"
    assert config.namespace == "team"
    assert config.ca_pem == ca.cert_pem.decode()
    assert config.cert_pem == pair.cert_pem
    assert config.authorization is None
    config.ssl_context()  # the material loads


async def test_token_file_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    path = write_kubeconfig(tmp_path / "config", {"tokenFile": "token"})
    config = await load_configuration(path)
    assert config.authorization is not None
    assert await config.authorization() == "Bearer s3cret"


async def test_static_token_and_insecure(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "config", {"token": "abc"}, {"insecure-skip-tls-verify": True}
    )
    config = await load_configuration(path)
    assert config.verify is False
    assert config.authorization is not None
    assert await config.authorization() == "Bearer abc"


async def test_exec_plugins_go_through_kubernetes_asyncio(tmp_path: Path) -> None:
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "from-plugin"},
    }
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"print({json.dumps(json.dumps(credential))})")
    path = write_kubeconfig(
        tmp_path / "config",
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(plugin)],
                "interactiveMode": "Never",
            }
        },
    )
    config = await load_configuration(path)
    assert config.authorization is not None
    assert await config.authorization() == "Bearer from-plugin"
    assert config.namespace == "team"


async def test_an_exec_plugin_runs_once_for_concurrent_requests_that_find_it_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, pathlib\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "with runs.open('a') as f:\n"
        "    f.write('run\\n')\n"
        "token = f'token-{len(runs.read_text().splitlines())}'\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': {'token': token}}))\n"
    )
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers["Authorization"])
        return web.json_response({})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    server = {"server": f"http://127.0.0.1:{runner.addresses[0][1]}"}
    config = await load_configuration(write_kubeconfig(tmp_path / "config", exec_user, server))
    assert runs.read_text().splitlines() == ["run"]
    monkeypatch.setattr("customtask_sdk.client.config._TOKEN_REREAD_SECONDS", 0.0)  # all due
    try:
        async with KubeClient(config) as client:
            await asyncio.gather(*(client.get(f"/x/{i}") for i in range(32)))
    finally:
        await runner.cleanup()
    assert runs.read_text().splitlines() == ["run", "run"]
    assert seen == ["Bearer token-2"] * 32


async def test_errors_say_what_to_provide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="kubeconfig not found"):
        await load_configuration(tmp_path / "missing")
    path = write_kubeconfig(tmp_path / "config", {"token": "x"})
    with pytest.raises(ConfigurationError, match="no context named 'other'"):
        await load_configuration(path, context="other")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigurationError, match="run inside a cluster"):
        await load_configuration()


async def test_token_files_are_reread_as_they_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("first")
    path = write_kubeconfig(tmp_path / "config", {"tokenFile": str(token)})
    config = await load_configuration(path)
    assert config.authorization is not None
    now = [1000.0]
    monkeypatch.setattr("customtask_sdk.client.config.time.monotonic", lambda: now[0])
    assert await config.authorization() == "Bearer first"
    token.write_text("second")  # the kubelet rotates projected tokens in place
    now[0] += 30
    assert await config.authorization() == "Bearer first"  # cached for a minute
    now[0] += 31
    assert await config.authorization() == "Bearer second"


@pytest.fixture
def in_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pod's environment: no kubeconfig, a service account folder (returned)."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(CertificateAuthority("cluster-ca").cert_pem)
    (account / "token").write_text("pod-token")
    monkeypatch.setattr("customtask_sdk.client.config._SERVICE_ACCOUNT", account)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return account


async def test_in_cluster_service_account(
    in_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_cluster / "namespace").write_text("customtask-wait")
    config = await load_configuration()
    assert config.host == "https://10.96.0.1:443"
    assert config.namespace == "customtask-wait"
    assert config.authorization is not None
    assert await config.authorization() == "Bearer pod-token"
    config.ssl_context()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    assert (await load_configuration()).host == "https://[fd00::1]:443"


async def test_proxy_url_from_the_kubeconfig_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "*")
    path = write_kubeconfig(
        tmp_path / "config", {"token": "t"}, {"proxy-url": "http://proxy.corp:3128"}
    )
    config = await load_configuration(path)
    assert config.proxy() == "http://proxy.corp:3128"
    monkeypatch.delenv("NO_PROXY")
    config.proxy_url = None
    assert config.proxy() == "http://env-proxy:3128"


async def test_in_cluster_config_honours_the_proxy_environment(
    in_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", "proxy.corp:3128")
    config = await load_configuration()
    assert config.proxy() == "http://proxy.corp:3128"
    monkeypatch.setenv("NO_PROXY", ".svc,10.96.0.0/12")
    assert config.proxy() is None


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "proxied"),
    [
        ("api.example.com", "443", "", True),
        ("localhost", "443", "", False),
        ("127.0.0.2", "443", "", False),
        ("::1", "443", "", False),
        ("api.example.com", "443", "*", False),
        ("10.1.2.3", "443", "10.0.0.0/8", False),
        ("10.1.2.3", "443", "10.1.2.3/8", False),  # host bits set, as Go's ParseCIDR allows
        ("11.1.2.3", "443", "10.0.0.0/8", True),
        ("fd00::5", "443", "fd00::/64", False),
        ("fd00::5", "443", "fd00::5", False),
        ("fd00::5", "443", "[fd00::5]:443", False),
        ("fd00::5", "443", "[fd00::5]:80", True),
        ("10.1.2.3", "443", "10.1.2.3:443", False),
        ("10.1.2.3", "443", "10.1.2.3:6443", True),
        ("api.example.com", "443", "example.com", False),
        ("example.com", "443", "example.com", False),
        ("example.com", "443", ".example.com", True),
        ("api.example.com", "443", ".example.com", False),
        ("example.com", "443", "*.example.com", True),
        ("api.example.com", "443", "*.example.com", False),
        ("badexample.com", "443", "example.com", True),
        ("api.example.com", "443", " other.org , EXAMPLE.com:443 ", False),
        ("api.example.com", "443", "example.com:6443", True),
        ("api.example.com", "443", "10.0.0.0/8,:443", True),  # no host: ignored
        ("kubernetes.default.svc", "443", ".svc", False),
    ],
)
def test_no_proxy_rules_as_go(host: str, port: str, no_proxy: str, proxied: bool) -> None:
    assert use_proxy(host, port, no_proxy) is proxied


def test_proxy_from_the_environment_as_go() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1", "HTTP_PROXY": "p:2"}
    assert proxy_from_environment("https://api.example.com", env) == "http://upper:1"
    assert proxy_from_environment("https://api.example.com", {"https_proxy": "s:3"}) == (
        "http://s:3"
    )
    assert proxy_from_environment("http://api.example.com", env) == "http://p:2"
    assert (
        proxy_from_environment("http://api.example.com", {**env, "REQUEST_METHOD": "GET"}) is None
    )
    assert proxy_from_environment("https://127.0.0.1:6443", env) is None
    assert proxy_from_environment("https://api.example.com:6443", {"HTTP_PROXY": "p:2"}) is None
    assert (
        proxy_from_environment("https://a.example.com", {**env, "no_proxy": "example.com"}) is None
    )
