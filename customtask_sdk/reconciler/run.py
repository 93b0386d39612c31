"""The CustomRun as an integrator sees it: typed params, its attempt and its clock."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from customtask_sdk.client import JSON, Resource
from customtask_sdk.reconciler.durations import format_go_duration, parse_go_duration

__all__ = [
    "DEFAULT_TIMEOUT",
    "InputError",
    "OwnedLookup",
    "Params",
    "Run",
    "format_time",
    "parse_input",
    "parse_time",
    "parse_timeout",
]

#: Tekton's implicit timeout for a CustomRun without ``spec.timeout``.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=60)

P = TypeVar("P", bound=BaseModel)

#: How a run finds the cached objects it owns: (resource, owner uid) -> objects.
OwnedLookup = Callable[[Resource, str], list[JSON]]


class Params(BaseModel):
    """Base for a reconciler's params model: unknown params are rejected, values frozen.

    Fields are read from ``spec.params`` (``customRef`` runs) or ``customSpec.spec``
    (embedded specs); aliases let a field take a name that is not a Python identifier.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputError(ValueError):
    """The run's input is unusable; ``reason`` and ``message`` go onto the failed run."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as written to ``startTime`` and conditions."""
    if moment.tzinfo is not datetime.UTC:
        moment = moment.astimezone(datetime.UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"


def parse_time(text: str) -> datetime.datetime:
    """Parse an RFC 3339 timestamp as Kubernetes writes it."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_timeout(spec: Mapping[str, Any]) -> datetime.timedelta | None:
    """The per-attempt timeout: 60 minutes when unset, ``None`` for ``0`` (no timeout)."""
    raw = spec.get("timeout")
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT
    try:
        timeout = parse_go_duration(raw)
    except ValueError as exc:
        raise InputError("InvalidTimeout", f"spec.timeout: {exc}") from None
    if timeout < datetime.timedelta(0):
        raise InputError(
            "InvalidTimeout",
            f"spec.timeout is negative ({raw!r}); set a positive duration, or 0 for none",
        )
    return timeout if timeout else None


def _describe_errors(error: ValidationError, source: str) -> str:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "(input)"
        if item["type"] == "missing":
            problems.append(f"{source} {where!r} is required")
        elif item["type"] == "extra_forbidden":
            problems.append(f"{source} {where!r} is not accepted")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{source} {where!r}: {message}")
    return "; ".join(problems)


def parse_input(spec: Mapping[str, Any], model: type[P]) -> P:
    """Validate ``spec.params`` merged with ``spec.customSpec.spec`` into ``model``.

    Raises:
        InputError: ``InvalidParams`` naming each bad field and what it expects.
    """
    values: dict[str, Any] = {}
    embedded = (spec.get("customSpec") or {}).get("spec")
    if embedded is not None:
        if not isinstance(embedded, dict):
            raise InputError(
                "InvalidParams", f"customSpec.spec must be an object, got {type(embedded).__name__}"
            )
        values.update(embedded)
    for param in spec.get("params") or []:
        name = param.get("name") if isinstance(param, dict) else None
        if not isinstance(name, str) or not name:
            raise InputError("InvalidParams", f"a param has no name: {param!r}")
        if name in values:
            where = (
                "twice in params"
                if embedded is None or name not in embedded
                else ("both in params and in customSpec.spec")
            )
            raise InputError("InvalidParams", f"param {name!r} is given {where}; give it once")
        values[name] = param.get("value")
    source = "param" if embedded is None else "field"
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        fields = sorted(model.model_fields)
        expected = f" (accepted: {', '.join(fields)})" if fields else ""
        raise InputError("InvalidParams", _describe_errors(exc, source) + expected) from None


@dataclass(frozen=True)
class Run(Generic[P]):
    """One attempt of a CustomRun, handed to ``Reconciler.reconcile``.

    ``obj`` is the cached object: read it, never mutate it.
    """

    obj: JSON
    params: P
    started_at: datetime.datetime
    timeout: datetime.timedelta | None
    now: datetime.datetime
    lookup: OwnedLookup | None = None

    @property
    def name(self) -> str:
        """``metadata.name``."""
        name: str = self.obj["metadata"]["name"]
        return name

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        namespace: str = self.obj["metadata"]["namespace"]
        return namespace

    @property
    def key(self) -> str:
        """``namespace/name``, the run's key in logs and queues."""
        return f"{self.namespace}/{self.name}"

    @property
    def uid(self) -> str:
        """``metadata.uid``."""
        uid: str = self.obj["metadata"]["uid"]
        return uid

    @property
    def labels(self) -> Mapping[str, str]:
        """``metadata.labels`` (Tekton copies the PipelineRun's labels here)."""
        labels: Mapping[str, str] = self.obj["metadata"].get("labels") or {}
        return labels

    @property
    def pipeline_run(self) -> str | None:
        """The name of the PipelineRun this run belongs to, if any."""
        return self.labels.get("tekton.dev/pipelineRun")

    @property
    def attempt(self) -> int:
        """0 for the first attempt, then 1, 2... (``len(status.retriesStatus)``)."""
        return len((self.obj.get("status") or {}).get("retriesStatus") or [])

    @property
    def retries(self) -> int:
        """How many retries ``spec.retries`` allows."""
        return int(self.obj["spec"].get("retries") or 0)

    @property
    def elapsed(self) -> datetime.timedelta:
        """Time since this attempt started."""
        return self.now - self.started_at

    @property
    def deadline(self) -> datetime.datetime | None:
        """When this attempt times out, or ``None`` without a timeout."""
        return None if self.timeout is None else self.started_at + self.timeout

    @property
    def extra_fields(self) -> Mapping[str, Any]:
        """``status.extraFields`` as last written (``{}`` when unset)."""
        fields = (self.obj.get("status") or {}).get("extraFields")
        return fields if isinstance(fields, dict) else {}

    def owned(self, resource: Resource) -> list[JSON]:
        """Objects of ``resource`` (one of the reconciler's ``owns``) owned by this run,
        from the cache: no API call. Their changes wake this run."""
        if self.lookup is None:
            return []
        return self.lookup(resource, self.uid)

    def owner_reference(self) -> JSON:
        """An ownerReference making a child object owned (and garbage-collected) by this run."""
        return {
            "apiVersion": self.obj.get("apiVersion", "tekton.dev/v1beta1"),
            "kind": "CustomRun",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def describe_timeout(self) -> str:
        """The timeout as a Go duration string (``1h0m0s``), or ``none``."""
        return "none" if self.timeout is None else format_go_duration(self.timeout)
