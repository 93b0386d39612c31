"""The approval gate's input and its decision: pure functions, no cluster needed.

Input comes in MAG's param names (``approvers``, ``numberOfApprovalsRequired``,
``description``) plus a few of our own. It is validated by :class:`ApprovalParams`
before any ``ApprovalTask`` exists, then frozen into one as a :class:`Gate`; responses
are counted by :func:`decide`, and every change of a response is recorded by
:func:`audit`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from customtask_sdk import Params
from customtask_sdk.reconciler.run import format_time

GROUP_PREFIX = "group:"

#: Where a gate stands. ``pending`` is the only state that accepts responses.
State = Literal["pending", "approved", "rejected", "timedOut", "cancelled"]
Decision = Literal["approve", "reject"]
DECIDED: frozenset[str] = frozenset({"approved", "rejected", "timedOut", "cancelled"})


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise ValueError(f"must be a positive integer (1, 2, ...), got {value}; set `{name}`")
    return value


class ApprovalParams(Params):
    """What a pipeline task asks for (MAG-compatible names; unknown params are refused).

    ``approvers``: user names, service accounts (``system:serviceaccount:<ns>:<name>``)
    and groups (``group:<name>``). ``numberOfApprovalsRequired`` distinct people must
    approve; ``approvalsPerGroup`` adds per-group minimums ("1 of security AND 2 of
    release-managers"). ``numberOfRejectionsRequired`` rejections end the gate (1: any
    rejection is a veto). ``onReject: continue`` makes a rejection succeed with
    ``decision=rejected`` so later tasks can branch on it.
    """

    approvers: list[str]
    numberOfApprovalsRequired: int = 1
    approvalsPerGroup: dict[str, int] = Field(default_factory=dict)
    numberOfRejectionsRequired: int = 1
    description: str = ""
    preventSelfApproval: bool = False
    onReject: Literal["fail", "continue"] = "fail"
    notifyURL: str = ""

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one approver: a user, or group:<name>")
        seen: dict[str, None] = {}
        for entry in value:
            name = entry.removeprefix(GROUP_PREFIX)
            if not name or name != name.strip() or any(c.isspace() for c in name):
                what = "a group name after `group:`" if entry.startswith(GROUP_PREFIX) else "a name"
                raise ValueError(f"{entry!r} is not {what} without spaces, e.g. group:release")
            seen[entry] = None
        return list(seen)  # duplicates listed twice count once

    @field_validator("numberOfApprovalsRequired")
    @classmethod
    def _quorum(cls, value: int, info: ValidationInfo) -> int:
        _positive(value, "numberOfApprovalsRequired")
        approvers: list[str] = info.data.get("approvers") or []
        no_group = not any(a.startswith(GROUP_PREFIX) for a in approvers)
        if approvers and no_group and value > len(approvers):
            raise ValueError(
                f"{value} approvals can never be met: only {len(approvers)} approvers are "
                "listed and no group; lower it or list more approvers"
            )
        return value

    @field_validator("approvalsPerGroup")
    @classmethod
    def _per_group(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        listed = {a.removeprefix(GROUP_PREFIX) for a in info.data.get("approvers") or []}
        for group, count in value.items():
            _positive(count, f"approvalsPerGroup.{group}")
            if f"{GROUP_PREFIX}{group}" not in (info.data.get("approvers") or []):
                hint = " (listed as a user: write group:" + group + ")" if group in listed else ""
                raise ValueError(f"group {group!r} is not among the approvers{hint}")
        return value

    @field_validator("numberOfRejectionsRequired")
    @classmethod
    def _rejections(cls, value: int) -> int:
        return _positive(value, "numberOfRejectionsRequired")

    @field_validator("notifyURL")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


@dataclass(frozen=True)
class Gate:
    """The rules of one gate, frozen into its ``ApprovalTask`` when it is created."""

    approvers: tuple[str, ...]
    required: int = 1
    per_group: Mapping[str, int] = field(default_factory=dict)
    rejections_required: int = 1
    requester: str = ""
    prevent_self_approval: bool = False

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Gate:
        """The gate an ``ApprovalTask``'s spec describes."""
        return cls(
            approvers=tuple(spec.get("approvers") or ()),
            required=int(spec.get("numberOfApprovalsRequired") or 1),
            per_group={k: int(v) for k, v in (spec.get("approvalsPerGroup") or {}).items()},
            rejections_required=int(spec.get("numberOfRejectionsRequired") or 1),
            requester=str(spec.get("requester") or ""),
            prevent_self_approval=bool(spec.get("preventSelfApproval")),
        )

    def counting_groups(self, response: Response) -> tuple[str, ...]:
        """The listed groups ``response``'s author was in when responding."""
        return tuple(g for g in response.groups if f"{GROUP_PREFIX}{g}" in self.approvers)

    def why_not_counted(self, response: Response) -> str | None:
        """Why a response does not count (admission refuses these too), else ``None``."""
        if response.user not in self.approvers and not self.counting_groups(response):
            return "not an approver"
        if (
            response.decision == "approve"
            and self.prevent_self_approval
            and response.user == self.requester
        ):
            return "the requester may not approve their own run"
        return None


