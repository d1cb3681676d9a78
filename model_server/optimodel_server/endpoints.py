"""The HTTP layer: thin Starlette endpoints over the data plane, the only module that speaks HTTP.

Every answer is JSON (the protocol's ``{"error": ...}`` for failures) except ``/metrics``. Domain
errors become status codes through :mod:`errors`; anything unexpected is logged and answered 500
with a message, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .dataplane import DataPlane
from .errors import RETRY_AFTER_SECONDS, InvalidInput, PayloadTooLarge, ServerError, TooManyRequests
from .errors import http_status_for, reason_for
from .faults import fault_wire, parse_fault_update
from .protocol import BINARY_HEADER, decode_infer_request, encode_infer_response, error_body

log = logging.getLogger("optimodel_server")

JSON = "application/json"
BINARY = "application/octet-stream"
FAULTS_BODY_LIMIT = 64 * 1024  # a PUT /v2/faults body is three numbers


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON)


def _error(error: Exception) -> Response:
    status = http_status_for(error)
    message = error.message if isinstance(error, ServerError) else f"internal error: {type(error).__name__}: {error}"
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS[status])} if status in RETRY_AFTER_SECONDS else None
    return Response(error_body(message), status_code=status, media_type=JSON, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes: before reading when Content-Length says so,
    while reading for chunked bodies."""
    declared = request.headers.get("content-length")
    if declared is not None:
        # The HTTP parser has already refused a malformed Content-Length.
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _binary_header_length(request: Request) -> int | None:
    raw = request.headers.get(BINARY_HEADER)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as error:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got {raw!r}") from error


def build_app(plane: DataPlane, registry: CollectorRegistry, drain_timeout_s: float = 20.0) -> Starlette:
    """The ASGI application; loading starts with the lifespan, so liveness answers while it runs."""
    metrics = plane.metrics
    limit = plane.config.max_body_bytes
    max_inflight = plane.config.max_inflight
    perf_counter = time.perf_counter

    async def infer(request: Request) -> Response:
        started = perf_counter()
        plane.inflight += 1
        metrics.inflight.inc()
        code = 200
        reason: str | None = None
        try:
            if plane.inflight > max_inflight:
                raise TooManyRequests(f"{max_inflight} requests are already in flight; retry later")
            params = request.path_params
            body = await _read_body(request, limit)
            decoded = decode_infer_request(body, _binary_header_length(request))
            outputs = await plane.infer(params["model_name"], params.get("version"), decoded)
            content, json_length = encode_infer_response(
                plane.name, plane.version, decoded.request_id, outputs, decoded.binary_outputs, decoded.all_binary
            )
            if json_length is None:
                response = Response(content, media_type=JSON)
            else:
                response = Response(content, media_type=BINARY, headers={"Inference-Header-Content-Length": str(json_length)})
        except ServerError as error:
            code, reason = error.status_code, error.reason
            response = _error(error)
        except Exception as error:  # noqa: BLE001 - a bug must answer 500, not drop the connection
            log.exception("unexpected error in infer")
            code, reason = 500, reason_for(error)
            response = _error(error)
        finally:
            plane.inflight -= 1
            metrics.inflight.dec()
        metrics.record_answer(code, reason, perf_counter() - started)
        return response

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return handler(request)
            except ServerError as error:
                return _error(error)
        return endpoint

    def live(_: Request) -> Response:
        return _json({"live": plane.live}, 200 if plane.live else 503)

    def ready(_: Request) -> Response:
        if plane.ready:
            return _json({"ready": True})
        return _json({"ready": False, **plane.not_ready_detail()}, 503)

    def server_metadata(_: Request) -> Response:
        return _json(plane.server_metadata())

    def model_metadata(request: Request) -> Response:
        params = request.path_params
        return _json(plane.model_metadata(params["model_name"], params.get("version")))

    def model_ready(request: Request) -> Response:
        params = request.path_params
        if plane.model_ready(params["model_name"], params.get("version")):
            return _json({"name": plane.name, "ready": True})
        return _json({"name": plane.name, "ready": False, **plane.not_ready_detail()}, 503)

    def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def get_faults(_: Request) -> Response:
        return _json(fault_wire(plane.fault_settings()))

    async def put_faults(request: Request) -> Response:
        try:
            body = await _read_body(request, FAULTS_BODY_LIMIT)
            config = plane.update_faults(lambda current: parse_fault_update(body, current))
        except ServerError as error:
            return _error(error)
        return _json(fault_wire(config))

    async def http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return Response(error_body(str(error.detail)), status_code=error.status_code, media_type=JSON, headers=error.headers)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(plane.load(), name="load-model")
        try:
            yield
        finally:
            await plane.shutdown(drain_timeout_s)
            if not loading.done():
                loading.cancel()

    routes = [
        Route("/v2/models/{model_name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model_name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v2/health/live", guarded(live), methods=["GET"]),
        Route("/v2/health/ready", guarded(ready), methods=["GET"]),
        Route("/v2", guarded(server_metadata), methods=["GET"]),
        Route("/v2/models/{model_name}", guarded(model_metadata), methods=["GET"]),
        Route("/v2/models/{model_name}/versions/{version}", guarded(model_metadata), methods=["GET"]),
        Route("/v2/models/{model_name}/ready", guarded(model_ready), methods=["GET"]),
        Route("/v2/models/{model_name}/versions/{version}/ready", guarded(model_ready), methods=["GET"]),
        Route("/metrics", guarded(metrics_endpoint), methods=["GET"]),
    ]
    if plane.config.fault_control:
        # Off by default: then these routes do not exist and answer 404 like any unknown path.
        routes += [
            Route("/v2/faults", guarded(get_faults), methods=["GET"]),
            Route("/v2/faults", put_faults, methods=["PUT"]),
        ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
