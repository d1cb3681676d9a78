"""Helpers for tests against a real API server: install the CRD, run the operator as a process,
read OptimizedModels back, wait for a condition. Everything goes through kubectl, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from optimodel_operator.api.meta import CRD_NAME, PLURAL
from optimodel_operator.crd.files import render_crd

T = TypeVar("T")


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.3) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def install_crd(kubectl: Kubectl, timeout: float = 60) -> None:
    """Apply the CRD generated from the current types and wait until it serves and is published."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render_crd())
    kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", f"--timeout={int(timeout)}s")
    # Established comes before the OpenAPI document is published; explain and strict field
    # validation need the latter.
    wait_for(
        lambda: kubectl("explain", "optimizedmodels.spec.rollout", check=False).returncode == 0,
        timeout,
        "the OptimizedModel schema to be published",
    )


def get_model(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", PLURAL, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return item
    return None


def wait_for_status(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    accept: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60,
    interval: float = 0.3,
) -> dict[str, Any]:
    """Wait until the status is current (observedGeneration == generation) and `accept`s it."""

    def probe() -> dict[str, Any] | None:
        obj = get_model(kubectl, namespace, name)
        if obj is None:
            return None
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"].get("generation")
        return obj if current and accept(obj) else None

    return wait_for(probe, timeout, f"{namespace}/{name}: {what}", interval)


def until_status(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    accept: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 240,
    operator: tuple[str, str] = ("optimodel-system", "optimodel-operator"),
    interval: float = 0.5,
) -> dict[str, Any]:
    """wait_for_status, returning the status; on time-out, fail with the status (less its long lists) and the
    tail of the in-cluster operator's log (namespace, Deployment), which is what explains a status that never
    came."""
    try:
        obj = wait_for_status(kubectl, namespace, name, lambda o: bool(accept(o.get("status") or {})), what,
                              timeout, interval)
        return obj["status"]
    except AssertionError:
        logs = kubectl("logs", "-n", operator[0], f"deploy/{operator[1]}", "--tail=60", check=False).stdout
        status = (get_model(kubectl, namespace, name) or {}).get("status") or {}
        brief = {k: v for k, v in status.items() if k not in ("variants", "revisions")}
        raise AssertionError(f"{what} not reached; status: {json.dumps(brief)[:4000]}\noperator log:\n{logs}") from None


def events_for(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    result = kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(result.stdout)["items"]


class OperatorProcess:
    """`optimodel operator run` as a child process, watching some namespaces."""

    def __init__(self, kubeconfig: Path, namespaces: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "optimodel_operator.cli", "operator", "run"]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("OPTIMODEL_DEFAULT_ARTIFACTS", None)
        env.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        wait_for(
            lambda: self.alive() and b"Initial authentication has finished" in self.log_path.read_bytes(),
            60,
            f"the operator to start (log: {self.log_path})",
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_operator(kubeconfig: Path, namespaces: list[str], log_path: Path,
                     env: dict[str, str] | None = None) -> Iterator[OperatorProcess]:
    """The operator as a local process (`optimodel operator run`), with extra configuration in `env`."""
    operator = OperatorProcess(kubeconfig, namespaces, log_path, env)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


OPERATOR_NAMESPACE = "optimodel-system"
OPERATOR_DEPLOYMENT = "optimodel-operator"


def operator_replicas(kubectl: Kubectl) -> int:
    """Replicas of the in-cluster operator (0 when it is not installed)."""
    result = kubectl("get", "deployment", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    return int(json.loads(result.stdout)["spec"].get("replicas") or 0) if result.returncode == 0 else 0


def scale_operator(kubectl: Kubectl, replicas: int, timeout: float = 120) -> None:
    """Scale the in-cluster operator and wait until exactly that many pods of it exist and are ready."""
    kubectl("scale", "deployment", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE, f"--replicas={replicas}")

    def settled() -> bool:
        pods = json.loads(kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l",
                                  f"app.kubernetes.io/name={OPERATOR_DEPLOYMENT}", "-o", "json").stdout)["items"]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p.get("status", {}).get("conditions", []))]
        return len(pods) == replicas and len(ready) == replicas

    wait_for(settled, timeout, f"{replicas} ready operator pod(s)", interval=1)
