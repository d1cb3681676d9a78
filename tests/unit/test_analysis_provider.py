"""The analysis's one I/O module against stand-ins: answers parsed, every failure a typed error, fast."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from optimodel_operator.analysis.answers import QueryError, QueryErrorKind, QueryResult
from optimodel_operator.analysis.provider import PrometheusProvider, parse_vector


def test_an_instant_vector_is_parsed_with_labels_and_special_values() -> None:
    result = parse_vector("q", [
        {"metric": {"bin": "0"}, "value": [1.0, "12"]},
        {"metric": {"bin": "1"}, "value": [1.0, "NaN"]},
        {"metric": {}, "value": [1.0, "+Inf"]},
    ])
    assert isinstance(result, QueryResult)
    assert result.samples[0].labels == {"bin": "0"} and result.samples[0].value == 12.0
    assert math.isnan(result.samples[1].value) and result.samples[2].value == math.inf
    assert result.finite_values() == [12.0, math.inf]


@pytest.mark.parametrize("bad", [[{"metric": {}}], [{"value": [1, "x"]}], "text", None])
def test_anything_else_is_malformed(bad: object) -> None:
    result = parse_vector("q", bad)
    assert isinstance(result, QueryError) and result.kind is QueryErrorKind.MALFORMED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_unreachable_at_once() -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    start = time.monotonic()
    answer = provider.query("up")
    assert isinstance(answer, QueryError) and answer.kind is QueryErrorKind.UNREACHABLE
    assert not provider.is_online()
    assert time.monotonic() - start < 2, "no retries: the next analysis is the retry"


class _Prometheus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        if url.path == "/":
            self._send(200, b"Prometheus")
        elif query == "slow":
            time.sleep(1.5)
            self._send(200, b"{}")
        elif query == "bad(":
            self._send(400, json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode())
        else:
            body = {"status": "success", "data": {"resultType": "vector",
                                                  "result": [{"metric": {"pool": "cpu"}, "value": [1, "0.5"]}]}}
            self._send(200, json.dumps(body).encode())

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up (the timeout case)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> str:
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_answers_rejections_and_timeouts(prometheus: str) -> None:
    provider = PrometheusProvider(prometheus, timeout_s=0.5)
    assert provider.is_online()
    ok = provider.query("up")
    assert isinstance(ok, QueryResult) and ok.samples[0].value == 0.5 and ok.samples[0].labels == {"pool": "cpu"}
    rejected = provider.query("bad(")
    assert isinstance(rejected, QueryError) and rejected.kind is QueryErrorKind.REJECTED and "400" in rejected.message
    slow = provider.query("slow")
    assert isinstance(slow, QueryError) and slow.kind is QueryErrorKind.TIMEOUT
