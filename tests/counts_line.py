"""The last line of `make test`: pytest's counts, read back from its JUnit XML, with the deselected tests and the
selected tests per tier from the --whole-suite file (tests/conftest.py). Printed by a second interpreter because
torch's triton prints noise at the first one's exit, after pytest's own summary."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts_line(results: Path, selection: Path) -> str:
    parts = []
    if results.exists():
        suite = ET.parse(results).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        assert suite is not None, f"{results} has no <testsuite>"
        n, f, e, k = (int(suite.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
        parts.append(f"{n - f - e - k} passed, {f + e} failed, {k} skipped")
    else:
        parts.append("no results")
    if selection.exists():
        chosen = json.loads(selection.read_text())
        tiers = ", ".join(f"{tier} {count}" for tier, count in chosen["tiers"].items())
        parts.append(f"{chosen['deselected']} deselected (selected: {tiers})")
    else:
        parts.append("selection unknown (collection did not finish)")
    return "tests: " + ", ".join(parts)


if __name__ == "__main__":
    print("\n" + counts_line(Path(sys.argv[1]), Path(sys.argv[2])))
