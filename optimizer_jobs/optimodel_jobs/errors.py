"""The optimization Job's errors: the catalog lives in :mod:`optimodel_contracts.errors` (the operator
reads the same reasons from the Job's termination message); this module re-uses it for the Job's steps."""

from __future__ import annotations

from optimodel_contracts.errors import *  # noqa: F403 - the whole catalog, under the Job's own name
from optimodel_contracts.errors import OptimizeError  # noqa: F401 - named for readers and type checkers
