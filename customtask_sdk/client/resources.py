"""Resource descriptors: where a kind lives in the API's URL space."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["CUSTOM_RUNS", "PIPELINE_RUNS", "TASK_RUNS", "Resource"]


@dataclass(frozen=True)
class Resource:
    """An API resource, e.g. ``Resource("tekton.dev", "v1beta1", "customruns", "CustomRun")``.

    ``group`` is ``""`` for the core API (pods, configmaps...).
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``group/version``, or just ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection, or of one object (and a subresource of it).

        ``namespace=None`` on a namespaced resource means all namespaces (list and watch).
        """
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


#: Tekton's CustomRun, the object every custom task controller reconciles.
CUSTOM_RUNS = Resource("tekton.dev", "v1beta1", "customruns", "CustomRun")
#: Tekton's PipelineRun (``tekton.dev/v1``).
PIPELINE_RUNS = Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun")
#: Tekton's TaskRun (``tekton.dev/v1``).
TASK_RUNS = Resource("tekton.dev", "v1", "taskruns", "TaskRun")
