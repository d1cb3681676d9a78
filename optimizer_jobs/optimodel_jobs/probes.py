"""Open every input and the store before any step runs, so that a wrong URI, a missing file system, missing
or rejected credentials or an unreachable host fails in seconds, naming the field and the URI, instead of
after the whole pipeline (a write to the store used to be its last step).

A *read probe* opens each input (the source, a distillation teacher, every dataset) and reads one byte. A
*write probe* checks that the store's bucket exists (object stores; the probe never creates one), writes a
small file under the store, reads it back and deletes it. Each probe runs under a deadline: some file systems
retry for a minute before they give up on a host that does not answer (gcsfs: six tries with back-off).

:func:`classify` is pure: it reads an exception's chain (s3fs, gcsfs and fsspec's HTTP file system wrap the
cause: an HTTP host that refuses the connection surfaces as FileNotFoundError) and returns the reason from the
catalog (optimodel_contracts.errors): ``FileSystemMissing``, ``HostUnreachable``, ``CredentialsMissing``,
``CredentialsInvalid``, ``PermissionDenied``, and for "not found" ``SourceUnreadable`` / ``DatasetUnreadable``
(an input) or ``StoreNotFound`` (the store's bucket).
"""

from __future__ import annotations

import errno
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import fsspec

from optimodel_contracts.errors import exception_chain
from optimodel_contracts.jobconfig import OptimizeConfig
from optimodel_jobs import errors
from optimodel_jobs.errors import OptimizeError

# Long enough for a cold object store's first answer, short enough that a host which never answers (a
# black-holed address) is reported while the user still waits.
DEADLINE_S = 15.0
Kind = Literal["source", "dataset", "store"]

# File systems whose first path component is a bucket (or container): the write probe checks it exists.
_BUCKETED = {"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "oss", "r2"}
# The package behind each protocol the examples name, and the extra that installs it.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "az": "adlfs"}
# botocore error codes (ClientError.response["Error"]["Code"]) that mean "these keys are not accepted".
_REJECTED_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
                  "InvalidClientTokenId", "AuthFailure", "UnrecognizedClientException"}
_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "NotFound", "404"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}


@dataclass(frozen=True)
class Target:
    """One location the run reads (``kind`` source or dataset) or writes (store); ``field`` names it in the config."""

    field: str
    uri: str
    kind: Kind


def targets(config: OptimizeConfig) -> list[Target]:
    """Pure: every location the config names, inputs first, each once (the first field that names it)."""
    found: list[Target] = [Target("source.uri", config.source.uri, "source")]
    found.append(Target("evaluation.dataset", config.evaluation.dataset.uri, "dataset"))
    if config.evaluation.tuning_dataset is not None:
        found.append(Target("evaluation.tuningDataset", config.evaluation.tuning_dataset.uri, "dataset"))
    if config.calibration is not None and config.calibration.dataset is not None:
        found.append(Target("calibration.dataset", config.calibration.dataset.uri, "dataset"))
    if config.training is not None:
        found.append(Target("training", config.training.uri, "dataset"))
    for variant in config.variants:
        where = f"variants[{variant.name}]"
        if variant.quantize is not None and variant.quantize.calibration is not None and variant.quantize.calibration.dataset:
            found.append(Target(f"{where}.quantize.calibration.dataset", variant.quantize.calibration.dataset.uri, "dataset"))
        if variant.prune is not None and variant.prune.dataset is not None:
            found.append(Target(f"{where}.prune.dataset", variant.prune.dataset.uri, "dataset"))
        if variant.distill is not None:
            if variant.distill.dataset is not None:
                found.append(Target(f"{where}.distill.dataset", variant.distill.dataset.uri, "dataset"))
            if variant.distill.teacher is not None:
                found.append(Target(f"{where}.distill.teacher.uri", variant.distill.teacher.uri, "source"))
    found.append(Target("store", config.store, "store"))
    seen: set[tuple[str, str]] = set()
    unique = []
    for target in found:
        if (target.uri, target.kind) not in seen:
            seen.add((target.uri, target.kind))
            unique.append(target)
    return unique


def probe_all(config: OptimizeConfig, deadline_s: float = DEADLINE_S) -> None:
    """Read-probe every input and write-probe the store; the first problem raises OptimizeError."""
    for target in targets(config):
        probe(target, deadline_s)


def probe(target: Target, deadline_s: float = DEADLINE_S) -> None:
    """One probe under a deadline; its failure is classified and raised as OptimizeError."""
    action: Callable[[], None] = (lambda: _write_probe(target.uri)) if target.kind == "store" else (
        lambda: _read_probe(target.uri))
    outcome: dict[str, BaseException] = {}

    def attempt() -> None:
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - every failure is classified below
            outcome["error"] = error

    # A daemon thread: a file system still retrying after the deadline must not hold the process at exit.
    worker = threading.Thread(target=attempt, name=f"probe {target.field}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise OptimizeError(
            errors.HOST_UNREACHABLE,
            f"{target.field} {target.uri}: no answer within {deadline_s:.0f} s (the host cannot be reached, or does "
            "not answer): check the URI, the endpoint (AWS_ENDPOINT_URL for s3://) and the network",
        )
    if "error" in outcome:
        reason, detail = classify(outcome["error"], target.kind, fsspec.utils.get_protocol(target.uri))
        raise OptimizeError(reason, f"{target.field} {target.uri}: {detail}")


