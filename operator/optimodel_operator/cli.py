"""The `optimodel` command line: one entry point, each component owns its own sub-commands.

Each component keeps its commands in its own `cli.py`; this module only wires them together,
so that `optimodel --help` stays fast (heavy imports such as torch happen inside commands).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="optimodel",
    help="Take a trained model to optimized, accuracy-gated artifacts served on each node pool of a Kubernetes "
    "cluster, each new revision rolled out as a canary under SLO and drift checks read from Prometheus.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # One line per component; each owner adds its own.
    from optimodel_localcluster.cli import app as dev_app

    app.add_typer(dev_app, name="dev", help="A local Kubernetes cluster: the real control plane, built here; a node "
                  "agent stands in for the kubelet and container runtime (no Docker).")
    from optimodel_operator.crd.cli import app as crd_app

    app.add_typer(crd_app, name="crd", help="The OptimizedModel CRD, generated from the API types.")
    from optimodel_operator.controller.cli import app as operator_app

    app.add_typer(operator_app, name="operator", help="Run the OptimizedModel operator (kopf).")
    from optimodel_operator.controller.manual import app as manual_app

    app.add_typer(manual_app)  # optimodel promote | abort | retry NAME
    from optimodel_server.cli import serve as serve_command

    app.command("serve")(serve_command)
    from optimodel_jobs.cli import optimize as optimize_command

    app.command("optimize")(optimize_command)
    from optimodel_operator.demo import demo as demo_command

    app.command("demo")(demo_command)


_register()


if __name__ == "__main__":
    app()
