"""What kopf's watch streams last delivered, so that a steady state reads nothing from the API server.

kopf already watches OptimizedModels, Jobs, Deployments and (for this) Services; `@kopf.index` functions in
controller/handlers.py keep the latest body of each object here, under two keys: ("name", namespace, name), and
for a child ("model", namespace, value of its optimodel.io/model label). kopf maintains the indices (an object
deleted leaves them on the watch's DELETED event) and runs no resource handler before every watched kind has
been listed once, so a reconcile started by kopf sees every object that existed when the operator started (a
restarted operator lists everything again).

A cached body is used only where it is provably not older than what this process itself last wrote:
- each write (a status patch, a create, a server-side apply, a scale, a delete) is noted with the
  resourceVersion the API server answered (`wrote`); until the watch has delivered that version, or one
  after it, the object is read from the API instead (`lookup` says "unknown"). A status patch that has not
  yet come back through the watch must never be planned from: the rollout would advance a step twice, post an
  Event twice or analyse again;
- "delivered after" is decided from the order of delivery, not by comparing resourceVersions (opaque strings
  by the API's contract): the index function records the versions of each object in the order the watch
  delivers them.
Anything the cache cannot answer (a kind not indexed, before the first sync, two objects of one name at once)
is "unknown", and the caller asks the API server as it always did.

kopf's indices have one gap: when a watch stream must list again (410 Gone after a long disconnection, an API
server restart), kopf feeds the fresh listing through the index functions but does not remove objects deleted
while the stream was down (client-go's informers synthesize those deletions; kopf does not). A listing is
recognised when an object is delivered again at a version already delivered (a watch never repeats one); then
`audit` lists each kind once and marks every cached object the API server no longer has as gone. A relist in
which every object of every kind changed or vanished is not recognised this way; a model found gone by a write
(404) is then marked gone by the handler.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

MODELS, JOBS, DEPLOYMENTS, SERVICES = "optimizedmodels", "jobs", "deployments", "services"
PLURAL_OF_KIND = {"OptimizedModel": MODELS, "Job": JOBS, "Deployment": DEPLOYMENTS, "Service": SERVICES}
# Versions remembered per object, in delivery order: enough for every write of one reconcile to be found.
HISTORY = 32
# Every this many deliveries, the versions remembered of objects no longer in any index (deleted) are dropped.
PRUNE_EVERY = 4096

ObjKey = tuple[str, str, str]  # (plural, namespace, name)
Body = dict[str, Any]


def _rv(body: Mapping[str, Any] | None) -> str | None:
    return None if body is None else (body.get("metadata") or {}).get("resourceVersion")


class WatchCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indices: dict[str, Mapping[Any, Iterable[Body]]] = {}
        self._synced = False
        self._delivered: dict[ObjKey, deque[str]] = {}
        self._written: dict[ObjKey, str | None] = {}  # None: deleted by this process
        self._gone: set[tuple[str, str, str, str, str]] = set()  # (plural, namespace, name, uid, resourceVersion)
        self._relisted = threading.Event()
        self._deliveries = 0
        self.fallbacks: dict[str, int] = {}  # lookups the cache could not answer, by plural (read from the API)

    # --- fed by kopf -----------------------------------------------------------------------------------------
    def attach(self, plural: str, index: Mapping[Any, Iterable[Body]]) -> None:
        """kopf's index of a kind (handed to the startup handler)."""
        with self._lock:
            self._indices[plural] = index

    def mark_synced(self) -> None:
        """Called by every kopf resource handler: kopf runs none before all indexed kinds were listed once."""
        self._synced = True

    def index(self, plural: str, body: Mapping[str, Any], model_label: str | None = None) -> dict[Any, Body] | None:
        """What an index function returns for one delivered object (and the delivery, remembered in order)."""
        meta = body.get("metadata") or {}
        namespace, name, rv = meta.get("namespace"), meta.get("name"), meta.get("resourceVersion")
        if not namespace or not name or not rv:
            return None
        with self._lock:
            self._deliveries += 1
            if self._deliveries % PRUNE_EVERY == 0:
                self._prune_locked()
            history = self._delivered.setdefault((plural, namespace, name), deque(maxlen=HISTORY))
            if rv in history:
                # A watch delivers each version once: seeing one again means kopf listed the kind anew.
                self._relisted.set()
            else:
                history.append(rv)
        kept = copy.deepcopy({k: v for k, v in body.items() if k != "metadata"})
        # managedFields are most of a child's size and nothing here reads them.
        kept["metadata"] = copy.deepcopy({k: v for k, v in meta.items() if k != "managedFields"})
        out: dict[Any, Body] = {("name", namespace, name): kept}
        if model_label is not None:
            out[("model", namespace, model_label)] = kept
        return out

    def _prune_locked(self) -> None:
        for key in list(self._delivered):
            if key not in self._written and not self._bodies_locked(key[0], ("name", key[1], key[2])):
                del self._delivered[key]

    # --- what this process wrote -----------------------------------------------------------------------------
    def wrote(self, plural: str, namespace: str, name: str, resource_version: str | None) -> None:
        """This process changed the object; the API server answered with `resource_version` (None: deleted)."""
        if resource_version is None and plural == MODELS:
            raise ValueError("a model is never deleted by the operator")
        with self._lock:
            self._written[(plural, namespace, name)] = resource_version

    def gone(self, plural: str, namespace: str, name: str) -> None:
        """The API server said the object does not exist (404): whatever is cached of it is gone."""
        with self._lock:
            for body in self._bodies_locked(plural, ("name", namespace, name)) or []:
                self._gone.add(self._gone_key(plural, body))

    # --- reading ---------------------------------------------------------------------------------------------
    def _bodies_locked(self, plural: str, key: tuple[str, str, str]) -> list[Body] | None:
        """The bodies under an index key, less those known gone; None when the kind is not indexed."""
        index = self._indices.get(plural)
        if index is None:
            return None
        store = index.get(key)  # type: ignore[attr-defined]
        for _ in range(3):  # kopf replaces entries on its event loop's thread; a copy taken mid-change is retried
            try:
                bodies = list(store or [])
                break
            except RuntimeError:
                continue
        else:
            return None
        return [b for b in bodies if self._gone_key(plural, b) not in self._gone]

    @staticmethod
    def _gone_key(plural: str, body: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
        meta = body.get("metadata") or {}
        return (plural, meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""),
                meta.get("resourceVersion", ""))

    def _fresh_locked(self, key: ObjKey, body: Body | None) -> bool:
        """Is `body` (None: absent) not older than what this process last wrote of the object?"""
        if key not in self._written:
            return True
        written = self._written[key]
        if written is None:
            fresh = body is None
        else:
            history = list(self._delivered.get(key) or ())
            fresh = body is not None and written in history and _rv(body) in history[history.index(written):]
        if fresh:
            del self._written[key]  # the watch has caught up; from here on the cache only moves forward
        return fresh

    def lookup(self, plural: str, namespace: str, name: str) -> tuple[bool, Body | None]:
        """(known, body): known is False when the API server must be asked; body None when it does not exist."""
        if not self._synced:
            return self._miss(plural)
        with self._lock:
            bodies = self._bodies_locked(plural, ("name", namespace, name))
            if bodies is None or len(bodies) > 1:
                return self._miss(plural)
            body = bodies[0] if bodies else None
            if not self._fresh_locked((plural, namespace, name), body):
                return self._miss(plural)
        # A copy: the reconcile may change what it is handed; the cache must keep what the watch delivered.
        return True, copy.deepcopy(body)

    def children(self, plural: str, namespace: str, model_label: str) -> list[Body] | None:
        """The objects of a kind labelled with the model, or None when the API server must be asked (the
        cache does not yet hold every write of this process to that kind in that namespace)."""
        if not self._synced:
            return self._miss(plural)[1]
        with self._lock:
            bodies = self._bodies_locked(plural, ("model", namespace, model_label))
            if bodies is None:
                return self._miss(plural)[1]
            by_name = {b["metadata"]["name"]: b for b in bodies}
            for key in [k for k in self._written if k[0] == plural and k[1] == namespace]:
                current = by_name.get(key[2])
                if current is None:
                    # Not labelled with this model here: another model's child, or ours not yet delivered.
                    found = self._bodies_locked(plural, ("name", namespace, key[2]))
                    current = found[0] if found and len(found) == 1 else None
                    if found and len(found) > 1:
                        return self._miss(plural)[1]
                if not self._fresh_locked(key, current):
                    return self._miss(plural)[1]
        return copy.deepcopy(bodies)

    def confirm(self, plural: str, namespace: str, name: str, api_body: Mapping[str, Any] | None) -> None:
        """The API server was asked: when the cache holds exactly what it answered, it is current again (this
        ends the wait for a written version a relist skipped over)."""
        with self._lock:
            key = (plural, namespace, name)
            if key not in self._written:
                return
            bodies = self._bodies_locked(plural, ("name", namespace, name)) or []
            cached = bodies[0] if len(bodies) == 1 else None
            if (api_body is None and not bodies) or (
                    api_body is not None and cached is not None and _rv(cached) == _rv(api_body)):
                del self._written[key]

    def _miss(self, plural: str) -> tuple[bool, None]:
        self.fallbacks[plural] = self.fallbacks.get(plural, 0) + 1
        return False, None

    # --- relists ---------------------------------------------------------------------------------------------
    def relisted(self) -> bool:
        return self._relisted.is_set()

    def audit(self, list_all: Callable[[str], list[Body]], on_gone: Callable[[str, Body], None]) -> int:
        """After a relist: list each indexed kind and mark every cached object the API server no longer has
        (and that the watch delivered before the listing) as gone; `on_gone` is told of each. Returns how many."""
        self._relisted.clear()
        with self._lock:
            plurals = list(self._indices)
        vanished: list[tuple[str, Body]] = []
        for plural in plurals:
            with self._lock:
                before = {k: frozenset(v) for k, v in self._delivered.items() if k[0] == plural}
            present = {(b["metadata"]["namespace"], b["metadata"]["name"], b["metadata"].get("uid", ""))
                       for b in list_all(plural)}
            with self._lock:
                for key, delivered in before.items():
                    for body in self._bodies_locked(plural, ("name", key[1], key[2])) or []:
                        meta = body["metadata"]
                        if meta.get("resourceVersion") not in delivered:
                            continue  # delivered after the listing began: newer than what the listing says
                        if (key[1], key[2], meta.get("uid", "")) in present:
                            continue
                        self._gone.add(self._gone_key(plural, body))
                        vanished.append((plural, body))
        for plural, body in vanished:
            on_gone(plural, body)
        return len(vanished)

    def namespaces(self, plural: str) -> list[str]:
        """The namespaces the cache has seen objects of a kind in."""
        with self._lock:
            return sorted({key[1] for key in self._delivered if key[0] == plural})

    def relisted_again(self) -> None:
        """An audit failed: do it again."""
        self._relisted.set()

    def wait_relisted(self, timeout: float | None = None) -> bool:
        return self._relisted.wait(timeout)


CACHE = WatchCache()
