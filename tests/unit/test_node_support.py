"""The node's pieces that need no root: what happens without it, its addresses, and
the folders of nodes whose process died."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from customtask_sdk.testing import testbin
from customtask_sdk.testing.node import NodeNetwork, remove_orphan_workdirs


def test_without_root_the_node_is_missing_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(testbin.os, "geteuid", lambda: 1000)

    with pytest.raises(testbin.NodeMissingError, match="needs root"):
        testbin.locate_node()
    assert testbin._node_skip_reason() == "not root"


def test_install_without_root_skips_the_node_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(testbin.os, "geteuid", lambda: 1000)
    steps: list[str] = []
    for name in ("_install_etcd", "_install_kubernetes", "_install_tekton"):
        monkeypatch.setattr(testbin, name, lambda _v, _log, name=name: steps.append(name))
    monkeypatch.setattr(testbin, "locate", lambda _versions: None)
    lines: list[str] = []

    testbin.install(log=lines.append)

    assert steps == ["_install_etcd", "_install_kubernetes", "_install_tekton"]
    assert lines[-1].startswith("node parts skipped (not root)")


def test_node_network_subnet() -> None:
    assert NodeNetwork().subnet == "10.0.1.0/24"
    assert NodeNetwork(host_ip="172.20.5.1", prefix=16).subnet == "172.20.0.0/16"


def test_a_node_folder_left_by_a_killed_process_is_removed_by_the_next_node(
    tmp_path: Path,
) -> None:
    gone = subprocess.Popen(["true"])  # a PID whose process has ended
    gone.wait()
    folders = {}
    for name, pid in {"orphan": gone.pid, "waiting": os.getpid(), "self": gone.pid}.items():
        folder = tmp_path / f"customtask-node-{name}"
        (folder / "registry").mkdir(parents=True)
        (folder / "owner.pid").write_text(str(pid))
        folders[name] = folder
    foreign = tmp_path / "customtask-node-given"  # a workdir the caller gave: no owner file
    foreign.mkdir()

    removed = remove_orphan_workdirs(tmp_path, keep=folders["self"])

    assert removed == [folders["orphan"]]
    assert not folders["orphan"].exists()
    assert folders["waiting"].exists()  # its process lives: it may still start its node
    assert folders["self"].exists()
    assert foreign.exists()
