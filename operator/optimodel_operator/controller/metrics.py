"""The operator's own Prometheus metrics, derived from each OptimizedModel's spec and status.

Level-triggered like the rest of the operator: after every reconcile the handler hands this module the
model's spec and the complete status it just decided (`observe`), and a scrape renders the metrics from
those snapshots alone. Nothing is counted in memory, so an operator restarted (or a standby that took
the Lease) exports the same values as soon as kopf's resume handler has reconciled each model, and a
deleted model's series disappear at once (`forget`). A standby replica exports no model series.

Every model series carries `namespace` (the model's) and `model` (its name); Prometheus must keep
the exported `namespace` over the target's own (`honorLabels: true` in the ServiceMonitor,
`honor_labels` in a plain scrape config), as for kube-state-metrics. `samples` is pure and holds the
whole mapping from status to series; docs/monitoring.md lists every metric.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from optimodel_operator.api.common import parse_duration
from optimodel_operator.api.conditions import ConditionStatus
from optimodel_operator.api.status import (
    AnalysisVerdict,
    GateVerdict,
    OptimizedModelStatus,
    Phase,
    RevisionPhase,
    RolloutPhase,
)
from optimodel_operator.planner.status import read_status

MODEL_LABELS = ("namespace", "model")
# The spec's default (api.rollout.Rollout.interval), used when the spec names none.
DEFAULT_INTERVAL = "1m"


@dataclass(frozen=True)
class Metric:
    """One exported gauge: its name, help text and the labels beyond namespace and model."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


METRICS: tuple[Metric, ...] = (
    Metric("optimodel_model_phase", "1 for the model's current status.phase, 0 for every other phase.", ("phase",)),
    Metric("optimodel_model_condition",
           "1 for the status (True, False, Unknown) each condition of the model has, 0 for the others.",
           ("condition", "status")),
    Metric("optimodel_model_info",
           "Always 1; the labels name the current, stable and rollout revisions (empty when unset).",
           ("current_revision", "stable_revision", "rollout_revision")),
    Metric("optimodel_variants",
           "Variants of the current spec per gate verdict (status.variants); every verdict is present, 0 "
           "included.", ("gate",)),
    Metric("optimodel_revisions", "Revisions in status.revisions per phase (RolledBack counts rollbacks kept in "
           "the history).", ("phase",)),
    Metric("optimodel_rollout_phase",
           "1 for the current status.rolloutPhase, 0 for the others; absent before a revision serves.", ("phase",)),
    Metric("optimodel_canary_weight",
           "Percent of traffic on the rollout revision: the canary's step weight, 100 once promoted, 0 when "
           "rolled back or aborted."),
    Metric("optimodel_canary_step", "Index of the current canary step in rollout.steps (only while a canary)."),
    Metric("optimodel_rollout_step_started_timestamp_seconds",
           "When the current canary step began, Unix seconds (only while a canary)."),
    Metric("optimodel_rollout_interval_seconds", "spec.rollout.interval: how often the rollout is analysed."),
    Metric("optimodel_rollout_failed_analyses", "status.failedAnalyses of the rollout revision."),
    Metric("optimodel_rollout_consecutive_errors", "Analyses in a row that could not ask Prometheus."),
    Metric("optimodel_rollout_consecutive_no_data", "Analyses in a row held for lack of data."),
    Metric("optimodel_drift_threshold_psi",
           "spec.rollout.drift.maxPSI: the input PSI beyond which the model's inputs count as drifted (only when "
           "rollout.drift is set)."),
    Metric("optimodel_analysis_verdict",
           "1 for the last analysis' verdict (Pass, Fail, NoData, Error), 0 for the others.", ("verdict",)),
    Metric("optimodel_analysis_timestamp_seconds", "When the last analysis ran, Unix seconds."),
    Metric("optimodel_analysis_weight", "Traffic weight of the revision during the last analysis' window."),
    Metric("optimodel_analysis_measurement",
           "Value of each check of the last analysis on each pool (only checks that measured a value).",
           ("check", "pool")),
    Metric("optimodel_pool_replicas", "Serving replicas wanted per node pool.", ("pool",)),
    Metric("optimodel_pool_available_replicas", "Serving replicas available per node pool.", ("pool",)),
)
_BY_NAME = {metric.name: metric for metric in METRICS}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _one_of(name: str, label: str, values: Iterable[str], current: str | None,
            base: dict[str, str]) -> list[Sample]:
    # Every value present (0 or 1): an alert on `== 1` then sees the series change, not appear from nothing.
    return [Sample(name, {**base, label: value}, 1.0 if value == current else 0.0) for value in values]


def _timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _interval_seconds(spec: Mapping[str, Any]) -> float | None:
    rollout = spec.get("rollout") or {}
    try:
        return parse_duration(str(rollout.get("interval") or DEFAULT_INTERVAL)).total_seconds()
    except ValueError:
        return None  # an invalid spec: its status says so, there is no interval to export


def _drift_threshold(spec: Mapping[str, Any]) -> float | None:
    drift = (spec.get("rollout") or {}).get("drift")
    if not isinstance(drift, Mapping):
        return None
    value = drift.get("maxPSI", 0.2)  # the API's default (api.rollout.Drift.max_psi)
    return float(value) if isinstance(value, int | float) else None


