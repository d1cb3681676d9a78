"""A cold control-plane build (minutes) is never silent: `go build -v` lines become periodic progress."""

from __future__ import annotations

from optimodel_localcluster.cli import BuildProgress


def test_progress_counts_downloads_and_packages_and_speaks_at_its_interval() -> None:
    said: list[str] = []
    progress = BuildProgress(said.append, every=0.0)
    for line in ["go: downloading k8s.io/api v0.36.3", "k8s.io/api/core/v1", "# k8s.io/x", "k8s.io/apiserver/pkg/server"]:
        progress.line(line)
    assert progress.downloads == 1 and progress.packages == 2
    assert len(said) == 4 and "1 modules downloaded, 2 packages compiled" in said[-1]
    assert said[-1].endswith("k8s.io/apiserver/pkg/server")


def test_progress_stays_quiet_between_intervals() -> None:
    said: list[str] = []
    progress = BuildProgress(said.append, every=3600.0)
    for index in range(100):
        progress.line(f"pkg/{index}")
    assert said == [] and progress.packages == 100
