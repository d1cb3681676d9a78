"""kopf handlers for OptimizedModel. Thin on purpose: read the object, ask the planner, apply.

Level-triggered: every trigger (create, update, resume after a restart) runs the same reconcile,
which recomputes the whole status from the object and patches only what differs.

No kopf timer or daemon on purpose: kopf gives those a finalizer, and a finalizer would block the
deletion of OptimizedModels (and of their namespaces) whenever the operator is not running.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import kopf

from optimodel_operator.api.meta import GROUP, PLURAL, VERSION
from optimodel_operator.planner.reconcile import Decision, reconcile
from optimodel_operator.planner.view import PlannerConfig, ResourceView

ARTIFACTS_ENV = "OPTIMODEL_DEFAULT_ARTIFACTS"


def _config() -> PlannerConfig:
    return PlannerConfig(default_artifacts_uri=os.environ.get(ARTIFACTS_ENV) or None)


def _now() -> datetime:
    return datetime.now(UTC)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the structural schema would prune status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our Events come from the status diff; kopf's "Handler succeeded" ones would be noise.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300


def _apply(decision: Decision, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
    if decision.status_patch:
        for key, value in decision.status_patch.items():
            patch.status[key] = value
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        logger.info("event %s %s: %s", event.type, event.reason, event.message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_on_change(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    decision = reconcile(ResourceView.from_body(body), _now(), _config())
    _apply(decision, body, patch, logger)
    if decision.permanent_error:
        # Not retried: only a spec change (a new update event) can fix it. The status patch above
        # is still applied by kopf, so the condition explains why.
        raise kopf.PermanentError(decision.permanent_error)
