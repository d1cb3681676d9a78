"""Revisions and optimization Jobs: what artifacts a spec asks for, and which Jobs make them.

A revision is the hash of the spec parts that change artifacts: the source, the evaluation, the
optimizations, the execution providers of the node pools and the artifact store. Replicas, node
selectors and rollout settings never make a new revision.

One optimization Job per execution provider: the latency that a pool's choice rests on is measured on
that pool's nodes and provider. The Job of a provider gets one synthetic pool named after the provider,
so renaming a pool or changing its variant or replicas changes neither the Job nor its config hash.
The optimizer reuses unchanged variants by content, so the second provider's Job builds nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimodel_contracts.from_resource import config_from_resource
from optimodel_contracts.runrecord import run_record_uri
from optimodel_operator.api.nodepools import NodePool
from optimodel_operator.api.spec import OptimizedModelSpec
from optimodel_operator.planner.naming import dns_label, short_hash

# Where the Job's pod keeps intermediate files: an emptyDir mounted at a path the host does not use
# (the local cluster's pods see the host's file system under their mounts).
JOB_WORK_DIR = "/var/lib/optimodel/work"


@dataclass(frozen=True)
class JobPlan:
    """One optimization Job: the variants measured on one execution provider."""

    provider: str
    pool: NodePool
    """The first pool of that provider: the Job runs on its nodes (selector, tolerations, GPUs)."""
    config: Mapping[str, Any]
    """The Job's configuration (the optimizer's JSON), as the entrypoint reads it."""
    config_hash: str
    job_name: str
    run_record_uri: str
    """Where the Job writes its run record; found there, the work is already done (any namespace)."""


def effective_store(spec: OptimizedModelSpec, default_store: str | None) -> str:
    store = spec.artifacts.uri if spec.artifacts else default_store
    if not store:
        raise ValueError("no artifact store: spec.artifacts is unset and the operator has no default")
    return store


def _wire(spec: OptimizedModelSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def providers(spec: OptimizedModelSpec) -> list[str]:
    """Execution providers in the order their first pool appears."""
    seen: list[str] = []
    for pool in spec.node_pools:
        if pool.execution_provider.value not in seen:
            seen.append(pool.execution_provider.value)
    return seen


def revision_of(spec: OptimizedModelSpec, store: str) -> str:
    wire = _wire(spec)
    relevant = {
        "source": wire["source"],
        "evaluation": wire["evaluation"],
        "optimizations": wire["optimizations"],
        "providers": sorted(providers(spec)),
        "store": store,
    }
    return short_hash(json.dumps(relevant, sort_keys=True), 10)


def job_plans(spec: OptimizedModelSpec, model_name: str, store: str) -> list[JobPlan]:
    wire = _wire(spec)
    plans = []
    config_name = dns_label(model_name)
    for provider in providers(spec):
        pool = next(p for p in spec.node_pools if p.execution_provider.value == provider)
        per_provider = {**wire, "nodePools": [{"name": provider, "executionProvider": provider}]}
        config = config_from_resource(per_provider, store=store, name=config_name, work_dir=JOB_WORK_DIR)
        config_hash = config.spec_hash()
        plans.append(JobPlan(
            provider=provider,
            pool=pool,
            config=config.model_dump(mode="json", by_alias=True, exclude_none=True),
            config_hash=config_hash,
            job_name=dns_label(model_name, "optimize", provider, config_hash[:8]),
            run_record_uri=run_record_uri(store, config),
        ))
    return plans
