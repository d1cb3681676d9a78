"""A server that starts while its artifact store is unreachable retries the fetch with back-off and becomes
ready by itself when the store returns; an artifact that fails verification is still refused at once, never
retried. Every failure here is a real one: a closed port, a local HTTP server stopped or started late, a local
endpoint answering 5xx/403/404 as a busy or strict S3 would. Nothing is mocked."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from optimodel_contracts.artifacts import ArtifactIntegrityError, fetch_verified, read_manifest, store_root_of
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from _server_helpers import infer_body, sample_value, scrape
from optimodel_operator.controller.kube import _ready_reason_of
from optimodel_server.config import ServerConfig
from optimodel_server.dataplane import retry_delay_s
from optimodel_server.loader import ModelRefused, StoreUnavailable, load_model
from optimodel_server.sample_artifact import write_sample_artifact
from optimodel_server.server import build
from optimodel_server.transient import classify_fetch_error

BASE = {"model": "mlp", "revision": "0", "pool": "default"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class FileStore:
    """A directory served over HTTP on a fixed port, started and stopped at will (a store that goes and comes)."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), functools.partial(_Quiet, directory=str(self.directory)))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _answering(status: int, body: bytes = b"", content_type: str = "text/plain") -> ThreadingHTTPServer:
    """A local endpoint that answers every GET and HEAD with ``status`` (a store that is up but says no)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _s3_error(code: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>m</Message></Error>'.encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, str, FileStore]]:
    """(root folder, manifest path relative to it, the HTTP store over it, not started)."""
    uri = write_sample_artifact(str(tmp_path / "root" / "store"), hidden=8)
    relative = uri.split(str(tmp_path / "root") + "/", 1)[1]
    http = FileStore(tmp_path / "root", _free_port())
    try:
        yield tmp_path / "root", relative, http
    finally:
        http.stop()


def _corrupt_blob(root: Path, relative: str) -> None:
    manifest_uri = str(root / relative)
    blob = Path(store_root_of(manifest_uri)) / read_manifest(manifest_uri).blob
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def _fetch_outcome(uri: str, cache: Path) -> StoreUnavailable | ModelRefused:
    try:
        load_model(uri, cache, None, 1)
    except (StoreUnavailable, ModelRefused) as outcome:
        return outcome
    raise AssertionError(f"{uri} was fetched and loaded")


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keys for s3fs, one try per request (botocore would retry a 503 four times), and a fresh s3fs instance:
    fsspec caches file systems by arguments, not by the environment, and each test has its own endpoint."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


# --- classification of real failures ---------------------------------------------------------------------------


def test_an_http_store_that_refuses_the_connection_is_unreachable_not_a_missing_manifest(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}/store/manifests/mlp/a.json"
    # The trap: fsspec's HTTP file system says FileNotFoundError, and the contracts call that ManifestMissing.
    with pytest.raises(ArtifactIntegrityError) as raised:
        fetch_verified(uri, tmp_path / "cache")
    assert raised.value.reason == "ManifestMissing"
    failure = classify_fetch_error(raised.value)
    assert failure.transient and failure.reason == "HostUnreachable", failure
    assert "ConnectionRefusedError" in failure.detail, failure.detail
    outcome = _fetch_outcome(uri, tmp_path / "cache")
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "HostUnreachable", outcome


def test_an_http_store_that_was_stopped_is_unreachable(store: tuple[Path, str, FileStore], tmp_path: Path) -> None:
    root, relative, http = store
    uri = f"http://127.0.0.1:{http.port}/{relative}"
    http.start()
    manifest, _ = fetch_verified(uri, tmp_path / "first")  # it answered while it ran
    http.stop()
    outcome = _fetch_outcome(uri, tmp_path / "cache")
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "HostUnreachable", outcome
    assert manifest.name == "mlp"


def test_a_host_name_that_does_not_resolve_is_unreachable(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 2606): the resolver's answer is a socket.gaierror under aiohttp's error.
    outcome = _fetch_outcome("http://optimodel-store.invalid/store/manifests/mlp/a.json", tmp_path / "cache")
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "HostUnreachable", outcome


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_an_http_store_answering_not_now_is_retried(status: int, tmp_path: Path) -> None:
    server = _answering(status)
    try:
        outcome = _fetch_outcome(f"http://127.0.0.1:{server.server_address[1]}/store/manifests/mlp/a.json",
                                 tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "StoreUnavailable", outcome
    assert str(status) in outcome.message


@pytest.mark.parametrize(("status", "reason"), [(404, "ManifestMissing"), (403, "PermissionDenied"),
                                                (401, "CredentialsMissing")])
def test_an_http_store_that_answers_no_is_refused_at_once(status: int, reason: str, tmp_path: Path) -> None:
    server = _answering(status)
    try:
        outcome = _fetch_outcome(f"http://127.0.0.1:{server.server_address[1]}/store/manifests/mlp/a.json",
                                 tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(outcome, ModelRefused) and outcome.reason == reason, outcome
    assert reason in outcome.message, "the readiness body and the operator's status name the reason"


def test_a_missing_blob_in_a_reachable_http_store_is_refused(store: tuple[Path, str, FileStore], tmp_path: Path) -> None:
    root, relative, http = store
    manifest_uri = str(root / relative)
    (Path(store_root_of(manifest_uri)) / read_manifest(manifest_uri).blob).unlink()
    http.start()
    outcome = _fetch_outcome(f"http://127.0.0.1:{http.port}/{relative}", tmp_path / "cache")
    assert isinstance(outcome, ModelRefused) and outcome.reason == "BlobMissing" and outcome.integrity, outcome


def test_a_manifest_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "store" / "manifests" / "mlp" / "edited.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{not json")
    for uri in (str(manifest), f"file://{manifest}"):
        outcome = _fetch_outcome(uri, tmp_path / "cache")
        assert isinstance(outcome, ModelRefused) and outcome.reason == "ManifestInvalid" and outcome.integrity, outcome


def test_a_missing_local_manifest_is_refused(tmp_path: Path) -> None:
    outcome = _fetch_outcome(f"file://{tmp_path}/store/manifests/mlp/absent.json", tmp_path / "cache")
    assert isinstance(outcome, ModelRefused) and outcome.reason == "ManifestMissing", outcome


def test_an_s3_endpoint_that_refuses_the_connection_is_unreachable(s3_env: None, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    # botocore's EndpointConnectionError is no OSError: before, it escaped the loader and the load task died.
    outcome = _fetch_outcome("s3://models/store/manifests/mlp/a.json", tmp_path / "cache")
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "HostUnreachable", outcome


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (503, "ServiceUnavailable"), (500, "InternalError")])
def test_an_s3_endpoint_answering_slow_down_is_retried(s3_env: None, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, status: int, code: str) -> None:
    server = _answering(status, _s3_error(code), "application/xml")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        outcome = _fetch_outcome("s3://models/store/manifests/mlp/a.json", tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(outcome, StoreUnavailable) and outcome.reason == "StoreUnavailable", outcome


@pytest.mark.parametrize(("status", "code", "reason"), [
    (403, "InvalidAccessKeyId", "PermissionDenied"),  # a HEAD has no body: a 403 is all botocore sees
    (403, "AccessDenied", "PermissionDenied"),
    (404, "NoSuchKey", "ManifestMissing"),
    (404, "NoSuchBucket", "ManifestMissing"),
])
def test_an_s3_endpoint_that_answers_no_is_refused_at_once(s3_env: None, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path, status: int, code: str, reason: str) -> None:
    server = _answering(status, _s3_error(code), "application/xml")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        outcome = _fetch_outcome("s3://models/store/manifests/mlp/a.json", tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(outcome, ModelRefused) and outcome.reason == reason, outcome


def test_the_back_off_doubles_from_one_second_to_thirty_and_stays_there() -> None:
    assert [retry_delay_s(n, 1.0, 30.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert retry_delay_s(10_000, 1.0, 30.0) == 30.0  # months of retries: no overflow
    with pytest.raises(ValueError, match="failed_attempts"):
        retry_delay_s(0, 1.0, 30.0)


def test_a_retry_cap_below_the_first_wait_is_refused_naming_the_fields() -> None:
    with pytest.raises(ValueError, match="fetch_retry_max_s"):
        ServerConfig(manifest_uri="x", fetch_retry_initial_s=5.0, fetch_retry_max_s=1.0)


# --- the server: retrying, then ready by itself ----------------------------------------------------------------


def _client(uri: str, tmp: Path, **overrides: object) -> tuple[TestClient, object]:
    settings: dict[str, object] = {"fetch_retry_initial_s": 0.05, "fetch_retry_max_s": 0.2, **overrides}
    config = ServerConfig(manifest_uri=uri, cache_dir=tmp / "cache", model_name="mlp", **settings)
    plane, app = build(config, CollectorRegistry())
    client = TestClient(app, raise_server_exceptions=False)
    client.__enter__()
    return client, plane


def _until(what: str, check, timeout_s: float = 20.0):  # noqa: ANN001, ANN202 - a predicate and its value
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_a_server_started_before_its_store_retries_then_serves(store: tuple[Path, str, FileStore], tmp_path: Path) -> None:
    root, relative, http = store
    client, plane = _client(f"http://127.0.0.1:{http.port}/{relative}", tmp_path)
    try:
        body = _until("three failed attempts", lambda: (
            (r := client.get("/v2/health/ready").json()).get("attempt", 0) >= 3 and r))
        assert body["ready"] is False and body["state"] == "Retrying", body
        assert body["cause"] == "HostUnreachable" and "ConnectionRefusedError" in body["reason"], body
        assert 0 <= body["nextTryInS"] <= 0.2 and body["nextTryAt"] >= body["retryingSince"], body
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200, "a retrying server is alive: no restart"
        model_ready = client.get("/v2/models/mlp/ready")
        assert model_ready.status_code == 503 and model_ready.json()["state"] == "Retrying"
        refused = client.post("/v2/models/mlp/infer", json=infer_body())
        assert refused.status_code == 503 and "Retrying" in refused.json()["error"]
        families = scrape(client)
        assert sample_value(families, "optimodel_artifact_fetch_retrying", **BASE) == 1
        assert sample_value(families, "optimodel_artifact_fetch_attempts_total", **BASE) >= 3
        assert sample_value(families, "optimodel_artifact_fetch_unavailable_total", reason="HostUnreachable", **BASE) >= 3
        assert sample_value(families, "optimodel_model_ready", **BASE) == 0
        assert not families.get("optimodel_artifact_integrity_failures"), "nothing was refused"
        assert not families.get("optimodel_model_load_failures"), "a retry is not a load failure"

        http.start()  # the store comes back: no restart, the next try fetches and verifies
        _until("ready once the store is back", lambda: client.get("/v2/health/ready").status_code == 200)
        assert plane.state.value == "Ready" and plane.retry is None
        answer = client.post("/v2/models/mlp/infer", json=infer_body())
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 4], answer.text
        assert client.get("/v2/models/mlp").json()["parameters"]["sha256"] == read_manifest(str(root / relative)).sha256
        families = scrape(client)
        attempts = sample_value(families, "optimodel_artifact_fetch_attempts_total", **BASE)
        failed = sample_value(families, "optimodel_artifact_fetch_unavailable_total", reason="HostUnreachable", **BASE)
        assert attempts == failed + 1, (attempts, failed)
        assert sample_value(families, "optimodel_artifact_fetch_retrying", **BASE) == 0
        assert sample_value(families, "optimodel_model_ready", **BASE) == 1
    finally:
        client.__exit__(None, None, None)


def test_a_corrupted_artifact_is_refused_at_once_and_never_retried(store: tuple[Path, str, FileStore],
                                                                  tmp_path: Path) -> None:
    root, relative, http = store
    _corrupt_blob(root, relative)
    http.start()
    client, plane = _client(f"http://127.0.0.1:{http.port}/{relative}", tmp_path)
    try:
        body = _until("refused", lambda: (r := client.get("/v2/health/ready").json()).get("state") == "Refused" and r)
        assert "HashMismatch" in body["reason"] and "attempt" not in body, body
        time.sleep(1.0)  # twenty retry periods of this test's back-off: nothing is tried again
        families = scrape(client)
        assert sample_value(families, "optimodel_artifact_fetch_attempts_total", **BASE) == 1
        assert sample_value(families, "optimodel_artifact_fetch_unavailable_total", reason="HostUnreachable", **BASE) == 0
        assert sample_value(families, "optimodel_artifact_integrity_failures_total", reason="HashMismatch", **BASE) == 1
        assert plane.state.value == "Refused"
        assert client.get("/v2/health/live").status_code == 200
        assert not list((tmp_path / "cache").glob("*.onnx")), "nothing unverified is left to load"
    finally:
        client.__exit__(None, None, None)


def test_a_store_that_returns_with_a_corrupted_artifact_is_refused_not_served(store: tuple[Path, str, FileStore],
                                                                             tmp_path: Path) -> None:
    root, relative, http = store
    _corrupt_blob(root, relative)
    client, plane = _client(f"http://127.0.0.1:{http.port}/{relative}", tmp_path)
    try:
        _until("retrying", lambda: client.get("/v2/health/ready").json().get("attempt", 0) >= 2)
        http.start()
        body = _until("refused", lambda: (r := client.get("/v2/health/ready").json()).get("state") == "Refused" and r)
        assert "HashMismatch" in body["reason"], body
        assert sample_value(scrape(client), "optimodel_artifact_fetch_retrying", **BASE) == 0
        assert client.post("/v2/models/mlp/infer", json=infer_body()).status_code == 503
    finally:
        client.__exit__(None, None, None)


def test_a_retrying_server_shuts_down_promptly(store: tuple[Path, str, FileStore], tmp_path: Path) -> None:
    _, relative, http = store
    client, plane = _client(f"http://127.0.0.1:{http.port}/{relative}", tmp_path, fetch_retry_initial_s=30.0,
                            fetch_retry_max_s=30.0)
    _until("retrying", lambda: plane.state.value == "Retrying")
    started = time.monotonic()
    client.__exit__(None, None, None)  # the lifespan ends: the 30 s wait is cancelled, not sat out
    assert time.monotonic() - started < 5.0
    assert plane.state.value == "Stopping"


def test_the_server_process_becomes_ready_when_its_store_starts_late(store: tuple[Path, str, FileStore],
                                                                     tmp_path: Path) -> None:
    """The real process (uvicorn, the CLI's flags) against an HTTP store that is not there yet."""
    root, relative, http = store
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "optimodel_server", "--manifest", f"http://127.0.0.1:{http.port}/{relative}",
         "--model-name", "mlp", "--host", "127.0.0.1", "--port", str(port), "--cache-dir", str(tmp_path / "cache"),
         "--fetch-retry-initial-s", "0.1", "--fetch-retry-max-s", "0.4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready_body() -> dict | None:
        try:
            return httpx.get(f"{base}/v2/health/ready", timeout=1).json()
        except httpx.TransportError:
            assert process.poll() is None, "the server exited"
            return None

    try:
        retrying = _until("the process reports retrying", lambda: (
            (b := ready_body()) is not None and b.get("attempt", 0) >= 2 and b), timeout_s=60)
        assert retrying["state"] == "Retrying" and retrying["cause"] == "HostUnreachable", retrying
        assert httpx.get(f"{base}/v2/health/live", timeout=1).status_code == 200
        # The operator reports a server's refusal in the model's status; a retrying server has refused nothing.
        assert _ready_reason_of("127.0.0.1", port, timeout=2) is None
        http.start()
        _until("the process is ready", lambda: (b := ready_body()) is not None and b.get("ready") is True, timeout_s=30)
        answer = httpx.post(f"{base}/v2/models/mlp/infer", json=infer_body(), timeout=5)
        assert answer.status_code == 200, answer.text
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, output[-3000:]
    assert "ARTIFACT STORE UNAVAILABLE (HostUnreachable), attempt 1" in output, output[-3000:]
    assert "the artifact store answered at attempt" in output, output[-3000:]
