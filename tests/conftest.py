"""Fixtures shared by every tier, and the whole-suite guard of `make test`.

Integration and end-to-end tests run against the real local cluster: one per test session,
reused if it is already running (then left running), otherwise started here and stopped at the
end. A cluster that cannot start fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.testing.cluster import operator_replicas, scale_operator

# This machine is no EC2 instance: botocore (s3fs), in the tests and in the operators they start as local
# processes, must not probe 169.254.169.254 for credentials when an s3:// URI is read without keys.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

TIERS = ("unit", "integration", "e2e")
_deselected: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    # An option, not an environment variable: a test that starts pytest itself must not inherit the guard.
    parser.addoption(
        "--whole-suite", metavar="COUNTS_JSON", default=None,
        help="(make test) fail before running anything unless every tier is selected and nothing is deselected; "
             "write the selection's counts to COUNTS_JSON",
    )


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items)


def tier_counts(items: list[pytest.Item], tests_dir: Path) -> dict[str, int]:
    """How many selected tests each tier has (a test outside the three folders counts under its own folder)."""
    counts = dict.fromkeys(TIERS, 0)
    for item in items:
        folder = item.path.relative_to(tests_dir).parts[0]
        counts[folder] = counts.get(folder, 0) + 1
    return counts


def whole_suite_problems(tiers: dict[str, int], deselected: list[str]) -> list[str]:
    """Why a run is not the whole suite: a tier with nothing selected, or tests deselected (by -m, -k,
    --deselect or a plugin, wherever they came from). Empty when it is."""
    problems = [f"the {tier} tier has no selected test" for tier in TIERS if not tiers.get(tier)]
    if deselected:
        problems.append(f"{len(deselected)} tests deselected, e.g. {deselected[0]}")
    return problems


def pytest_collection_finish(session: pytest.Session) -> None:
    counts_path = session.config.getoption("whole_suite")
    if counts_path is None:
        return
    tiers = tier_counts(session.items, Path(__file__).parent)
    Path(counts_path).write_text(json.dumps({"tiers": tiers, "deselected": len(_deselected)}))
    problems = whole_suite_problems(tiers, _deselected)
    if problems:
        pytest.exit("make test runs the whole suite: " + "; ".join(problems), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    started_here = not cluster.is_up()
    if started_here:
        cluster.up()
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    # Tests own the operators that act on their namespaces: an operator left running by `optimodel demo`
    # (in the cluster, or as a local process by an older demo) would act on them too. It is stopped for
    # the session and put back afterwards, so the README's two commands work in either order.
    demo_replicas = operator_replicas(cluster.kubectl)
    if demo_replicas:
        scale_operator(cluster.kubectl, 0)
    if cluster.process("operator").is_running():
        cluster.process("operator").stop()
    try:
        yield cluster
    finally:
        if demo_replicas and not started_here:
            scale_operator(cluster.kubectl, demo_replicas)
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if started_here and not os.environ.get("OPTIMODEL_KEEP_CLUSTER"):
            cluster.down()
            # `down` must leave nothing behind: checked every time a test session owns the cluster.
            assert cluster.leftovers() == [], cluster.leftovers()


@pytest.fixture
def namespace(local_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:5]}"
    local_cluster.kubectl("create", "namespace", name)
    # The ServiceAccount controller adds `default` shortly after; pods need it to be admitted.
    local_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    try:
        yield name
    finally:
        local_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
