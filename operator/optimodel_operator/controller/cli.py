"""`optimodel operator run`: the OptimizedModel operator (kopf) against the current kubeconfig."""

from __future__ import annotations

import os
from collections.abc import Callable

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def run(
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Namespace to watch (repeatable; globs allowed). Default: all namespaces."
    ),
    artifacts: str | None = typer.Option(
        None, "--artifacts", envvar="OPTIMODEL_DEFAULT_ARTIFACTS", help="Default artifact store URI."
    ),
    liveness: str | None = typer.Option(None, "--liveness", help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz."),
    leader_elect: bool = typer.Option(
        False, "--leader-elect", help="Act only while holding the Lease optimodel-operator in the operator's "
        "namespace (POD_NAMESPACE); other replicas stand by. For more than one replica."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535,
        help="Serve Prometheus metrics (per-model phase, rollout, verdicts) on this port at /metrics."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the operator until interrupted (uses KUBECONFIG, or the in-cluster service account)."""
    import kopf

    import optimodel_operator.controller.handlers  # noqa: F401  (registers the handlers)

    if artifacts:
        os.environ["OPTIMODEL_DEFAULT_ARTIFACTS"] = artifacts
    kopf.configure(verbose=verbose)
    if metrics_port is not None:
        from optimodel_operator.controller import metrics

        # Before the Lease: a standby answers scrapes too (with no model series), so it is never "down".
        metrics.serve(metrics_port)
    release = _hold_the_lease(liveness) if leader_elect else None
    try:
        kopf.run(
            standalone=True,  # one acting replica: alone, or the Lease holder (--leader-elect)
            clusterwide=not namespace,
            namespaces=namespace,
            liveness_endpoint=liveness,
        )
    finally:
        # kopf returns once SIGTERM has stopped its handlers: from here on this replica acts no more.
        if release is not None:
            release()


def _hold_the_lease(liveness: str | None) -> Callable[[], None]:
    """Stand by until this replica holds the Lease (answering liveness meanwhile), then keep renewing it;
    losing it ends the process, so the pod restarts as a standby. Returns what gives it up on the way out."""
    import logging
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlparse

    from kubernetes import client

    from optimodel_operator.controller import kube
    from optimodel_operator.controller.leader import Lease, default_namespace

    kube.load_config()
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    lease = Lease(client.CoordinationV1Api(), default_namespace(), identity)
    server = None
    if liveness:
        url = urlparse(liveness)

        class Standby(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200 if self.path == url.path else 404)
                self.end_headers()
                self.wfile.write(b"standby\n")

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Standby)
        threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    try:
        lease.wait_until_held()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()

    def lost() -> None:
        logging.getLogger(__name__).error("leader election: Lease lost; exiting so that one replica acts")
        os._exit(1)

    stop_renewing = threading.Event()
    renewing = lease.keep_holding(lost, stop_renewing)

    def release() -> None:
        stop_renewing.set()
        renewing.join(timeout=lease.renew_s + 5)  # a renewal in flight would take the Lease back
        lease.release()

    return release