# --------------------------------------------------------------------------------------------------
# The probes (I/O)


def _fast_options(uri: str) -> dict[str, Any]:
    """Storage options that make a failing probe fail fast (one try, short connect timeout); the steps
    themselves keep the file system's own retries."""
    protocol = fsspec.utils.get_protocol(uri)
    if protocol in ("s3", "s3a"):
        return {"config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 1}},
                "skip_instance_cache": True}
    return {}


def _read_probe(uri: str) -> None:
    fs, path = fsspec.core.url_to_fs(uri, **_fast_options(uri))
    try:
        with fs.open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol not in _BUCKETED:
            raise
        # Opening starts with a HEAD, whose 403 has no body: rejected keys (InvalidAccessKeyId,
        # SignatureDoesNotMatch) and an identity without the right read the same. A one-byte GET carries the
        # service's error code, so that the reason names the credentials when they are the cause.
        fs.cat_file(path, start=0, end=1)
        raise


def _write_probe(uri: str) -> None:
    fs, root = fsspec.core.url_to_fs(uri, **_fast_options(uri))
    root = root.rstrip("/")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in _BUCKETED:
        bucket = root.split("/", 1)[0]
        try:
            fs.info(bucket)  # never created here: a missing bucket is a wrong URI far more often than a wish
        except PermissionError:
            pass  # HEAD answers 403 without a code; the write below says whether the keys or the rights are wrong
    else:
        fs.makedirs(root, exist_ok=True)  # a local store is made on first use, as the writes would
    probe = f"{root}/.optimodel-probe-{uuid.uuid4().hex}"
    fs.pipe_file(probe, b"optimodel write probe")
    try:
        if fs.cat_file(probe) != b"optimodel write probe":
            raise OSError(errno.EIO, "the probe file read back differs from what was written")
    finally:
        fs.rm(probe)


# --------------------------------------------------------------------------------------------------
# Classification (pure)


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _code(error: BaseException) -> str | None:
    """The service's error code (botocore ClientError) or HTTP status (aiohttp, google-api-core), as a string."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    status = getattr(error, "status", None) or getattr(error, "code", None)
    return str(status) if isinstance(status, int) else None


def classify(error: BaseException, kind: Kind, protocol: str = "") -> tuple[str, str]:
    """Pure: (reason, what to tell the user) for a probe's failure on a ``kind`` location of ``protocol``."""
    chain = exception_chain(error)
    names = set().union(*(_names(e) for e in chain))
    codes = {c for c in (_code(e) for e in chain) if c}
    first = f"{type(error).__name__}: {error}"
    if any(isinstance(e, ImportError) for e in chain) or any(
        isinstance(e, ValueError) and "Protocol not known" in str(e) for e in chain
    ):
        package = _PACKAGES.get(protocol)
        hint = (f"install {package}" + (" (pip install 'optimodel[jobs]' brings s3fs and gcsfs)" if package in ("s3fs", "gcsfs")
                                        else "") if package else "install the fsspec implementation for this protocol")
        return errors.FILESYSTEM_MISSING, f"this environment cannot open this kind of URI ({error}): {hint}"
    if names & {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "CredentialRetrievalError"}:
        return errors.CREDENTIALS_MISSING, (
            f"no credentials found ({first}); for s3:// set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile), "
            "for gs:// GOOGLE_APPLICATION_CREDENTIALS; in a cluster, spec.artifacts.credentials"
        )
    if codes & _REJECTED_KEYS:
        code = sorted(codes & _REJECTED_KEYS)[0]
        return errors.CREDENTIALS_INVALID, f"the service rejected the credentials ({code}): {error}; check the keys in use"
    if "401" in codes:
        return errors.CREDENTIALS_MISSING, f"the server asks for credentials (HTTP 401): {error}"
    unreachable = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError",
                   "ServerTimeoutError", "ServerDisconnectedError", "gaierror", "TransportError", "ProxyConnectionError"}
    if names & unreachable or any(isinstance(e, (ConnectionError, TimeoutError)) for e in chain):
        return errors.HOST_UNREACHABLE, f"cannot reach the host ({_deepest(chain)}): check the URI, the endpoint and the network"
    if codes & _DENIED or any(isinstance(e, PermissionError) for e in chain) or any(
        isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) for e in chain
    ):
        may = "write to" if kind == "store" else "read"
        return errors.PERMISSION_DENIED, f"permission denied: the identity in use may not {may} it ({first})"
    if codes & _NOT_FOUND or any(isinstance(e, FileNotFoundError) for e in chain):
        if kind == "store":
            return errors.STORE_NOT_FOUND, "the store's bucket does not exist (it is never created by a run): create it or fix the URI"
        reason = errors.SOURCE_UNREADABLE if kind == "source" else errors.DATASET_UNREADABLE
        return reason, "does not exist"
    fallback = {"source": errors.SOURCE_UNREADABLE, "dataset": errors.DATASET_UNREADABLE, "store": errors.STORE_WRITE_FAILED}
    return fallback[kind], ("cannot be written: " if kind == "store" else "cannot be read: ") + first


def _deepest(chain: list[BaseException]) -> str:
    """The root cause's text (e.g. "Connect call failed ('127.0.0.1', 9)"), which names the host and port."""
    root = chain[-1]
    return f"{type(root).__name__}: {root}"
