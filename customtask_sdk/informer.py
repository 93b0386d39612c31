"""A shared list+watch cache of one resource, modelled on client-go's reflector and informer.

An :class:`Informer` lists a collection page by page, then watches it from the list's
resourceVersion, keeping an in-memory store (with an index by owner UID) current and
calling handlers for every change. Watches resume from the last seen resourceVersion
(bookmarks included); a 410 Gone re-lists and diffs against the store, so handlers see
exactly the changes they missed. The store keeps compact JSON; reads return private copies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable

from customtask_sdk.client.api import JSON, KubeClient
from customtask_sdk.client.errors import ApiError, GoneError, ServerError, TooManyRequestsError
from customtask_sdk.client.resources import Resource

__all__ = ["EventHandler", "Informer", "Transform"]

logger = logging.getLogger("customtask_sdk.informer")

#: ``handler(event_type, old, new)`` with event_type ``ADDED``, ``MODIFIED`` or ``DELETED``.
EventHandler = Callable[[str, JSON | None, JSON | None], None]
#: Shapes an object before it is stored; ``None`` means "not interesting".
Transform = Callable[[JSON], JSON | None]

_BACKOFF_BASE = 0.2
# A watch that ends this fast without a single event counts as a failure (no busy loop).
_SHORT_WATCH = 1.0
# Server-side watch lifetime, randomised so that many informers do not reconnect at once.
_WATCH_SECONDS = (300, 600)


def _is_newer(new: str, old: str) -> bool:
    """Whether ``new`` supersedes ``old``: by etcd revision when both are numbers."""
    if new.isdecimal() and old.isdecimal():
        return int(new) > int(old)
    return new != old


def _known_newer(new: str, old: str) -> bool:
    """Whether ``new`` is certainly a later etcd revision than ``old``."""
    return new.isdecimal() and old.isdecimal() and int(new) > int(old)


def _owner_uids(obj: JSON) -> tuple[str, ...]:
    refs = obj["metadata"].get("ownerReferences")
    if not refs:
        return ()
    return tuple(ref["uid"] for ref in refs if ref.get("uid"))


class _Backoff:
    """Jittered exponential backoff from 0.2 s, doubling up to ``cap``."""

    def __init__(self, cap: float) -> None:
        self._cap = cap
        self._next = min(_BACKOFF_BASE, cap)

    def reset(self) -> None:
        self._next = min(_BACKOFF_BASE, self._cap)

    def delay(self) -> float:
        current = self._next
        self._next = min(self._cap, current * 2)
        return random.uniform(current / 2, current)


class _Entry:
    """One cached object: compact JSON plus what lookups need without decoding it."""

    __slots__ = ("data", "owners", "rv")

    def __init__(self, obj: JSON) -> None:
        self.data = _encode(obj)
        self.rv: str = obj["metadata"].get("resourceVersion", "")
        self.owners = _owner_uids(obj)

    def decode(self) -> JSON:
        decoded: JSON = json.loads(self.data)
        return decoded


def _encode(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Informer:
    """A shared, self-healing cache of one resource, kept current by list and watch.

    Run it as a task (``asyncio.create_task(informer.run())``), ``await
    informer.wait_synced(...)``, then read the store (``get``, ``values``,
    ``index_by_owner``) and react through handlers. Keys are ``namespace/name`` (``name``
    for cluster-scoped objects). ``transform`` runs on every object (after
    ``metadata.managedFields`` is stripped) and must keep its metadata; returning ``None``
    keeps the object out of the store (a stored one is then deleted).

    Health facts: ``last_activity`` (monotonic time of the last list page, watch start or
    watch event), ``watch_connected``; counters ``lists``, ``watch_restarts`` (watches
    resumed without a list), ``relists_after_gone`` and ``events`` (watch events other
    than bookmarks).
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        inactivity_timeout: float = 70.0,
        transform: Transform | None = None,
        backoff_max: float = 30.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.resource = resource
        self.namespace = namespace
        self._client = client
        self._path = resource.path(namespace)
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["labelSelector"] = label_selector
        if field_selector:
            self._selectors["fieldSelector"] = field_selector
        self._page_size = page_size
        self._inactivity_timeout = inactivity_timeout
        self._transform = transform
        self._backoff = _Backoff(backoff_max)
        name = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
        self._where = f"{name} in " + (f"namespace {namespace}" if namespace else "all namespaces")
        # Objects are kept as compact JSON (about a fifth of a dict's memory) with their
        # resourceVersion and owners beside them, so comparisons never decode.
        self._store: dict[str, _Entry] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._handlers: list[EventHandler] = []
        self._rv = ""  # where the next watch starts
        self.synced = asyncio.Event()
        self.last_activity = time.monotonic()
        self.watch_connected = False
        self.lists = 0
        self.watch_restarts = 0
        self.relists_after_gone = 0
        self.events = 0

    # -- the store ---------------------------------------------------------------------

    def get(self, key: str) -> JSON | None:
        """A copy of the cached object with key ``namespace/name`` (or ``name``), or ``None``."""
        entry = self._store.get(key)
        return None if entry is None else entry.decode()

    def keys(self) -> list[str]:
        """A snapshot of the cached keys."""
        return list(self._store)

    def values(self) -> list[JSON]:
        """Copies of all cached objects."""
        return [entry.decode() for entry in self._store.values()]

    def __len__(self) -> int:
        return len(self._store)

    def index_by_owner(self, uid: str) -> list[str]:
        """Keys of the cached objects with an ownerReference to ``uid``."""
        return list(self._by_owner.get(uid, ()))

    def update_if_newer(self, obj: JSON) -> bool:
        """Cache the object a write returned, so the next reconcile sees that write.

        Ignored when the cache (or the watch, which may since have deleted the object)
        already has this or a later version; no handler is called (``managedFields`` is
        stripped from ``obj`` in place). Returns whether the store changed.
        """
        metadata = obj["metadata"]
        key = self._key(metadata)
        rv: str = metadata.get("resourceVersion", "")
        if rv == self._rv or _known_newer(self._rv, rv):
            return False
        new = self._prepare(obj)
        if new is None:
            return False
        old = self._store.get(key)
        if old is not None and not _is_newer(rv, old.rv):
            return False
        self._put(key, old, new)
        return True

    # -- handlers and sync -------------------------------------------------------------

    def add_handler(self, callback: EventHandler) -> None:
        """Call ``callback(event_type, old, new)`` on every change, synchronously.

        Objects already cached are replayed to it as ``ADDED``. Unchanged objects (same
        resourceVersion) and bookmarks are not reported; for ``DELETED``, ``new`` is None.
        """
        self._handlers.append(callback)
        for entry in list(self._store.values()):
            self._call(callback, "ADDED", None, entry.decode())

    @property
    def inactivity_timeout(self) -> float:
        """Seconds of watch silence after which the watch is restarted."""
        return self._inactivity_timeout

    @property
    def has_synced(self) -> bool:
        """Whether the first list has completed."""
        return self.synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first list; returns False if ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- list and watch ----------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch (resuming and re-listing as needed) until cancelled."""
        relist = True
        try:
            while True:
                delay = 0.0
                try:
                    if relist:
                        await self._list()
                        relist = False
                    else:
                        self.watch_restarts += 1
                    if not await self._watch():
                        delay = self._backoff.delay()
                        logger.warning(
                            "%s: watch closed at once; retrying in %.1fs", self._where, delay
                        )
                except GoneError as exc:
                    self.relists_after_gone += 1
                    relist = True
                    delay = self._backoff.delay()
                    logger.info("%s: %s; re-listing in %.1fs", self._where, exc, delay)
                except TimeoutError:
                    if relist:
                        delay = self._backoff.delay()
                        logger.warning("%s: list timed out; retrying in %.1fs", self._where, delay)
                    else:  # a silent watch (half-open connection, stuck apiserver): resume now
                        logger.warning(
                            "%s: watch silent for %ss; resuming",
                            self._where,
                            self._inactivity_timeout,
                        )
                except TooManyRequestsError as exc:
                    delay = max(exc.retry_after, self._backoff.delay())
                    logger.warning("%s: throttled; retrying in %.1fs", self._where, delay)
                except (ServerError, OSError, ValueError) as exc:
                    delay = self._backoff.delay()
                    logger.warning("%s: %r; retrying in %.1fs", self._where, exc, delay)
                except ApiError as exc:
                    relist = True
                    delay = self._backoff.delay()
                    logger.error("%s: %s; re-listing in %.1fs", self._where, exc, delay)
                except Exception:
                    relist = True
                    delay = self._backoff.delay()
                    logger.exception(
                        "%s: unexpected error; re-listing in %.1fs", self._where, delay
                    )
                if delay:
                    await asyncio.sleep(delay)
        finally:
            self.watch_connected = False

    async def _list(self) -> None:
        """List page by page, applying each page, then delete what the list lacks."""
        params = {**self._selectors, "limit": str(self._page_size)}
        seen: set[str] = set()
        while True:
            page = await self._client.get(self._path, params)
            self.last_activity = time.monotonic()
            for raw in page.get("items") or ():
                self._apply_listed(raw, seen)
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                break
            params["continue"] = token
        list_rv: str = metadata.get("resourceVersion") or ""
        for key, entry in list(self._store.items()):
            # Objects written after the list's snapshot (update_if_newer) are the watch's job.
            if key not in seen and not _known_newer(entry.rv, list_rv):
                self._delete(key)
        self._rv = list_rv
        self.lists += 1
        self.synced.set()
        logger.info(
            "%s: listed %d objects at resourceVersion %s", self._where, len(self._store), list_rv
        )

    def _apply_listed(self, raw: JSON, seen: set[str]) -> None:
        try:
            key = self._key(raw["metadata"])
            seen.add(key)
            # List items may lack these; owner references built from the cache need them.
            raw.setdefault("apiVersion", self.resource.api_version)
            raw.setdefault("kind", self.resource.kind)
            self._upsert(key, raw)
        except Exception:
            logger.exception("%s: skipping a bad listed object", self._where)

    async def _watch(self) -> bool:
        """Watch from the last resourceVersion until the stream ends.

        Returns False for a stream that closed at once without an event.
        """
        params = {
            **self._selectors,
            "resourceVersion": self._rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(*_WATCH_SECONDS)),
        }
        started = self.last_activity = time.monotonic()
        received = 0
        self.watch_connected = True
        try:
            async for event in self._client.watch(
                self._path, params, inactivity_timeout=self._inactivity_timeout
            ):
                self.last_activity = time.monotonic()
                if not received:
                    self._backoff.reset()
                received += 1
                self._handle(event)
        finally:
            self.watch_connected = False
        logger.debug("%s: watch ended after %d events", self._where, received)
        return received > 0 or time.monotonic() - started >= _SHORT_WATCH

    def _handle(self, event: JSON) -> None:
        try:
            kind = event["type"]
            raw = event["object"]
            metadata = raw["metadata"]
            rv = metadata.get("resourceVersion")
            if rv:
                self._rv = rv
            if kind == "BOOKMARK":
                return
            self.events += 1
            key = self._key(metadata)
            if kind == "DELETED":
                self._delete(key)
            elif kind in ("ADDED", "MODIFIED"):
                self._upsert(key, raw)
            else:
                logger.warning("%s: ignoring a %r watch event", self._where, kind)
        except Exception:
            logger.exception("%s: skipping a bad watch event", self._where)

    # -- store mutations ---------------------------------------------------------------

    @staticmethod
    def _key(metadata: JSON) -> str:
        namespace = metadata.get("namespace")
        name: str = metadata["name"]
        return f"{namespace}/{name}" if namespace else name

    def _prepare(self, raw: JSON) -> JSON | None:
        raw["metadata"].pop("managedFields", None)
        return raw if self._transform is None else self._transform(raw)

    def _upsert(self, key: str, raw: JSON) -> None:
        new = self._prepare(raw)
        if new is None:
            self._delete(key)
            return
        old = self._store.get(key)
        if old is None:
            self._put(key, None, new)
            self._emit("ADDED", None, new)
        elif _is_newer(new["metadata"].get("resourceVersion", ""), old.rv):
            self._put(key, old, new)
            if self._handlers:
                self._emit("MODIFIED", old.decode(), new)

    def _put(self, key: str, old: _Entry | None, new: JSON) -> None:
        entry = _Entry(new)
        self._store[key] = entry
        old_owners = () if old is None else old.owners
        if entry.owners != old_owners:
            self._unindex(key, old_owners)
            for uid in entry.owners:
                self._by_owner.setdefault(uid, set()).add(key)

    def _delete(self, key: str) -> None:
        old = self._store.pop(key, None)
        if old is not None:
            self._unindex(key, old.owners)
            if self._handlers:
                self._emit("DELETED", old.decode(), None)

    def _unindex(self, key: str, uids: tuple[str, ...]) -> None:
        for uid in uids:
            keys = self._by_owner.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_owner[uid]

    def _emit(self, event_type: str, old: JSON | None, new: JSON | None) -> None:
        for handler in self._handlers:
            self._call(handler, event_type, old, new)

    def _call(
        self, handler: EventHandler, event_type: str, old: JSON | None, new: JSON | None
    ) -> None:
        try:
            handler(event_type, old, new)
        except Exception:
            logger.exception("%s: %s handler %r failed", self._where, event_type, handler)
