"""Every PromQL query the analysis runs, in one module. Pure: text in, text out.

Each query is scoped by label to one namespace, model, revision and node pool (``Scope``) over a window
(a PromQL range such as ``30s``), and aggregates over the revision's pods so that it answers one number
(or, for the output bins, one number per bin). The labels: ``namespace`` is the target label Prometheus'
pod discovery gives every scraped pod; ``model``, ``revision`` and ``pool`` are on every metric the
model server exports (``--model-name``, ``--revision``, ``--pool``; model_server/optimodel_server/metrics.py).
docs/analysis.md lists each query with what its answer means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from optimodel_operator.api.common import DURATION_PATTERN
from optimodel_operator.api.rollout import QUERY_PLACEHOLDERS, QUERY_TEMPLATE_PATTERN

REQUEST_DURATION = "optimodel_request_duration_seconds"
REQUESTS = "optimodel_requests_total"
DRIFT_MAX_PSI = "optimodel_drift_max_psi"
DRIFT_WINDOW_ROWS = "optimodel_drift_window_samples"
# PSI over few rows is biased upwards (empty bins are floored at 1e-4, each costing ~0.7): measured on the
# local cluster, a server's largest feature PSI over its first ~25 rows of reference-like traffic read 2.5-3.
# Pods whose drift window holds fewer rows than this are left out of the input-drift check (no data).
DRIFT_MIN_ROWS = 500
OUTPUT_BINS = "optimodel_output_bin_total"
OUTPUT_BIN_LABEL = "bin"
# Answers the server could not give: server errors and load shedding. A 4xx is the caller's mistake
# (a malformed tensor is refused by every revision alike) and does not count against the canary.
ERROR_CODES = "5..|429"

PLACEHOLDERS = QUERY_PLACEHOLDERS
_PLACEHOLDER = re.compile(r"\{\{(" + "|".join(QUERY_PLACEHOLDERS) + r")\}\}")


def quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True)
class Scope:
    """Which series a query reads: one revision of one model on one pool, over ``window``."""

    namespace: str
    model: str
    revision: str
    pool: str
    window: str = "30s"

    def __post_init__(self) -> None:
        if not re.fullmatch(DURATION_PATTERN, self.window):
            raise ValueError(f"not a PromQL window: {self.window!r} (write e.g. 30s, 1m)")

    def selector(self, **extra: str) -> str:
        """The label matchers, e.g. ``namespace="ml", model="digits", revision="r2", pool="cpu"``;
        ``extra`` adds regex matchers (``code="5..|429"`` → ``code=~"5..|429"``)."""
        matchers = [f"{name}={quote(value)}" for name, value in
                    (("namespace", self.namespace), ("model", self.model), ("revision", self.revision),
                     ("pool", self.pool))]
        matchers += [f"{name}=~{quote(pattern)}" for name, pattern in extra.items()]
        return ", ".join(matchers)

    def with_revision(self, revision: str) -> Scope:
        return replace(self, revision=revision)


def p99_latency_ms(scope: Scope) -> str:
    """The 99th percentile request latency in milliseconds, from the server's histogram over the window."""
    return (f"1000 * histogram_quantile(0.99, sum by (le) "
            f"(rate({REQUEST_DURATION}_bucket{{{scope.selector()}}}[{scope.window}])))")


def error_rate(scope: Scope) -> str:
    """Share of requests answered 5xx or 429 over the window (NaN, i.e. no data, when none came)."""
    return (f"(sum(rate({REQUESTS}{{{scope.selector(code=ERROR_CODES)}}}[{scope.window}])) or vector(0))"
            f" / sum(rate({REQUESTS}{{{scope.selector()}}}[{scope.window}]))")


def request_count(scope: Scope) -> str:
    """Requests answered (any code) over the window: the sample size ``rollout.minSamples`` is about."""
    return f"sum(increase({REQUESTS}{{{scope.selector()}}}[{scope.window}]))"


def input_drift_psi(scope: Scope, min_rows: int = DRIFT_MIN_ROWS) -> str:
    """The largest input-feature PSI against the artifact's reference, now, over the pods whose drift window
    holds at least ``min_rows`` rows (each pod's latest value within the window)."""
    sel, w = scope.selector(), scope.window
    return (f"max(last_over_time({DRIFT_MAX_PSI}{{{sel}}}[{w}])"
            f" and last_over_time({DRIFT_WINDOW_ROWS}{{{sel}}}[{w}]) >= {min_rows})")


def output_bins(scope: Scope) -> str:
    """Predictions per output bin over the window (one sample per ``bin``): run once for the canary and once
    for the stable revision, then compare the two vectors (prediction drift between revisions)."""
    return f"sum by ({OUTPUT_BIN_LABEL}) (increase({OUTPUT_BINS}{{{scope.selector()}}}[{scope.window}]))"


def template_errors(template: str) -> list[str]:
    """What is wrong with a user query's placeholders (the API's rule: every ``{{`` starts a known one)."""
    if re.fullmatch(QUERY_TEMPLATE_PATTERN, template):
        return []
    return sorted(set(re.findall(r"\{\{[^}]*\}?\}?", template)) - {"{{" + p + "}}" for p in PLACEHOLDERS}) or ["{{"]


def render(template: str, scope: Scope) -> str:
    """A user check's PromQL with ``{{namespace}}``, ``{{model}}``, ``{{revision}}``, ``{{pool}}`` replaced by
    the scope's values (escaped for use inside a quoted label matcher) and ``{{window}}`` by the window."""
    problems = template_errors(template)
    if problems:
        raise ValueError(f"query template has unknown placeholders: {', '.join(problems)}")
    values = {"namespace": scope.namespace, "model": scope.model, "revision": scope.revision,
              "pool": scope.pool, "window": scope.window}

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name == "window" else quote(values[name])[1:-1]

    return _PLACEHOLDER.sub(substitute, template)
