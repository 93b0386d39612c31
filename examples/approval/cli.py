"""``kubectl approval`` / ``tkn approval``: list, describe and decide approval gates.

    kubectl approval list                       # open gates I may decide, all namespaces
    kubectl approval describe NAME [-n NS]      # rules, counts and the audit trail
    kubectl approval approve NAME [-n NS] -m "looks good"
    kubectl approval reject NAME [-n NS] -m "not on a Friday"
    kubectl approval whoami                     # who the apiserver says I am

Who you are comes from the apiserver (``SelfSubjectReview``), and the apiserver's
admission policies decide whether your response is accepted: their message is printed
as is when it is not.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from customtask_sdk.client import JSON, ApiError, ForbiddenError, KubeClient
from customtask_sdk.reconciler.run import parse_time
from examples.approval.controller import APPROVAL_TASKS
from examples.approval.model import GROUP_PREFIX

_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


async def whoami(client: KubeClient) -> tuple[str, list[str]]:
    """The user name and groups the apiserver authenticates this client as."""
    review = await client.create(
        _REVIEW, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    info = review["status"]["userInfo"]
    return str(info["username"]), list(info.get("groups") or ())


def may_decide(task: JSON, user: str, groups: Sequence[str]) -> bool:
    """Whether ``user`` (in ``groups``) is one of the gate's approvers."""
    approvers = task["spec"].get("approvers") or ()
    return user in approvers or any(f"{GROUP_PREFIX}{g}" in approvers for g in groups)


def _age(task: JSON, now: datetime.datetime) -> str:
    created = parse_time(task["metadata"]["creationTimestamp"])
    seconds = int((now - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


async def list_gates(
    client: KubeClient, namespace: str | None, out: TextIO, *, show_all: bool = False
) -> int:
    """Print the open gates the caller may decide (every gate with ``show_all``)."""
    user, groups = await whoami(client)
    try:
        tasks = (await client.list_all(APPROVAL_TASKS.path(namespace)))["items"]
    except ForbiddenError:
        fallback = client.configuration.namespace
        if namespace is not None or fallback is None:
            sys.stderr.write(f"{user} may not list gates there; name a namespace with -n\n")
            return 1
        # no cluster-wide read: the kubeconfig context's namespace
        tasks = (await client.list_all(APPROVAL_TASKS.path(fallback)))["items"]
    now = datetime.datetime.now(datetime.UTC)
    rows = [["NAMESPACE", "NAME", "STATE", "APPROVALS", "MINE", "AGE", "DESCRIPTION"]]
    for task in tasks:
        status = task.get("status") or {}
        state = status.get("state") or "pending"
        if not show_all and (state != "pending" or not may_decide(task, user, groups)):
            continue
        mine = ((task["spec"].get("responses") or {}).get(user) or {}).get("decision", "-")
        rows.append(
            [
                task["metadata"]["namespace"],
                task["metadata"]["name"],
                state,
                f"{status.get('approvalsReceived', 0)}/{task['spec']['numberOfApprovalsRequired']}",
                mine,
                _age(task, now),
                task["spec"].get("description") or "",
            ]
        )
    if len(rows) == 1:
        out.write(f"no open gates for {user}\n")
    else:
        _table(rows, out)
    return 0


async def describe(client: KubeClient, namespace: str, name: str, out: TextIO) -> int:
    """Print a gate's rules, counts and audit trail."""
    task = await client.get(APPROVAL_TASKS.path(namespace, name))
    spec, status = task["spec"], task.get("status") or {}
    lines = [
        f"Name:         {namespace}/{name}",
        f"Description:  {spec.get('description') or '-'}",
        f"State:        {status.get('state') or 'pending'}  ({status.get('message') or ''})",
        f"Approvers:    {', '.join(spec['approvers'])}",
        f"Required:     {spec['numberOfApprovalsRequired']} approval(s)"
        + "".join(
            f", {n} from group {g}" for g, n in (spec.get("approvalsPerGroup") or {}).items()
        ),
        f"Rejections:   {spec.get('numberOfRejectionsRequired', 1)} end the gate"
        + (" (then the pipeline continues)" if spec.get("onReject") == "continue" else ""),
        f"Requester:    {spec.get('requester') or '-'}"
        + ("  (may not approve)" if spec.get("preventSelfApproval") else ""),
        f"Approved by:  {', '.join(status.get('approvedBy') or ()) or '-'}",
        f"Rejected by:  {', '.join(status.get('rejectedBy') or ()) or '-'}",
        "Responses:",
    ]
    for record in status.get("responses") or ():
        groups = ",".join(record.get("groups") or ())
        text = f"  {record.get('time')}  {record['user']} [{groups}]  {record['decision']}"
        if record.get("message"):
            text += f": {record['message']}"
        if record.get("ignored"):
            text += f"  (not counted: {record['ignored']})"
        lines.append(text)
    if not status.get("responses"):
        lines.append("  (none yet)")
    out.write("\n".join(lines) + "\n")
    return 0


async def respond(
    client: KubeClient, namespace: str, name: str, decision: str, message: str, out: TextIO
) -> int:
    """Write the caller's own response (with the groups the apiserver knows them by)."""
    user, groups = await whoami(client)
    entry: dict[str, Any] = {"decision": decision, "message": message, "groups": groups}
    body = {"spec": {"responses": {user: entry}}}
    await client.patch(APPROVAL_TASKS.path(namespace, name), body)
    verb = "approved" if decision == "approve" else "rejected"
    out.write(f"{namespace}/{name}: {verb} as {user}\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl approval", description="List, describe and decide approval gates."
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--context", help="a kubeconfig context")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="open gates you may decide")
    listing.add_argument("-n", "--namespace", help="one namespace (default: all you can read)")
    listing.add_argument("--all", action="store_true", help="every gate, decided or not")
    commands.add_parser("whoami", help="who the apiserver says you are")
    for command, text in (
        ("describe", "a gate's rules, counts and responses"),
        ("approve", "approve a gate"),
        ("reject", "reject a gate"),
    ):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("name")
        sub.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
        if command != "describe":
            sub.add_argument("-m", "--message", default="", help="why (recorded in the audit)")
    return parser


async def run(argv: Sequence[str], out: TextIO = sys.stdout) -> int:
    """Run one command; returns the exit code."""
    args = _parser().parse_args(argv)
    async with await KubeClient.from_kubeconfig(args.kubeconfig, args.context) as client:
        namespace = args.namespace if "namespace" in args else None
        if args.command == "whoami":
            user, groups = await whoami(client)
            out.write(f"{user} (groups: {', '.join(groups) or 'none'})\n")
            return 0
        if args.command == "list":
            return await list_gates(client, namespace, out, show_all=args.all)
        namespace = namespace or client.configuration.namespace or "default"
        if args.command == "describe":
            return await describe(client, namespace, args.name, out)
        return await respond(client, namespace, args.name, args.command, args.message, out)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``kubectl-approval`` (and ``tkn-approval``) entry point."""
    try:
        code = asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except ApiError as exc:
        sys.stderr.write(f"error: {exc.message or exc}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
