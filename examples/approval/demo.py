"""A local walk-through of the approval gate, no cluster needed.

    .venv/bin/python -m examples.approval.demo            # decide it yourself, as printed
    .venv/bin/python -m examples.approval.demo --auto     # alice and carol approve it

Starts a control plane with Tekton's controller, installs Approval (CRD, admission
policies, RBAC), runs the Approval and Wait controllers in this process, and starts the
sample pipeline (``pipelinerun.yaml``) as user bob in namespace ``team``. It prints a
kubeconfig for each person (alice; carol of release-managers; bob, who may not approve
his own run) and follows the pipeline until it finishes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from pathlib import Path

import yaml

from customtask_sdk.client import JSON, PIPELINE_RUNS, KubeClient
from customtask_sdk.testing import ControlPlane, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.devenv import follow
from examples.approval import cli
from examples.approval.controller import APPROVAL_TASKS, Approval
from examples.approval.install import (
    CONTROLLER,
    CONTROLLER_GROUPS,
    grant_team,
    install,
    wait_enforced,
)
from examples.wait.controller import Wait

HERE = Path(__file__).parent
NAMESPACE = "team"
PEOPLE = {"alice": [], "carol": ["release-managers"], "bob": []}


async def main(auto: bool, keep_running: bool) -> bool:
    async with ControlPlane() as cp:
        await cp.start_controller_manager()
        await cp.start_tekton_controller()
        client = cp.client
        await install(client, tekton_user="default")  # Tekton runs as the admin here
        await wait_enforced(client)
        await cp.ensure_namespace(NAMESPACE)
        people = [
            {"kind": "User", "name": p, "apiGroup": "rbac.authorization.k8s.io"} for p in PEOPLE
        ]
        await grant_team(client, NAMESPACE, people)
        configs = {p: cp.kubeconfig_for(p, groups, name=p) for p, groups in PEOPLE.items()}
        controller = cp.kubeconfig_for(CONTROLLER, CONTROLLER_GROUPS, name="approval")
        async with (
            await KubeClient.from_kubeconfig(str(controller)) as controller_client,
            await KubeClient.from_kubeconfig(str(configs["bob"])) as bob,
            running(controller_client, Approval(), Wait(), health_port=None),
        ):
            sample = yaml.safe_load((HERE / "pipelinerun.yaml").read_text())
            created = await bob.create(PIPELINE_RUNS.path(NAMESPACE), sample)
            name = created["metadata"]["name"]
            gate = f"{name}-release-approval"
            print(f"bob started PipelineRun {NAMESPACE}/{name}; its gate is {gate}")
            for person, path in configs.items():
                print(f"  {person}: KUBECONFIG={path} kubectl approval list")
            print(f"  approve: KUBECONFIG=... kubectl approval approve {gate} -n {NAMESPACE}")
            print(f"  admin:   export KUBECONFIG={cp.kubeconfig}")
            deciding = asyncio.create_task(_approve(client, configs, gate)) if auto else None
            ok = await follow(client, NAMESPACE, [name], sys.stdout, timeout=3600)
            if deciding is not None:
                await deciding
            if keep_running:
                print("control plane still running; Ctrl-C to stop", flush=True)
                await asyncio.Event().wait()
            return ok


async def _approve(client: KubeClient, configs: dict[str, Path], gate: str) -> None:
    """Alice then carol approve, once the gate is open (Tekton may take a while)."""
    await wait_for(client, APPROVAL_TASKS, NAMESPACE, gate, _pending, timeout=600)
    for person in ("alice", "carol"):
        out = io.StringIO()
        argv = ["--kubeconfig", str(configs[person]), "approve", gate, "-n", NAMESPACE]
        await cli.run([*argv, "-m", f"{person} says go"], out)
        print(out.getvalue(), end="", flush=True)


def _pending(task: JSON) -> bool:
    return (task.get("status") or {}).get("state") == "pending"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--auto", action="store_true", help="alice and carol approve")
    parser.add_argument("--keep-running", action="store_true")
    options = parser.parse_args()
    sys.exit(0 if asyncio.run(main(options.auto, options.keep_running)) else 1)
