"""``optimodel serve`` (and ``python -m optimodel_server``): flags, each with an environment variable.

Heavy imports (onnxruntime, uvicorn) happen inside the command, so ``optimodel --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

ENV = "OPTIMODEL_SERVER_"


def serve(
    manifest: str = typer.Option(..., "--manifest", envvar=f"{ENV}MANIFEST", help="Artifact manifest URI (path, file://, fsspec URL)."),
    model_name: Optional[str] = typer.Option(None, envvar=f"{ENV}MODEL_NAME", help="Name under /v2/models/; default: the manifest's variant."),
    revision: str = typer.Option("0", envvar=f"{ENV}REVISION", help="Revision label on every metric."),
    pool: str = typer.Option("default", envvar=f"{ENV}POOL", help="Node pool label on every metric."),
    host: str = typer.Option("0.0.0.0", envvar=f"{ENV}HOST"),
    port: int = typer.Option(8080, envvar=f"{ENV}PORT"),
    cache_dir: Path = typer.Option(Path("/tmp/optimodel-server"), envvar=f"{ENV}CACHE_DIR", help="Where the verified blob is copied."),
    execution_provider: Optional[str] = typer.Option(None, envvar=f"{ENV}EXECUTION_PROVIDER", help="cpu, cuda or tensorrt; default: the manifest's."),
    intra_op_threads: Optional[int] = typer.Option(None, envvar=f"{ENV}INTRA_OP_THREADS", help="Default: the container's CPU limit."),
    max_batch_size: int = typer.Option(32, envvar=f"{ENV}MAX_BATCH_SIZE"),
    max_batch_wait_ms: float = typer.Option(0.0, envvar=f"{ENV}MAX_BATCH_WAIT_MS", help="0: batch only what queued meanwhile."),
    max_queue: int = typer.Option(256, envvar=f"{ENV}MAX_QUEUE", help="Queued requests beyond this get 503."),
    max_inflight: int = typer.Option(1024, envvar=f"{ENV}MAX_INFLIGHT", help="In-flight requests beyond this get 429."),
    max_body_bytes: int = typer.Option(16 * 1024 * 1024, envvar=f"{ENV}MAX_BODY_BYTES"),
    inline_inference: str = typer.Option("auto", envvar=f"{ENV}INLINE_INFERENCE", help="auto, always or never."),
    drift: bool = typer.Option(True, "--drift/--no-drift", envvar=f"{ENV}DRIFT", help="Export drift PSI gauges."),
    drift_window: int = typer.Option(10_000, envvar=f"{ENV}DRIFT_WINDOW", help="Rows in the sliding window."),
    drift_interval_s: float = typer.Option(5.0, envvar=f"{ENV}DRIFT_INTERVAL_S"),
    drift_max_rows_per_interval: int = typer.Option(2_000, envvar=f"{ENV}DRIFT_MAX_ROWS_PER_INTERVAL"),
    shutdown_delay_s: float = typer.Option(0.0, envvar=f"{ENV}SHUTDOWN_DELAY_S", help="Not-ready time before draining."),
    graceful_timeout_s: float = typer.Option(20.0, envvar=f"{ENV}GRACEFUL_TIMEOUT_S"),
    fetch_retry_initial_s: float = typer.Option(
        1.0, envvar=f"{ENV}FETCH_RETRY_INITIAL_S", help="First wait before fetching again from an unreachable store."),
    fetch_retry_max_s: float = typer.Option(
        30.0, envvar=f"{ENV}FETCH_RETRY_MAX_S", help="Longest wait between fetches from an unreachable store."),
    log_level: str = typer.Option("info", envvar=f"{ENV}LOG_LEVEL"),
    fault_latency_ms: float = typer.Option(0.0, envvar=f"{ENV}FAULT_LATENCY_MS", help="Fault injection: added latency."),
    fault_error_ratio: float = typer.Option(0.0, envvar=f"{ENV}FAULT_ERROR_RATIO", help="Fault injection: share of 500s."),
    fault_input_shift: float = typer.Option(0.0, envvar=f"{ENV}FAULT_INPUT_SHIFT", help="Fault injection: added to float inputs."),
    fault_output_bias: float = typer.Option(0.0, envvar=f"{ENV}FAULT_OUTPUT_BIAS", help="Fault injection: added to the first class's score."),
    fault_seed: Optional[int] = typer.Option(None, envvar=f"{ENV}FAULT_SEED"),
    fault_control: bool = typer.Option(
        False, "--fault-control/--no-fault-control", envvar=f"{ENV}FAULT_CONTROL",
        help="Serve GET/PUT /v2/faults to change fault injection at runtime (tests, benchmarks; off by default).",
    ),
) -> None:
    """Serve a verified model artifact over the Open Inference Protocol (v2) with Prometheus metrics."""
    from pydantic import ValidationError

    from .config import FaultConfig, ServerConfig
    from .server import serve as run_server

    try:
        config = ServerConfig(
            manifest_uri=manifest, model_name=model_name, revision=revision, pool=pool, host=host, port=port,
            cache_dir=cache_dir, execution_provider=execution_provider, intra_op_threads=intra_op_threads,
            max_batch_size=max_batch_size, max_batch_wait_ms=max_batch_wait_ms, max_queue=max_queue,
            max_inflight=max_inflight, max_body_bytes=max_body_bytes, inline_inference=inline_inference,
            drift_enabled=drift, drift_window=drift_window, drift_interval_s=drift_interval_s,
            drift_max_rows_per_interval=drift_max_rows_per_interval, shutdown_delay_s=shutdown_delay_s,
            graceful_timeout_s=graceful_timeout_s, fetch_retry_initial_s=fetch_retry_initial_s,
            fetch_retry_max_s=fetch_retry_max_s, log_level=log_level,
            faults=FaultConfig(
                added_latency_ms=fault_latency_ms, error_ratio=fault_error_ratio,
                input_shift=fault_input_shift, output_bias=fault_output_bias, seed=fault_seed,
            ),
            fault_control=fault_control,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise typer.BadParameter(problems) from error
    run_server(config)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    app()
