"""`optimodel demo`: the main job on the embedded default, from `kubectl apply` to a served request.

The local cluster up (built on first use, with its progress shown), the CRD installed, the zoo's
digits model published where pods read it, the operator installed into the cluster as users install
it (`helm upgrade --install` of charts/optimodel), the example applied; then the
progress of the optimization Jobs and the deployment, the table of variants and what each pool
serves, and one request answered through the model's Service. Everything stays running afterwards;
`optimodel dev down` stops it all.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from optimodel_localcluster.cli import BuildProgress
from optimodel_localcluster.cluster import LocalCluster
from optimodel_localcluster.paths import LocalClusterError
from optimodel_operator.examples import EXAMPLES, publish

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXAMPLE = EXAMPLES / "digits.yaml"
CRD_DIR = REPO_ROOT / "crds"
CHART = REPO_ROOT / "charts" / "optimodel"
LOCAL_VALUES = REPO_ROOT / "deploy" / "helm" / "local-cluster-values.yaml"
HELM_RELEASE = "optimodel"
OPERATOR_NAMESPACE = "optimodel-system"
OPERATOR_DEPLOYMENT = "optimodel-operator"

# Wide enough for the tables when the output is a file or a pipe (rich assumes 80 columns there).
console = Console(width=None if sys.stdout.isatty() else 160)


def install_operator(cluster: LocalCluster, report: Any = console.print, timeout: int = 180) -> None:
    """The operator as users install it: `helm upgrade --install` of charts/optimodel (Helm built from the Go
    module proxy), with the local cluster's values."""
    legacy = cluster.process("operator")
    if legacy.is_running():  # an operator left as a local process by an older demo would act twice
        legacy.stop()
    _remove_kustomize_install(cluster, report)
    result = cluster.helm(
        "upgrade", "--install", HELM_RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
        "--values", str(LOCAL_VALUES), "--wait", f"--timeout={timeout}s", timeout=timeout + 30,
    )
    report(next((line for line in result.stdout.splitlines() if line.startswith("STATUS")), result.stdout.strip()))
    # The local cluster's pods run this checkout's code as it was when they started: a new pod picks up
    # what changed since (a real install changes the image instead).
    cluster.kubectl("rollout", "restart", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE)
    cluster.kubectl("rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE,
                    f"--timeout={timeout}s", timeout=timeout + 20)


def _remove_kustomize_install(cluster: LocalCluster, report: Any) -> None:
    """An operator applied from deploy/kustomize by an older demo has the chart's names but not Helm's
    ownership, which Helm refuses to take over: remove its objects (the CRD and the models stay)."""
    found = cluster.kubectl("get", "deployment", OPERATOR_DEPLOYMENT, "-n", OPERATOR_NAMESPACE, "-o", "json",
                            check=False)
    if found.returncode != 0:
        return
    labels = json.loads(found.stdout)["metadata"].get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") == "Helm":
        return
    report("removing the operator installed with kustomize by an earlier demo (Helm takes over)")
    cluster.kubectl("delete", "-n", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait=true",
                    f"deployment/{OPERATOR_DEPLOYMENT}", f"configmap/{OPERATOR_DEPLOYMENT}",
                    f"serviceaccount/{OPERATOR_DEPLOYMENT}", f"role/{OPERATOR_DEPLOYMENT}-leader-election",
                    f"rolebinding/{OPERATOR_DEPLOYMENT}-leader-election")
    cluster.kubectl("delete", "--ignore-not-found", f"clusterrole/{OPERATOR_DEPLOYMENT}",
                    f"clusterrolebinding/{OPERATOR_DEPLOYMENT}")


