"""Domain errors of the model server and the one place that maps them to HTTP status codes.

The data plane raises these; the HTTP layer turns them into ``{"error": message}`` bodies with the
status code below. Anything that is a client mistake is a 4xx: a 500 only ever means a bug or an
injected fault.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of all errors the data plane raises on purpose. ``message`` is shown to the client."""

    status_code: int = 500
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServerError):
    """The request is malformed or does not fit the model (shape, dtype, names, JSON)."""

    status_code = 400
    reason = "invalid_input"


class ModelNotFound(ServerError):
    """The request names a model (or version) that this server does not serve."""

    status_code = 404
    reason = "model_not_found"


class PayloadTooLarge(ServerError):
    """The request body is larger than the configured limit; it is refused before being read whole."""

    status_code = 413
    reason = "payload_too_large"


class ModelNotReady(ServerError):
    """The model is not (or no longer) ready: loading, refused at verification, or shutting down."""

    status_code = 503
    reason = "model_not_ready"


class Overloaded(ServerError):
    """The bounded request queue is full: answered at once instead of queueing without bound."""

    status_code = 503
    reason = "overloaded"


class TooManyRequests(ServerError):
    """More requests are in flight than the server admits; the client should back off and retry."""

    status_code = 429
    reason = "too_many_requests"


class InjectedFault(ServerError):
    """A failure injected on purpose by the fault-injection setting (end-to-end tests only)."""

    status_code = 500
    reason = "injected_fault"


class InferenceFailed(ServerError):
    """ONNX Runtime failed on inputs that passed our checks for a reason of its own: reported, never a crash.

    ONNX Runtime's ``InvalidArgument`` is turned into :class:`InvalidInput` instead (a client mistake).
    """

    status_code = 500
    reason = "inference_failed"


# Status codes of the errors that tell the client to come back later carry a Retry-After header.
RETRY_AFTER_SECONDS: dict[int, int] = {429: 1, 503: 1}


def http_status_for(error: Exception) -> int:
    """The HTTP status code for any exception the data plane lets out."""
    if isinstance(error, ServerError):
        return error.status_code
    return 500


def reason_for(error: Exception) -> str:
    """A short, stable machine-readable reason (used as a metric label)."""
    if isinstance(error, ServerError):
        return error.reason
    return "internal"
