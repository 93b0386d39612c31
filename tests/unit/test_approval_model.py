"""The approval gate's decision table: input validation, quorum, groups, veto, audit."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from customtask_sdk.reconciler.run import InputError, parse_input
from examples.approval.model import (
    ApprovalParams,
    Gate,
    Response,
    State,
    audit,
    close,
    decide,
)

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)


def params(**values: Any) -> dict[str, Any]:
    return {"params": [{"name": k, "value": v} for k, v in values.items()]}


def test_mag_params_are_read_from_tekton_strings() -> None:
    got = parse_input(
        params(
            approvers=["alice", "group:release-managers"],
            numberOfApprovalsRequired="2",
            description="Ship it?",
            preventSelfApproval="true",
            approvalsPerGroup={"release-managers": "1"},
        ),
        ApprovalParams,
    )
    assert got.approvers == ["alice", "group:release-managers"]
    assert got.numberOfApprovalsRequired == 2
    assert got.approvalsPerGroup == {"release-managers": 1}
    assert got.preventSelfApproval is True
    assert got.onReject == "fail"


def test_embedded_spec_works_too() -> None:
    spec = {"customSpec": {"spec": {"approvers": ["bob"], "numberOfApprovalsRequired": 1}}}
    assert parse_input(spec, ApprovalParams).approvers == ["bob"]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({}, "param 'approvers' is required"),
        ({"approvers": []}, "param 'approvers': list at least one approver"),
        ({"approvers": ["alice"], "numberOfApprovalsRequired": "2"}, "can never be met"),
        ({"approvers": ["a", "b"], "numberOfApprovalsRequired": "0"}, "positive integer"),
        ({"approvers": ["a"], "numberOfApprovalsRequired": "-1"}, "positive integer"),
        ({"approvers": ["a"], "numberOfApprovalsRequired": "two"}, "numberOfApprovalsRequired"),
        ({"approvers": ["a"], "numberOfApprovalsRequired": "1.5"}, "numberOfApprovalsRequired"),
        ({"approvers": ["group:"]}, "'group:' is not a group name"),
        ({"approvers": ["group:release managers"]}, "is not a group name"),
        ({"approvers": ["al ice"]}, "is not a name"),
        ({"approvers": ["a"], "approver": "b"}, "param 'approver' is not accepted"),
        ({"approvers": ["a"], "onReject": "ignore"}, "param 'onReject'"),
        ({"approvers": ["a"], "numberOfRejectionsRequired": "0"}, "numberOfRejectionsRequired"),
        ({"approvers": ["sec"], "approvalsPerGroup": {"sec": "1"}}, "write group:sec"),
        ({"approvers": ["group:a"], "approvalsPerGroup": {"a": "0"}}, "positive integer"),
        ({"approvers": ["a"], "notifyURL": "ftp://x"}, "not an http"),
    ],
)
def test_bad_input_names_the_param(values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_input(params(**values), ApprovalParams)
    assert caught.value.reason == "InvalidParams"
    assert fragment in caught.value.message


def test_a_group_makes_any_quorum_possible_and_duplicates_count_once() -> None:
    got = ApprovalParams.model_validate(
        {"approvers": ["alice", "alice", "group:g"], "numberOfApprovalsRequired": 5}
    )
    assert got.approvers == ["alice", "group:g"]


def approve(user: str, *groups: str) -> Response:
    return Response(user, "approve", "ok", groups)


def reject(user: str, *groups: str) -> Response:
    return Response(user, "reject", "no", groups)


GATE = Gate(approvers=("alice", "bob", "group:release"), required=2)


@pytest.mark.parametrize(
    ("gate", "responses", "state", "approved"),
    [
        (GATE, [], "pending", ()),
        (GATE, [approve("alice")], "pending", ("alice",)),
        (GATE, [approve("alice"), approve("bob")], "approved", ("alice", "bob")),
        (GATE, [approve("alice"), approve("carol", "release")], "approved", ("alice", "carol")),
        # not listed and not in a listed group: not counted
        (GATE, [approve("alice"), approve("mallory", "other")], "pending", ("alice",)),
        # veto: one rejection ends it, whatever the approvals
        (GATE, [approve("alice"), approve("bob"), reject("carol", "release")], "rejected", ()),
        # no veto: two rejections needed
        (
            Gate(("a", "b", "c"), required=2, rejections_required=2),
            [reject("a"), approve("b")],
            "pending",
            ("b",),
        ),
        (
            Gate(("a", "b", "c"), required=2, rejections_required=2),
            [reject("a"), reject("c"), approve("b")],
            "rejected",
            ("b",),
        ),
        # self-approval refused: the requester's approval does not count
        (
            Gate(("alice", "bob"), required=1, requester="alice", prevent_self_approval=True),
            [approve("alice")],
            "pending",
            (),
        ),
        # ... but without the option it does
        (Gate(("alice", "bob"), required=1, requester="alice"), [approve("alice")], "approved", ()),
    ],
)
def test_decision_table(
    gate: Gate, responses: list[Response], state: State, approved: tuple[str, ...]
) -> None:
    tally = decide(gate, responses)
    assert tally.state == state
    if state == "pending":
        assert tally.approved_by == approved


def test_a_person_in_two_listed_groups_counts_once() -> None:
    gate = Gate(("group:a", "group:b"), required=2)
    assert decide(gate, [approve("carol", "a", "b")]).state == "pending"
    assert decide(gate, [approve("carol", "a", "b"), approve("dan", "b")]).state == "approved"


def test_per_group_rules_one_of_security_and_two_of_release() -> None:
    gate = Gate(("group:security", "group:release"), per_group={"security": 1, "release": 2})
    two_release = [approve("r1", "release"), approve("r2", "release")]
    tally = decide(gate, two_release)
    assert tally.state == "pending"
    assert "1 more from group security" in tally.summary
    assert decide(gate, [*two_release, approve("s1", "security")]).state == "approved"
    # one person in both groups counts for each rule (as GitLab's rules do)
    assert decide(gate, [approve("r1", "release"), approve("x", "security", "release")]).state == (
        "approved"
    )


def test_a_changed_vote_counts_as_its_latest_value_until_decided() -> None:
    gate = Gate(("alice", "bob"), required=2)
    assert decide(gate, [reject("alice")]).state == "rejected"
    # before a decision, a changed vote is simply the current response
    assert decide(gate, [approve("alice"), approve("bob")]).state == "approved"
    # once decided, nothing changes it
    assert decide(gate, [reject("alice"), reject("bob")], current="approved").state == "approved"
    assert decide(gate, [approve("alice"), approve("bob")], current="timedOut").state == "timedOut"


@pytest.mark.parametrize(
    ("current", "to", "expected"),
    [
        ("pending", "timedOut", "timedOut"),
        ("pending", "cancelled", "cancelled"),
        ("approved", "cancelled", "approved"),
        ("rejected", "timedOut", "rejected"),
        ("cancelled", "timedOut", "cancelled"),
    ],
)
def test_timeout_and_cancel_close_only_a_pending_gate(
    current: State, to: Any, expected: State
) -> None:
    assert close(current, to) == expected


def test_gate_is_read_back_from_the_frozen_spec() -> None:
    spec = {
        "approvers": ["a", "group:g"],
        "numberOfApprovalsRequired": 3,
        "approvalsPerGroup": {"g": 1},
        "numberOfRejectionsRequired": 2,
        "requester": "r",
        "preventSelfApproval": True,
    }
    gate = Gate.from_spec(spec)
    assert gate == Gate(("a", "group:g"), 3, {"g": 1}, 2, "r", True)
    responses = Response.parse_all(
        {"b": {"decision": "reject", "groups": ["g"]}, "a": {"decision": "approve"}, "x": {}}
    )
    assert [r.user for r in responses] == ["a", "b"]


def test_audit_records_each_new_or_changed_response_once() -> None:
    first = audit([], [approve("alice")], NOW)
    assert first == [
        {
            "user": "alice",
            "groups": [],
            "decision": "approve",
            "message": "ok",
            "time": "2026-12-04T12:00:00.000Z",
        }
    ]
    assert audit(first, [approve("alice")], NOW) == []  # the same response: nothing new
    changed = audit(first, [reject("alice", "g")], NOW)
    assert [(r["decision"], r["groups"]) for r in changed] == [("reject", ["g"])]
    withdrawn = audit([*first, *changed], [], NOW)
    assert [r["decision"] for r in withdrawn] == ["withdrawn"]
    assert audit([*first, *changed, *withdrawn], [], NOW) == []
