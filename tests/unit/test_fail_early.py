"""Every input and the store are opened before any step runs, and a location that cannot be used is refused in
seconds with a reason that says why (optimodel_jobs.probes): a file system the environment lacks, a host that
cannot be reached, no credentials, no permission, or nothing at that URI. Before, the whole pipeline ran and
only its last step (the write to the store) failed, and an unreachable https:// host read as "does not exist".

The S3 cases that need a real server (a missing bucket, rejected keys, a read-only identity) are in
tests/integration/test_store_probes.py, against the local cluster's SeaweedFS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimodel_contracts.jobconfig import parse_config
from optimodel_jobs import errors, probes
from optimodel_jobs.errors import OptimizeError
from optimodel_jobs.pipeline import run
from optimodel_jobs.zoo import build

ROOT = Path(__file__).resolve().parents[2]


class Steps:
    """Records which steps the pipeline started (a real Progress, as the CLI's, without a console)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, step: str) -> None:
        self.started.append(step)

    def finish(self, step: str, summary: str, seconds: float) -> None:
        pass

    def fail(self, step: str, message: str, seconds: float) -> None:
        pass


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build("digits-mlp-tiny")


def _config(mlp: Any, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "fail-early",
        "source": {"uri": str(mlp.onnx), "format": "onnx"},
        "evaluation": {"dataset": str(mlp.evaluation), "metric": "accuracy"},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "latency": {"batchSizes": [1], "iterations": 2, "warmup": 0, "rounds": 1, "measureMemory": False},
        "store": str(tmp_path / "store"),
        "workDir": str(tmp_path / "work"),
    }
    config.update(changes)
    return config


def _refused_early(config: dict[str, Any], within_s: float = 8.0) -> OptimizeError:
    """The run is refused in the probe step: no dataset read, no source loaded, nothing built."""
    steps = Steps()
    started = time.monotonic()
    with pytest.raises(OptimizeError) as caught:
        run(parse_config(config), steps)
    elapsed = time.monotonic() - started
    assert steps.started == ["open inputs and store"], steps.started
    assert elapsed < within_s, f"refused after {elapsed:.1f}s"
    assert "Traceback" not in caught.value.message
    return caught.value


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS keys anywhere botocore looks (environment, shared files, instance metadata)."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def test_a_store_whose_file_system_is_not_installed_is_refused_before_any_step(mlp: Any, tmp_path: Path) -> None:
    # adlfs (abfs://) is not part of any extra: the same failure as s3:// without s3fs, on a real missing package.
    error = _refused_early(_config(mlp, tmp_path, store="abfs://models/optimodel"))
    assert error.reason == errors.FILESYSTEM_MISSING
    assert error.message.startswith("store abfs://models/optimodel:") and "adlfs" in error.message
    assert not (tmp_path / "work" / "source").exists()


def test_s3_without_s3fs_names_the_package_and_the_extra(mlp: Any, tmp_path: Path) -> None:
    """The issue's case: `--store s3://...` in an environment without s3fs (here: its import refused)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoS3fs:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 's3fs' or name.startswith('s3fs.'):\n"
        "            raise ModuleNotFoundError(\"No module named 's3fs'\")\n"
        "sys.meta_path.insert(0, _NoS3fs())\n"
    )
    config = json.dumps(_config(mlp, tmp_path, store="s3://models/optimodel"))
    termination = tmp_path / "termination-log"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "optimodel_jobs", "--config", config], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
             "OPTIMODEL_TERMINATION_LOG": str(termination)},
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    payload = json.loads(termination.read_text())
    assert payload["reason"] == errors.FILESYSTEM_MISSING
    assert "s3fs" in payload["message"] and "optimodel[jobs]" in payload["message"]
    assert "- read datasets" not in completed.stdout and "variant int8" not in completed.stdout
    assert time.monotonic() - started < 120


def test_the_jobs_extra_installs_s3fs_and_gcsfs() -> None:
    jobs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["jobs"]
    assert {dep.split(">")[0].split("=")[0].split("[")[0] for dep in jobs} >= {"s3fs", "gcsfs"}
    import gcsfs  # noqa: F401 - installed with the extra
    import s3fs  # noqa: F401


def test_an_https_host_that_refuses_is_unreachable_not_missing(mlp: Any, tmp_path: Path) -> None:
    error = _refused_early(_config(mlp, tmp_path, evaluation={"dataset": "https://127.0.0.1:9/eval.npz", "metric": "accuracy"}))
    assert error.reason == errors.HOST_UNREACHABLE
    assert "evaluation.dataset https://127.0.0.1:9/eval.npz" in error.message
    assert "does not exist" not in error.message and "127.0.0.1" in error.message


def test_an_s3_endpoint_that_refuses_is_unreachable_within_seconds(
    mlp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_aws: None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    error = _refused_early(_config(mlp, tmp_path, store="s3://optimodel/runs"))
    assert error.reason == errors.HOST_UNREACHABLE
    assert error.message.startswith("store s3://optimodel/runs:") and "127.0.0.1" in error.message


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A host that accepts connections and never answers (as a black-holed address looks to a client)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for connection in held:
        connection.close()
    listener.close()


def test_a_host_that_never_answers_is_refused_at_the_deadline(silent_server: str) -> None:
    target = probes.Target("evaluation.dataset", f"{silent_server}/eval.npz", "dataset")
    started = time.monotonic()
    with pytest.raises(OptimizeError) as caught:
        probes.probe(target, deadline_s=1.5)
    assert time.monotonic() - started < 5
    assert caught.value.reason == errors.HOST_UNREACHABLE
    assert "no answer within 2 s" in caught.value.message and silent_server in caught.value.message


def test_no_credentials_for_an_s3_store(mlp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_aws: None) -> None:
    # botocore signs before it connects: without keys, no server is needed to tell.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    error = _refused_early(_config(mlp, tmp_path, store="s3://optimodel/runs"))
    assert error.reason == errors.CREDENTIALS_MISSING
    assert "AWS_ACCESS_KEY_ID" in error.message and "s3://optimodel/runs" in error.message


def test_a_missing_source_is_refused_before_the_data_is_read(mlp: Any, tmp_path: Path) -> None:
    error = _refused_early(_config(mlp, tmp_path, source={"uri": str(tmp_path / "nope.onnx")}))
    assert error.reason == errors.SOURCE_UNREADABLE
    assert error.message == f"source.uri {tmp_path / 'nope.onnx'}: does not exist"


def test_a_missing_calibration_dataset_is_refused_before_the_evaluation_is_read(mlp: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "calib.npz")
    error = _refused_early(_config(mlp, tmp_path, calibration={"dataset": missing}))
    assert error.reason == errors.DATASET_UNREADABLE
    assert error.message == f"calibration.dataset {missing}: does not exist"


def test_a_store_that_may_not_be_written_is_permission_denied(mlp: Any, tmp_path: Path) -> None:
    # /sys is read-only for every user, root included (this runs as root, where chmod would not refuse).
    error = _refused_early(_config(mlp, tmp_path, store="/sys/optimodel-store"))
    assert error.reason == errors.PERMISSION_DENIED
    assert error.message.startswith("store /sys/optimodel-store: permission denied")


def test_the_store_probe_leaves_nothing_behind(mlp: Any, tmp_path: Path) -> None:
    store = tmp_path / "fresh-store"
    probes.probe(probes.Target("store", str(store), "store"))
    assert store.is_dir() and list(store.iterdir()) == []


def test_every_location_of_the_config_is_probed_once(mlp: Any, tmp_path: Path) -> None:
    config = parse_config(_config(
        mlp, tmp_path, calibration={"dataset": str(mlp.calibration)}, training=str(mlp.train),
        variants=[{"name": "int8", "quantize": {"mode": "static", "calibration": {"dataset": str(mlp.calibration)}}},
                  {"name": "student", "distill": {"dataset": str(mlp.train), "teacher": {"uri": "s3://t/teacher.pt",
                                                                                        "format": "torch"}}}],
    ))
    found = [(t.field, t.kind) for t in probes.targets(config)]
    assert found == [("source.uri", "source"), ("evaluation.dataset", "dataset"), ("calibration.dataset", "dataset"),
                     ("training", "dataset"), ("variants[student].distill.teacher.uri", "source"), ("store", "store")]


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server answering /401, /403 and anything else with that status (404 for the rest)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status = {"/401/eval.npz": 401, "/403/eval.npz": 403}.get(self.path, 404)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer  # noqa: N815 - http.server's names

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("path", "reason", "words"), [
    ("401/eval.npz", errors.CREDENTIALS_MISSING, "asks for credentials (HTTP 401)"),
    ("403/eval.npz", errors.PERMISSION_DENIED, "permission denied: the identity in use may not read it"),
    ("missing/eval.npz", errors.DATASET_UNREADABLE, "does not exist"),
])
def test_an_http_dataset_refused_by_its_server_says_how(
    mlp: Any, tmp_path: Path, http_server: str, path: str, reason: str, words: str
) -> None:
    error = _refused_early(_config(mlp, tmp_path, evaluation={"dataset": f"{http_server}/{path}", "metric": "accuracy"}))
    assert error.reason == reason
    assert error.message.startswith(f"evaluation.dataset {http_server}/{path}: ") and words in error.message
