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
    return Measured(
        variant=variant,
        provider=provider,
        manifest_uri=manifest_uri,
        sha256=manifest.get("sha256"),
        size_bytes=manifest.get("size_bytes"),
        metric=metrics.get("variant"),
        source_metric=metrics.get("source"),
        drop=metrics.get("drop"),
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
    )


def measured_from_error(variant: str, provider: str, error: Mapping[str, Any]) -> Measured:
    """A variant whose step failed in the Job: never judged, never deployable."""
    reason = str(error.get("reason") or "OptimizationFailed")
    message = str(error.get("message") or "")
    return Measured(variant=variant, provider=provider, passed=None, deployable=False,
                    reason=f"{reason}: {message}".rstrip(": "), error_reason=reason, error_message=message)
