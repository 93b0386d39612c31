"""One node per machine: a second one refuses to start and leaves the first alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from customtask_sdk.testing.node import Node, NodeError
from customtask_sdk.testing.waiting import condition

NODES = "/api/v1/nodes"


def exists(path: Path) -> bool:
    return path.exists()


async def test_second_node_refuses_to_start_and_leaves_the_first_running(node: Node) -> None:
    second = Node(node.binaries, node.node_binaries)

    with pytest.raises(NodeError, match=f"interface {node.network.bridge} exists"):
        async with second:
            pass

    assert exists(Path("/sys/class/net") / node.network.bridge)
    assert not exists(second.workdir)
    ready = condition(await node.client.get(f"{NODES}/{node.name}"), "Ready")
    assert ready is not None
    assert ready["status"] == "True"
