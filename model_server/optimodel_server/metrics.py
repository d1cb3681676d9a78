"""Every Prometheus metric the server exports, in one place, on an injected registry.

Each metric carries ``model``, ``revision`` and ``pool`` labels: the rollout compares revisions and
pools side by side. Label children are bound once here, so the hot path only calls ``observe``/``inc``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .transient import TRANSIENT_REASONS

# From 100 µs (a small MLP on loopback) to 10 s (a stuck GPU): the SLO is read off these buckets.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LOAD_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

BASE_LABELS = ("model", "revision", "pool")
# The codes an inference request can be answered with (docs/model-server.md, errors.py).
ANSWER_CODES = (200, 400, 404, 413, 429, 500, 503)


class ServerMetrics:
    """The server's metrics, bound to one (model, revision, pool)."""

    def __init__(self, registry: CollectorRegistry, model: str, revision: str, pool: str) -> None:
        self.registry = registry
        self.base = {"model": model, "revision": revision, "pool": pool}
        labels = BASE_LABELS
        self._request_duration = Histogram(
            "optimodel_request_duration_seconds",
            "Time from the request's arrival at the endpoint to its answer (inference requests).",
            labels, registry=registry, buckets=LATENCY_BUCKETS,
        )
        self._inference_duration = Histogram(
            "optimodel_inference_duration_seconds",
            "Time ONNX Runtime spent on one batch.",
            labels, registry=registry, buckets=LATENCY_BUCKETS,
        )
        self._requests = Counter(
            "optimodel_requests", "Inference requests answered, by HTTP status code.",
            (*labels, "code"), registry=registry,
        )
        self._errors = Counter(
            "optimodel_request_errors", "Inference requests answered with an error, by code and reason.",
            (*labels, "code", "reason"), registry=registry,
        )
        self._inflight = Gauge(
            "optimodel_inflight_requests", "Inference requests being handled now.", labels, registry=registry
        )
        self._queue_depth = Gauge(
            "optimodel_queue_depth", "Requests waiting for the batcher.", labels, registry=registry
        )
        self._batch_size = Histogram(
            "optimodel_batch_size", "Requests merged into one inference call.", labels,
            registry=registry, buckets=BATCH_BUCKETS,
        )
        self._load_seconds = Gauge(
            "optimodel_model_load_seconds", "Time to fetch, verify, load and warm the model.", labels,
            registry=registry,
        )
        self._ready = Gauge(
            "optimodel_model_ready", "1 when the model is verified, loaded and serving.", labels, registry=registry
        )
        self._integrity_failures = Counter(
            "optimodel_artifact_integrity_failures",
            "Artifacts refused at verification (never served), by reason.",
            (*labels, "reason"), registry=registry,
        )
        self._load_failures = Counter(
            "optimodel_model_load_failures",
            "Artifacts not served for a reason other than integrity (fetch failed, gate not passed, ONNX Runtime refused).",
            (*labels, "reason"), registry=registry,
        )
        self._fetch_attempts = Counter(
            "optimodel_artifact_fetch_attempts",
            "Fetches of the artifact begun: 1 after a start whose store answered, n+1 after n retries.",
            labels, registry=registry,
        )
        self._fetch_unavailable = Counter(
            "optimodel_artifact_fetch_unavailable",
            "Fetches that failed because the store could not answer now (HostUnreachable, StoreUnavailable), "
            "each followed by a retry with back-off; never an integrity failure.",
            (*labels, "reason"), registry=registry,
        )
        self._fetch_retrying = Gauge(
            "optimodel_artifact_fetch_retrying",
            "1 while the server waits to fetch its artifact again from an unreachable store.",
            labels, registry=registry,
        )
        self._provider_fallback = Counter(
            "optimodel_execution_provider_fallback",
            "Asked-for execution providers that were not available, and what ran instead.",
            (*labels, "requested", "used"), registry=registry,
        )
        self._revision_info = Info(
            "optimodel_revision", "What this server serves (artifact sha256, variant, provider).",
            labels, registry=registry,
        )
        self._drift_psi = Gauge(
            "optimodel_drift_psi",
            "Population stability index of an input feature against the artifact's reference, over the window.",
            (*labels, "feature"), registry=registry,
        )
        self._drift_output_psi = Gauge(
            "optimodel_drift_output_psi",
            "Population stability index of the model's output against the artifact's reference, over the window.",
            labels, registry=registry,
        )
        self._drift_max_psi = Gauge(
            "optimodel_drift_max_psi", "The largest input-feature PSI over the window.", labels, registry=registry
        )
        self._drift_samples = Gauge(
            "optimodel_drift_window_samples", "Rows in the drift window the PSI gauges are computed over.",
            labels, registry=registry,
        )
        self._output_bins = Counter(
            "optimodel_output_bin",
            "Predictions per output bin of the drift reference (the predicted class for classifiers, the bin of the "
            "output profile's edges for regressors), as the drift monitor bins them: every row up to "
            "--drift-max-rows-per-interval per interval, then a uniform sample of batches. Two revisions' "
            "increases over the same window compare their predictions on the same live traffic.",
            (*labels, "bin"), registry=registry,
        )
        self._faults = Counter(
            "optimodel_faults_injected", "Faults injected on purpose (end-to-end tests), by kind.",
            (*labels, "kind"), registry=registry,
        )

        b = self.base
        self.request_duration = self._request_duration.labels(**b)
        self.inference_duration = self._inference_duration.labels(**b)
        self.inflight = self._inflight.labels(**b)
        self.queue_depth = self._queue_depth.labels(**b)
        self.batch_size = self._batch_size.labels(**b)
        self.load_seconds = self._load_seconds.labels(**b)
        self.ready = self._ready.labels(**b)
        self.fetch_attempts = self._fetch_attempts.labels(**b)
        self.fetch_retrying = self._fetch_retrying.labels(**b)
        self.drift_output_psi = self._drift_output_psi.labels(**b)
        self.drift_max_psi = self._drift_max_psi.labels(**b)
        self.drift_samples = self._drift_samples.labels(**b)
        self._by_code: dict[int, object] = {}
        self._feature_children: dict[str, object] = {}
        self._bin_children: list = []
        # Created at zero so that a rate() over them has a series before the first request. Every code the
        # server answers, not just 200: a series born at its first error loses what it counted before its
        # first scrape (measured: 76 injected 500s within one scrape interval read as an increase of 0).
        self.ready.set(0)
        self.fetch_retrying.set(0)
        for code in ANSWER_CODES:
            self.requests_by_code(code)
        # At zero from the start too: an alert on increase() sees the store's first outage.
        for reason in TRANSIENT_REASONS:
            self._fetch_unavailable.labels(**b, reason=reason)

    def requests_by_code(self, code: int) -> Counter:
        child = self._by_code.get(code)
        if child is None:
            child = self._requests.labels(**self.base, code=str(code))
            self._by_code[code] = child
        return child  # type: ignore[return-value]

    def record_answer(self, code: int, reason: str | None, seconds: float) -> None:
        """One inference request answered: latency, the code counter, and the error counter if it failed."""
        self.request_duration.observe(seconds)
        self.requests_by_code(code).inc()
        if code >= 400:
            self._errors.labels(**self.base, code=str(code), reason=reason or "unknown").inc()

    def integrity_failure(self, reason: str) -> None:
        self._integrity_failures.labels(**self.base, reason=reason).inc()

    def load_failure(self, reason: str) -> None:
        self._load_failures.labels(**self.base, reason=reason).inc()

    def fetch_unavailable(self, reason: str) -> None:
        self._fetch_unavailable.labels(**self.base, reason=reason).inc()

    def provider_fallback(self, requested: str, used: str) -> None:
        self._provider_fallback.labels(**self.base, requested=requested, used=used).inc()

    def fault_injected(self, kind: str) -> None:
        self._faults.labels(**self.base, kind=kind).inc()

    def set_revision_info(self, info: dict[str, str]) -> None:
        self._revision_info.labels(**self.base).info(info)

    def init_output_bins(self, bins: int) -> None:
        """Create every output bin's counter at zero, so that the first predictions count in an increase()."""
        self._bin_children = [self._output_bins.labels(**self.base, bin=str(i)) for i in range(bins)]

    def add_output_bins(self, counts) -> None:  # noqa: ANN001 - a numpy array of counts per bin
        """Add one binned chunk of predictions (from the drift monitor's background update, never per request)."""
        children = self._bin_children
        if len(children) < len(counts):
            self.init_output_bins(len(counts))
            children = self._bin_children
        for child, count in zip(children, counts):
            if count:
                child.inc(int(count))

    def set_feature_psi(self, feature: str, psi: float) -> None:
        child = self._feature_children.get(feature)
        if child is None:
            child = self._drift_psi.labels(**self.base, feature=feature)
            self._feature_children[feature] = child
        child.set(psi)  # type: ignore[attr-defined]
