"""`optimodel operator run`: the OptimizedModel operator (kopf) against the current kubeconfig."""

from __future__ import annotations

import os

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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Run the operator until interrupted (uses KUBECONFIG, or the in-cluster service account)."""
    import kopf

    import optimodel_operator.controller.handlers  # noqa: F401  (registers the handlers)

    if artifacts:
        os.environ["OPTIMODEL_DEFAULT_ARTIFACTS"] = artifacts
    kopf.configure(verbose=verbose)
    kopf.run(
        standalone=True,  # one replica; no KopfPeering objects needed
        clusterwide=not namespace,
        namespaces=namespace,
        liveness_endpoint=liveness,
    )
