"""Shared helpers for the model server's tests (not collected: no test_ prefix)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from optimodel_server.config import ServerConfig
from optimodel_server.server import build

FEATURES = 64


def infer_body(rows: int = 1, seed: int = 0, shift: float = 0.0) -> dict:
    data = (np.random.default_rng(seed).standard_normal((rows, FEATURES)) + shift).astype(np.float32)
    return {"inputs": [{"name": "features", "shape": [rows, FEATURES], "datatype": "FP32", "data": data.ravel().tolist()}]}


def wait_until(client: TestClient, path: str, status: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get(path).status_code == status:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not answer {status} within {timeout_s} s")


def wait_for_load(client: TestClient, plane, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while plane.state.value == "Loading" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert plane.state.value != "Loading", "the model did not finish loading"


def make_client(manifest_uri: str, tmp: Path, **overrides) -> tuple[TestClient, object, CollectorRegistry]:
    """(entered TestClient, data plane, registry) for a real app in process."""
    config = ServerConfig(manifest_uri=manifest_uri, cache_dir=tmp / "cache", **overrides)
    registry = CollectorRegistry()
    plane, app = build(config, registry)
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    wait_for_load(client, plane)
    return client, plane, registry


def scrape(client: TestClient) -> dict[str, list]:
    """Parse /metrics with prometheus_client's own parser: {family name: samples}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def sample_value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
    for candidate in (sample_name, family):
        for sample in families.get(candidate, []):
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(f"no sample {sample_name} with labels {labels}")
