"""Bad manifests applied to the real API server with kubectl: each is refused with a message that
names the offending field, and nothing is stored. The table is shared with the unit tests
(optimodel_operator.testing.manifests), so the local CEL emulation and the server judge the same."""

from __future__ import annotations

import uuid

import pytest

from optimodel_operator.testing.cluster import install_crd
from optimodel_operator.testing.manifests import BAD_CASES, BadCase, bad_manifest, base_manifest, to_yaml

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def bad_ns(local_cluster):
    install_crd(local_cluster.kubectl)
    name = f"t-bad-manifests-{uuid.uuid4().hex[:5]}"
    local_cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        local_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_at_least_15_bad_cases() -> None:
    assert len(BAD_CASES) >= 15


def test_the_base_manifest_is_accepted(local_cluster, bad_ns: str) -> None:
    # The control: without it, a CRD refusing everything would pass every case below.
    result = local_cluster.kubectl("apply", "-n", bad_ns, "-f", "-", input=to_yaml(base_manifest("control")))
    assert "created" in result.stdout or "configured" in result.stdout or "unchanged" in result.stdout
    local_cluster.kubectl("delete", "om", "control", "-n", bad_ns)


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_refused_naming_the_field(local_cluster, bad_ns: str, case: BadCase) -> None:
    result = local_cluster.kubectl("apply", "-n", bad_ns, "-f", "-", input=to_yaml(bad_manifest(case)), check=False)
    assert result.returncode != 0, f"{case.id} was accepted: {result.stdout}"
    assert case.field in result.stderr, f"{case.id}: refusal does not name {case.field}:\n{result.stderr}"
    stored = local_cluster.kubectl("get", "om", case.id, "-n", bad_ns, "--ignore-not-found", "-o", "name")
    assert stored.stdout.strip() == ""


def test_nothing_was_stored(local_cluster, bad_ns: str) -> None:
    listed = local_cluster.kubectl("get", "om", "-n", bad_ns, "-o", "name").stdout.strip()
    assert listed == ""
