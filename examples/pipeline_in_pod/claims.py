"""``volumeClaimTemplate`` workspace bindings: one PersistentVolumeClaim per run, as Tekton.

Tekton (``pkg/reconciler/volumeclaim``) creates a claim from the template, owned by the
run, named ``<template name, else "pvc">-<first 10 hex of sha256(workspace + owner uid)>``,
and binds the workspace to it. Here the owner is the run: the CustomRun (its attempts share
the claim) or the delegated PipelineRun, as in Tekton; the claim is deleted with it
(``pods.create_claims`` makes it, for both front doors).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

from examples.pipeline_in_pod.model import WorkspaceBinding

__all__ = ["bind_claims", "claim_name", "from_template"]

JSON = dict[str, Any]


def claim_name(binding: WorkspaceBinding, owner_uid: str) -> str:
    """Tekton's ``GeneratePVCNameFromWorkspaceBinding``."""
    template = binding.volumeClaimTemplate or {}
    prefix = (template.get("metadata") or {}).get("name") or "pvc"
    digest = hashlib.sha256(f"{binding.name}{owner_uid}".encode()).hexdigest()
    return f"{prefix}-{digest[:10]}"


def from_template(binding: WorkspaceBinding, owner_uid: str) -> tuple[WorkspaceBinding, JSON]:
    """The binding to the run's claim, and that claim (without its owner reference)."""
    assert binding.volumeClaimTemplate is not None
    name = claim_name(binding, owner_uid)
    claim = copy.deepcopy(binding.volumeClaimTemplate)
    claim.pop("status", None)
    claim["metadata"] = {**(claim.get("metadata") or {}), "name": name}
    claim.update(apiVersion="v1", kind="PersistentVolumeClaim")
    bound = binding.model_copy(
        update={"volumeClaimTemplate": None, "persistentVolumeClaim": {"claimName": name}}
    )
    return bound, claim


def bind_claims(
    bindings: Sequence[WorkspaceBinding], owner_uid: str
) -> tuple[list[WorkspaceBinding], list[JSON]]:
    """``bindings`` with each ``volumeClaimTemplate`` bound to its claim, and the claims."""
    bound: list[WorkspaceBinding] = []
    claims: list[JSON] = []
    for binding in bindings:
        if binding.volumeClaimTemplate is None:
            bound.append(binding)
            continue
        binding, claim = from_template(binding, owner_uid)
        bound.append(binding)
        claims.append(claim)
    return bound, claims