def _weight(status: OptimizedModelStatus) -> float | None:
    if status.rollout_phase is RolloutPhase.CANARY:
        return float(status.canary_weight) if status.canary_weight is not None else None
    if status.rollout_phase is RolloutPhase.PROMOTED:
        return 100.0
    if status.rollout_phase in (RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED):
        return 0.0
    return None


def samples(namespace: str, model: str, spec: Mapping[str, Any], raw_status: Mapping[str, Any]) -> list[Sample]:
    """Every series one model exports, from its spec and its (wire-form) status. Pure."""
    status = read_status(raw_status)
    base = {"namespace": namespace, "model": model}
    out: list[Sample] = []

    def add(name: str, value: float | int | None, **labels: str) -> None:
        if value is not None:
            out.append(Sample(name, {**base, **labels}, float(value)))

    if status.phase is not None:
        out += _one_of("optimodel_model_phase", "phase", [p.value for p in Phase], status.phase.value, base)
    for condition in status.conditions:
        out += _one_of("optimodel_model_condition", "status", [s.value for s in ConditionStatus],
                       condition.status.value, {**base, "condition": condition.type})
    add("optimodel_model_info", 1, current_revision=status.current_revision or "",
        stable_revision=status.stable_revision or "", rollout_revision=status.rollout_revision or "")
    if status.variants is not None:
        counts = {verdict: 0 for verdict in GateVerdict}
        for variant in status.variants:
            counts[variant.gate] += 1
        for verdict, count in counts.items():
            add("optimodel_variants", count, gate=verdict.value)
    if status.revisions is not None:
        phases = {phase: 0 for phase in RevisionPhase}
        for revision in status.revisions:
            phases[revision.phase] += 1
        for phase, count in phases.items():
            add("optimodel_revisions", count, phase=phase.value)
    if status.rollout_phase is not None:
        out += _one_of("optimodel_rollout_phase", "phase", [p.value for p in RolloutPhase],
                       status.rollout_phase.value, base)
        add("optimodel_canary_weight", _weight(status))
        add("optimodel_rollout_failed_analyses", status.failed_analyses or 0)
        add("optimodel_rollout_consecutive_errors", status.consecutive_errors or 0)
        add("optimodel_rollout_consecutive_no_data", status.consecutive_no_data or 0)
    if status.rollout_phase is RolloutPhase.CANARY:
        add("optimodel_canary_step", status.canary_step)
        add("optimodel_rollout_step_started_timestamp_seconds", _timestamp(status.step_start_time))
    add("optimodel_rollout_interval_seconds", _interval_seconds(spec))
    add("optimodel_drift_threshold_psi", _drift_threshold(spec))
    analysis = status.last_analysis
    if analysis is not None:
        out += _one_of("optimodel_analysis_verdict", "verdict", [v.value for v in AnalysisVerdict],
                       analysis.verdict.value, base)
        add("optimodel_analysis_timestamp_seconds", _timestamp(analysis.time))
        add("optimodel_analysis_weight", analysis.weight)
        for measurement in analysis.measurements or []:
            add("optimodel_analysis_measurement", measurement.value, check=measurement.name, pool=measurement.pool)
    for pool in status.pools or []:
        add("optimodel_pool_replicas", pool.replicas, pool=pool.name)
        add("optimodel_pool_available_replicas", pool.available_replicas, pool=pool.name)
    return out


def families(snapshots: Iterable[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]) -> list[GaugeMetricFamily]:
    """The gauge families for a set of (namespace, model, spec, status) snapshots, in METRICS order; a metric
    no model has a series of is left out."""
    by_name: dict[str, GaugeMetricFamily] = {}
    for namespace, model, spec, status in snapshots:
        for sample in samples(namespace, model, spec, status):
            metric = _BY_NAME[sample.name]
            family = by_name.get(sample.name)
            if family is None:
                family = GaugeMetricFamily(metric.name, metric.help, labels=[*MODEL_LABELS, *metric.labels])
                by_name[sample.name] = family
            family.add_metric([sample.labels[label] for label in (*MODEL_LABELS, *metric.labels)], sample.value)
    return [by_name[m.name] for m in METRICS if m.name in by_name]


class ModelMetrics(Collector):
    """The latest spec and status of each model this replica reconciled, rendered at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """Record the model's spec and the complete status the reconcile decided (what the API server holds
        once the patch is applied)."""
        with self._lock:
            self._snapshots[(namespace, name)] = (dict(spec), dict(status))

    def forget(self, namespace: str, name: str) -> None:
        """The model is gone (or being deleted): its series go with it."""
        with self._lock:
            self._snapshots.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshots = [(ns, name, spec, status) for (ns, name), (spec, status) in sorted(self._snapshots.items())]
        yield from families(snapshots)

    def describe(self) -> list[GaugeMetricFamily]:
        # Without describe(), registering would call collect() once; nothing is known at registration.
        return []


# The operator process's one collector (the handlers feed it; `optimodel operator run --metrics-port` serves it).
MODELS = ModelMetrics()


def serve(port: int, address: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY) -> None:
    """Serve /metrics (the models' series and the process' own) on a background thread."""
    start_http_server(port, addr=address, registry=registry)
