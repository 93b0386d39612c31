"""The customtask-sdk command: loading reconcilers and reporting mistakes plainly."""

from __future__ import annotations

import pytest

from customtask_sdk.cli import load_reconciler, main
from examples.wait.controller import Wait


def test_loads_a_reconciler_class_as_an_instance() -> None:
    assert isinstance(load_reconciler("examples.wait.controller:Wait"), Wait)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.wait.controller", "expected pkg.module:Class"),
        ("no.such.module:Thing", "cannot import 'no.such.module'"),
        ("examples.wait.controller:Nope", "has no 'Nope'"),
        ("examples.wait.controller:WaitParams", "neither a Reconciler subclass nor"),
    ],
)
def test_mistakes_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        load_reconciler(spec)


@pytest.mark.usefixtures("restore_logging")
def test_a_missing_kubeconfig_is_reported_without_a_traceback() -> None:
    with pytest.raises(SystemExit, match="kubeconfig not found: /nonexistent"):
        main(["run", "examples.wait.controller:Wait", "--kubeconfig", "/nonexistent"])
