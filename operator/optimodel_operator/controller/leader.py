"""One acting operator among replicas: a coordination.k8s.io Lease, as Kubernetes' own controllers do.

A replica acts (runs kopf) only while it holds the Lease; it renews the Lease every `renew_s`, and another
replica takes it over only once it has not been renewed for `lease_s`. A holder that cannot renew within
`lease_s` (network partition, API server away) stops acting by exiting, so two replicas never act at once
for longer than the clock skew between them. kopf's own peering does not do this: seeing peers of equal
priority it pauses every one of them, itself included, and a Deployment's identical pods have no distinct
priorities to give.

`decide` is the pure part (tested without a cluster); `Lease` does the API calls.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

LEASE_NAME = "optimodel-operator"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class Move(StrEnum):
    CREATE = "create"  # no Lease yet: create it, holding it
    RENEW = "renew"  # ours: renew it
    TAKE = "take"  # someone else's, expired: take it over
    WAIT = "wait"  # someone else's, live: stand by


@dataclass(frozen=True)
class Held:
    holder: str | None
    renewed: datetime | None
    duration_s: int

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> Held | None:
        if spec is None:
            return None
        renewed = spec.get("renewTime") or spec.get("acquireTime")
        return cls(spec.get("holderIdentity") or None,
                   datetime.fromisoformat(str(renewed).replace("Z", "+00:00")) if renewed else None,
                   int(spec.get("leaseDurationSeconds") or 0))


def decide(held: Held | None, identity: str, now: datetime) -> Move:
    if held is None:
        return Move.CREATE
    if held.holder == identity:
        return Move.RENEW
    if held.holder is None or held.renewed is None or now > held.renewed + timedelta(seconds=held.duration_s):
        return Move.TAKE
    return Move.WAIT


def _micro(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    """The operator's Lease in `namespace`, held as `identity`."""

    def __init__(self, coordination: Any, namespace: str, identity: str, lease_s: int = 15, renew_s: float = 5,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.api = coordination
        self.namespace = namespace
        self.identity = identity
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.clock = clock

    def _body(self, now: datetime, acquired: bool, resource_version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": LEASE_NAME, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_s, "renewTime": _micro(now)}
        if acquired:
            spec["acquireTime"] = _micro(now)
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def try_hold(self) -> bool:
        """Create, renew or take over the Lease if this replica may; True while it holds it."""
        from kubernetes.client.exceptions import ApiException

        now = self.clock()
        try:
            current = self.api.read_namespaced_lease(LEASE_NAME, self.namespace)
            raw = self.api.api_client.sanitize_for_serialization(current)
        except ApiException as error:
            if error.status != 404:
                raise
            raw = None
        move = decide(Held.of((raw or {}).get("spec")) if raw else None, self.identity, now)
        try:
            if move == Move.CREATE:
                self.api.create_namespaced_lease(self.namespace, self._body(now, acquired=True))
            elif move in (Move.RENEW, Move.TAKE):
                assert raw is not None
                body = self._body(now, acquired=move == Move.TAKE, resource_version=raw["metadata"]["resourceVersion"])
                if move == Move.RENEW and raw["spec"].get("acquireTime"):
                    body["spec"]["acquireTime"] = raw["spec"]["acquireTime"]
                self.api.replace_namespaced_lease(LEASE_NAME, self.namespace, body)
            else:
                return False
        except ApiException as error:
            if error.status in (409, 422):  # another replica moved first (optimistic concurrency)
                return False
            raise
        if move != Move.RENEW:
            log.info("leader election: %s holds Lease %s/%s (%s)", self.identity, self.namespace, LEASE_NAME, move.value)
        return True

    def wait_until_held(self, stop: threading.Event | None = None) -> None:
        first = True
        while not (stop and stop.is_set()):
            try:
                if self.try_hold():
                    return
            except Exception as error:  # noqa: BLE001 - the API server may be away for a while
                log.warning("leader election: %s", error)
            if first:
                log.info("leader election: %s stands by; another replica holds Lease %s/%s", self.identity,
                         self.namespace, LEASE_NAME)
                first = False
            time.sleep(self.renew_s)

    def release(self) -> bool:
        """Give the Lease up at once if this replica holds it (an empty holder, as client-go's ReleaseOnCancel
        writes), so that a standby, or the next pod of a rolling update, takes it without waiting `lease_s`."""
        from kubernetes.client.exceptions import ApiException

        try:
            current = self.api.read_namespaced_lease(LEASE_NAME, self.namespace)
            raw = self.api.api_client.sanitize_for_serialization(current)
            if (raw.get("spec") or {}).get("holderIdentity") != self.identity:
                return False
            body = self._body(self.clock(), acquired=False, resource_version=raw["metadata"]["resourceVersion"])
            body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
            self.api.replace_namespaced_lease(LEASE_NAME, self.namespace, body)
        except ApiException as error:
            log.warning("leader election: releasing Lease %s/%s failed: %s", self.namespace, LEASE_NAME, error)
            return False
        log.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, LEASE_NAME)
        return True

    def keep_holding(self, lost: Callable[[], None], stop: threading.Event | None = None) -> threading.Thread:
        """Renew in the background until `stop` is set; call `lost` once the Lease could not be renewed for
        `lease_s`."""
        stop = stop or threading.Event()

        def renew() -> None:
            last = time.monotonic()
            while not stop.wait(self.renew_s):
                try:
                    if self.try_hold():
                        last = time.monotonic()
                        continue
                    log.error("leader election: another replica took Lease %s/%s", self.namespace, LEASE_NAME)
                except Exception as error:  # noqa: BLE001
                    log.warning("leader election: renewing failed: %s", error)
                    if time.monotonic() - last < self.lease_s:
                        continue
                lost()
                return

        thread = threading.Thread(target=renew, name="optimodel-lease", daemon=True)
        thread.start()
        return thread


def default_namespace() -> str:
    """The operator's own namespace: POD_NAMESPACE, else the service account's, else optimodel-system."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SA_NAMESPACE_FILE) as handle:
            return handle.read().strip()
    except OSError:
        return "optimodel-system"
