"""docs/operations.md's troubleshooting tables cannot fall behind the code: every reason the operator can
put in a condition or an Event has a row, and every row names a reason something can set.

Where reasons come from:
- the catalog `optimodel_operator.api.conditions.Reason` (what the planner sets);
- the optimization Job's refusal reasons, `optimodel_contracts.errors`, which the operator copies from the
  Job's termination message into `Optimized=False`;
- string literals in reason positions in planner/ and controller/ (a Kubernetes reason mapped or passed on,
  an Event-only reason), found by reading the code's syntax tree, so a literal added there later needs a row;
- Kubernetes' own Job reasons, which the code passes on without naming them (listed here).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from optimodel_contracts import errors as job_errors
from optimodel_operator.api.conditions import Reason
from optimodel_operator.api.status import GateVerdict

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/operations.md"
SCANNED = [REPO / "operator/optimodel_operator/planner", REPO / "operator/optimodel_operator/controller"]

_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]+$")
# An f-string that builds a reason: CamelCase text around its formatted parts (`Variant{}`); a message such
# as `{}: {}` or a name such as `{}-stable` is not one.
_CAMEL_TEMPLATE = re.compile(r"^[A-Z][A-Za-z0-9{}]*$")
# Calls whose positional argument at this index is a reason.
_REASON_ARGUMENT = {"ConditionState": 1, "EventSpec": 1, "JobObservation": 2, "_PlanState": 2}

# A Job's Failed condition reason, passed on by controller/kube.py when its pods left nothing more precise.
KUBERNETES_REASONS = {"BackoffLimitExceeded"}
# Reasons built in f-strings, by their template (`{}` for each formatted part), with every value they take.
TEMPLATES = {"Variant{}": {f"Variant{v.value}" for v in GateVerdict if v != GateVerdict.PENDING}}


def _template(node: ast.JoinedStr) -> str:
    return "".join(str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values)


def _reasons_in(node: ast.AST, literals: set[str], templates: set[str]) -> None:
    """CamelCase string constants in an expression (`x or "Error"`), and f-string templates; lower-case
    constants are keys (`.get("reason")`), not reasons."""
    for child in ast.walk(node):
        if isinstance(child, ast.JoinedStr) and _CAMEL_TEMPLATE.match(_template(child)):
            templates.add(_template(child))
    inside_fstrings = {id(c) for n in ast.walk(node) if isinstance(n, ast.JoinedStr) for c in ast.walk(n)}
    for child in ast.walk(node):
        if (isinstance(child, ast.Constant) and isinstance(child.value, str) and _CAMEL.match(child.value)
                and id(child) not in inside_fstrings):
            literals.add(child.value)


def scan(source: str) -> tuple[set[str], set[str]]:
    """(reason literals, f-string templates) in reason positions: `reason=...` keywords, the reason argument of
    ConditionState / EventSpec / JobObservation, and the first item of a returned `(reason, message)` pair."""
    literals: set[str] = set()
    templates: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            index = _REASON_ARGUMENT.get(name)
            if index is not None and len(node.args) > index:
                _reasons_in(node.args[index], literals, templates)
            for keyword in node.keywords:
                if keyword.arg == "reason":
                    _reasons_in(keyword.value, literals, templates)
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
            _reasons_in(node.value.elts[0], literals, templates)
    return literals, templates


def code_literals() -> tuple[set[str], set[str]]:
    literals: set[str] = set()
    templates: set[str] = set()
    for folder in SCANNED:
        for path in sorted(folder.rglob("*.py")):
            found, shapes = scan(path.read_text())
            literals |= found
            templates |= shapes
    return literals, templates


def job_refusal_reasons() -> set[str]:
    return {value for name, value in vars(job_errors).items() if name.isupper() and isinstance(value, str)}


def documented_reasons() -> set[str]:
    """The first cell of every table row that starts with a code span: `X`, or `X` / `Y`."""
    out: set[str] = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            out |= set(re.findall(r"`([A-Za-z0-9]+)`", first))
    return out


def test_the_scan_finds_reasons_in_every_position() -> None:
    source = '''
def f(job, state):
    ConditionState(TRUE, "Alpha", "message")
    EventSpec("Warning", state.reason or "Beta", "message")
    JobObservation(name, "Failed", job.get("reason") or "Gamma", None)
    thing(reason="Delta", other="NotAReason")
    EventSpec("Normal", f"Variant{state.gate}", "message")
    thing(reason=f"{state.reason}: {state.message}")
    if state:
        return "Epsilon", "a message"
    return None, None
'''
    literals, templates = scan(source)
    assert literals == {"Alpha", "Beta", "Gamma", "Delta", "Epsilon"}
    assert templates == {"Variant{}"}


def test_every_catalog_reason_has_a_row() -> None:
    missing = sorted({r.value for r in Reason} - documented_reasons())
    assert missing == [], f"add rows to docs/operations.md for {missing}"


def test_every_job_refusal_reason_has_a_row() -> None:
    reasons = job_refusal_reasons()
    assert len(reasons) >= 10  # the catalog was read, not an empty module
    missing = sorted(reasons - documented_reasons())
    assert missing == [], f"add rows to docs/operations.md for {missing}"


def test_every_reason_literal_in_the_code_has_a_row() -> None:
    literals, templates = code_literals()
    assert literals, "the scan found no reason literal in planner/ or controller/: has the code moved?"
    unknown_templates = sorted(templates - TEMPLATES.keys())
    assert unknown_templates == [], f"reasons built from f-strings {unknown_templates}: add them to TEMPLATES"
    expanded = set().union(*(TEMPLATES[t] for t in templates))
    missing = sorted((literals | expanded) - documented_reasons())
    assert missing == [], f"add rows to docs/operations.md for {missing}"


def test_every_row_names_a_reason_something_sets() -> None:
    literals, templates = code_literals()
    known = ({r.value for r in Reason} | job_refusal_reasons() | literals | KUBERNETES_REASONS
             | set().union(*(TEMPLATES[t] for t in templates if t in TEMPLATES)))
    stale = sorted(documented_reasons() - known)
    assert stale == [], f"docs/operations.md has rows for reasons nothing sets: {stale}"
