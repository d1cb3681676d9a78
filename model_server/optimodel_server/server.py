"""Wiring and process lifecycle: build the pieces, run uvicorn, shut down gracefully.

On SIGTERM: readiness goes false at once, then (after ``shutdown_delay_s``, time for the endpoints
controller to take the pod out of the Service) uvicorn stops accepting, waits for in-flight requests
(up to ``graceful_timeout_s``), and the lifespan drains the batcher and stops the drift task.
A second signal exits at once.
"""

from __future__ import annotations

import logging
import threading
from types import FrameType

from prometheus_client import CollectorRegistry

from .config import ServerConfig
from .dataplane import DataPlane
from .endpoints import build_app
from .metrics import ServerMetrics

log = logging.getLogger("optimodel_server")


def served_name(config: ServerConfig) -> str:
    """The model name clients use: the flag, else the manifest's variant name read without the blob."""
    if config.model_name:
        return config.model_name
    from optimodel_contracts.artifacts import read_manifest

    try:
        return read_manifest(config.manifest_uri).name
    except Exception as error:  # noqa: BLE001 - botocore's connection errors are not OSError
        # The load will refuse the artifact (or retry an unreachable store) and say why; the server still
        # answers health and metadata. The name is fixed now (every metric carries it): with the store down at
        # start, a server without --model-name keeps serving under 'model' after the store returns.
        log.error("cannot read the manifest's model name (%s: %s); serving under 'model' (set --model-name)",
                  type(error).__name__, error)
        return "model"


def build(config: ServerConfig, registry: CollectorRegistry | None = None) -> tuple[DataPlane, object]:
    """(data plane, ASGI app) for a configuration; tests use this with an in-process client."""
    registry = registry if registry is not None else CollectorRegistry()
    name = served_name(config)
    metrics = ServerMetrics(registry, model=name, revision=config.revision, pool=config.pool)
    plane = DataPlane(config, metrics, name)
    app = build_app(plane, registry, drain_timeout_s=config.graceful_timeout_s)
    return plane, app


def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully."""
    import uvicorn

    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.faults.enabled:
        log.warning("FAULT INJECTION IS ON: %s", config.faults.model_dump(exclude_none=True))
    if config.fault_control:
        log.warning("FAULT CONTROL IS ON: PUT /v2/faults changes fault injection at runtime")
    plane, app = build(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=config.log_level.lower(),
        timeout_graceful_shutdown=int(config.graceful_timeout_s) or None,
        backlog=2048,
    )
    server = GracefulServer(uv_config, plane, config.shutdown_delay_s)
    server.run()


class GracefulServer:
    """uvicorn.Server whose first exit signal turns readiness off, waits the delay, then drains.

    The exit code is 0 after a graceful drain: uvicorn's own handler would re-raise the signal at
    the end and make every rollout's pod termination look like a crash.
    """

    def __new__(cls, config, plane: DataPlane, delay_s: float):  # noqa: ANN001, ANN204
        import uvicorn

        class _Server(uvicorn.Server):
            _exit_pending = False

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                plane.begin_shutdown()
                if self.should_exit or self._exit_pending:
                    log.warning("second exit signal: exiting without waiting for in-flight requests")
                    self.should_exit = True
                    self.force_exit = True
                    return
                if delay_s > 0:
                    self._exit_pending = True
                    log.info("shutdown: waiting %.1f s before closing the listener", delay_s)
                    timer = threading.Timer(delay_s, self._close)
                    timer.daemon = True
                    timer.start()
                    return
                self._close()

            def _close(self) -> None:
                self.should_exit = True

        return _Server(config)
