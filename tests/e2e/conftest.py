"""What every end-to-end module starts from: the CRD, the published zoo model and the operator installed with
the chart (this checkout's code, as `optimodel demo` installs it); stopped when the module ends, so the next
module (or the demo) finds no operator acting on its namespaces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import install_operator
from optimodel_operator.examples import Published, publish
from optimodel_operator.testing.cluster import install_crd, scale_operator


@pytest.fixture(scope="module")
def operator_in_cluster(local_cluster: LocalCluster) -> Iterator[Published]:
    install_crd(local_cluster.kubectl)
    published = publish()
    install_operator(local_cluster, report=lambda _: None)
    try:
        yield published
    finally:
        scale_operator(local_cluster.kubectl, 0)
