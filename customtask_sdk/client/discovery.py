"""Finding the resource (plural, scope) that serves an ``apiVersion`` and ``kind``."""

from __future__ import annotations

from customtask_sdk.client.api import KubeClient
from customtask_sdk.client.errors import NotFoundError
from customtask_sdk.client.resources import Resource

__all__ = ["Discovery"]


class Discovery:
    """Resolves kinds to resources through the apiserver's discovery documents (cached)."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._cache: dict[str, dict[str, Resource]] = {}

    async def _group_version(self, api_version: str, refresh: bool) -> dict[str, Resource]:
        if refresh or api_version not in self._cache:
            group, _, version = api_version.rpartition("/")
            path = f"/apis/{api_version}" if group else f"/api/{api_version}"
            try:
                document = await self._client.get(path)
            except NotFoundError:
                document = {"resources": []}
            self._cache[api_version] = {
                entry["kind"]: Resource(
                    group, version, entry["name"], entry["kind"], bool(entry["namespaced"])
                )
                for entry in document.get("resources") or []
                if "/" not in entry["name"]  # skip subresources such as customruns/status
            }
        return self._cache[api_version]

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving ``kind`` in ``api_version`` (re-read once on a miss).

        Raises:
            LookupError: the apiserver does not serve that kind (is its CRD installed?).
        """
        for refresh in (False, True):
            found = (await self._group_version(api_version, refresh)).get(kind)
            if found is not None:
                return found
        raise LookupError(
            f"the apiserver serves no kind {kind!r} in {api_version!r}; "
            "check the apiVersion and that its CRD is installed"
        )
