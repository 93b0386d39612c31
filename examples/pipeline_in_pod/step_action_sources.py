"""Reading the StepActions a run's steps reference, for both front doors.

A StepAction named by ``ref.name`` is read from the run's namespace; one with a
``resolver`` comes through Tekton's remote resolution: a ``ResolutionRequest`` owned by
the run, read until a resolver answers. Each distinct ref is read once, all at once; the
answers are frozen with the run's spec (compiling is pure).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from customtask_sdk import ConflictError, KubeClient, NotFoundError, Resource, RetryLater
from examples.pipeline_in_pod.dag import CompileError
from examples.pipeline_in_pod.model import StepRef
from examples.pipeline_in_pod.pods import Unresolvable
from examples.pipeline_in_pod.stepactions import step_action_refs

__all__ = [
    "RESOLUTION_POLL",
    "RESOLUTION_REQUESTS",
    "STEP_ACTIONS",
    "Requester",
    "fetch_step_actions",
]

JSON = dict[str, Any]
STEP_ACTIONS = Resource("tekton.dev", "v1beta1", "stepactions", "StepAction")
RESOLUTION_REQUESTS = Resource(
    "resolution.tekton.dev", "v1beta1", "resolutionrequests", "ResolutionRequest"
)
#: How often a run waiting for a ResolutionRequest looks at it again.
RESOLUTION_POLL = datetime.timedelta(seconds=1)
_PHASES = ("preSteps", "steps", "postSteps")  # hermetic.py's phases


@dataclass(frozen=True)
class Requester:
    """The run asking for remote StepActions: its ResolutionRequests are named after it
    (``<name[:40]>-<ref hash>``), carry its ``labels`` and are owned by it."""

    name: str
    labels: Mapping[str, str]
    owner_reference: JSON


async def fetch_step_actions(
    client: KubeClient,
    namespace: str,
    tasks: Mapping[str, JSON],
    requester: Requester | None = None,
) -> JSON:
    """Every StepAction the ``tasks``' steps reference, by ``ref_key``: one GET per
    distinct name (``tekton.dev/v1beta1``; one stored as ``v1alpha1`` is served in it
    too); a remote ref through a ResolutionRequest of ``requester``.

    Raises:
        Unresolvable: a ref is malformed (naming ``tasks[<task>].steps[<i>].ref``), a
            StepAction is missing (``StepActionNotFound``), a resolution failed
            (``StepActionResolutionFailed``).
        RetryLater: a ResolutionRequest is not resolved yet.
    """
    refs: dict[str, StepRef] = {}
    for task, spec in tasks.items():
        try:
            found = step_action_refs({"steps": [s for k in _PHASES for s in spec.get(k) or []]})
        except CompileError as exc:
            raise Unresolvable(exc.reason, f"tasks[{task}].{exc.field}: {exc.message}") from None
        for key, ref in found.items():
            refs.setdefault(key, ref)

    async def get(key: str, ref: StepRef) -> JSON:
        if ref.resolver:
            assert requester is not None, "a remote StepAction needs a requester"
            return await _resolved_remotely(client, namespace, requester, key, ref)
        try:
            action = await client.get(STEP_ACTIONS.path(namespace, ref.name))
        except NotFoundError:
            raise Unresolvable(
                "StepActionNotFound", f"StepAction {ref.name!r} not found in {namespace!r}"
            ) from None
        spec: JSON = action.get("spec") or {}
        return spec

    specs = await asyncio.gather(*(get(key, ref) for key, ref in refs.items()))
    return dict(zip(refs, specs, strict=True))


async def _resolved_remotely(
    client: KubeClient, namespace: str, requester: Requester, key: str, ref: StepRef
) -> JSON:
    """A remote StepAction's spec, through a ResolutionRequest (Tekton's remote
    resolution: ``resolution.tekton.dev/type: <resolver>``, the ref's params); made on
    first sight, then read until a resolver answers.

    Raises:
        RetryLater: no resolver has answered yet.
        Unresolvable: ``StepActionResolutionFailed``.
    """
    name = f"{requester.name[:40]}-{key.rsplit(':', 1)[1]}"
    request = await client.get_or_none(RESOLUTION_REQUESTS.path(namespace, name))
    if request is None:
        meta = {
            "name": name,
            "namespace": namespace,
            "labels": {**requester.labels, "resolution.tekton.dev/type": str(ref.resolver)},
            "ownerReferences": [requester.owner_reference],
        }
        body = {
            "apiVersion": "resolution.tekton.dev/v1beta1",
            "kind": "ResolutionRequest",
            "metadata": meta,
            "spec": {"params": [param.model_dump() for param in ref.params or []]},
        }
        with contextlib.suppress(ConflictError):
            await client.create(RESOLUTION_REQUESTS.path(namespace), body)
        raise RetryLater(f"ResolutionRequest {name!r} created", after=RESOLUTION_POLL)
    conditions = (request.get("status") or {}).get("conditions") or []
    done: JSON = next((c for c in conditions if c.get("type") == "Succeeded"), {})
    if done.get("status") == "False":
        raise Unresolvable(
            "StepActionResolutionFailed",
            f"StepAction from resolver {ref.resolver!r} (ResolutionRequest {name!r}): "
            f"{done.get('message', '')}",
        )
    if done.get("status") != "True":
        raise RetryLater(f"ResolutionRequest {name!r} pending", after=RESOLUTION_POLL)
    try:
        found = yaml.safe_load(base64.b64decode(request["status"].get("data", "")))
    except (ValueError, yaml.YAMLError) as exc:
        raise Unresolvable(
            "StepActionResolutionFailed", f"ResolutionRequest {name!r}: unreadable data: {exc}"
        ) from None
    if not isinstance(found, dict) or found.get("kind") != "StepAction":
        raise Unresolvable(
            "StepActionResolutionFailed",
            f"ResolutionRequest {name!r}: the resolved resource is not a StepAction",
        )
    spec: JSON = found.get("spec") or {}
    return spec
