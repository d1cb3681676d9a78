"""docs/reference/optimizedmodel.md, generated from the API types: the committed page matches the types,
every field of the spec and status models has a row with a description, and every condition, reason
and phase is listed. The field walk here reads the pydantic models themselves, not the schema the
generator reads, so a field the generator failed to reach shows up as a missing row."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Any

from pydantic import BaseModel

from optimodel_operator.api import ConditionType, OptimizedModelSpec, OptimizedModelStatus, Phase, Reason
from optimodel_operator.crd.reference import REFERENCE_PATH, anchor, check_reference, render_reference, write_reference

REPO = Path(__file__).resolve().parents[2]


def _models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], str]]:
    """The models an annotation holds, each with the path suffix it adds (`[]` for list items)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield annotation, ""
        return
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _models_in(args[0])
    elif origin in (typing.Union, UnionType):
        for arg in args:
            yield from _models_in(arg)
    elif origin in (list, tuple):
        for arg in args:
            yield from ((model, "[]" + suffix) for model, suffix in _models_in(arg))


def model_fields(model: type[BaseModel], path: str) -> Iterator[tuple[str, str]]:
    """(section path, wire field name) of every field reachable from `model`."""
    for name, field in model.model_fields.items():
        wire = field.alias or name
        yield path, wire
        for child, suffix in _models_in(field.annotation):
            yield from model_fields(child, f"{path}.{wire}{suffix}")


def _sections(page: str) -> dict[str, list[list[str]]]:
    """Heading (`spec.rollout`) → its table's rows, cells split on unescaped pipes."""
    out: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for line in page.splitlines():
        if line.startswith("#"):
            current = out.setdefault(line.lstrip("# ").strip(), [])
        elif line.startswith("| `") and current is not None:
            current.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


def test_committed_reference_matches_the_types() -> None:
    drifts = check_reference(REPO)
    assert drifts == [], "run `optimodel crd generate`:\n" + "\n".join(d.diff for d in drifts)


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    assert [d.path for d in check_reference(tmp_path)] == [REFERENCE_PATH]  # a missing page is drift
    write_reference(tmp_path)
    assert check_reference(tmp_path) == []
    page = tmp_path / REFERENCE_PATH
    row = "| `revisionHistoryLimit` | integer | `5` |"
    page.write_text(page.read_text().replace(row, row.replace("`5`", "`7`")))
    drifts = check_reference(tmp_path)
    assert [d.path for d in drifts] == [REFERENCE_PATH]
    assert "-| `revisionHistoryLimit` | integer | `7` |" in drifts[0].diff


def test_every_field_of_spec_and_status_has_a_described_row() -> None:
    sections = _sections(render_reference())
    fields = [*model_fields(OptimizedModelSpec, "spec"), *model_fields(OptimizedModelStatus, "status")]
    assert len(fields) > 150  # the walk reached the nested models, not just the top level
    for section, wire in fields:
        assert section in sections, f"no section for {section}"
        rows = {row[0].split()[0].strip("`"): row for row in sections[section]}
        assert wire in rows, f"{section}.{wire} has no row"
        assert rows[wire][-1], f"{section}.{wire} has no description: add a docstring to its field in api/"


def test_defaults_and_constraints_come_through() -> None:
    rows = {row[0]: row for row in _sections(render_reference())["spec.rollout"]}
    # | Field | Type | Default | Constraints | Description |
    assert rows["`failureLimit`"][2] == "`2`"
    assert rows["`noData`"][3] == "one of `hold`, `fail`"
    assert rows["`steps`"][1] == "list of integer"
    source = {row[0]: row for row in _sections(render_reference())["spec.source"]}
    assert source["`uri`"][2] == "required"
    assert "pattern `^(/\\|file://\\|s3://\\|gs://)[^\\s]+$`" in source["`uri`"][3]


def test_every_condition_reason_and_phase_is_listed() -> None:
    sections = _sections(render_reference())
    listed = {
        title: {row[0].strip("`") for row in sections[title]}
        for title in ("Conditions", "Condition reasons", "Phases")
    }
    assert listed["Conditions"] == {c.value for c in ConditionType}
    assert listed["Condition reasons"] == {r.value for r in Reason}
    assert listed["Phases"] == {p.value for p in Phase}


def test_links_point_at_headings() -> None:
    page = render_reference()
    headings = {anchor(line.lstrip("# ").strip()) for line in page.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", page)
    assert len(links) > 40
    assert sorted(set(links) - headings) == []


def test_the_crd_commands_write_and_check_the_page(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optimodel_operator.crd.cli import app

    runner = CliRunner()
    generated = runner.invoke(app, ["generate", "--root", str(tmp_path)])
    assert generated.exit_code == 0, generated.output
    assert str(tmp_path / REFERENCE_PATH) in generated.output
    assert runner.invoke(app, ["check", "--root", str(tmp_path)]).exit_code == 0
    page = tmp_path / REFERENCE_PATH
    page.write_text(page.read_text() + "\nedited by hand\n")
    checked = runner.invoke(app, ["check", "--root", str(tmp_path)])
    assert checked.exit_code == 1
    assert "+edited by hand" not in checked.output  # the diff goes from the committed page to the generated one
    assert "-edited by hand" in checked.output
