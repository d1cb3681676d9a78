"""`optimodel dev up | status | down | env`: the local cluster from a terminal."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .cluster import LocalCluster
from .paths import LocalClusterError

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Cluster state (default: $OPTIMODEL_CLUSTER_DIR or ~/.cache/optimodel/dev-cluster)."),
]


def _fail(error: LocalClusterError) -> None:
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(1)


@app.command()
def up(state_dir: StateDirOption = None) -> None:
    """Build (first time), start or repair the cluster, and wait until it is ready."""
    cluster = LocalCluster(state_dir)
    build_lines: deque[str] = deque(maxlen=6)
    current = {"step": "starting"}

    def render() -> Spinner:
        lines = Text(current["step"], style="bold")
        for line in build_lines:
            lines.append("\n  " + line[:120], style="dim")
        return Spinner("dots", lines)

    try:
        with Live(render(), console=console, refresh_per_second=8, transient=True) as live:
            def report(step: str) -> None:
                current["step"] = step
                console.print(f"[green]✓[/] {step}" if step.endswith(("running", "ready")) else f"  {step}")
                live.update(render())

            def build_output(line: str) -> None:
                build_lines.append(line)
                live.update(render())

            cluster.up(report=report, build_output=build_output)
    except LocalClusterError as error:
        _fail(error)
    console.print(
        f"\n[bold green]Cluster ready.[/] API server {cluster.apiserver_url}, Prometheus {cluster.prometheus_url}, "
        f"S3 {cluster.s3_endpoint} (keys: secret s3-credentials -n optimodel-storage)\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  kubectl get nodes   (kubectl {cluster.config.binary('kubectl')}; or `eval $(optimodel dev env)`)"
    )
    print(cluster.kubeconfig)


class BuildProgress:
    """Counts the packages `go build -v` reports and says so every `every` seconds."""

    def __init__(self, say: Callable[[str], None], every: float = 15.0) -> None:
        self.say, self.every = say, every
        self.started = self.last = time.monotonic()
        self.packages = 0
        self.downloads = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str) -> None:
        if text.startswith("go: downloading"):
            self.downloads += 1
        elif text and not text.startswith("#"):
            self.packages += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.say(f"  {self.elapsed():4.0f}s: {self.downloads} modules downloaded, {self.packages} packages "
                     f"compiled; last: {text[:100]}")


@app.command("build")
def build_binaries() -> None:
    """Compile the control plane, the S3 store and kwok from the Go module proxy (cached; `up` does this on first use)."""
    from . import seaweedfs
    from .build import build as build_control_plane
    from .build import build_kwok, kwok_is_built
    from .build import is_built as control_plane_built
    from .paths import KUBERNETES_VERSION

    def build(on_output: Callable[[str], None]) -> None:  # the control plane, the S3 store, then kwok
        build_control_plane(on_output=on_output)
        seaweedfs.build(on_output=on_output)
        # kwok simulates nodes for the scale benchmark's separate cluster (kwok.py); `dev up` never needs it.
        build_kwok(on_output=on_output)

    def is_built() -> bool:
        return control_plane_built() and seaweedfs.is_built() and kwok_is_built()

    if is_built():
        console.print(f"[green]✓[/] Kubernetes {KUBERNETES_VERSION}, CoreDNS, SeaweedFS and kwok binaries are cached")
    elif not console.is_terminal:
        # A log or a pipe (make, CI): a line every 15 s saying how far the build is, never minutes of silence.
        progress = BuildProgress(lambda text: console.print(text, highlight=False))
        console.print(f"building Kubernetes {KUBERNETES_VERSION}, etcd, CoreDNS, SeaweedFS and kwok from the Go module proxy "
                      "(first time only; 16-19 minutes on 2 cores)", highlight=False)
        try:
            build(on_output=progress.line)
        except LocalClusterError as error:
            _fail(error)
        console.print(f"built Kubernetes {KUBERNETES_VERSION}, etcd, CoreDNS, SeaweedFS and kwok in {progress.elapsed():.0f}s "
                      f"({progress.packages} packages)", highlight=False)
    else:
        lines: deque[str] = deque(maxlen=6)
        with Live(Spinner("dots", f"building Kubernetes {KUBERNETES_VERSION}, etcd, CoreDNS, SeaweedFS and kwok"), console=console,
                  transient=True) as live:
            def show(line: str) -> None:
                lines.append(line)
                live.update(Spinner("dots", Text(f"building Kubernetes {KUBERNETES_VERSION}, etcd, CoreDNS, SeaweedFS and kwok\n  "
                                                 + "\n  ".join(l[:120] for l in lines))))
            try:
                build(on_output=show)
            except LocalClusterError as error:
                _fail(error)
        console.print(f"[green]✓[/] built Kubernetes {KUBERNETES_VERSION}, etcd, CoreDNS, SeaweedFS and kwok")
    from .build import binaries_dir
    print(binaries_dir())


@app.command()
def status(state_dir: StateDirOption = None) -> None:
    """Show each component, the nodes, and where to look."""
    cluster = LocalCluster(state_dir)
    table = Table("component", "state", "pid", "log")
    for item in cluster.status():
        style = "green" if item.healthy else ("yellow" if item.running else "red")
        table.add_row(item.name, f"[{style}]{item.detail}[/]", str(item.pid or "-"),
                      str(cluster.process(item.name).log_file))
    console.print(table)
    if all(item.healthy for item in cluster.status()):
        console.print(cluster.kubectl("get", "nodes", "-o", "wide", check=False).stdout)
        console.print(f"KUBECONFIG={cluster.kubeconfig}")
    else:
        console.print("Not everything is running: `optimodel dev up` starts what is missing.")
        raise typer.Exit(1)


@app.command()
def down(
    state_dir: StateDirOption = None,
    wipe: Annotated[bool, typer.Option(help="Also delete etcd data, certificates and logs.")] = False,
) -> None:
    """Stop every process of the cluster and remove pod networks and mounts (safe to repeat)."""
    cluster = LocalCluster(state_dir)
    try:
        cluster.wipe() if wipe else cluster.down(report=lambda line: console.print(f"  {line}"))
    except LocalClusterError as error:
        _fail(error)
    console.print("[green]✓[/] cluster stopped" + (" and its state removed" if wipe else ""))


@app.command()
def env(state_dir: StateDirOption = None) -> None:
    """Print shell exports for this cluster: `eval $(optimodel dev env)`."""
    cluster = LocalCluster(state_dir)
    bin_dir = Path(cluster.config.binary("kubectl")).parent
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f'export PATH="{bin_dir}:$PATH"')
    print(f"export OPTIMODEL_PROMETHEUS_URL={cluster.prometheus_url}")
