"""Images built here and the loopback registry a node's containerd pulls them from."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from customtask_sdk.testing.images import ImageStore, registry_server

BUSYBOX = Path("/usr/bin/busybox")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[ImageStore, str]]:
    store = ImageStore(tmp_path / "store")
    server = registry_server(store.root, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def layer_members(url: str, manifest: dict[str, object]) -> dict[str, tarfile.TarInfo]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    _, _, blob = fetch(f"{url}/v2/x/blobs/{layers[-1]['digest']}")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {member.name: member for member in tar.getmembers()}


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs Debian's busybox-static")
def test_base_image_answers_every_tag_of_the_usual_names(
    registry: tuple[ImageStore, str],
) -> None:
    store, url = registry
    digest = store.add_base(BUSYBOX)

    assert fetch(f"{url}/v2/")[0] == 200
    for name in ("library/busybox/manifests/latest", "ubuntu/manifests/22.04"):
        status, headers, _body = fetch(f"{url}/v2/{name}?ns=docker.io")
        assert status == 200
        assert headers["Docker-Content-Digest"] == digest
        assert headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(fetch(f"{url}/v2/busybox/manifests/{digest}")[2])
    members = layer_members(url, manifest)
    assert members["bin/sh"].linkname == "/bin/busybox"
    assert members["tmp"].mode == 0o1777
    config = json.loads(fetch(f"{url}/v2/busybox/blobs/{manifest['config']['digest']}")[2])
    assert (config["architecture"], config["os"]) == ("amd64", "linux")


def test_folder_image_and_unknown_names(registry: tuple[ImageStore, str], tmp_path: Path) -> None:
    store, url = registry
    app = tmp_path / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "pkg" / "main.py").write_text("print('hi')\n")
    store.add_folder("team/app", "v1", app, target="/srv", cmd=["python", "/srv/pkg/main.py"])

    status, _headers, body = fetch(f"{url}/v2/team/app/manifests/v1", "HEAD")
    assert (status, body) == (200, b"")
    manifest = json.loads(fetch(f"{url}/v2/team/app/manifests/v1")[2])
    assert layer_members(url, manifest)["srv/pkg/main.py"].size == len("print('hi')\n")
    assert fetch(f"{url}/v2/team/app/manifests/v2")[0] == 404
    assert fetch(f"{url}/v2/other/manifests/latest")[0] == 404
