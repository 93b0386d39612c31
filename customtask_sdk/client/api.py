"""One long-lived, retrying JSON client for the Kubernetes API.

Requests go through one bounded pool of HTTP/1.1 keep-alive connections
(:mod:`customtask_sdk.client.http`), which keeps the hot path (watch decoding, status
writes) lean; see :mod:`customtask_sdk.client.config` for configuration.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from customtask_sdk.client.config import ClientConfig, load_configuration
from customtask_sdk.client.errors import (
    ApiError,
    NotFoundError,
    ServerError,
    TooManyRequestsError,
    error_for,
)
from customtask_sdk.client.http import HttpPool, RequestNotSent
from customtask_sdk.client.resources import Resource

__all__ = ["JSON", "KubeClient", "PatchType"]

JSON = dict[str, Any]
PatchType = Literal["merge", "json", "apply"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    # Strategic merge patch is not supported on custom resources; never send it implicitly.
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


# A DELETE sent again finds the object gone (404, which delete() takes as done) or going.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


def _guarded(body: Any) -> bool:
    """Whether a write carries a resourceVersion precondition (it cannot land twice)."""
    if isinstance(body, dict):
        return bool((body.get("metadata") or {}).get("resourceVersion"))
    return isinstance(body, list) and any(  # a JSON patch testing the resourceVersion
        isinstance(op, dict)
        and op.get("op") == "test"
        and op.get("path") == "/metadata/resourceVersion"
        for op in body
    )


def _resendable(method: str, body: Any, content_type: str) -> Callable[[BaseException], bool]:
    """Which failures of this request may be retried by sending it again.

    Any request is sent again when it was not processed: a 429, a 503 with Retry-After
    (an apiserver shutting down), or a failure before a byte of it was sent. After any
    other transient failure (5xx, a dropped connection, a timeout) it may have been
    processed, so only reads, deletes, server-side applies (declarative: a second apply of
    the same intent leaves the object as the first did) and writes guarded by a
    resourceVersion are.
    """
    idempotent = (
        method in _IDEMPOTENT_METHODS
        or (method in ("PUT", "PATCH") and _guarded(body))
        or (method == "PATCH" and content_type == _PATCH_CONTENT_TYPES["apply"])
    )

    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, ApiError):
            if isinstance(exc, TooManyRequestsError):
                return True
            if isinstance(exc, ServerError):
                return idempotent or (exc.status == 503 and exc.retry_after is not None)
            return False
        if isinstance(exc, RequestNotSent):
            return True
        if isinstance(exc, ssl.SSLCertVerificationError):
            return False  # a wrong CA or server name does not fix itself
        return idempotent and isinstance(exc, OSError)  # dropped connections, timeouts

    return retryable


def _retry_after(exc: BaseException | None) -> float | None:
    if isinstance(exc, TooManyRequestsError | ServerError):
        return exc.retry_after
    return None


class _RetryAfterOrBackoff:
    """Wait what the server asks for (Retry-After), else jittered exponential backoff."""

    def __init__(self) -> None:
        self._backoff = wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.1)

    def __call__(self, state: RetryCallState) -> float:
        wait = _retry_after(state.outcome.exception() if state.outcome else None)
        return self._backoff(state) if wait is None else wait


class KubeClient:
    """An asyncio Kubernetes client: JSON in, JSON out, typed errors, bounded connections.

    Transient failures are retried for up to ``retry_seconds`` (after the server's
    Retry-After, else with backoff), but a request is sent again only when that cannot
    apply it twice: any request after an answer saying it was not processed (429, 503 with
    Retry-After) or a failure before it was sent (connection refused); reads, deletes and
    writes guarded by ``metadata.resourceVersion`` (PUT, merge patch, or a JSON patch
    testing it) also after a 5xx, a dropped connection or a timeout. A POST, or an
    unguarded PUT or PATCH, may have been applied then: the error is raised to the caller.
    Everything else raises an :class:`ApiError` subclass.

    At most ``max_connections`` requests are in flight at once; each watch has a connection
    of its own. The proxy, if any, is :meth:`ClientConfig.proxy`. Create one client per
    process and share it; close it with ``await client.close()`` or ``async with``.
    """

    def __init__(
        self,
        configuration: ClientConfig,
        *,
        max_connections: int = 32,
        retry_seconds: float = 30.0,
        user_agent: str = "customtask-sdk",
    ) -> None:
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self._retry_seconds = retry_seconds
        self._user_agent = user_agent
        self._max_connections = max_connections
        self._pool: HttpPool | None = None
        #: Called with (method, status code) after every answer; ``WATCH`` for watches.
        self.on_response: Callable[[str, int], None] | None = None

    @classmethod
    async def from_kubeconfig(
        cls, kubeconfig: str | None = None, context: str | None = None, **kwargs: Any
    ) -> KubeClient:
        """Load ``kubeconfig`` (else ``$KUBECONFIG``, ``~/.kube/config``, in-cluster)."""
        return cls(await load_configuration(kubeconfig, context), **kwargs)

    @property
    def _http(self) -> HttpPool:
        """The connection pool, created on first use inside the running loop."""
        if self._pool is None:
            https = self.host.startswith("https://")
            self._pool = HttpPool(
                self.host,
                ssl_context=self.configuration.ssl_context() if https else None,
                server_hostname=self.configuration.tls_server_name,
                limit=self._max_connections,
                headers={"User-Agent": self._user_agent, "Accept": "application/json"},
                proxy=self.configuration.proxy(),
            )
        return self._pool

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.configuration.authorization is not None:
            token = await self.configuration.authorization()
            if token:
                headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str | None,
        timeout: float | None,
    ) -> JSON:
        target = f"{path}?{urlencode(params)}" if params else path
        headers = await self._headers(content_type)
        response = await self._http.request(method, target, headers, data, timeout)
        if self.on_response is not None:
            self.on_response(method, response.status)
        if response.status >= 400:
            raise error_for(response.status, response.body, response.headers.get("retry-after"))
        result: JSON = json.loads(response.body) if response.body else {}
        return result

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = 60.0,
        retry: bool = True,
    ) -> JSON:
        """Send one request and decode the JSON answer, retrying transient failures.

        ``timeout`` bounds each attempt, the wait for a pooled connection included;
        ``retry=False`` sends it once, whatever the failure.
        """
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        ctype = content_type if data is not None else None
        try:  # the happy path pays nothing for the retry machinery
            return await self._once(method, path, params, data, ctype, timeout)
        except Exception as exc:
            retryable = _resendable(method, body, content_type)
            if not retry or not retryable(exc):
                raise
            first_wait = _retry_after(exc)
        await asyncio.sleep(0.05 if first_wait is None else first_wait)
        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            wait=_RetryAfterOrBackoff(),
            stop=stop_after_delay(self._retry_seconds) | stop_after_attempt(9),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(method, path, params, data, ctype, timeout)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        """GET one object or collection page."""
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> JSON | None:
        """GET one object, or ``None`` when it does not exist."""
        try:
            return await self.get(path)
        except NotFoundError:
            return None

    async def create(self, path: str, body: JSON, params: Mapping[str, str] | None = None) -> JSON:
        """POST an object to its collection."""
        return await self.request("POST", path, body=body, params=params)

    async def replace(self, path: str, body: JSON) -> JSON:
        """PUT an object (optimistic concurrency through ``metadata.resourceVersion``)."""
        return await self.request("PUT", path, body=body)

    async def patch(
        self,
        path: str,
        body: Any,
        patch_type: PatchType = "merge",
        params: Mapping[str, str] | None = None,
    ) -> JSON:
        """PATCH with an explicit content type (merge, JSON patch, or server-side apply)."""
        return await self.request(
            "PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type], params=params
        )

    async def apply(
        self, resource: Resource, body: JSON, field_manager: str, *, dry_run: bool = False
    ) -> JSON:
        """Server-side apply ``body`` (forcing ownership of conflicting fields)."""
        metadata = body["metadata"]
        path = resource.path(metadata.get("namespace"), metadata["name"])
        params = {"fieldManager": field_manager, "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        return await self.patch(path, body, "apply", params)

    async def delete(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        """DELETE an object; a missing one is not an error."""
        try:
            return await self.request("DELETE", path, params=params)
        except NotFoundError:
            return {}

    async def list_all(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        """List a collection page by page; returns the merged list with its resourceVersion."""
        query = dict(params or {})
        query.setdefault("limit", "500")
        items: list[JSON] = []
        while True:
            page = await self.get(path, query)
            items.extend(page.get("items") or [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                page["items"] = items
                return page
            query["continue"] = token

    async def watch(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        inactivity_timeout: float = 70.0,
    ) -> AsyncIterator[JSON]:
        """Stream watch events (``{"type", "object"}``) of a collection.

        Raises ``asyncio.TimeoutError`` when nothing (not even a bookmark) arrives for
        ``inactivity_timeout`` seconds, and :class:`ApiError` for an error answer. An
        ``ERROR`` event is raised as the typed error it carries (410 as ``GoneError``).
        """
        query = dict(params or {})
        query["watch"] = "true"
        async with self._http.stream(
            "GET",
            f"{path}?{urlencode(query)}",
            await self._headers(None),
            read_timeout=inactivity_timeout,
        ) as response:
            if self.on_response is not None:
                self.on_response("WATCH", response.status)
            if response.status >= 400:
                raise error_for(response.status, await response.read())
            async for line in response.lines():
                if not line.strip():
                    continue
                event: JSON = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise error_for(int(status.get("code") or 500), json.dumps(status).encode())
                yield event

    async def close(self) -> None:
        """Close every connection (a later request opens new ones)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
