"""A steady state writes nothing: routine results of the guard on a promoted revision are held, not written.

After promotion the guard analyses the revision every `rollout.interval`, and the planner records each analysis
in status (when, what it measured, how many in a row had no data). With hundreds of models that is a status
write per model per interval while nothing happens. Here a reconcile whose only outcome is such a record (an
analysis ran; no Event, so the planner saw nothing worth telling; no child changed; the revision still
promoted; no condition moved, only messages) keeps the new status in memory instead. The next reconcile plans
from it (so the guard's clock goes on), the operator's /metrics show it, and it is written together with the
next real change. Anything else is written at once.

What is lost when the process stops: the held record of routine analyses. The stored status then says when the
last noteworthy analysis was, so the guard analyses again right after a restart. Nothing decided depends on it:
a failed analysis, the first one without data or without Prometheus, a recovery, all come with an Event and are
written; a promoted revision is never taken off for lack of data or for Prometheus errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

PROMOTED = "Promoted"
# The status fields a routine analysis of a promoted revision moves. Conditions and pools are checked more
# closely in routine(): only their messages (conditions) and live p99s (pools) may differ.
ROUTINE_KEYS = frozenset({"lastAnalysisTime", "lastAnalysis", "latencyP99Ms", "consecutiveNoData",
                          "consecutiveErrors", "message", "rolloutMessage", "conditions", "pools"})


def apply_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies it to status."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_patch(out.get(key), value)
    return out


def compose(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """One merge patch with the effect of `first` then `second` (deletions kept as null)."""
    out = dict(first)
    for key, value in second.items():
        earlier = out.get(key)
        out[key] = compose(earlier, value) if isinstance(value, Mapping) and isinstance(earlier, Mapping) else value
    return out


def _condition_states(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    # Only the guard's own condition (RolledOut) may be reworded by a routine analysis ("... for 3 analyses in
    # a row"); any other condition's message moving says something else happened, and is written.
    return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration"),
                   c.get("lastTransitionTime"), None if c.get("type") == "RolledOut" else c.get("message"))
                  for c in status.get("conditions") or [])


def _pools_but_p99(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in pool.items() if k != "latencyP99Ms"} for pool in status.get("pools") or []]


def routine(before: Mapping[str, Any], patch: Mapping[str, Any] | None, analysed: bool, events: Iterable[Any],
            changes: Iterable[Any]) -> bool:
    """The status patch only records another analysis of a promoted revision that changed nothing."""
    if not patch or not analysed or list(events) or list(changes):
        return False
    if before.get("rolloutPhase") != PROMOTED or not set(patch) <= ROUTINE_KEYS:
        return False
    if before.get("currentRevision") != before.get("stableRevision"):
        # A newer revision is on its way (deploying next to the promoted one): its messages say how it fares
        # (why its servers are not ready) and are written, not held.
        return False
    after = apply_patch(before, patch)
    return _condition_states(before) == _condition_states(after) and _pools_but_p99(before) == _pools_but_p99(after)


class HeldStatus:
    """Per model: the status patches held back, and the resourceVersion of the model they apply to."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def view(self, key: tuple[str, str], body: Mapping[str, Any]) -> dict[str, Any]:
        """The model with its status as last decided (stored, plus what is held). A model changed since (its
        resourceVersion moved: a spec edit, someone else's status write) drops what was held."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and held[0] != (body.get("metadata") or {}).get("resourceVersion"):
                del self._held[key]
                held = None
        if held is None:
            return dict(body)
        return {**body, "status": apply_patch(body.get("status") or {}, held[1])}

    def hold(self, key: tuple[str, str], resource_version: str, patch: Mapping[str, Any]) -> None:
        with self._lock:
            earlier = self._held.get(key)
            self._held[key] = (resource_version, compose(earlier[1], patch) if earlier else dict(patch))

    def with_held(self, key: tuple[str, str], patch: Mapping[str, Any]) -> dict[str, Any]:
        """The patch to write now: what was held, then `patch`; nothing stays held."""
        with self._lock:
            earlier = self._held.pop(key, None)
        return compose(earlier[1], patch) if earlier else dict(patch)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._held.pop(key, None)

    def held(self, key: tuple[str, str]) -> dict[str, Any] | None:
        with self._lock:
            found = self._held.get(key)
        return dict(found[1]) if found else None
