"""Owned kinds: what a reconciler's runs create, and how much of it the controller caches."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from customtask_sdk.client import JSON, Resource
from customtask_sdk.reconciler.run import Run

__all__ = ["KEPT_METADATA", "Owned", "owned_kinds"]

#: What a projection keeps of ``metadata``: keys, versions, owners, labels, deletion.
KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "ownerReferences",
)

_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}")
_LABEL_VALUE = re.compile(rf"{_NAME}?")


@dataclass(frozen=True)
class Owned:
    """An owned kind, and which of its objects (and which of their fields) to cache.

    ``owns = (Owned(PODS, labels={"app.kubernetes.io/managed-by": "my-task"},
    fields=("status.phase",)),)`` caches only the Pods carrying that label, and of each
    only ``status.phase`` beside its identity; a bare ``Resource`` in ``owns`` caches every
    object of the kind, whole.

    - ``labels``: only objects with all of these labels are listed, watched and cached
      (the apiserver filters). :meth:`metadata` puts them on the objects you create.
    - ``label_selector``: more of the same in the apiserver's syntax, ANDed with
      ``labels`` (``tier in (a,b)``, ``app.kubernetes.io/managed-by`` for "has the label").
    - ``field_selector``: a field selector the apiserver supports for the kind (every
      kind: ``metadata.name``, ``metadata.namespace``; Pods also ``spec.nodeName``,
      ``spec.restartPolicy``, ``status.phase``...).
    - ``fields``: when set, only these dotted paths (``status.phase``, ``spec.nodeName``,
      ``metadata.annotations``) are kept of each object, plus ``apiVersion``, ``kind`` and
      the metadata in :data:`KEPT_METADATA`. A path's whole value is kept.

    An object that stops matching the selectors leaves the cache (its run is woken as for
    a deletion); an owned object that never matched never wakes its run.
    """

    resource: Resource
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    label_selector: str | None = None
    field_selector: str | None = None
    fields: Sequence[str] | None = None
    _paths: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        for key, value in self.labels.items():
            if not _LABEL_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid label key")
            if not _LABEL_VALUE.fullmatch(value):
                raise ValueError(f"{value!r} (label {key!r}) is not a valid label value")
        object.__setattr__(self, "labels", dict(self.labels))
        if self.fields is not None:
            if isinstance(self.fields, str):
                raise TypeError("fields is a sequence of paths: write fields=('status.phase',)")
            paths = tuple(tuple(path.split(".")) for path in self.fields)
            for path, text in zip(paths, self.fields, strict=True):
                if not all(path):
                    raise ValueError(f"{text!r} is not a dotted path like 'status.phase'")
            object.__setattr__(self, "fields", tuple(self.fields))
            object.__setattr__(self, "_paths", paths)

    @classmethod
    def of(cls, kind: Resource | Owned) -> Owned:
        """``kind`` itself, or a bare ``Resource`` as an ``Owned`` that caches everything."""
        return kind if isinstance(kind, Owned) else cls(kind)

    @property
    def selector(self) -> str | None:
        """The label selector sent with list and watch: ``labels`` and ``label_selector``."""
        terms = [f"{key}={value}" for key, value in self.labels.items()]
        if self.label_selector:
            terms.append(self.label_selector)
        return ",".join(terms) or None

    def project(self, obj: JSON) -> JSON:
        """What the cache keeps of ``obj``: all of it, or only ``fields`` and its identity."""
        if self.fields is None:
            return obj
        metadata = obj["metadata"]
        kept: JSON = {key: obj[key] for key in ("apiVersion", "kind") if key in obj}
        kept["metadata"] = {key: metadata[key] for key in KEPT_METADATA if key in metadata}
        for path in self._paths:
            value: Any = obj
            for part in path:
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                target = kept
                for part in path[:-1]:
                    target = target.setdefault(part, {})
                target[path[-1]] = value
        return kept

    def metadata(self, run: Run[Any], **fields: Any) -> JSON:
        """``metadata`` for an object ``run`` owns: ``fields`` (``name=``, ``generateName=``,
        ``labels=``, ``annotations=``...) plus ``labels`` (so the selector matches it) and
        the run's ownerReference (so it wakes the run and is deleted with it)."""
        return {
            **fields,
            "labels": {**(fields.get("labels") or {}), **self.labels},
            "ownerReferences": [*(fields.get("ownerReferences") or ()), run.owner_reference()],
        }


def owned_kinds(owns: Sequence[Resource | Owned]) -> list[Owned]:
    """A reconciler's ``owns`` as :class:`Owned`, one per resource.

    Raises:
        ValueError: a resource is listed twice.
    """
    kinds = [Owned.of(kind) for kind in owns]
    resources = [kind.resource for kind in kinds]
    for resource in resources:
        if resources.count(resource) > 1:
            raise ValueError(f"{resource.kind} is listed more than once in owns")
    return kinds
