"""What the optimization Jobs found, as the planner sees it: plain figures per variant and provider.

The controller reads them from the store (the run record a Job wrote, then each variant's verified
manifest) and hands them over as plain data; nothing here reads logs or files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optimodel_contracts.choice import Timing, timings

SOURCE = "source"
# Ends status.variants[].worstSlice when that slice failed its budget; the Event for a slice refusal keys on it.
OVER_BUDGET = "over budget"
# Metrics scored as a share of rows: their drops read best in points (0.041 -> 4.1 pts).
_SHARE_METRICS = ("accuracy", "topK", "f1")


@dataclass(frozen=True)
class SliceFigures:
    """The gate's worst slice of the held-out rows, as the manifest records it (gate.worst_slice)."""

    name: str
    """e.g. class=3 or region=eu."""
    size: int
    drop: float
    """In the slice budget's units (absolute, or relative to the source's score on the slice); positive = worse."""
    max_drop: float
    passed: bool


def slice_from_gate(gate: Mapping[str, Any]) -> SliceFigures | None:
    """gate.worst_slice of a manifest; None when absent (no slice judged, or written before slices were)."""
    worst = gate.get("worst_slice")
    if not isinstance(worst, Mapping):
        return None
    return SliceFigures(name=str(worst["name"]), size=int(worst["size"]), drop=float(worst["drop"]),
                        max_drop=float(worst["max_drop"]), passed=bool(worst["passed"]))


def describe_slice(worst: SliceFigures, metric: str, mode: str) -> str:
    """One line for status and Events: `class=3: -4.1 pts on 88 rows (budget 5)`, signed as a change of the
    score (negative = worse), in the unit of the slice budget: points of a share metric, percent when
    relative, the metric's own units for an error metric (mae, mse)."""
    change = -worst.drop
    if mode == "relative":
        text = f"{change * 100:+.1f}% on {worst.size} rows (budget {worst.max_drop * 100:g}%)"
    elif metric in _SHARE_METRICS:
        text = f"{change * 100:+.1f} pts on {worst.size} rows (budget {worst.max_drop * 100:g})"
    else:
        text = f"{metric} {'worse' if worst.drop > 0 else 'better'} by {abs(worst.drop):.4g} on {worst.size} rows " \
               f"(budget {worst.max_drop:g})"
    return f"{worst.name}: {text}" + ("" if worst.passed else f", {OVER_BUDGET}")


@dataclass(frozen=True)
class Measured:
    """One variant as one provider's Job built, judged and timed it."""

    variant: str
    provider: str
    manifest_uri: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    metric: float | None = None
    source_metric: float | None = None
    drop: float | None = None
    """Loss against the source on the held-out rows (the gate's, the one reported)."""
    tuning_drop: float | None = None
    """The same loss on the tuning rows: what a choice among variants may look at (None in older manifests)."""
    p50_ms: float | None = None
    p99_ms: float | None = None
    source_p50_ms: float | None = None
    passed: bool | None = None
    """The gate's verdict; None when the variant was never judged (its step failed)."""
    deployable: bool = False
    reason: str = ""
    provider_used: str | None = None
    provider_fallback: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    drift_profiled: bool = False
    """The artifact carries a drift reference: its server reports input-drift PSI."""
    latency: Mapping[int, Timing] = field(default_factory=dict)
    """Per batch size: p50 and the interleaved rounds' block medians (what `auto` compares)."""
    source_latency: Mapping[int, Timing] = field(default_factory=dict)
    """The source, timed in the same rounds as this variant."""
    batch_size: int | None = None
    """The benchmark's batch size, which p50_ms / p99_ms are at."""
    worst_slice: SliceFigures | None = None
    """The gate's worst slice of the held-out rows; None when none was judged."""
    held_out_rows: int | None = None
    """Rows the metric and the verdict were computed on (manifest data_roles; None in older manifests)."""
    tuning_rows: int | None = None
    """Rows any search or selection looked at."""

    @property
    def speedup(self) -> float | None:
        if not self.p50_ms or not self.source_p50_ms:
            return None
        return self.source_p50_ms / self.p50_ms


@dataclass(frozen=True)
class RunObservation:
    """A provider's run record as found in the store."""

    found: bool
    measured: Mapping[str, Measured] = field(default_factory=dict)
    error: str | None = None
    """Why the record (or a manifest it names) could not be read."""


def _latency(latency: Mapping[str, Any] | None, batch_size: int) -> Mapping[str, Any]:
    if not latency:
        return {}
    return latency.get(str(batch_size)) or latency[min(latency, key=lambda k: int(k))]


def measured_from_manifest(
    variant: str, provider: str, manifest_uri: str, manifest: Mapping[str, Any], batch_size: int
) -> Measured:
    """Figures of one variant from its manifest (as `ArtifactManifest.model_dump(mode='json')`)."""
    metrics = manifest.get("metrics") or {}
    gate = manifest.get("gate") or {}
    latency = _latency(metrics.get("latency"), batch_size)
    source_latency = _latency(metrics.get("source_latency"), batch_size)
    roles = manifest.get("data_roles") or {}
    return Measured(
        variant=variant,
        provider=provider,
        manifest_uri=manifest_uri,
        sha256=manifest.get("sha256"),
        size_bytes=manifest.get("size_bytes"),
        metric=metrics.get("variant"),
        source_metric=metrics.get("source"),
        drop=metrics.get("drop"),
        tuning_drop=metrics.get("tuning_drop"),
        p50_ms=latency.get("p50_ms"),
        p99_ms=latency.get("p99_ms"),
        source_p50_ms=source_latency.get("p50_ms"),
        passed=bool(gate.get("passed")),
        deployable=bool(gate.get("deployable")),
        reason=str(gate.get("reason") or ""),
        provider_used=metrics.get("provider_used"),
        provider_fallback=metrics.get("provider_fallback"),
        drift_profiled=manifest.get("drift_reference") is not None,
        latency=timings(metrics.get("latency")),
        source_latency=timings(metrics.get("source_latency")),
        batch_size=batch_size,
        worst_slice=slice_from_gate(gate),
        held_out_rows=roles.get("held_out_rows"),
        tuning_rows=roles.get("tuning_rows"),
    )


def measured_from_error(variant: str, provider: str, error: Mapping[str, Any]) -> Measured:
    """A variant whose step failed in the Job: never judged, never deployable."""
    reason = str(error.get("reason") or "OptimizationFailed")
    message = str(error.get("message") or "")
    return Measured(variant=variant, provider=provider, passed=None, deployable=False,
                    reason=f"{reason}: {message}".rstrip(": "), error_reason=reason, error_message=message)
