"""Against a real S3 server (the local cluster's SeaweedFS), the Job entrypoint refuses a store or an input it
cannot use before any step runs, with a reason per cause: a bucket that does not exist (StoreNotFound; never
created by the probe), keys the server does not know or a wrong secret (CredentialsInvalid), an identity that
may read and not write (PermissionDenied: the operator's read-only keys), a dataset that is not there
(DatasetUnreadable, "does not exist"). Before, each of these ran the whole pipeline and failed at its end. And
a run into the S3 store that works puts the report next to the run record, and a rerun adds no manifest."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimodel_jobs import errors
from optimodel_jobs.zoo import build
from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def _secret_env(cluster: LocalCluster, namespace: str, name: str) -> dict[str, str]:
    data = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)["data"]
    env = {key: base64.b64decode(value).decode() for key, value in data.items()}
    return {**env, "AWS_ENDPOINT_URL": cluster.s3_endpoint}  # the host's way to the store, not the pods'


@pytest.fixture(scope="module")
def writer(local_cluster: LocalCluster) -> dict[str, str]:
    return _secret_env(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)


@pytest.fixture(scope="module")
def reader(local_cluster: LocalCluster) -> dict[str, str]:
    return _secret_env(local_cluster, seaweedfs.OPERATOR_NAMESPACE, seaweedfs.OPERATOR_SECRET)


@pytest.fixture(scope="module")
def mlp() -> Any:
    return build("digits-mlp-tiny")


@pytest.fixture
def prefix(writer: dict[str, str]) -> Iterator[str]:
    """A fresh folder of the bucket for this test, removed afterwards."""
    where = f"s3://{seaweedfs.BUCKET}/tests/probes-{uuid.uuid4().hex[:10]}"
    yield where
    _python(f"import fsspec\nfs = fsspec.filesystem('s3')\nif fs.exists({where!r}): fs.rm({where!r}, recursive=True)",
            writer)


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=_env(env), capture_output=True, text=True, timeout=120)


def _env(extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    return {**clean, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def _config(mlp: Any, store: str, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "probes",
        "source": {"uri": str(mlp.onnx), "format": "onnx"},
        "evaluation": {"dataset": str(mlp.evaluation), "metric": "accuracy"},
        "variants": [{"name": "int8", "quantize": {"mode": "dynamic"}}],
        "latency": {"batchSizes": [1], "iterations": 5, "warmup": 1, "rounds": 2, "measureMemory": False},
        "store": store,
    }
    config.update(changes)
    return config


def _job(config: dict[str, Any], env: dict[str, str], tmp_path: Path) -> tuple[int, dict[str, str] | None, str, float]:
    """The Job entrypoint as a pod runs it: exit code, its termination message, its output, seconds taken."""
    termination = tmp_path / f"termination-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "optimodel_jobs", "--config", json.dumps(config), "--json"],
                          env=_env({**env, "OPTIMODEL_TERMINATION_LOG": str(termination)}),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    payload = json.loads(termination.read_text()) if termination.exists() else None
    return done.returncode, payload, done.stdout + done.stderr, time.monotonic() - started


def _refused(config: dict[str, Any], env: dict[str, str], tmp_path: Path, reason: str) -> str:
    code, payload, output, _ = _job(config, env, tmp_path)
    assert code == 2, output[-3000:]
    assert payload is not None and payload["reason"] == reason, payload
    # Nothing ran: the probe step is the only one the progress shows.
    assert "open inputs and store" in output and "read datasets" not in output, output[-3000:]
    return payload["message"]


def test_a_store_bucket_that_does_not_exist_is_not_created(mlp: Any, writer: dict[str, str], tmp_path: Path) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    message = _refused(_config(mlp, f"s3://{bucket}/artifacts", tmp_path), writer, tmp_path, errors.STORE_NOT_FOUND)
    assert message.startswith(f"store s3://{bucket}/artifacts:") and "does not exist" in message
    listed = _python(f"import fsspec\nprint(fsspec.filesystem('s3').exists({bucket!r}))", writer)
    assert listed.stdout.strip() == "False", listed.stderr[-2000:]


def test_a_wrong_secret_and_an_unknown_key_are_rejected_credentials(
    mlp: Any, writer: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    wrong_secret = {**writer, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    message = _refused(_config(mlp, prefix, tmp_path), wrong_secret, tmp_path, errors.CREDENTIALS_INVALID)
    assert "SignatureDoesNotMatch" in message and prefix in message
    unknown_key = {**writer, "AWS_ACCESS_KEY_ID": "AKIDUNKNOWN0000"}
    message = _refused(_config(mlp, prefix, tmp_path), unknown_key, tmp_path, errors.CREDENTIALS_INVALID)
    assert "InvalidAccessKeyId" in message


def test_no_credentials_at_all(mlp: Any, writer: dict[str, str], prefix: str, tmp_path: Path) -> None:
    nothing = {"AWS_ENDPOINT_URL": writer["AWS_ENDPOINT_URL"], "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    message = _refused(_config(mlp, prefix, tmp_path), nothing, tmp_path, errors.CREDENTIALS_MISSING)
    assert message.startswith(f"store {prefix}: no credentials found")


def test_an_identity_that_may_only_read_is_denied_the_store(
    mlp: Any, writer: dict[str, str], reader: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    # The read-only identity reads an input from the bucket (no refusal there), and may not write the store.
    dataset = f"{prefix}/eval.npz"
    copied = _python(f"import fsspec\nfsspec.filesystem('s3').put_file({str(mlp.evaluation)!r}, {dataset!r})", writer)
    assert copied.returncode == 0, copied.stderr[-2000:]
    config = _config(mlp, f"{prefix}/store", tmp_path, evaluation={"dataset": dataset, "metric": "accuracy"})
    message = _refused(config, reader, tmp_path, errors.PERMISSION_DENIED)
    assert message.startswith(f"store {prefix}/store: permission denied: the identity in use may not write to it")
    assert "Access Denied" in message


def test_an_input_read_with_rejected_keys_names_the_input_and_the_stores_code(
    mlp: Any, writer: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    # The store is a local folder here, so only the input's read check meets the keys. Its first request, a
    # HEAD, is answered 403 without a code; the check must still say the keys were rejected, and why.
    dataset = f"{prefix}/eval.npz"
    copied = _python(f"import fsspec\nfsspec.filesystem('s3').put_file({str(mlp.evaluation)!r}, {dataset!r})", writer)
    assert copied.returncode == 0, copied.stderr[-2000:]
    config = _config(mlp, str(tmp_path / "store"), tmp_path, evaluation={"dataset": dataset, "metric": "accuracy"})
    for keys, code in (({**writer, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "SignatureDoesNotMatch"),
                       ({**writer, "AWS_ACCESS_KEY_ID": "AKIDUNKNOWN0000"}, "InvalidAccessKeyId")):
        message = _refused(config, keys, tmp_path, errors.CREDENTIALS_INVALID)
        assert message.startswith(f"evaluation.dataset {dataset}:") and code in message, message


def test_a_dataset_missing_from_the_bucket_does_not_exist(mlp: Any, writer: dict[str, str], prefix: str, tmp_path: Path) -> None:
    missing = f"{prefix}/missing.npz"
    config = _config(mlp, f"{prefix}/store", tmp_path, evaluation={"dataset": missing, "metric": "accuracy"})
    message = _refused(config, writer, tmp_path, errors.DATASET_UNREADABLE)
    assert message == f"evaluation.dataset {missing}: does not exist"


def test_an_endpoint_that_refuses_is_unreachable_within_seconds(mlp: Any, writer: dict[str, str], tmp_path: Path) -> None:
    code, payload, output, seconds = _job(_config(mlp, "s3://optimodel/x", tmp_path),
                                          {**writer, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, tmp_path)
    assert code == 2 and payload is not None and payload["reason"] == errors.HOST_UNREACHABLE, output[-3000:]
    assert seconds < 60  # the interpreter and torch's import included; the probe itself takes about one second


def test_a_run_into_s3_puts_the_report_by_the_record_and_a_rerun_adds_no_manifest(
    mlp: Any, writer: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    config = _config(mlp, prefix, tmp_path)
    code, _, output, _ = _job(config, writer, tmp_path)
    assert code == 0, output[-3000:]
    record = json.loads(output.strip().splitlines()[-1])
    assert record["result_uri"].startswith(f"{prefix}/runs/probes/") and record["report"] == \
        record["result_uri"].removesuffix(".json") + ".html"
    listing = ("import fsspec, json\nfs = fsspec.filesystem('s3')\n"
               f"print(json.dumps(sorted(fs.find({prefix!r}))))")
    first = json.loads(_python(listing, writer).stdout)
    assert any(p.endswith(".html") and "/runs/probes/" in p for p in first)
    assert not any(".optimodel-probe-" in p for p in first)  # the write probe cleans up after itself
    assert not list(tmp_path.glob("optimodel-report.*"))  # the Job keeps no local copy: the store's is the report
    code, _, output, _ = _job(config, writer, tmp_path)
    assert code == 0, output[-3000:]
    second = json.loads(_python(listing, writer).stdout)
    manifests = [p for p in first if "/manifests/" in p]
    assert len(manifests) == 2 and [p for p in second if "/manifests/" in p] == manifests
