"""Restart decisions and crash-loop back-off, the kubelet's way (pure)."""

from __future__ import annotations

from typing import Literal

RestartPolicy = Literal["Always", "OnFailure", "Never"]

# A container that ran this long without crashing starts its back-off from scratch (kubelet: 2 x max).
STABLE_RUN_FACTOR = 2


def should_restart(policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` is started again under the pod's restartPolicy."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    if policy == "Never":
        return False
    raise ValueError(f"unknown restartPolicy {policy!r}")


def backoff_delay(consecutive_crashes: int, initial: float, maximum: float) -> float:
    """Seconds to wait before the next start after `consecutive_crashes` exits in a row.

    The first exit restarts at once; then 1x, 2x, 4x ... `initial`, capped at `maximum`.
    """
    if consecutive_crashes <= 1:
        return 0.0
    return min(initial * 2 ** (consecutive_crashes - 2), maximum)


def crashes_after_exit(previous_crashes: int, ran_seconds: float, maximum: float) -> int:
    """The crash count after an exit: a run longer than 2 x `maximum` resets the back-off."""
    if ran_seconds >= STABLE_RUN_FACTOR * maximum:
        return 1
    return previous_crashes + 1
