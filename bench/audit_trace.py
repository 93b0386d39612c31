"""Where a decision's time goes, from kube-apiserver's audit log.

The apiserver stamps every request it audits with when it received it and when it
answered (microseconds, one clock). With the writes of a decision in that log (the
approver's deciding write, then the controller's write of the gate's status, then of the
run's status) the time from the deciding write's answer to the run's ``Succeeded=True``
splits into what the apiserver spent (the two writes) and what the controller spent
(between them: watch delivery, queue, reconcile, sending).

    cp = ControlPlane(apiserver_args=audit_args(workdir))
    ... decisions ...
    trails = decision_trails(read_audit_log(workdir / AUDIT_LOG), gate_paths)
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

AUDIT_LOG = "audit.log"

#: Only writes of gates and runs, at ``Metadata`` level, answered (no request stage).
_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "verbs": ["patch", "update"],
            "resources": [
                {"group": "approval.customtask.dev", "resources": ["approvaltasks/status"]},
                {"group": "approval.customtask.dev", "resources": ["approvaltasks"]},
                {"group": "tekton.dev", "resources": ["customruns/status"]},
            ],
        },
        {"level": "None"},
    ],
}


def audit_args(workdir: Path) -> list[str]:
    """kube-apiserver flags for the audit log in ``workdir`` (written asynchronously, so
    that logging adds nothing to a request's own latency)."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(_POLICY))
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / AUDIT_LOG}",
        "--audit-log-mode=batch",
        "--audit-log-format=json",
    ]


@dataclass(frozen=True)
class Write:
    """One answered write: who, to what, when received and answered (epoch seconds)."""

    user: str
    resource: str  # "approvaltasks", "approvaltasks/status", "customruns/status"
    namespace: str
    name: str
    code: int
    received: float
    answered: float


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_audit_log(path: Path) -> Iterator[Write]:
    """Every audited write in the log, in the order the apiserver logged them."""
    with path.open() as lines:
        for line in lines:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            yield Write(
                user=event["user"].get("username", ""),
                resource=resource,
                namespace=ref.get("namespace", ""),
                name=ref.get("name", ""),
                code=int((event.get("responseStatus") or {}).get("code") or 0),
                received=_epoch(event["requestReceivedTimestamp"]),
                answered=_epoch(event["stageTimestamp"]),
            )


@dataclass(frozen=True)
class Trail:
    """A decision's three writes, in the apiserver's clock (epoch seconds)."""

    deciding: Write
    gate: Write
    run: Write

    @property
    def watch_queue_reconcile(self) -> float:
        """Controller: deciding write answered -> the gate's status write received
        (negative when the controller's watch saw the response before the apiserver had
        answered the approver)."""
        return self.gate.received - self.deciding.answered

    @property
    def gate_write(self) -> float:
        """Apiserver: the gate's status write, received to answered."""
        return self.gate.answered - self.gate.received

    @property
    def between_writes(self) -> float:
        """Controller: the gate's write answered -> the run's status write received."""
        return self.run.received - self.gate.answered

    @property
    def run_write(self) -> float:
        """Apiserver: the run's status write, received to answered."""
        return self.run.answered - self.run.received

    @property
    def total(self) -> float:
        """Deciding write answered -> the run's ``Succeeded=True`` write answered."""
        return self.run.answered - self.deciding.answered


def decision_trails(writes: Iterable[Write], namespace: str, controller: str) -> dict[str, Trail]:
    """Per gate name: its first successful response write, then the controller's first
    successful write of its status received after that (the controller may see the
    response on its watch before the apiserver has answered the approver), then of its
    run's status after that."""
    deciding: dict[str, Write] = {}
    gate: dict[str, Write] = {}
    trails: dict[str, Trail] = {}
    for w in sorted(writes, key=lambda w: w.received):
        if w.namespace != namespace or w.code != 200:
            continue
        if w.resource == "approvaltasks" and w.user != controller:
            deciding.setdefault(w.name, w)
        elif w.user != controller or w.name not in deciding:
            continue
        elif w.resource == "approvaltasks/status" and w.received > deciding[w.name].received:
            gate.setdefault(w.name, w)
        elif (
            w.resource == "customruns/status"
            and w.name in gate
            and w.name not in trails
            and w.received >= gate[w.name].answered
        ):
            trails[w.name] = Trail(deciding[w.name], gate[w.name], w)
    return trails
