"""The operator's metrics, derived from statuses captured from the local cluster (tests/fixtures/statuses),
rendered as Prometheus would scrape them. No cluster."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from optimodel_operator.controller import metrics
from optimodel_operator.controller.metrics import METRICS, ModelMetrics, samples

FIXTURES = Path(__file__).parents[1] / "fixtures" / "statuses"
SPEC = {"rollout": {"interval": "2s", "drift": {"maxPSI": 0.25}}}


def status(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["status"]


def values(name: str, spec: dict[str, Any] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(metric, extra labels beyond namespace/model): value} for one fixture."""
    out = {}
    for sample in samples("ml", "digits", spec if spec is not None else SPEC, status(name)):
        assert sample.labels["namespace"] == "ml" and sample.labels["model"] == "digits"
        extra = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("namespace", "model")))
        out[(sample.name, extra)] = sample.value
    return out


def scrape(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry).decode()
    return {family.name: [(s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)}


def test_the_phase_gauges_have_every_value_and_one_is_set() -> None:
    got = values("gate-failed")
    phases = {dict(labels)["phase"]: v for (name, labels), v in got.items() if name == "optimodel_model_phase"}
    assert phases["Failed"] == 1 and sum(phases.values()) == 1
    assert set(phases) == {"Pending", "Optimizing", "Gating", "Deploying", "RollingOut", "Succeeded",
                           "RolledBack", "Failed"}


def test_a_gate_that_refused_every_variant_shows_in_the_variant_counts() -> None:
    got = values("gate-failed")
    assert got[("optimodel_variants", (("gate", "Failed"),))] == 1
    assert got[("optimodel_variants", (("gate", "Passed"),))] == 0
    assert got[("optimodel_variants", (("gate", "Pending"),))] == 0
    assert got[("optimodel_revisions", (("phase", "Refused"),))] == 1
    # No revision serves: no rollout series at all.
    assert not any(name.startswith("optimodel_rollout_phase") for name, _ in got)


def test_a_canary_exports_its_weight_step_and_when_the_step_began() -> None:
    got = values("canary")
    assert got[("optimodel_rollout_phase", (("phase", "Canary"),))] == 1
    assert got[("optimodel_rollout_phase", (("phase", "RolledBack"),))] == 0
    assert got[("optimodel_canary_weight", ())] == 50
    assert got[("optimodel_canary_step", ())] == 0
    # stepStartTime 2026-12-01T08:29:45Z
    assert got[("optimodel_rollout_step_started_timestamp_seconds", ())] == 1796113785
    assert got[("optimodel_rollout_interval_seconds", ())] == 2
    assert got[("optimodel_drift_threshold_psi", ())] == 0.25
    assert got[("optimodel_variants", (("gate", "Passed"),))] == 2


def test_a_held_canary_counts_its_no_data_analyses_and_its_verdict() -> None:
    got = values("canary-no-data")
    assert got[("optimodel_rollout_consecutive_no_data", ())] == 1
    verdicts = {dict(labels)["verdict"]: v for (name, labels), v in got.items() if name == "optimodel_analysis_verdict"}
    assert verdicts == {"Pass": 0, "Fail": 0, "NoData": 1, "Error": 0}


def test_a_rollback_sets_the_rollout_phase_and_the_weight_to_zero() -> None:
    got = values("rolled-back")
    assert got[("optimodel_rollout_phase", (("phase", "RolledBack"),))] == 1
    assert got[("optimodel_canary_weight", ())] == 0
    assert got[("optimodel_revisions", (("phase", "RolledBack"),))] == 1
    assert got[("optimodel_rollout_failed_analyses", ())] == 1
    # Not a canary any more: the step series are gone, so "rollout stuck" cannot fire on it.
    assert ("optimodel_rollout_step_started_timestamp_seconds", ()) not in got
    info = [dict(labels) for (name, labels), _ in got.items() if name == "optimodel_model_info"]
    assert info == [{"current_revision": "128a343558", "stable_revision": "a5bd47ba3b",
                     "rollout_revision": "128a343558"}]


def test_a_promoted_revision_has_all_the_traffic() -> None:
    got = values("promoted")
    assert got[("optimodel_canary_weight", ())] == 100
    assert got[("optimodel_rollout_phase", (("phase", "Promoted"),))] == 1


def test_the_last_analysis_measurements_are_exported_per_check_and_pool() -> None:
    raw = status("rolled-back")
    got = values("rolled-back")
    measured = {(dict(labels)["check"], dict(labels)["pool"]): v
                for (name, labels), v in got.items() if name == "optimodel_analysis_measurement"}
    expected = {(m["name"], m["pool"]): m["value"] for m in raw["lastAnalysis"]["measurements"] if "value" in m}
    assert measured == expected and expected, measured
    assert measured[("p99-latency", "cpu")] > 250


def test_conditions_are_one_hot_per_status() -> None:
    got = values("rolled-back")
    ready = {dict(labels)["status"]: v for (name, labels), v in got.items()
             if name == "optimodel_model_condition" and dict(labels)["condition"] == "Ready"}
    assert ready == {"True": 0, "False": 1, "Unknown": 0}


def test_without_rollout_drift_no_threshold_is_invented_and_the_interval_defaults() -> None:
    got = values("canary", spec={})
    assert ("optimodel_drift_threshold_psi", ()) not in got
    assert got[("optimodel_rollout_interval_seconds", ())] == 60


def test_an_unreadable_status_field_is_left_out_not_fatal() -> None:
    broken = {**status("canary"), "canaryWeight": "half"}
    got = {s.name for s in samples("ml", "digits", SPEC, broken)}
    assert "optimodel_canary_weight" not in got and "optimodel_rollout_phase" in got


def test_every_sample_is_a_declared_metric_with_its_declared_labels() -> None:
    declared = {m.name: {"namespace", "model", *m.labels} for m in METRICS}
    fixtures = sorted(FIXTURES.glob("*.json"))
    assert len(fixtures) >= 5, f"no captured statuses in {FIXTURES}: nothing would be checked"
    for fixture in fixtures:
        found = samples("ml", "x", SPEC, json.loads(fixture.read_text())["status"])
        assert found, fixture.name
        for sample in found:
            assert set(sample.labels) == declared[sample.name], (fixture.name, sample)


def test_the_collector_renders_each_model_and_forgets_a_deleted_one() -> None:
    registry = CollectorRegistry()
    collector = ModelMetrics(registry)
    collector.observe("ml", "digits", SPEC, status("canary"))
    collector.observe("team-b", "sentiment", SPEC, status("gate-failed"))
    scraped = scrape(registry)
    weights = scraped["optimodel_canary_weight"]
    assert weights == [({"namespace": "ml", "model": "digits"}, 50.0)]
    models = {(labels["namespace"], labels["model"]) for labels, _ in scraped["optimodel_model_phase"]}
    assert models == {("ml", "digits"), ("team-b", "sentiment")}
    # Level-triggered: the next status replaces the last, it does not add to it.
    collector.observe("ml", "digits", SPEC, status("rolled-back"))
    assert scrape(registry)["optimodel_canary_weight"] == [({"namespace": "ml", "model": "digits"}, 0.0)]
    collector.forget("ml", "digits")
    scraped = scrape(registry)
    assert "optimodel_canary_weight" not in scraped
    assert {labels["model"] for labels, _ in scraped["optimodel_model_phase"]} == {"sentiment"}


def test_serve_answers_a_scrape_over_http(unused_port: int) -> None:
    registry = CollectorRegistry()
    ModelMetrics(registry).observe("ml", "digits", SPEC, status("canary"))
    metrics.serve(unused_port, address="127.0.0.1", registry=registry)
    with urllib.request.urlopen(f"http://127.0.0.1:{unused_port}/metrics", timeout=5) as answer:
        body = answer.read().decode()
    assert 'optimodel_canary_weight{model="digits",namespace="ml"} 50.0' in body


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
