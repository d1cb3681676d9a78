"""`optimodel crd generate | check | print`: the CRD files and the spec reference page from the API types."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False)
_err = Console(stderr=True)

RootOption = typer.Option(None, "--root", help="Repository root (default: nearest folder above with crds/).")


@app.command()
def generate(root: Path | None = RootOption) -> None:
    """Write crds/, the chart's copy and docs/reference/optimizedmodel.md from the pydantic types."""
    from optimodel_operator.crd.files import find_repo_root
    from optimodel_operator.crd.files import generate as write_files
    from optimodel_operator.crd.reference import write_reference

    repo = root or find_repo_root(Path.cwd())
    for path in [*write_files(repo), write_reference(repo)]:
        typer.echo(f"wrote {path}")


@app.command()
def check(root: Path | None = RootOption) -> None:
    """Exit non-zero when the committed CRD files or the spec reference differ from what the types generate."""
    from optimodel_operator.crd.files import check as find_drift
    from optimodel_operator.crd.files import find_repo_root
    from optimodel_operator.crd.reference import check_reference

    repo = root or find_repo_root(Path.cwd())
    drifts = [*find_drift(repo), *check_reference(repo)]
    for drift in drifts:
        _err.print(drift.diff, markup=False, highlight=False)
    if drifts:
        _err.print(f"[red]{len(drifts)} generated file(s) drifted from the API types; run `optimodel crd generate`.[/red]")
        raise typer.Exit(1)
    typer.echo("CRD files and the spec reference match the API types.")


@app.command("print")
def print_crd() -> None:
    """Print the generated CRD to standard output."""
    from optimodel_operator.crd.files import render_crd

    typer.echo(render_crd(), nl=False)
