"""`optimodel promote | abort | retry NAME`: manual control of a rollout, through an annotation.

The command is written as annotations on the OptimizedModel (`optimodel.io/command` and a fresh
`optimodel.io/command-id`), the same ones a GitOps user can write in git; the operator reads them with
`planner.rollout.command_from_annotations` and acts on each id once (status.lastCommand). The patch goes
through the official Kubernetes client with the current kubeconfig (KUBECONFIG, then ~/.kube/config).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import typer

from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.planner.rollout import CommandKind, command_annotations

app = typer.Typer(no_args_is_help=True, add_completion=False)


def new_command_id(now: datetime, token: str) -> str:
    """A command id: the UTC time to the microsecond and a random token, e.g. 20260501T120000.000000Z-1a2b3c."""
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}-{token}"


def command_patch(kind: CommandKind, command_id: str) -> dict[str, Any]:
    """The merge patch that gives a command to the operator."""
    return {"metadata": {"annotations": command_annotations(kind.value, command_id)}}


def _send(kind: CommandKind, name: str, namespace: str | None) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config()
    except ConfigException as error:
        typer.echo(f"optimodel {kind.value}: no usable kubeconfig (KUBECONFIG or ~/.kube/config): {error}", err=True)
        raise typer.Exit(1) from error
    if namespace is None:
        _, active = config.list_kube_config_contexts()
        namespace = (active or {}).get("context", {}).get("namespace") or "default"
    command_id = new_command_id(datetime.now(UTC), secrets.token_hex(3))
    try:
        client.CustomObjectsApi().patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, command_patch(kind, command_id)
        )
    except ApiException as error:
        typer.echo(f"optimodel {kind.value}: {namespace}/{name}: {error.status} {error.reason}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"optimizedmodel.{GROUP}/{name} {kind.value} requested (command-id {command_id}); "
               f"see: kubectl -n {namespace} describe om {name}")


_NAMESPACE = typer.Option(None, "--namespace", "-n", help="Namespace (default: the kubeconfig context's, else default).")


@app.command()
def promote(name: str = typer.Argument(..., help="OptimizedModel name."), namespace: str | None = _NAMESPACE) -> None:
    """Promote the canary to all traffic now, skipping the remaining steps (it stays guarded). Writes the optimodel.io/command annotation, which the operator acts on once."""
    _send(CommandKind.PROMOTE, name, namespace)


@app.command()
def abort(name: str = typer.Argument(..., help="OptimizedModel name."), namespace: str | None = _NAMESPACE) -> None:
    """Take the canary (or a promoted revision, if an earlier one is kept) off traffic now. Writes the optimodel.io/command annotation, which the operator acts on once."""
    _send(CommandKind.ABORT, name, namespace)


@app.command()
def retry(name: str = typer.Argument(..., help="OptimizedModel name."), namespace: str | None = _NAMESPACE) -> None:
    """Roll a rolled-back or aborted revision out again from the first step. Writes the optimodel.io/command annotation, which the operator acts on once."""
    _send(CommandKind.RETRY, name, namespace)
