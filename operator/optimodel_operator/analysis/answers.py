"""What a provider hands back for one query: the samples of an instant vector, or a typed error. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class QueryErrorKind(StrEnum):
    UNREACHABLE = "Unreachable"  # nothing answered (connection refused, DNS, TLS)
    TIMEOUT = "Timeout"  # no answer within the provider's timeout
    REJECTED = "Rejected"  # Prometheus answered with an error (bad PromQL, HTTP 4xx/5xx)
    MALFORMED = "Malformed"  # an answer the provider could not read (not an instant vector)


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value (NaN and ±Inf kept as Prometheus sent them)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class QueryResult:
    """Prometheus answered ``query``; ``samples`` may be empty (no series matched: no data)."""

    query: str
    samples: tuple[Sample, ...] = ()

    def finite_values(self) -> list[float]:
        """The values that are numbers (a NaN, e.g. 0/0 or a quantile over no requests, is no data)."""
        return [s.value for s in self.samples if not math.isnan(s.value)]


@dataclass(frozen=True)
class QueryError:
    """No usable answer to ``query``: Prometheus unreachable, too slow, or it refused the query."""

    query: str
    kind: QueryErrorKind
    message: str = field(default="")


Answer = QueryResult | QueryError
