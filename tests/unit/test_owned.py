"""Owned kinds: selectors, the field projection, and metadata for the objects a run owns."""

from __future__ import annotations

import datetime
import re

import pytest

from customtask_sdk import Owned
from customtask_sdk.client import JSON, Resource
from customtask_sdk.reconciler import NoParams, Run
from customtask_sdk.reconciler.owned import KEPT_METADATA, owned_kinds

PODS = Resource("", "v1", "pods", "Pod")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
MANAGED = {"app.kubernetes.io/managed-by": "pod-task"}
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def pod() -> JSON:
    """A Pod as a watch delivers it (``managedFields`` already stripped by the informer)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "pod-uid",
            "resourceVersion": "42",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": dict(MANAGED),
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "ownerReferences": [{"kind": "CustomRun", "name": "r", "uid": "run-uid"}],
            "finalizers": ["x/y"],
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0}],
        },
    }


def test_a_bare_resource_caches_every_object_whole() -> None:
    kind = Owned.of(PODS)
    assert (kind.resource, kind.selector, kind.field_selector) == (PODS, None, None)
    obj = pod()
    assert kind.project(obj) is obj
    declared = Owned(PODS, labels=MANAGED)
    assert Owned.of(declared) is declared


def test_labels_and_label_selector_are_one_selector() -> None:
    kind = Owned(PODS, labels={**MANAGED, "tier": "build"}, label_selector="team in (a,b)")
    assert kind.selector == "app.kubernetes.io/managed-by=pod-task,tier=build,team in (a,b)"
    assert Owned(PODS, label_selector="app.kubernetes.io/managed-by").selector == (
        "app.kubernetes.io/managed-by"
    )


def test_projection_keeps_identity_owners_and_the_listed_paths_only() -> None:
    kind = Owned(PODS, fields=["status.phase", "status.containerStatuses", "spec.missing.x"])
    assert kind.fields == ("status.phase", "status.containerStatuses", "spec.missing.x")
    original = pod()
    identity = {k: v for k, v in pod()["metadata"].items() if k in KEPT_METADATA}
    assert set(pod()["metadata"]) - set(identity) == {"annotations", "finalizers"}
    assert kind.project(original) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": identity,
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0}],
        },
    }
    assert original == pod()  # the input is left alone


def test_projection_can_keep_more_metadata_and_whole_subtrees() -> None:
    kind = Owned(PODS, fields=("metadata.annotations", "spec", "spec.nodeName"))
    kept = kind.project(pod())
    assert kept["metadata"]["annotations"] == pod()["metadata"]["annotations"]
    assert kept["spec"] == pod()["spec"]
    assert "status" not in kept
    assert "finalizers" not in kept["metadata"]


def test_a_path_through_a_non_object_keeps_nothing() -> None:
    kind = Owned(PODS, fields=("status.phase.x", "spec.containers.name"))
    assert set(kind.project(pod())) == {"apiVersion", "kind", "metadata"}


def run() -> Run[NoParams]:
    obj: JSON = {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "run-uid"},
        "spec": {},
    }
    return Run(obj, NoParams(), NOW, None, NOW)


def test_metadata_makes_a_child_the_selector_matches_and_the_run_owns() -> None:
    kind = Owned(PODS, labels=MANAGED, fields=("status.phase",))
    metadata = kind.metadata(
        run(),
        generateName="r-",
        labels={"app.kubernetes.io/managed-by": "someone-else", "step": "1"},
        annotations={"a": "b"},
    )
    assert metadata == {
        "generateName": "r-",
        "labels": {"app.kubernetes.io/managed-by": "pod-task", "step": "1"},
        "annotations": {"a": "b"},
        "ownerReferences": [run().owner_reference()],
    }
    assert Owned(PODS).metadata(run(), name="p") == {
        "name": "p",
        "labels": {},
        "ownerReferences": [run().owner_reference()],
    }


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"labels": {"bad key": "x"}}, "'bad key' is not a valid label key"),
        ({"labels": {"Example.com/x": "y"}}, "'Example.com/x' is not a valid label key"),
        ({"labels": {"app": "-x"}}, "'-x' (label 'app') is not a valid label value"),
        ({"labels": {"app": "x" * 64}}, "is not a valid label value"),
        ({"fields": ("status..phase",)}, "'status..phase' is not a dotted path"),
        ({"fields": ("",)}, "'' is not a dotted path"),
    ],
)
def test_bad_declarations_fail_when_written(options: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        Owned(PODS, **options)  # type: ignore[arg-type]


def test_fields_must_be_a_sequence_of_paths_not_one_string() -> None:
    with pytest.raises(TypeError, match=re.escape("fields=('status.phase',)")):
        Owned(PODS, fields="status.phase")


def test_labels_are_copied_so_the_declaration_cannot_change_later() -> None:
    labels = dict(MANAGED)
    kind = Owned(PODS, labels=labels)
    labels["other"] = "x"
    assert kind.selector == "app.kubernetes.io/managed-by=pod-task"


def test_owns_accepts_resources_and_declarations_once_per_resource() -> None:
    kinds = owned_kinds((CONFIG_MAPS, Owned(PODS, labels=MANAGED)))
    assert [(k.resource, k.selector) for k in kinds] == [
        (CONFIG_MAPS, None),
        (PODS, "app.kubernetes.io/managed-by=pod-task"),
    ]
    with pytest.raises(ValueError, match="Pod is listed more than once in owns"):
        owned_kinds((PODS, Owned(PODS, labels=MANAGED)))