def _get(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "optimizedmodel", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _condition(resource: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (resource.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def _pods_line(cluster: LocalCluster, namespace: str, name: str) -> str:
    result = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"optimodel.io/model={name}", "-o", "json", check=False)
    if result.returncode != 0:
        return ""
    pods = json.loads(result.stdout)["items"]
    return ", ".join(f"{p['metadata']['name']} {p['status'].get('phase', '?')}" for p in pods)


def follow(cluster: LocalCluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Print each change of phase and pods until Ready or a terminal failure; the resource at the end."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = ""
    while True:
        resource = _get(cluster, namespace, name) or {}
        status = resource.get("status") or {}
        line = f"{status['phase']}: {status.get('message', '')}" if status.get("phase") else "waiting for the operator"
        pods = _pods_line(cluster, namespace, name)
        shown = f"{line} | {pods}"
        if shown != last:
            console.print(f"  [dim]{time.monotonic() - started:5.0f}s[/] {line}" + (f"\n         pods: {pods}" if pods else ""),
                          highlight=False)
            last = shown
        current = status.get("observedGeneration") == (resource.get("metadata") or {}).get("generation")
        if current and _condition(resource, "Ready").get("status") == "True":
            return resource
        if current and status.get("phase") == "Failed":
            return resource
        if time.monotonic() > deadline:
            raise LocalClusterError(f"{namespace}/{name} is not Ready after {timeout:.0f}s: {line}")
        time.sleep(1)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_tables(resource: dict[str, Any]) -> None:
    status = resource.get("status") or {}
    name = resource["metadata"]["name"]
    variants = Table("variant", "phase", "accuracy", "source", "drop", "size KiB", "provider", "p50 ms", "p99 ms",
                     "speed-up", "gate", title=f"{name}: variants (held-out evaluation, latency at the gate's batch size)")
    for variant in status.get("variants") or []:
        benchmarks = variant.get("benchmarks") or [{}]
        for index, bench in enumerate(benchmarks):
            first = index == 0
            variants.add_row(
                variant["name"] if first else "", variant.get("phase", "") if first else "",
                f"{variant['metric']:.4f}" if first and variant.get("metric") is not None else "",
                f"{variant['sourceMetric']:.4f}" if first and variant.get("sourceMetric") is not None else "",
                f"{variant['drop']:+.4f}" if first and variant.get("drop") is not None else "",
                f"{variant['sizeBytes'] / 1024:.1f}" if first and variant.get("sizeBytes") else "",
                bench.get("provider", ""), _ms(bench.get("latencyP50Ms")), _ms(bench.get("latencyP99Ms")),
                f"{bench['speedup']:.2f}x" if bench.get("speedup") else "-",
                bench.get("gate") or variant.get("gate", ""),
                style={"Passed": "green", "Failed": "red"}.get(bench.get("gate") or variant.get("gate", "")),
            )
    console.print(variants)
    for variant in status.get("variants") or []:
        if variant.get("gate") == "Failed" or variant.get("phase") == "Failed":
            console.print(f"  [red]{variant['name']}[/]: {variant.get('message', '')}", highlight=False)
    pools = Table("pool", "provider", "serves", "available", "p99 ms (gate)", "why", title=f"{name}: what each pool serves")
    for pool in status.get("pools") or []:
        why = pool.get("message", "")
        if pool.get("providerFallback"):
            why += f" [yellow](measured with a fallback: {pool['providerFallback']})[/]"
        pools.add_row(pool["name"], pool.get("provider", ""), pool.get("variant") or "[red]nothing[/]",
                      f"{pool.get('availableReplicas', 0)}/{pool.get('replicas', '-')}", _ms(pool.get("latencyP99Ms")), why)
    console.print(pools)


def post_when_routed(url: str, body: dict[str, Any], within_s: float = 15.0) -> Any:
    """POST through a ClusterIP, retrying refused connections for a few seconds: kube-proxy programs a
    Service's endpoints shortly after its pods turn Ready (as in any cluster), so a request sent at once
    may find none yet."""
    import httpx

    deadline = time.monotonic() + within_s
    while True:
        try:
            return httpx.post(url, json=body, timeout=10)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def request_through_service(cluster: LocalCluster, namespace: str, name: str, published: Any) -> tuple[list[int], list[int]]:
    """One inference request through the model's Service ClusterIP: predicted and true classes."""
    import numpy as np

    service = json.loads(cluster.kubectl("get", "service", name, "-n", namespace, "-o", "json").stdout)
    address = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    held_out = np.load(published.evaluation)
    rows = np.asarray(held_out[published.input_name][:8], dtype=np.float32).reshape(8, -1)
    body = {"inputs": [{"name": published.input_name, "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}
    response = post_when_routed(f"{address}/v2/models/{name}/infer", body)
    response.raise_for_status()
    output = response.json()["outputs"][0]
    logits = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    console.print(f"  POST {address}/v2/models/{name}/infer (8 held-out digits) → HTTP {response.status_code}", highlight=False)
    return logits.argmax(axis=1).tolist(), np.asarray(held_out["label"][:8]).tolist()


# The demo's later revisions roll out fast enough to watch: two steps, an analysis every 2 s.
DEMO_ROLLOUT: dict[str, Any] = {"steps": [50, 100], "interval": "2s", "failureLimit": 1, "minSamples": 10,
                                "slo": {"p99LatencyMs": 250, "maxErrorRate": 0.05}, "drift": {"maxPSI": 0.25}}


def _revision(example: dict[str, Any], budget: float, faults: str | None = None) -> dict[str, Any]:
    manifest = json.loads(json.dumps(example))
    manifest["spec"]["evaluation"]["maxDrop"] = budget  # another accuracy budget: a new revision
    manifest["spec"]["rollout"] = DEMO_ROLLOUT
    if faults:
        manifest.setdefault("metadata", {}).setdefault("annotations", {})["optimodel.io/inject-faults"] = faults
    return manifest


def watch_rollout(cluster: LocalCluster, namespace: str, name: str, traffic: Any, until: Any,
                  timeout: float) -> dict[str, Any]:
    """Print each rollout decision (phase, weight, reason) and who answered the live traffic, until `until`."""
    started = time.monotonic()
    last, since = "", time.time()
    while True:
        resource = _get(cluster, namespace, name) or {}
        status = resource.get("status") or {}
        current = status.get("observedGeneration") == (resource.get("metadata") or {}).get("generation")
        said = status.get("rolloutMessage") or status.get("message") or ""
        line = (f"{status.get('phase')}: {status.get('rolloutPhase') or '-'}"
                + (f" {status['canaryWeight']}%" if status.get("canaryWeight") is not None else "")
                + f" | {said if len(said) <= 240 else said[:240] + '…'}")
        if line != last:
            answered = traffic.revisions_since(since)
            since = time.time()
            who = ", ".join(f"{rev}: {count}" for rev, count in sorted(answered.items())) or "-"
            console.print(f"  [dim]{time.monotonic() - started:5.0f}s[/] {line}\n         answered since: {who}",
                          highlight=False)
            last = line
        if current and until(status):
            return resource
        if time.monotonic() - started > timeout:
            raise LocalClusterError(f"{namespace}/{name}: rollout not finished after {timeout:.0f}s: {line}")
        time.sleep(0.5)


def roll_out_revisions(cluster: LocalCluster, namespace: str, name: str, example: Path, published: Any,
                       timeout: float) -> None:
    """A second revision rolled out under live traffic, then a third with latency injected, rolled back."""
    from optimodel_operator.testing.rollout import Traffic, evaluation_rows

    base = yaml.safe_load(example.read_text())
    service = json.loads(cluster.kubectl("get", "service", name, "-n", namespace, "-o", "json").stdout)
    with Traffic(f"http://{service['spec']['clusterIP']}:80", name, evaluation_rows(published), rate_hz=25,
                 rows=32) as traffic:
        console.rule("7. a second revision (another accuracy budget), rolled out under live traffic "
                     "(25 requests/s of 32 rows)")
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_revision(base, 0.03)))
        done = watch_rollout(cluster, namespace, name, traffic,
                             lambda s: s.get("rolloutPhase") in ("Promoted", "RolledBack")
                             and s.get("rolloutRevision") == s.get("currentRevision"), timeout)
        console.print(f"  → {done['status'].get('rolloutMessage')}", highlight=False)
        console.rule("8. a third revision whose servers add 400 ms to every answer (fault flags): rolled back")
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=json.dumps(_revision(base, 0.035, faults="latency-ms=400")))
        back = watch_rollout(cluster, namespace, name, traffic,
                             lambda s: s.get("rolloutPhase") in ("Promoted", "RolledBack")
                             and s.get("rolloutRevision") == s.get("currentRevision"), timeout)
        console.print(f"  → {back['status'].get('rolloutMessage')}", highlight=False)
        time.sleep(4)
        since = time.time()
        time.sleep(3)
        console.print(f"  answered in the last 3 s: {traffic.revisions_since(since)}", highlight=False)


def demo(
    example: Annotated[Path, typer.Option(help="OptimizedModel manifest to apply.")] = DEFAULT_EXAMPLE,
    namespace: Annotated[str, typer.Option(help="Namespace to apply it in.")] = "default",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the model to be Ready.")] = 900,
    rollout: Annotated[bool, typer.Option(help="Then roll out a second revision under traffic and a third that "
                                               "is rolled back.")] = True,
) -> None:
    """Local cluster up, the operator installed in it, the example optimized, deployed and answering."""
    cluster = LocalCluster()
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    try:
        console.rule("1. local cluster")
        progress = BuildProgress(lambda text: console.print(f"  [dim]{text}[/]", highlight=False))
        cluster.up(report=lambda step: console.print(f"  {step}"), build_output=progress.line)
        console.rule("2. the CRD and the operator (a Deployment in optimodel-system)")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        cluster.kubectl("wait", "--for=condition=Established", "crd/optimizedmodels.optimodel.io", "--timeout=60s")
        install_operator(cluster, lambda text: console.print(f"  {text}", highlight=False))
        console.rule("3. the model: the zoo's digits MLP, trained here, published to /var/lib/optimodel/models")
        published = publish(log=lambda text: console.print(f"  {text}"))
        console.print(f"  {published.model}\n  {published.evaluation} (held out)", highlight=False)
        console.rule(f"4. kubectl apply -f {example.relative_to(REPO_ROOT) if example.is_relative_to(REPO_ROOT) else example}")
        if namespace != "default":
            cluster.kubectl("create", "namespace", namespace, check=False)
        console.print("  " + cluster.kubectl("apply", "-n", namespace, "-f", str(example)).stdout.strip())
        resource = follow(cluster, namespace, name, timeout)
    except LocalClusterError as error:
        console.print(f"[bold red]error:[/] {error}")
        raise typer.Exit(1) from error

    console.rule("5. result")
    console.print(cluster.kubectl("get", "optimizedmodels", "-n", namespace, name).stdout)
    print_tables(resource)
    if _condition(resource, "Ready").get("status") != "True":
        console.print(f"[bold red]{name} is {resource['status'].get('phase')}:[/] {resource['status'].get('message')}")
        raise typer.Exit(1)
    console.rule("6. a request through the model's Service")
    predicted, labels = request_through_service(cluster, namespace, name, published)
    console.print(f"  predicted {predicted}\n  labels    {labels}", highlight=False)
    if rollout:
        try:
            roll_out_revisions(cluster, namespace, name, example, published, timeout)
        except LocalClusterError as error:
            console.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(1) from error
    console.print(
        "\nStill running: the cluster, the operator, the model's servers.\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  kubectl get om -n {namespace}   |   kubectl describe om {name} -n {namespace}   |   "
        f"kubectl logs -n {OPERATOR_NAMESPACE} deploy/{OPERATOR_DEPLOYMENT}\n"
        "  optimodel dev down               # stops everything"
    )
