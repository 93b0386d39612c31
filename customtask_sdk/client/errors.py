"""Typed Kubernetes API errors that say whether a retry can help."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ApiError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "NotFoundError",
    "ServerError",
    "TooManyRequestsError",
    "error_for",
]


class ApiError(Exception):
    """The apiserver answered with an error status.

    Attributes:
        status: the HTTP status code.
        reason: the ``Status`` object's machine-readable reason (``Conflict``, ``NotFound``...).
        message: the ``Status`` object's human-readable message.
        body: the decoded ``Status`` object, or ``{}`` when the body was not JSON.
    """

    #: Whether the same request may succeed if sent again later.
    retryable = False

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body


class NotFoundError(ApiError):
    """404: the object (or its API) does not exist."""


class ConflictError(ApiError):
    """409: a resourceVersion precondition failed, or the object already exists."""

    @property
    def already_exists(self) -> bool:
        """True for a create of a name that is taken (as opposed to a stale update)."""
        return self.reason == "AlreadyExists"


class GoneError(ApiError):
    """410: the requested resourceVersion is too old (compacted); list again."""


class InvalidError(ApiError):
    """422: the object failed validation."""


class ForbiddenError(ApiError):
    """403: RBAC denies the request; grant the verb to the controller's account."""


class TooManyRequestsError(ApiError):
    """429: throttled by API priority and fairness; retry after ``retry_after`` seconds."""

    retryable = True

    def __init__(
        self, status: int, reason: str, message: str, body: dict[str, Any], retry_after: float
    ) -> None:
        super().__init__(status, reason, message, body)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: the apiserver (or etcd behind it) failed; retrying may help.

    ``retry_after`` is the answer's Retry-After in seconds, ``None`` without one. A 503
    with Retry-After is how an apiserver shutting down rejects a request it did not process.
    """

    retryable = True

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        body: dict[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, reason, message, body)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[ApiError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
}


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_for(status: int, payload: bytes, retry_after: str | None = None) -> ApiError:
    """Build the typed error for an error response (``payload`` is the raw body)."""
    try:
        body = json.loads(payload) if payload else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or payload[:500].decode(errors="replace"))
    if status == 429:
        wait = _retry_after(retry_after)
        return TooManyRequestsError(status, reason, message, body, 1.0 if wait is None else wait)
    if status >= 500:
        return ServerError(status, reason, message, body, _retry_after(retry_after))
    return _BY_STATUS.get(status, ApiError)(status, reason, message, body)
