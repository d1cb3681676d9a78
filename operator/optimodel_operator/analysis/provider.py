"""The one module of the analysis that does I/O: PromQL instant queries through prometheus-api-client.

It answers raw values or a typed error, never a verdict: thresholds live in ``measurement``. No retries
here (the next analysis interval is the retry), and a timeout on every request, so that an unreachable
Prometheus is an ``Error`` measurement within ``timeout_s`` rather than a stuck handler.
"""

from __future__ import annotations


import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from optimodel_operator.analysis.answers import Answer, QueryError, QueryErrorKind, QueryResult, Sample


def _float(text: object) -> float:
    # Prometheus sends values as strings: "0.25", "NaN", "+Inf", "-Inf".
    return float(str(text))


def parse_vector(query: str, result: object) -> Answer:
    """An instant-vector (or scalar) result as :class:`QueryResult`, or ``Malformed``."""
    try:
        if isinstance(result, list):
            samples = tuple(Sample(dict(item.get("metric") or {}), _float(item["value"][1])) for item in result)
            return QueryResult(query, samples)
        if isinstance(result, dict) and isinstance(result.get("value"), list):  # a scalar answer
            return QueryResult(query, (Sample({}, _float(result["value"][1])),))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        return QueryError(query, QueryErrorKind.MALFORMED, f"unreadable answer: {error}")
    return QueryError(query, QueryErrorKind.MALFORMED, f"not an instant vector: {str(result)[:200]}")


class PrometheusProvider:
    """Runs PromQL against one Prometheus (``url``), each request bounded by ``timeout_s``."""

    def __init__(self, url: str, timeout_s: float = 5.0, *, headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = PrometheusConnect(url=self.url, headers=headers, disable_ssl=False,
                                         retry=Retry(total=0, read=False, raise_on_status=False), timeout=timeout_s)

    def is_online(self) -> bool:
        """True when Prometheus answers at all (its root page), within the timeout."""
        try:
            return bool(self._client.check_prometheus_connection())
        except requests.RequestException:
            return False

    def query(self, query: str) -> Answer:
        """The instant value of ``query`` now: samples (possibly none), or a typed error."""
        try:
            result = self._client.custom_query(query, timeout=self.timeout_s)
        except requests.Timeout as error:
            return QueryError(query, QueryErrorKind.TIMEOUT, f"no answer from {self.url} within {self.timeout_s:g} s ({error})")
        except requests.ConnectionError as error:
            if "ReadTimeout" in str(error):
                return QueryError(query, QueryErrorKind.TIMEOUT, f"no answer from {self.url} within {self.timeout_s:g} s")
            return QueryError(query, QueryErrorKind.UNREACHABLE, f"{self.url} unreachable ({_short(error)})")
        except requests.RequestException as error:
            return QueryError(query, QueryErrorKind.UNREACHABLE, f"{self.url}: {_short(error)}")
        except PrometheusApiClientException as error:
            return QueryError(query, QueryErrorKind.REJECTED, _short(error))
        except ValueError as error:  # not JSON
            return QueryError(query, QueryErrorKind.MALFORMED, f"unreadable answer from {self.url}: {error}")
        return parse_vector(query, result)


def _short(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = ["PrometheusProvider", "parse_vector"]
