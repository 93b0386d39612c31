"""Notifications: a JSON POST (Slack-compatible ``text``) when a gate opens and when it
is decided, sent in the background and retried, never delaying a decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

log = logging.getLogger("customtask_sdk.approval.notify")


class DeliveryError(Exception):
    """The receiver answered with a status worth retrying (429 or 5xx)."""


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError | aiohttp.ClientError | TimeoutError)


class Notifier:
    """Posts notifications in background tasks: ``send`` returns at once.

    Each POST is retried (``attempts`` in all, exponential backoff from ``backoff``
    seconds) on connection errors, 429 and 5xx; other answers are logged and dropped.
    """

    def __init__(self, *, attempts: int = 5, backoff: float = 0.5, timeout: float = 10.0) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, payload: Mapping[str, Any]) -> None:
        """Post ``payload`` to ``url`` in the background."""
        task = asyncio.create_task(self._deliver(url, dict(payload)), name=f"notify {url}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every notification in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential(multiplier=self.backoff, max=30.0),
            stop=stop_after_attempt(self.attempts),
            reraise=True,
        )
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async for attempt in retrying:
                    with attempt:
                        async with session.post(url, json=payload) as response:
                            if response.status == 429 or response.status >= 500:
                                raise DeliveryError(f"{url} answered {response.status}")
                            if response.status >= 400:
                                log.warning("notification refused by %s: %s", url, response.status)
        except Exception as exc:
            log.warning("notification to %s not delivered: %r", url, exc)


def opened(task: Mapping[str, Any]) -> dict[str, Any]:
    """The message for a gate that opens: what is asked, and the commands that decide it."""
    meta, spec = task["metadata"], task["spec"]
    name, namespace = meta["name"], meta["namespace"]
    command = f"kubectl approval approve {name} -n {namespace} -m 'looks good'"
    description = spec.get("description") or "(no description)"
    return {
        "text": (
            f"Approval needed: {description}\n"
            f"Gate {namespace}/{name}: {spec['numberOfApprovalsRequired']} approval(s) from "
            f"{', '.join(spec['approvers'])}.\nApprove with `{command}` "
            f"or reject with `kubectl approval reject {name} -n {namespace} -m 'why'`."
        ),
        "event": "opened",
        "namespace": namespace,
        "name": name,
        "description": spec.get("description") or "",
        "approvers": list(spec["approvers"]),
        "command": command,
    }


def decided(task: Mapping[str, Any], state: str, summary: str) -> dict[str, Any]:
    """The message for a gate that was decided (approved, rejected, timed out, cancelled)."""
    meta = task["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    return {
        "text": f"Gate {namespace}/{name} is {state}: {summary}",
        "event": "decided",
        "namespace": namespace,
        "name": name,
        "state": state,
        "summary": summary,
    }
