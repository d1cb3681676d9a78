"""Leader election's decision (who may act) and the rollout's wake-up clock, without a cluster."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from optimodel_operator.controller.leader import Held, Move, decide
from optimodel_operator.controller.wakeups import Wakeups

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def test_no_lease_is_created_ours_is_renewed_a_live_one_waits_an_expired_one_is_taken() -> None:
    assert decide(None, "a", NOW) == Move.CREATE
    assert decide(Held("a", NOW - timedelta(seconds=30), 15), "a", NOW) == Move.RENEW
    assert decide(Held("b", NOW - timedelta(seconds=10), 15), "a", NOW) == Move.WAIT
    assert decide(Held("b", NOW - timedelta(seconds=16), 15), "a", NOW) == Move.TAKE
    assert decide(Held(None, None, 15), "a", NOW) == Move.TAKE, "released"


def test_held_reads_the_api_servers_micro_time() -> None:
    held = Held.of({"holderIdentity": "pod-1", "renewTime": "2026-12-01T11:59:58.123456Z", "leaseDurationSeconds": 15})
    assert held is not None and held.holder == "pod-1" and held.duration_s == 15
    assert decide(held, "pod-2", NOW) == Move.WAIT


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_later_schedule_replaces_an_earlier_one_and_due_models_come_out_in_order() -> None:
    clock = FakeClock()
    wakeups = Wakeups(lambda ns, name: None, clock=clock)
    wakeups.schedule("ns", "a", 5)
    wakeups.schedule("ns", "b", 2)
    wakeups.schedule("ns", "a", 1)  # the latest reconcile knows best
    assert wakeups.pending() == {("ns", "a"): 101.0, ("ns", "b"): 102.0}
    clock.now = 103.0
    assert wakeups.next_due() == ("ns", "a")
    assert wakeups.next_due() == ("ns", "b")
    wakeups.schedule("ns", "c", 1)
    wakeups.cancel("ns", "c")
    assert wakeups.pending() == {}


def test_the_thread_wakes_a_model_when_due_and_retries_after_a_failure() -> None:
    woke: list[tuple[str, str]] = []
    done = threading.Event()

    def wake(ns: str, name: str) -> None:
        woke.append((ns, name))
        if len(woke) == 1:
            raise RuntimeError("API server away")
        done.set()

    wakeups = Wakeups(wake)
    import optimodel_operator.controller.wakeups as module
    module.RETRY_AFTER_ERROR_S, before = 0.05, module.RETRY_AFTER_ERROR_S
    try:
        wakeups.start()
        wakeups.schedule("ns", "m", 0.01)
        assert done.wait(5), woke
    finally:
        wakeups.stop()
        module.RETRY_AFTER_ERROR_S = before
    assert woke == [("ns", "m"), ("ns", "m")]