@dataclass(frozen=True)
class Response:
    """One person's current response, as authenticated by the apiserver."""

    user: str
    decision: Decision
    message: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def parse_all(cls, responses: Mapping[str, Any]) -> list[Response]:
        """``spec.responses`` (keyed by user name) as responses, in user order."""
        return [
            cls(
                user,
                entry["decision"],
                entry.get("message") or "",
                tuple(entry.get("groups") or ()),
            )
            for user, entry in sorted(responses.items())
            if isinstance(entry, dict) and entry.get("decision") in ("approve", "reject")
        ]


@dataclass(frozen=True)
class Tally:
    """The counted responses and the state they lead to."""

    state: State
    approved_by: tuple[str, ...]
    rejected_by: tuple[str, ...]
    per_group: Mapping[str, int]
    ignored: Mapping[str, str]
    summary: str


def decide(gate: Gate, responses: Iterable[Response], current: State = "pending") -> Tally:
    """Count ``responses`` against ``gate``: distinct people, per-group minimums, veto.

    A decided gate stays decided (``current`` is returned unchanged): votes changed
    afterwards count for nothing.
    """
    approved: list[str] = []
    rejected: list[str] = []
    per_group = dict.fromkeys(gate.per_group, 0)
    ignored: dict[str, str] = {}
    for response in responses:
        why = gate.why_not_counted(response)
        if why is not None:
            ignored[response.user] = why
        elif response.decision == "reject":
            rejected.append(response.user)
        else:
            approved.append(response.user)
            for group in gate.counting_groups(response):
                if group in per_group:
                    per_group[group] += 1
    missing = [
        f"{need - per_group[g]} more from group {g}"
        for g, need in gate.per_group.items()
        if per_group[g] < need
    ]
    state: State = current
    if current == "pending":
        if len(rejected) >= gate.rejections_required:
            state = "rejected"
        elif len(approved) >= gate.required and not missing:
            state = "approved"
    if state == "pending":
        needs = [f"{gate.required - len(approved)} more"] if len(approved) < gate.required else []
        summary = f"{len(approved)}/{gate.required} approvals; waiting for " + ", ".join(
            needs + missing
        )
    elif state == "approved":
        summary = f"approved by {', '.join(approved)}"
    elif state == "rejected":
        summary = f"rejected by {', '.join(rejected)}"
    else:
        summary = state
    return Tally(state, tuple(approved), tuple(rejected), per_group, ignored, summary)


def close(current: State, to: Literal["timedOut", "cancelled"]) -> State:
    """The state after a timeout or cancellation: only a pending gate is closed."""
    return to if current == "pending" else current


def audit(
    log: Sequence[Mapping[str, Any]], responses: Iterable[Response], now: datetime.datetime
) -> list[dict[str, Any]]:
    """Records to append to the audit ``log``: one per response that is new or changed
    since that person's last record, and one ``withdrawn`` per response removed."""
    latest: dict[str, Mapping[str, Any]] = {}
    for record in log:
        latest[str(record.get("user"))] = record
    stamp = format_time(now)
    added: list[dict[str, Any]] = []
    current = {r.user: r for r in responses}
    for user, response in current.items():
        record = {
            "user": user,
            "groups": list(response.groups),
            "decision": response.decision,
            "message": response.message,
        }
        last = latest.get(user)
        if last is None or any(last.get(k) != v for k, v in record.items()):
            added.append({**record, "time": stamp})
    for user, last in latest.items():
        if user not in current and last.get("decision") != "withdrawn":
            added.append({"user": user, "groups": [], "decision": "withdrawn", "time": stamp})
    return added
