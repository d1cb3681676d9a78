"""The data plane: what the server does, with no HTTP in sight.

It owns the model's lifecycle (loading -> ready, or refused; loading -> retrying -> ... while the artifact
store cannot be reached; ready -> stopping), answers metadata and readiness, and runs inference through the
batcher, with drift sampling and fault injection around it.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from . import __version__
from .batching import AdaptiveBatcher
from .config import FaultConfig, ServerConfig, container_cpu_threads
from .drift import DriftMonitor
from .errors import InjectedFault, ModelNotFound, ModelNotReady
from .faults import FaultInjector, bias_outputs, fault_wire
from .loader import LoadedModel, ModelRefused, StoreUnavailable, load_model
from .metrics import ServerMetrics
from .protocol import InferRequest

log = logging.getLogger("optimodel_server")

SERVER_NAME = "optimodel"
EXTENSIONS = ["binary_tensor_data"]


class ModelState(str, enum.Enum):
    """Where the served model is in its life."""

    LOADING = "Loading"  # fetching, verifying, opening, warming up; not ready yet
    READY = "Ready"  # verified, loaded and serving; the only state in which readiness is true
    REFUSED = "Refused"  # failed verification or loading; never served, stays so until a restart
    # The artifact store could not answer: the fetch is tried again with back-off, forever; nothing is refused
    # (the operator reports only "Refused" as the server's verdict on an artifact).
    RETRYING = "Retrying"
    STOPPING = "Stopping"  # shutdown began: readiness false, in-flight requests drain


def retry_delay_s(failed_attempts: int, initial_s: float, max_s: float) -> float:
    """Wait after ``failed_attempts`` failed fetches (>= 1): ``initial_s`` doubling each time, capped at ``max_s``
    (1, 2, 4, 8, 16, 30, 30 ... s by default), as a kubelet backs off an image pull. Pure."""
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be >= 1, got {failed_attempts}")
    # The exponent is bounded so that a server retrying for months does not overflow a float.
    return min(max_s, initial_s * 2.0 ** min(failed_attempts - 1, 64))


@dataclass(frozen=True)
class RetryStatus:
    """Where a server waiting for its store stands: what the last try said and when the next one is."""

    reason: str  # HostUnreachable or StoreUnavailable
    message: str
    attempt: int  # fetches tried so far, all failed for a transient reason
    next_try_monotonic: float
    next_try_at: datetime
    since: datetime  # when the first try failed

    def wire(self) -> dict[str, Any]:
        """The readiness body's fields (camelCase, as the rest of the API)."""
        return {
            "cause": self.reason,
            "attempt": self.attempt,
            "nextTryAt": self.next_try_at.isoformat(timespec="milliseconds"),
            "nextTryInS": round(max(0.0, self.next_try_monotonic - time.monotonic()), 3),
            "retryingSince": self.since.isoformat(timespec="milliseconds"),
        }


