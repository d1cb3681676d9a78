"""What the rollout's end-to-end tests, the demo and benchmarks/rollout.py share: the digits model's
revisions with a fast rollout, and live traffic through the model's Service that records which revision
answered each request."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from optimodel_operator.examples import Published, load_example

# A rollout fast enough to watch: two steps, an analysis every 2 s; one failed analysis rolls back.
FAST_ROLLOUT: dict[str, Any] = {
    "steps": [50, 100],
    "interval": "2s",
    "failureLimit": 1,
    "minSamples": 20,
    "slo": {"p99LatencyMs": 250, "maxErrorRate": 0.05},
    "drift": {"maxPSI": 0.25},
}
# Revisions differ by the accuracy budget (a new revision) and the variant each serves.
REVISION_BUDGETS = {1: 0.04, 2: 0.05, 3: 0.06}


def digits_revision(name: str, store: Path, revision: int, variant: str, replicas: int = 2,
                    rollout: dict[str, Any] | None = None, published: Published | None = None) -> dict[str, Any]:
    """The digits example on the cpu pool only, with both a dynamic and a static int8 variant."""
    manifest = copy.deepcopy(load_example("digits"))
    spec = manifest["spec"]
    manifest["metadata"]["name"] = name
    spec["artifacts"] = {"uri": f"file://{store}"}
    spec["evaluation"]["maxDrop"] = REVISION_BUDGETS[revision]
    folder = Path(spec["source"]["uri"].removeprefix("file://")).parent
    calibration = published.calibration if published else folder / "calibration.npz"
    spec["optimizations"] = [
        {"name": "int8", "quantize": {"mode": "dynamic"}},
        {"name": "int8-static", "quantize": {"mode": "static",
                                             "calibration": {"dataset": f"file://{calibration}", "samples": 256}}},
    ]
    spec["nodePools"] = [{"name": "cpu", "nodeSelector": {"optimodel.io/pool": "cpu"}, "variant": variant,
                          "replicas": replicas}]
    spec["rollout"] = copy.deepcopy(rollout or FAST_ROLLOUT)
    return manifest


@dataclass
class Answer:
    time: float
    status: int
    revision: str | None


@dataclass
class Traffic:
    """Requests of `rows` rows each to the model's Service, `rate_hz` a second, in a thread."""

    address: str
    model: str
    data: np.ndarray
    rate_hz: float = 25.0
    rows: int = 16
    shift: float = 0.0
    senders: int = 6
    """Independent senders, so a slow revision does not slow the arrival of requests (as with real clients)."""
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for index in range(self.senders):
            thread = threading.Thread(target=self._run, args=(index,), name=f"traffic-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def _run(self, index: int) -> None:
        url = f"{self.address}/v2/models/{self.model}/infer"
        rng = np.random.default_rng(index)
        period = self.senders / self.rate_hz
        self._stop.wait(period * index / self.senders)  # spread the senders over the period
        # A new connection per request: kube-proxy balances connections, not requests, so a kept-alive
        # connection would stick to one pod and never see the replica split.
        with httpx.Client(timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                picked = self.data[rng.integers(0, len(self.data), self.rows)] + np.float32(self.shift)
                body = {"inputs": [{"name": "x", "shape": list(picked.shape), "datatype": "FP32",
                                    "data": picked.ravel().tolist()}]}
                try:
                    response = client.post(url, json=body)
                    revision = response.json().get("model_version") if response.status_code == 200 else None
                    self.answers.append(Answer(time.time(), response.status_code, revision))
                except (httpx.HTTPError, ValueError):
                    self.answers.append(Answer(time.time(), 0, None))
                self._stop.wait(max(0.0, period - (time.monotonic() - started)))

    def revisions_since(self, since: float) -> dict[str, int]:
        """Answers per revision (None: failed) since `since` (time.time())."""
        out: dict[str, int] = {}
        for answer in list(self.answers):
            if answer.time >= since:
                key = answer.revision or f"status {answer.status}"
                out[key] = out.get(key, 0) + 1
        return out


def evaluation_rows(published: Published) -> np.ndarray:
    data = np.load(published.evaluation)
    x = np.asarray(data[published.input_name], dtype=np.float32)
    return x.reshape(len(x), -1)
