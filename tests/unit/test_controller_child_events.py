"""A child's event only queues its model's reconcile (controller/handlers.py `_on_child`).

kopf hands one object's events to its handlers one at a time, and updates its indices (the operator's watch
cache) only as it reaches each event. A handler that reconciled in place read the cache as of its own event,
while the later events of the same child (a Job failing after its pod started) waited behind it, one whole
reconcile each: with a store that takes 34 s to give up, a failed Job was seen minutes late. Here kopf's order
is played out with a slow reconcile: the events are indexed and handled one after the other, and the model
must be reconciled at most twice, the last time on the last event's state."""

from __future__ import annotations

import threading
import time
from typing import Any

from optimodel_operator.controller import handlers

CHILD = {"kind": "Job", "metadata": {"namespace": "ns", "name": "m-optimize-cpu-1", "ownerReferences": [
    {"kind": "OptimizedModel", "apiVersion": "optimodel.io/v1alpha1", "name": "m"}]}}


def test_a_childs_events_in_kopfs_order_reach_one_reconcile_of_the_last_state(monkeypatch: Any) -> None:
    indexed = {"job": 0}  # what the cache holds of the Job: the number of the last event kopf indexed
    read: list[int] = []
    lock = threading.Lock()

    def slow_reconcile(model: dict[str, Any], logger: Any) -> None:
        with lock:  # reconcile_model's per-model lock
            handlers._queued_done(("ns", "m"))
            read.append(indexed["job"])
            time.sleep(0.3)  # the store taking its time

    monkeypatch.setattr(handlers.kube, "model", lambda api, cache, ns, name: {"metadata": {"name": name, "namespace": ns}})
    monkeypatch.setattr(handlers, "clients", lambda: None)
    monkeypatch.setattr(handlers, "reconcile_model", slow_reconcile)
    monkeypatch.setattr(handlers, "_queued", set())
    queued = []
    started = time.monotonic()
    for event in range(1, 6):  # kopf: index the event, call the handler, wait for it, next event
        indexed["job"] = event
        queued.append(handlers._on_child(CHILD, None))  # type: ignore[arg-type]
    handled = time.monotonic() - started
    for future in queued:
        if future is not None:
            future.result(10)
    assert handled < 0.3, f"the handlers waited for a reconcile ({handled:.2f} s for 5 events)"
    assert read and read[-1] == 5 and len(read) <= 2, read
    assert sum(f is not None for f in queued) == len(read)


def test_a_child_without_an_owning_model_queues_nothing() -> None:
    assert handlers._on_child({"kind": "Job", "metadata": {"namespace": "ns", "name": "x"}}, None) is None  # type: ignore[arg-type]