class DataPlane:
    def __init__(
        self,
        config: ServerConfig,
        metrics: ServerMetrics,
        served_name: str,
        loader: Callable[..., LoadedModel] = load_model,
        faults: FaultInjector | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.name = served_name
        self.version = config.revision
        self.state = ModelState.LOADING
        self.state_reason = "loading the artifact"
        self.loaded: LoadedModel | None = None
        self.batcher: AdaptiveBatcher | None = None
        self.drift: DriftMonitor | None = None
        self.faults = faults or FaultInjector(config.faults)
        self._loader = loader
        self.inflight = 0
        self.retry: RetryStatus | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Fetch, verify and open the model off the event loop; become ready or refused. While the store cannot
        answer, try again with capped exponential back-off until it does (or the server stops)."""
        threads = self.config.intra_op_threads or container_cpu_threads()
        attempt = 0
        while True:
            attempt += 1
            self.metrics.fetch_attempts.inc()
            try:
                loaded = await asyncio.to_thread(
                    self._loader, self.config.manifest_uri, self.config.cache_dir, self.config.execution_provider, threads
                )
            except StoreUnavailable as unavailable:
                if self.state is ModelState.STOPPING:
                    return
                delay = retry_delay_s(attempt, self.config.fetch_retry_initial_s, self.config.fetch_retry_max_s)
                self._retry_later(unavailable, attempt, delay)
                await asyncio.sleep(delay)
                if self.state is ModelState.STOPPING:
                    return
                continue
            except ModelRefused as refusal:
                self._end_retrying(attempt)
                if self.state is not ModelState.STOPPING:
                    self._refuse(refusal)
                return
            self._end_retrying(attempt)
            if self.state is ModelState.STOPPING:
                return
            self._serve(loaded)
            return

    def _retry_later(self, unavailable: StoreUnavailable, attempt: int, delay_s: float) -> None:
        now = datetime.now(timezone.utc)
        since = self.retry.since if self.retry is not None else now
        self.retry = RetryStatus(
            reason=unavailable.reason, message=unavailable.message, attempt=attempt,
            next_try_monotonic=time.monotonic() + delay_s, next_try_at=now + timedelta(seconds=delay_s),
            since=since,
        )
        self.state = ModelState.RETRYING
        self.state_reason = (
            f"retrying: the artifact store is unavailable ({unavailable.reason}) after {attempt} attempt(s); "
            f"next try in {delay_s:.1f} s: {unavailable.message}"
        )
        self.metrics.fetch_unavailable(unavailable.reason)
        self.metrics.fetch_retrying.set(1)
        self.metrics.ready.set(0)
        # One line per attempt: at most one every fetch_retry_max_s (30 s) once the back-off is at its cap.
        log.warning("ARTIFACT STORE UNAVAILABLE (%s), attempt %d, next try in %.1f s: %s",
                    unavailable.reason, attempt, delay_s, unavailable.message)

    def _end_retrying(self, attempt: int) -> None:
        if self.retry is None:
            return
        waited = (datetime.now(timezone.utc) - self.retry.since).total_seconds()
        log.info("the artifact store answered at attempt %d, after %.1f s of retries", attempt, waited)
        self.retry = None
        self.metrics.fetch_retrying.set(0)
        if self.state is ModelState.RETRYING:
            self.state = ModelState.LOADING
            self.state_reason = "loading the artifact"

    def _refuse(self, refusal: ModelRefused) -> None:
        self.state = ModelState.REFUSED
        self.state_reason = refusal.message
        if refusal.integrity:
            self.metrics.integrity_failure(refusal.reason)
        else:
            self.metrics.load_failure(refusal.reason)
        self.metrics.ready.set(0)
        log.error("MODEL REFUSED (%s): %s; readiness stays false", refusal.reason, refusal.message)

    def _serve(self, loaded: LoadedModel) -> None:
        model = loaded.model
        plan = model.provider_plan
        if plan.fallback:
            log.warning("%s", plan.describe())
            self.metrics.provider_fallback(plan.requested, plan.used)
        if self.config.drift_enabled and loaded.manifest.drift_reference is not None:
            self.drift = DriftMonitor(
                loaded.manifest.drift_reference,
                loaded.manifest.task,
                model.output_names[0],
                window_rows=self.config.drift_window,
                interval_s=self.config.drift_interval_s,
                max_rows_per_interval=self.config.drift_max_rows_per_interval,
                publish=self._publish_drift,
                count_outputs=self.metrics.add_output_bins,
            )
            self.metrics.init_output_bins(len(loaded.manifest.drift_reference.output.edges) + 1)
            self.drift.start()
        elif self.config.drift_enabled:
            log.warning("the manifest has no drift reference; drift gauges are not exported")
        metrics = self.metrics
        # The output-bias wrapper only where a fault can bias outputs: at start, or later through fault control.
        faulty = self.config.fault_control or self.config.faults.output_bias != 0
        self.batcher = AdaptiveBatcher(
            self._with_output_faults(model.run) if faulty else model.run,
            batchable=model.batchable,
            max_batch_size=self.config.max_batch_size,
            max_wait_s=self.config.max_batch_wait_ms / 1000.0,
            max_queue=self.config.max_queue,
            inline=self.config.inline_inference,
            on_queue_depth=metrics.queue_depth.set,
            on_batch=self._record_batch,
            observer=self.drift.observe if self.drift is not None else None,
        )
        self.loaded = loaded
        metrics.load_seconds.set(loaded.load_seconds)
        metrics.set_revision_info({
            "sha256": loaded.manifest.sha256,
            "variant": loaded.manifest.name,
            "provider": plan.used,
            "requested_provider": plan.requested,
            "intra_op_threads": str(model.intra_op_threads),
            "batchable": str(model.batchable).lower(),
        })
        # Everything alive now (modules, the session, the app) lives as long as the process: moved out of
        # the collector's sight, a full collection no longer walks it. Measured: p99 at concurrency 16
        # fell from ~17 ms (full collections under batching) to the level of a minimal app.
        gc.collect()
        gc.freeze()
        self.state = ModelState.READY
        self.state_reason = "serving"
        metrics.ready.set(1)
        log.info(
            "serving %s (variant %s, sha256 %s) as %r revision %s on %s with %d intra-op thread(s); loaded in %.3f s",
            loaded.path, loaded.manifest.name, loaded.manifest.sha256[:12], self.name, self.version,
            plan.used, model.intra_op_threads, loaded.load_seconds,
        )

    def _record_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_duration.observe(seconds)

    def _publish_drift(self, per_feature: dict[str, float], output: float, rows: int) -> None:
        for feature, psi in per_feature.items():
            self.metrics.set_feature_psi(feature, psi)
        if per_feature:
            self.metrics.drift_max_psi.set(max(per_feature.values()))
        self.metrics.drift_output_psi.set(output)
        self.metrics.drift_samples.set(rows)

    def begin_shutdown(self) -> None:
        """Readiness goes false at once, so the Service stops routing here while in-flight requests drain."""
        if self.state is not ModelState.STOPPING:
            log.info("shutdown: readiness false, draining in-flight requests")
        self.state = ModelState.STOPPING
        self.state_reason = "shutting down"
        self.metrics.ready.set(0)

    async def shutdown(self, drain_timeout_s: float) -> None:
        self.begin_shutdown()
        if self.batcher is not None:
            await self.batcher.close(drain_timeout_s)
        if self.drift is not None:
            await self.drift.stop()

    # ---- health and metadata ---------------------------------------------------------------------

    @property
    def live(self) -> bool:
        # Alive while the event loop answers; a refused model is not a reason to restart the process.
        return True

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def not_ready_detail(self) -> dict[str, Any]:
        """Why readiness is false, for the 503 body: state and reason, and while retrying the attempt count,
        the next try (time and seconds from now) and the machine-readable cause."""
        detail: dict[str, Any] = {"state": self.state.value, "reason": self.state_reason}
        retry = self.retry
        if self.state is ModelState.RETRYING and retry is not None:
            detail.update(retry.wire())
        return detail

    def _check_name(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.name!r}")
        if version is not None and version != self.version:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; served version is {self.version!r}")

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._check_name(name, version)
        return self.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._check_name(name, version)
        if self.loaded is None:
            raise ModelNotReady(f"model {name!r} is not loaded ({self.state.value}: {self.state_reason})")
        model = self.loaded.model
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": s.wire_shape()} for s in model.inputs.values()],
            "outputs": [{"name": s.name, "datatype": s.datatype, "shape": s.wire_shape()} for s in model.outputs.values()],
            "parameters": {
                "variant": self.loaded.manifest.name,
                "sha256": self.loaded.manifest.sha256,
                "task": self.loaded.manifest.task,
                "execution_provider": model.provider_plan.used,
            },
        }

    # ---- inference -------------------------------------------------------------------------------

    async def infer(self, name: str, version: str | None, request: InferRequest) -> dict[str, np.ndarray]:
        """Outputs for one request, or a domain error."""
        self._check_name(name, version)
        batcher = self.batcher
        # Still answered while stopping: readiness is already false, but until the endpoints and kube-proxy let
        # go of this pod (the shutdown delay) requests keep arriving, and a 503 would count against the
        # revision in the rollout's error rate (a false rollback was seen from exactly that).
        serving = self.state is ModelState.READY or self.state is ModelState.STOPPING
        if not serving or batcher is None or self.loaded is None:
            raise ModelNotReady(f"model {name!r} is not ready ({self.state.value}: {self.state_reason})")
        model = self.loaded.model
        model.check_inputs(request.inputs)
        model.check_output_names(request.output_names)
        inputs = request.inputs
        if self.faults.enabled:
            inputs = await self._inject(inputs)
        # Always through the queue, even when alone in flight: a "run now when alone" shortcut saved
        # ~10 µs at concurrency 1 but, under load, requests arriving one by one each took it and
        # batching never formed (c16 throughput fell from ~12,000 to ~8,000 requests/s).
        outputs = await batcher.submit(inputs)
        if request.output_names is not None:
            return {n: outputs[n] for n in request.output_names}
        return outputs

    def _with_output_faults(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
                            ) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        # Inside the batch, before the drift monitor sees the outputs: the prediction counts show the shift.
        def faulty(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            bias = self.faults.config.output_bias
            outputs = run(feeds)
            if bias:
                self.metrics.fault_injected("output_bias")
                outputs = bias_outputs(outputs, bias)
            return outputs

        return faulty

    async def _inject(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # One decision from one config: a change during the sleep does not reach this request.
        decision = self.faults.decide()
        if decision.delay_s > 0:
            self.metrics.fault_injected("latency")
            await asyncio.sleep(decision.delay_s)
        if decision.fail:
            self.metrics.fault_injected("error")
            raise InjectedFault("injected fault (fault injection is on for this server)")
        if decision.input_shift != 0:
            self.metrics.fault_injected("input_shift")
            inputs = self.faults.shift_inputs(inputs, decision.input_shift)
        return inputs

    # ---- runtime fault control (tests and benchmarks; off unless --fault-control) -----------------

    def fault_settings(self) -> FaultConfig:
        return self.faults.config

    def update_faults(self, change: Callable[[FaultConfig], FaultConfig]) -> FaultConfig:
        """Replace the live fault settings (``change`` maps the current ones to the new ones) for the
        requests that decide from now on; logged old -> new. Returns the new settings."""
        old, new = self.faults.update(change)
        log.info("fault injection changed: %s -> %s", fault_wire(old), fault_wire(new))
        return new
