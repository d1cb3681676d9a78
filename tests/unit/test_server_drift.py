"""Drift: PSI against the artifact's reference over a sliding window, near zero for traffic like the
reference, large for shifted traffic (the fault-injection shift drives it end to end)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import numpy as np
from optimodel_contracts.artifacts import DriftReference, class_profile, quantile_profile

from _server_helpers import infer_body, make_client, sample_value, scrape
from optimodel_server.drift import DriftMonitor, DriftWindow, output_values
from optimodel_server.sample_artifact import write_sample_artifact


def _reference() -> DriftReference:
    values = np.random.default_rng(0).standard_normal(5000)
    return DriftReference(
        inputs=[quantile_profile("x[0]", values, tensor="x", flat_index=0)],
        output=class_profile("y", np.array([0, 1] * 50), 2),
    )


def _batch(rows: int, shift: float, seed: int) -> tuple[dict, dict]:
    x = (np.random.default_rng(seed).standard_normal((rows, 1)) + shift).astype(np.float32)
    scores = np.stack([np.zeros(rows), x[:, 0]], axis=1)
    return {"x": x}, {"y": scores}


def test_window_slides_and_forgets_old_rows() -> None:
    reference = _reference()
    window = DriftWindow(reference, window_rows=100)
    for _ in range(5):
        window.add([np.array([0] * 9 + [50])], np.array([25, 25]), 50)
    assert window.rows == 100
    assert window.psi() is not None


def test_monitor_psi_is_small_for_reference_traffic_and_large_for_shifted_traffic() -> None:
    published: list[tuple] = []
    monitor = DriftMonitor(
        _reference(), "classification", "y", window_rows=2000, interval_s=1.0, max_rows_per_interval=5000,
        publish=lambda features, output, rows: published.append((features, output, rows)),
        rng=random.Random(0),
    )
    assert monitor.update() is None, "no data must not read as no drift"
    for seed in range(20):
        monitor.observe(*_batch(100, 0.0, seed))
    features, output = monitor.update()
    assert features["x[0]"] < 0.05 and output < 0.05
    for seed in range(20, 40):
        monitor.observe(*_batch(100, 2.0, seed))
    features, output = monitor.update()
    assert features["x[0]"] > 1.0, "a 2-sigma shift must show"
    assert published[-1][2] == 2000


def test_sampling_caps_the_rows_kept_between_updates() -> None:
    monitor = DriftMonitor(
        _reference(), "classification", "y", window_rows=10_000, interval_s=1.0, max_rows_per_interval=300,
        publish=lambda *args: None, rng=random.Random(0),
    )
    for seed in range(50):
        monitor.observe(*_batch(100, 0.0, seed))
    monitor.update()
    assert monitor.window.rows <= 400


def test_output_values_are_predicted_classes_for_classifiers() -> None:
    profile = class_profile("y", np.array([0, 1, 2]), 3)
    scores = np.array([[0.1, 0.8, 0.1], [0.9, 0.05, 0.05]])
    assert output_values(scores, profile, "classification").tolist() == [1.0, 0.0]
    assert output_values(np.array([2, 0]), profile, "classification").tolist() == [2.0, 0.0]


def test_shifted_inputs_raise_the_served_psi_gauges(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=16)
    base = {"model": "mlp", "revision": "0", "pool": "default"}
    readings = {}
    for shift in (0.0, 3.0):
        client, plane, _ = make_client(
            uri, tmp_path / str(shift), drift_interval_s=0.05, faults={"input_shift": shift}
        )
        try:
            for seed in range(30):
                assert client.post("/v2/models/mlp/infer", json=infer_body(rows=8, seed=seed)).status_code == 200
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                families = scrape(client)
                try:
                    if sample_value(families, "optimodel_drift_window_samples", **base) >= 240:
                        break
                except KeyError:
                    pass
                time.sleep(0.05)
            readings[shift] = (
                sample_value(families, "optimodel_drift_max_psi", **base),
                sample_value(families, "optimodel_drift_psi", feature="features[0]", **base),
                sample_value(families, "optimodel_drift_output_psi", **base),
            )
            if shift:
                assert sample_value(families, "optimodel_faults_injected_total", kind="input_shift", **base) == 30
        finally:
            client.__exit__(None, None, None)
    assert readings[0.0][1] < 0.25, readings
    assert readings[3.0][1] > 1.0, readings
    assert readings[3.0][0] > readings[0.0][0]


def test_the_monitor_hands_every_binned_chunks_output_counts_on() -> None:
    counted: list[np.ndarray] = []
    monitor = DriftMonitor(
        _reference(), "classification", "y", window_rows=2000, interval_s=1.0, max_rows_per_interval=5000,
        publish=lambda *args: None, rng=random.Random(0), count_outputs=counted.append,
    )
    for seed in range(5):
        monitor.observe(*_batch(100, 0.0, seed))
    monitor.update()
    total = np.sum(counted, axis=0)
    assert total.sum() == 500 and len(total) == 2
    # class 1 when x > 0: about half of standard normal rows.
    assert 200 < total[1] < 300
    for seed in range(5, 8):
        monitor.observe(*_batch(100, 5.0, seed))
    asyncio.run(monitor.update_cooperatively())
    assert np.sum(counted, axis=0).sum() == 800 and np.sum(counted, axis=0)[1] > total[1] + 290


def test_the_server_counts_predictions_per_output_bin(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=16)
    base = {"model": "mlp", "revision": "0", "pool": "default"}
    client, plane, _ = make_client(uri, tmp_path / "srv", drift_interval_s=0.05)
    try:
        families = scrape(client)
        # Every bin exists at zero before the first prediction (so an increase() over a window sees them all).
        assert [sample_value(families, "optimodel_output_bin_total", bin=str(b), **base) for b in range(4)] == [0] * 4
        predicted = np.zeros(4, dtype=int)
        for seed in range(20):
            answer = client.post("/v2/models/mlp/infer", json=infer_body(rows=8, seed=seed))
            assert answer.status_code == 200
            output = answer.json()["outputs"][0]
            classes = np.argmax(np.asarray(output["data"]).reshape(output["shape"]), axis=1)
            predicted += np.bincount(classes, minlength=4)
        deadline = time.monotonic() + 5
        counts = [0.0] * 4
        while time.monotonic() < deadline:
            families = scrape(client)
            counts = [sample_value(families, "optimodel_output_bin_total", bin=str(b), **base) for b in range(4)]
            if sum(counts) >= 160:
                break
            time.sleep(0.05)
        assert counts == predicted.tolist(), "each bin counts the predicted class of every row served"
    finally:
        client.__exit__(None, None, None)
