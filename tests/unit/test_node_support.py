"""The node's pieces that need no root: what happens without it, and its addresses."""

from __future__ import annotations

import pytest

from customtask_sdk.testing import testbin
from customtask_sdk.testing.node import NodeNetwork


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
