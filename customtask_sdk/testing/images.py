"""Container images built here, served by a read-only registry on loopback.

A node has no registry on the internet. :class:`ImageStore` writes single-layer OCI
images (from static binaries, a folder, or files) into a folder; ``python -m
customtask_sdk.testing.images serve`` serves that folder with the registry API's pull
half (``/v2/``: manifests and blobs) on 127.0.0.1. containerd uses it as the mirror of
every registry, so a Pod naming ``busybox``, ``alpine:3.20`` or ``mirror.gcr.io/ubuntu``
pulls an image built here, with any pull policy. A repository may answer every tag
(:meth:`ImageStore.tag` with ``tag="*"``). ``... images proxy`` is an HTTPS proxy that
answers every registry host from that registry (TLS ended with a local CA), for programs
that look images up themselves: Tekton's controller reads the entrypoint of a step image
that has no ``command``.

Why not ``ctr images import``: an image named without a tag or with ``:latest`` is always
pulled, and that needs a registry. Why not go-containerregistry's ``crane registry
serve``: a second Go build, and it keeps manifests in memory; this is ~100 lines of
standard library and the folder survives restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.server
import importlib.metadata
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tarfile
import threading
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BASE_REPOSITORIES",
    "PYTHON_PREFIX",
    "SITE_PACKAGES",
    "ImageStore",
    "Layer",
    "proxy",
    "python_layer",
    "registry_server",
    "serve",
]

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_INDEX_FILE = "repositories.json"
_LOCK = threading.Lock()

#: Repositories the base image (busybox + bash) answers for, at every tag: the names
#: Pods usually give with or without a registry (``docker.io/library/x`` is ``library/x``
#: on the wire, ``mirror.gcr.io/x`` is ``x``).
BASE_REPOSITORIES = tuple(
    prefix + name
    for name in ("busybox", "alpine", "bash", "ubuntu", "debian")
    for prefix in ("", "library/")
)


@dataclass
class Layer:
    """Files of one image layer: ``path in image -> content or host file``, plus links."""

    files: dict[str, bytes | Path] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    directories: dict[str, int] = field(default_factory=dict)

    def add_tree(self, source: Path, target: str, skip: Iterable[str] = ()) -> None:
        """Add every file under ``source`` (a folder) at ``target`` in the image, but not
        those under a folder named in ``skip``."""
        skipped = set(skip)
        for path in sorted(source.rglob("*")):
            if skipped.intersection(path.relative_to(source).parts):
                continue
            inside = f"{target.rstrip('/')}/{path.relative_to(source)}"
            if path.is_symlink():
                self.symlinks[inside] = os.readlink(path)
            elif path.is_dir():
                self.directories[inside] = 0o755
            else:
                self.files[inside] = path

    def tar(self) -> bytes:
        """The layer as an uncompressed, reproducible tar."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = dict(self.directories)
            for path in [*self.files, *self.symlinks]:
                parent = Path(path.lstrip("/")).parent
                while str(parent) != ".":
                    dirs.setdefault(str(parent), 0o755)
                    parent = parent.parent
            for path, mode in sorted(dirs.items(), key=lambda item: item[0].lstrip("/")):
                info = tarfile.TarInfo(path.strip("/"))
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            for path, target in sorted(self.symlinks.items()):
                info = tarfile.TarInfo(path.lstrip("/"))
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                tar.addfile(info)
            for path, content in sorted(self.files.items()):
                data = content.read_bytes() if isinstance(content, Path) else content
                mode = 0o755 if isinstance(content, Path) and os.access(content, os.X_OK) else 0o644
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode = len(data), mode
                if isinstance(content, Path):  # compiled modules check their source's mtime
                    info.mtime = int(content.stat().st_mtime)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def _busybox_layer(busybox: Path, bash: Path | None) -> Layer:
    """A shell, coreutils-level tools (busybox's applets) and bash, from static binaries."""
    layer = Layer(
        files={
            "/bin/busybox": busybox,
            "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
            "/etc/group": b"root:x:0:\nnogroup:x:65534:\n",
            "/etc/hosts": b"127.0.0.1 localhost\n",
        },
        directories={"/tmp": 0o1777, "/root": 0o700, "/var/tmp": 0o1777, "/home": 0o755},
    )
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "bin/busybox":
            layer.symlinks["/" + applet] = "/bin/busybox"
    if bash is not None:
        layer.files["/bin/bash"] = bash
        layer.symlinks["/usr/bin/bash"] = "/bin/bash"
    return layer


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ImageStore:
    """A folder of OCI blobs plus ``repositories.json`` (repository -> tag -> digest)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def _put(self, data: bytes) -> str:
        digest = _digest(data)
        path = self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest

    def build(
        self,
        layers: Sequence[Layer],
        *,
        entrypoint: Sequence[str] | None = None,
        cmd: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
    ) -> str:
        """Write an image of ``layers`` (bottom first) for linux/amd64; returns its digest."""
        layer_blobs = [layer.tar() for layer in layers]
        digests = [self._put(blob) for blob in layer_blobs]
        variables = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        variables.update(env or {})
        config: dict[str, object] = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": [f"{k}={v}" for k, v in variables.items()],
                "WorkingDir": workdir,
                **({"Entrypoint": list(entrypoint)} if entrypoint else {}),
                **({"Cmd": list(cmd)} if cmd else {}),
            },
            "rootfs": {"type": "layers", "diff_ids": digests},
        }
        config_blob = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MANIFEST,
            "config": {
                "mediaType": _CONFIG,
                "digest": self._put(config_blob),
                "size": len(config_blob),
            },
            "layers": [
                {"mediaType": _LAYER, "digest": d, "size": len(b)}
                for d, b in zip(digests, layer_blobs, strict=True)
            ],
        }
        return self._put(json.dumps(manifest, sort_keys=True).encode())

    def tag(self, digest: str, repositories: Iterable[str], tag: str = "latest") -> None:
        """Name an image: ``repository:tag`` for each repository (``tag="*"``: any tag)."""
        with _LOCK:
            index = self.repositories()
            for repository in repositories:
                index.setdefault(repository, {})[tag] = digest
            tmp = self.root / (_INDEX_FILE + ".tmp")
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
            tmp.replace(self.root / _INDEX_FILE)

    def repositories(self) -> dict[str, dict[str, str]]:
        """Every repository's tags and the digests they name."""
        try:
            loaded: dict[str, dict[str, str]] = json.loads((self.root / _INDEX_FILE).read_text())
        except FileNotFoundError:
            return {}
        return loaded

    def resolve(self, repository: str, reference: str) -> str | None:
        """The digest ``repository:reference`` names (a digest names itself), or ``None``."""
        if reference.startswith("sha256:"):
            return reference if self.blob(reference).exists() else None
        tags = self.repositories().get(repository, {})
        return tags.get(reference) or tags.get("*")

    def blob(self, digest: str) -> Path:
        """Where a blob is stored."""
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def add_base(self, busybox: Path, bash: Path | None = None) -> str:
        """The base image (busybox applets + bash) under :data:`BASE_REPOSITORIES`."""
        digest = self.build([_busybox_layer(busybox, bash)], cmd=["sh"])
        self.tag(digest, BASE_REPOSITORIES, "*")
        return digest

    def add_binary(
        self, repository: str, tag: str, binary: Path, *, base: str | None = None
    ) -> str:
        """An image holding ``binary`` as ``/ko-app/<name>`` (its entrypoint), as ko builds
        them; on top of the base image's layer when ``base`` is its digest."""
        target = f"/ko-app/{binary.name}"
        layers = [Layer(files={target: binary})]
        if base is not None:
            layers.insert(0, self._base_layer(base))
        digest = self.build(layers, entrypoint=[target])
        self.tag(digest, [repository], tag)
        return digest

    def _base_layer(self, digest: str) -> Layer:
        manifest = json.loads(self.blob(digest).read_bytes())
        return _StoredLayer(self.blob(manifest["layers"][0]["digest"]).read_bytes())

    def add_python_app(
        self,
        repository: str,
        tag: str,
        *,
        distributions: Iterable[str] = (),
        folders: Mapping[str, Path] | None = None,
        wheels: Iterable[Path] = (),
        entrypoint: Sequence[str] | None = None,
        cmd: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str = "/app",
        base: str | None = None,
    ) -> str:
        """A Python application image: this Python with ``distributions`` (installed
        here, with what they need), ``wheels`` unpacked into its ``site-packages``, and
        ``folders`` (image path -> folder here), on the base image when ``base`` is its
        digest. ``python3`` is on ``PATH``."""
        runtime = python_layer(distributions)
        app = Layer()
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        app.files[f"{SITE_PACKAGES}/{member.filename}"] = archive.read(member)
        for target, folder in (folders or {}).items():
            app.add_tree(folder, target, skip=("__pycache__",))
        layers = [runtime, app] if base is None else [self._base_layer(base), runtime, app]
        variables = {
            "LD_LIBRARY_PATH": f"{PYTHON_PREFIX}/lib",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        digest = self.build(layers, entrypoint=entrypoint, cmd=cmd, env=variables, workdir=workdir)
        self.tag(digest, [repository], tag)
        return digest

    def add_folder(
        self,
        repository: str,
        tag: str,
        folder: Path,
        *,
        target: str = "/app",
        base: str | None = None,
        entrypoint: Sequence[str] | None = None,
        cmd: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """An image of ``folder`` copied to ``target`` (on the base image's layer when
        ``base`` is its digest): for integrators' own test images."""
        layer = Layer()
        layer.add_tree(folder, target)
        layers: list[Layer] = [layer] if base is None else [self._base_layer(base), layer]
        digest = self.build(layers, entrypoint=entrypoint, cmd=cmd, env=env, workdir=target)
        self.tag(digest, [repository], tag)
        return digest


#: Where :func:`python_layer` puts the interpreter, and its ``site-packages``.
PYTHON_PREFIX = "/usr/local"
_PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE_PACKAGES = f"{PYTHON_PREFIX}/lib/{_PYTHON}/site-packages"
_STDLIB_SKIP = (
    *("site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip"),
    *("lib2to3", "pydoc_data", Path(sysconfig.get_config_var("LIBPL")).name),  # build files
)


def _shared_libraries(binaries: Iterable[Path]) -> set[Path]:
    """The shared libraries ``binaries`` load (``ldd``), the dynamic loader included."""
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            path = line.split("=>")[-1].split("(")[0].strip()
            if path.startswith("/"):
                found.add(Path(path))
    return found


def _requirements(distribution: str) -> set[str]:
    """``distribution`` and what it needs here (no extras), by installed metadata."""
    from packaging.requirements import Requirement  # a dependency of pytest

    seen: set[str] = set()
    pending = [distribution]
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return seen


def python_layer(distributions: Iterable[str] = ()) -> Layer:
    """This Python (interpreter, standard library, the shared libraries they load) at
    :data:`PYTHON_PREFIX`, with installed ``distributions`` and what they need in its
    ``site-packages``."""
    prefix = Path(sys.base_prefix)
    layer = Layer()
    stdlib = prefix / "lib" / _PYTHON
    layer.add_tree(stdlib, f"{PYTHON_PREFIX}/lib/{_PYTHON}", skip=_STDLIB_SKIP)
    interpreter = (prefix / "bin" / _PYTHON).resolve()
    layer.files[f"{PYTHON_PREFIX}/bin/{_PYTHON}"] = interpreter
    layer.symlinks[f"{PYTHON_PREFIX}/bin/python3"] = _PYTHON
    layer.symlinks[f"{PYTHON_PREFIX}/bin/python"] = _PYTHON
    for tk in stdlib.glob("lib-dynload/_tkinter*"):  # Tk and X11 libraries: no GUI here
        del layer.files[f"{PYTHON_PREFIX}/lib/{_PYTHON}/{tk.relative_to(stdlib)}"]
    extensions = [
        interpreter,
        *(p for p in stdlib.glob("lib-dynload/*.so") if "_tkinter" not in p.name),
    ]
    for name in sorted(set().union(*(_requirements(d) for d in distributions))):
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or not source.is_file():
                continue  # scripts and data outside site-packages
            layer.files[f"{SITE_PACKAGES}/{file}"] = source
            if source.suffix == ".so":
                extensions.append(source)
    for library in _shared_libraries(extensions):
        if library.is_relative_to(prefix):  # libpython: beside the interpreter
            layer.files[f"{PYTHON_PREFIX}/lib/{library.name}"] = library.resolve()
        else:
            layer.files[str(library)] = library.resolve()
    return layer


class _StoredLayer(Layer):
    """A layer already written as a tar."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    def tar(self) -> bytes:
        return self._data


_PATH = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$")


def _handler(store: ImageStore) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/v2", "/v2/"):
                self._send(200, b"{}", "application/json", None, body)
                return
            match = _PATH.match(path)
            digest = match and store.resolve(match["name"], match["ref"])
            if not match or not digest or not store.blob(digest).exists():
                self._send(
                    404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json", None, body
                )
                return
            kind = _MANIFEST if match["kind"] == "manifests" else "application/octet-stream"
            self._send(200, store.blob(digest), kind, digest, body)

        def _send(
            self, status: int, data: bytes | Path, kind: str, digest: str | None, body: bool
        ) -> None:
            size = data.stat().st_size if isinstance(data, Path) else len(data)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(size))
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if not body:
                return
            if isinstance(data, Path):
                with data.open("rb") as blob:  # layers can be large: streamed
                    shutil.copyfileobj(blob, self.wfile, 1 << 20)
            else:
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.address_string()} {format % args}", flush=True)

    return Handler


def registry_server(root: Path, port: int, host: str = "127.0.0.1") -> http.server.HTTPServer:
    """An HTTP server answering pulls from ``root`` (an :class:`ImageStore`)."""
    return http.server.ThreadingHTTPServer((host, port), _handler(ImageStore(root)))


def serve(root: Path, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``root`` read-only until interrupted."""
    server = registry_server(root, port, host)
    print(f"serving {root} on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _tunnel(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    registry_port: int,
    context: ssl.SSLContext,
) -> None:
    """One proxy client: ``CONNECT <host>:443`` becomes TLS ended here (a certificate of
    the local CA) and plain HTTP to the registry; anything else is refused."""
    try:
        head = await client_reader.readuntil(b"\r\n\r\n")
    except (ConnectionError, asyncio.IncompleteReadError):  # a port probe
        client_writer.close()
        return
    try:
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT" or not target.endswith(":443"):
            print(f"refused {method} {target}", flush=True)
            client_writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await client_writer.drain()
            client_writer.close()
            return
        print(f"CONNECT {target} -> registry", flush=True)
        client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client_writer.drain()
        await client_writer.start_tls(context)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", registry_port)
    except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
        print(f"tunnel failed: {exc!r}", flush=True)
        client_writer.close()
        return
    await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))


async def proxy(port: int, registry_port: int, cert: Path, key: Path) -> None:
    """An HTTPS proxy on 127.0.0.1 that answers every registry host from the local
    registry, for clients that look images up themselves (Tekton's controller reads a
    step image's entrypoint). Runs until cancelled."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(
        lambda r, w: _tunnel(r, w, registry_port, context), "127.0.0.1", port
    )
    print(f"proxying registries to 127.0.0.1:{registry_port} on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m customtask_sdk.testing.images serve --root DIR --port N``, or
    ``... proxy --port N --registry-port N --cert FILE --key FILE``."""
    parser = argparse.ArgumentParser(prog="python -m customtask_sdk.testing.images")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve an image folder on loopback")
    serve_parser.add_argument("--root", type=Path, required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    proxy_parser = commands.add_parser("proxy", help="HTTPS proxy to the loopback registry")
    proxy_parser.add_argument("--port", type=int, required=True)
    proxy_parser.add_argument("--registry-port", type=int, required=True)
    proxy_parser.add_argument("--cert", type=Path, required=True)
    proxy_parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.root, args.port)
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(proxy(args.port, args.registry_port, args.cert, args.key))


if __name__ == "__main__":
    main()
