"""Nothing the node starts is reachable from other machines: every listening socket of
its processes is on loopback or the bridge's own address."""

from __future__ import annotations

import asyncio
import re
import subprocess

from customtask_sdk.testing.node import Node, processes_mentioning

LISTENER = re.compile(
    r"^\S+\s+\S+\s+\S+\s+\S+\s+(?P<address>\S+):(?P<port>\d+|\*)\s+\S+\s+(?P<users>.*)$"
)


def listeners() -> list[tuple[str, str, set[int]]]:
    """Every listening TCP and UDP socket on the host: (program, address, PIDs)."""
    out = subprocess.run(
        ["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        match = LISTENER.match(line)
        assert match, line
        users = match["users"]
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", users)}
        program = next(iter(re.findall(r'"([^"]+)"', users)), "?")
        found.append((program, match["address"].strip("[]").split("%")[0], pids))
    return found


async def wait_listening(port: int) -> None:
    """Wait until something accepts connections on ``port`` on loopback (wildcard too)."""
    async with asyncio.timeout(60):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def test_every_listener_of_the_node_is_on_loopback_or_the_bridge(node: Node) -> None:
    local = {"127.0.0.1", "::1", node.network.host_ip}
    # The barrier: Tekton's controller opens some servers after its informers sync.
    environment = node.control_plane.process("tekton").env or {}
    for name in ("PROBES_PORT", "PROFILING_PORT", "KNATIVE_HEALTH_PROBES_PORT"):
        await wait_listening(int(environment[name]))
    pids = processes_mentioning(f"{node.workdir}/")

    ours = [(program, address) for program, address, owners in listeners() if owners & pids]

    assert [(program, address) for program, address in ours if address not in local] == []
    # The check saw the servers that matter (so it cannot pass by finding nothing).
    programs = {program for program, _ in ours}
    assert {"kube-apiserver", "kubelet", "controller", "etcd"} <= programs, ours
