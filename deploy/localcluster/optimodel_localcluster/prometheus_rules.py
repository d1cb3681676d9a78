"""optimodel's alert rules in the local cluster's Prometheus.

The rules are the chart's (`charts/optimodel/files/prometheus-rules.yaml`, the one source of truth), with
every `for:` longer than `LOCAL_FOR` shortened to it: the local cluster scrapes and evaluates every second
and serves tests and demos, where an alert is watched firing within seconds. The expressions are not
touched. `optimodel dev up` writes the file next to prometheus.yml and reloads Prometheus.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES_SOURCE = REPO_ROOT / "charts" / "optimodel" / "files" / "prometheus-rules.yaml"
LOCAL_FOR = "5s"
FILE_NAME = "prometheus-rules.yaml"

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")


def seconds(duration: str) -> float:
    """A Prometheus duration (`1h30m`, `0s`) in seconds."""
    text = str(duration).strip()
    if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", text):
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))


def local_rules(source: dict[str, Any], longest_for: str = LOCAL_FOR) -> dict[str, Any]:
    """The rule file with each alert's `for:` capped at `longest_for` (expressions and the rest unchanged)."""
    cap = seconds(longest_for)
    groups = []
    for group in source.get("groups") or []:
        rules = []
        for rule in group.get("rules") or []:
            rule = dict(rule)
            if "alert" in rule and seconds(rule.get("for", "0s")) > cap:
                rule["for"] = longest_for
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {**source, "groups": groups}


def rules_path(state_root: Path) -> Path:
    return state_root / FILE_NAME


def write(target: Path, source: Path = RULES_SOURCE) -> None:
    """Write the local rule file from the chart's; Prometheus must never read half of it."""
    rendered = local_rules(yaml.safe_load(source.read_text()) or {})
    header = f"# Written by `optimodel dev up` from {source} (`for:` capped at {LOCAL_FOR}); do not edit.\n"
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(header + yaml.safe_dump(rendered, sort_keys=False, width=1000))
    os.replace(handle.name, target)
