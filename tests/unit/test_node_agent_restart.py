"""Restart policy and crash-loop back-off decisions."""

from __future__ import annotations

import pytest

from optimodel_localcluster.node_agent.restart import backoff_delay, crashes_after_exit, should_restart


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 137, True),
     ("Never", 0, False), ("Never", 1, False)],
)
def test_should_restart(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown restartPolicy 'Sometimes'"):
        should_restart("Sometimes", 0)


def test_backoff_doubles_from_the_second_crash_and_caps() -> None:
    assert [backoff_delay(n, 10, 300) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]


def test_a_long_run_resets_the_backoff() -> None:
    assert crashes_after_exit(5, ran_seconds=30, maximum=300) == 6
    assert crashes_after_exit(5, ran_seconds=600, maximum=300) == 1
