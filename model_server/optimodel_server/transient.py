"""Why a fetch of the artifact failed, and whether trying again can fix it. Pure: reads an exception's chain.

A store that cannot be reached (connection refused or reset, DNS, timeouts) or that answers "not now" (HTTP
5xx, 408, 429; S3 ``SlowDown``, ``ServiceUnavailable``, ``InternalError``, throttling) is *transient*: the
server retries the fetch with back-off and stays unready meanwhile, as a kubelet retries an image pull.
Everything else is *permanent* and refused at once: a blob whose bytes do not match (an integrity failure),
a manifest that does not parse, an object missing from a store that answered, credentials that are missing
or rejected. A retry cannot fix those, and "a corrupt artifact is never deployed" must not wait on one.

The surface type says little: fsspec's HTTP file system raises ``FileNotFoundError`` for a refused
connection and for a 503 alike (and :func:`optimodel_contracts.artifacts.read_manifest` turns that into
``ManifestMissing``); s3fs raises ``OSError(EBUSY)`` for a 503 and botocore's ``EndpointConnectionError``,
which is not an ``OSError``, for a refused connection. So the whole ``__cause__``/``__context__`` chain is
read, down to the socket error or the HTTP status the file system saw.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from optimodel_contracts.artifacts import ArtifactIntegrityError
from optimodel_contracts.errors import exception_chain

# Reasons (machine-readable, as in optimodel_contracts.errors where the word exists there).
HOST_UNREACHABLE = "HostUnreachable"  # no connection: refused, reset, DNS, no answer in time
STORE_UNAVAILABLE = "StoreUnavailable"  # the store answered "not now": 5xx, 408, 429, S3 SlowDown / throttling
CREDENTIALS_MISSING = "CredentialsMissing"
CREDENTIALS_INVALID = "CredentialsInvalid"
PERMISSION_DENIED = "PermissionDenied"
FETCH_FAILED = "FetchFailed"  # anything else that is not an integrity failure: refused, not retried
TRANSIENT_REASONS = (HOST_UNREACHABLE, STORE_UNAVAILABLE)

# Exception class names (anywhere in the MRO) of the libraries under fsspec that mean "no connection".
_UNREACHABLE_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",  # botocore / aiobotocore
    "ClientConnectorError", "ClientConnectorDNSError", "ServerTimeoutError", "ServerDisconnectedError",
    "ClientOSError", "ClientPayloadError", "ConnectionTimeoutError", "SocketTimeoutError",  # aiohttp
    "gaierror", "herror",  # socket: DNS
})
# errno values of an OSError that a later try can fix (network, and a network file system gone stale).
_TRANSIENT_ERRNO = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.ENETRESET, errno.EPIPE, errno.ENOTCONN,
    errno.ESTALE, errno.EAGAIN,
})
# HTTP statuses that say "come back later". 501 and 505 are not among them: a retry gets the same answer.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
# S3 error codes (botocore ClientError.response["Error"]["Code"]) that say "come back later".
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "ThrottledException", "RequestThrottled", "RequestLimitExceeded", "TooManyRequestsException",
    "BandwidthLimitExceeded", "ProvisionedThroughputExceededException", "EC2ThrottledException",
})
_MISSING_CREDENTIAL_NAMES = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"})
_REJECTED_KEY_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
    "InvalidClientTokenId", "AuthFailure", "UnrecognizedClientException",
})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "Forbidden"})


@dataclass(frozen=True)
class FetchFailure:
    """What a failed fetch means: ``transient`` ones are retried; ``reason`` is a CamelCase word; ``detail``
    names the root cause for a person (e.g. "ConnectionRefusedError: [Errno 111] Connect call failed ...")."""

    transient: bool
    reason: str
    detail: str
    integrity: bool = False


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _codes_and_statuses(error: BaseException) -> tuple[set[str], set[int]]:
    """The service's error code (botocore) and the HTTP status (botocore, aiohttp, requests) an error carries."""
    codes: set[str] = set()
    statuses: set[int] = set()
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            codes.add(str(code))
            if str(code).isdigit():
                statuses.add(int(code))
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if isinstance(status, int):
            statuses.add(status)
    status = getattr(error, "status", None)
    if isinstance(status, int) and 100 <= status <= 599:
        statuses.add(status)
    status_code = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status_code, int):
        statuses.add(status_code)
    return codes, statuses


def _root(chain: list[BaseException]) -> str:
    root = chain[-1]
    return f"{type(root).__name__}: {root}"


def classify_fetch_error(error: BaseException) -> FetchFailure:
    """Pure: is a failed fetch worth retrying, and why. Credentials and permissions are looked at first (a 403
    is never retried), then the signs of a store that cannot answer now, then integrity."""
    chain = exception_chain(error)
    names: set[str] = set().union(*(_names(e) for e in chain))
    codes: set[str] = set()
    statuses: set[int] = set()
    for link in chain:
        link_codes, link_statuses = _codes_and_statuses(link)
        codes |= link_codes
        statuses |= link_statuses

    if names & _MISSING_CREDENTIAL_NAMES:
        return FetchFailure(False, CREDENTIALS_MISSING, f"no credentials for the store ({_root(chain)})")
    if codes & _REJECTED_KEY_CODES:
        return FetchFailure(False, CREDENTIALS_INVALID,
                            f"the store rejected the credentials ({sorted(codes & _REJECTED_KEY_CODES)[0]})")
    if 401 in statuses:
        return FetchFailure(False, CREDENTIALS_MISSING, f"the store asks for credentials (HTTP 401; {_root(chain)})")
    if codes & _DENIED_CODES or 403 in statuses or any(isinstance(e, PermissionError) for e in chain):
        return FetchFailure(False, PERMISSION_DENIED, f"the store refused access (HTTP 403; {_root(chain)})")

    unreachable = bool(names & _UNREACHABLE_NAMES) or any(
        isinstance(e, (ConnectionError, TimeoutError))
        or (isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO)
        for e in chain
    )
    if unreachable:
        return FetchFailure(True, HOST_UNREACHABLE, f"the artifact store cannot be reached ({_root(chain)})")
    if codes & _TRANSIENT_CODES or statuses & _TRANSIENT_STATUS:
        said = sorted(codes & _TRANSIENT_CODES) or [str(s) for s in sorted(statuses & _TRANSIENT_STATUS)]
        return FetchFailure(True, STORE_UNAVAILABLE,
                            f"the artifact store answered {', '.join(said)} (not now; {_root(chain)})")

    if isinstance(error, ArtifactIntegrityError):
        return FetchFailure(False, error.reason, error.message, integrity=True)
    return FetchFailure(False, FETCH_FAILED, f"{type(error).__name__}: {error}")
