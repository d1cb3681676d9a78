"""Series the rollout's analysis counts on exist at zero before the first request: Prometheus' increase()
and rate() only count from a series' first scrape, so a counter born at its first error would lose what it
counted before that scrape (on the local cluster: 76 injected 500s in one scrape interval read as 0)."""

from __future__ import annotations

from pathlib import Path

from _server_helpers import make_client, sample_value, scrape
from optimodel_server.metrics import ANSWER_CODES
from optimodel_server.sample_artifact import write_sample_artifact


def test_every_answer_code_and_output_bin_is_exported_at_zero_before_any_request(tmp_path: Path) -> None:
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=16)
    base = {"model": "mlp", "revision": "0", "pool": "default"}
    client, _, _ = make_client(uri, tmp_path / "srv")
    try:
        families = scrape(client)
        for code in ANSWER_CODES:
            assert sample_value(families, "optimodel_requests_total", code=str(code), **base) == 0
        assert {"500", "503", "429"} <= {str(c) for c in ANSWER_CODES}
        for output_bin in range(4):
            assert sample_value(families, "optimodel_output_bin_total", bin=str(output_bin), **base) == 0
    finally:
        client.__exit__(None, None, None)
