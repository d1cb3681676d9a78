"""The GitOps examples say what the chart accepts: the Flux HelmRelease's values pass the chart's schema and
render the objects they ask for (helm itself renders them), and its chart path is this repository's chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from optimodel_localcluster.build import helm_binary

REPO = Path(__file__).resolve().parents[2]
HELMRELEASE = REPO / "deploy" / "gitops" / "flux-helmrelease.yaml"


def _documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(HELMRELEASE.read_text()) if doc}


def test_the_helmrelease_points_at_the_chart_and_upgrades_the_crd() -> None:
    documents = _documents()
    release = documents["HelmRelease"]["spec"]
    assert (REPO / release["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
    assert release["chart"]["spec"]["sourceRef"]["name"] == documents["GitRepository"]["metadata"]["name"]
    assert "!/charts/optimodel/" in documents["GitRepository"]["spec"]["ignore"]
    assert release["install"]["crds"] == release["upgrade"]["crds"] == "CreateReplace"


def test_the_helmrelease_values_pass_the_schema_and_render_what_they_ask_for(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_documents()["HelmRelease"]["spec"]["values"]))
    result = subprocess.run([str(helm_binary()), "template", "optimodel", str(REPO / "charts" / "optimodel"),
                             "--namespace", "optimodel-system", "--values", str(values)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    kinds = {doc["kind"] for doc in objects}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Deployment"} <= kinds, kinds
    [deployment] = [doc for doc in objects if doc["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "registry.example.com/optimodel/operator:")
    [config] = [doc for doc in objects if doc["kind"] == "ConfigMap" and "OPTIMODEL_JOB_IMAGE" in doc.get("data", {})]
    assert config["data"]["OPTIMODEL_DEFAULT_ARTIFACTS"] == "s3://ml-artifacts/optimodel"
