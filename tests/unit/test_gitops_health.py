"""The Argo CD health check (deploy/gitops/argocd-health.lua), run with a real Lua (lupa) against
OptimizedModel objects captured from the local cluster at each stage (tests/fixtures/statuses: optimizing,
deploying, promoted, a canary, a canary without data, rolled back, aborted, a refused revision, an invalid
spec), the way Argo CD runs it: `obj` global, a table with `status` and `message` returned."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

REPO = Path(__file__).resolve().parents[2]
LUA = (REPO / "deploy" / "gitops" / "argocd-health.lua").read_text()
FIXTURES = REPO / "tests" / "fixtures" / "statuses"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(LUA)
    return str(result["status"]), str(result["message"] or "")


def captured(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.mark.parametrize(("fixture", "expected"), [
    ("optimizing", "Progressing"),
    ("deploying", "Progressing"),
    ("promoted-first", "Healthy"),
    ("promoted", "Healthy"),
    ("canary", "Progressing"),
    ("canary-no-data", "Suspended"),
    ("rolled-back", "Degraded"),
    ("aborted", "Degraded"),
    ("gate-failed", "Degraded"),
    ("invalid-spec", "Degraded"),
])
def test_each_captured_stage_has_the_expected_health(fixture: str, expected: str) -> None:
    status, message = health(captured(fixture))
    assert status == expected, message
    if expected in ("Degraded", "Suspended"):
        assert message.strip(": "), "says why"


def test_the_rollback_says_what_failed() -> None:
    _, message = health(captured("rolled-back"))
    assert message.startswith("RolledBack: ") and "p99-latency" in message


def test_a_generation_not_yet_observed_is_progressing_whatever_the_old_status_says() -> None:
    obj = copy.deepcopy(captured("promoted"))
    obj["metadata"]["generation"] += 1  # the spec just changed; the status is the previous generation's
    assert health(obj)[0] == "Progressing"
    assert health({"metadata": {"name": "m", "generation": 1}})[0] == "Progressing", "no status at all yet"


def test_the_argocd_cm_copy_is_the_tested_lua() -> None:
    config = yaml.safe_load((REPO / "deploy" / "gitops" / "argocd-cm-health.yaml").read_text())
    assert config["data"]["resource.customizations.health.optimodel.io_OptimizedModel"].strip() == LUA.strip()
