"""Wake a model up when its next analysis is due: one thread, one pending time per model.

A reconcile that ends with `requeue_after` schedules the model; a later schedule replaces the earlier one
(the latest reconcile knows best). Nothing here is state the operator needs after a restart: the resume
handler reconciles every model at start-up, and those reconciles schedule them again from their status.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_S = 2.0


class Wakeups:
    def __init__(self, wake: Callable[[str, str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._wake = wake
        self._clock = clock
        self._due: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, namespace: str, name: str, after_s: float) -> None:
        at = self._clock() + max(after_s, 0.0)
        with self._cond:
            self._due[(namespace, name)] = at
            heapq.heappush(self._heap, (at, (namespace, name)))
            self._cond.notify()

    def cancel(self, namespace: str, name: str) -> None:
        with self._cond:
            self._due.pop((namespace, name), None)

    def pending(self) -> dict[tuple[str, str], float]:
        with self._cond:
            return dict(self._due)

    def next_due(self) -> tuple[str, str] | None:
        """Pop the model whose time has come, or None (waiting at most until the earliest is due)."""
        with self._cond:
            while not self._stopped:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # replaced or cancelled
                if not self._heap:
                    self._cond.wait()
                    continue
                at, key = self._heap[0]
                now = self._clock()
                if at <= now:
                    heapq.heappop(self._heap)
                    del self._due[key]
                    return key
                self._cond.wait(timeout=at - now)
            return None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopped = False
            self._thread = threading.Thread(target=self._run, name="optimodel-wakeups", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            key = self.next_due()
            if key is None:
                return
            try:
                self._wake(*key)
            except Exception as error:  # noqa: BLE001 - one model's failure must not stop the others' clock
                log.warning("rollout wake-up of %s/%s failed: %s; again in %.0f s", *key, error, RETRY_AFTER_ERROR_S)
                self.schedule(*key, RETRY_AFTER_ERROR_S)
