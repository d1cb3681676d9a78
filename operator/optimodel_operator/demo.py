"""`optimodel demo`: the main job on the embedded default.

The local cluster up, the CRD installed, the operator running (as a supervised local process, the
way operators are developed), an example `OptimizedModel` applied, and its status printed once the
operator has observed it. Everything stays running afterwards so you can keep exploring with
kubectl; `optimodel dev down` stops it all.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from optimodel_localcluster.cluster import LocalCluster
from optimodel_localcluster.paths import LocalClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXAMPLE = REPO_ROOT / "deploy" / "examples" / "minimal.yaml"
CRD_DIR = REPO_ROOT / "crds"

console = Console()


def _wait_observed(cluster: LocalCluster, namespace: str, name: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.kubectl("get", "optimizedmodel", name, "-n", namespace, "-o", "json", check=False)
        if result.returncode == 0:
            resource = json.loads(result.stdout)
            status = resource.get("status") or {}
            if status.get("observedGeneration") == resource["metadata"]["generation"]:
                return resource
        if time.monotonic() > deadline:
            operator_log = cluster.process("operator").log_tail(30)
            raise LocalClusterError(
                f"the operator did not report on {namespace}/{name} within {timeout:.0f}s; "
                f"its log ({cluster.process('operator').log_file}):\n{operator_log}"
            )
        time.sleep(0.5)


def demo(
    example: Annotated[Path, typer.Option(help="OptimizedModel manifest to apply.")] = DEFAULT_EXAMPLE,
    namespace: Annotated[str, typer.Option(help="Namespace to apply it in.")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the operator's status.")] = 120,
) -> None:
    """Local cluster up, operator running, an example OptimizedModel applied, its status printed."""
    cluster = LocalCluster()
    try:
        console.rule("1. local cluster")
        cluster.up(report=lambda step: console.print(f"  {step}"))
        console.rule("2. CRD and operator")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        cluster.kubectl("wait", "--for=condition=Established", "crd/optimizedmodels.optimodel.io", "--timeout=60s")
        operator = cluster.process("operator")
        if operator.is_running():
            console.print(f"  operator already running (pid {operator.pid()})")
        else:
            env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
            operator_cli = str(Path(sys.executable).with_name("optimodel"))
            pid = operator.start([operator_cli, "operator", "run"], env=env)
            console.print(f"  operator started (pid {pid}, log {operator.log_file})")
        console.rule(f"3. apply {example.name}")
        if namespace != "default":
            cluster.kubectl("create", "namespace", namespace, check=False)
        console.print(cluster.kubectl("apply", "-n", namespace, "-f", str(example)).stdout.strip())
        name = yaml.safe_load(example.read_text())["metadata"]["name"]
        resource = _wait_observed(cluster, namespace, name, timeout)
    except LocalClusterError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from error

    console.rule("4. status")
    console.print(cluster.kubectl("get", "optimizedmodels", "-n", namespace, "-o", "wide").stdout)
    status = resource["status"]
    table = Table("condition", "status", "reason", "message", title=f"{namespace}/{name}: phase {status.get('phase')}")
    for condition in status.get("conditions", []):
        table.add_row(condition["type"], condition["status"], condition.get("reason", ""),
                      condition.get("message", ""))
    console.print(table)
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             f"involvedObject.name={name}", check=False).stdout
    if events.strip():
        console.print(events)
    console.print(
        "Still running: the cluster, the operator and the resource.\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  kubectl get optimizedmodels -A   |   kubectl explain optimizedmodel.spec.rollout\n"
        "  optimodel dev down                 # stops everything"
    )
