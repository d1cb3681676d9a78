"""Fetch the artifact, verify it, and only then open it with ONNX Runtime.

A corrupt or mismatched artifact is never handed to ONNX Runtime: :func:`fetch_verified` checks the
blob's sha256 and size against the manifest first, and a failure becomes :class:`ModelRefused`, which
keeps the server unready for good (a restart with a good artifact is the way out).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from optimodel_contracts.artifacts import ArtifactIntegrityError, ArtifactManifest, fetch_verified

from .model import OnnxModel
from .providers import normalise_provider

log = logging.getLogger(__name__)


class ModelRefused(Exception):
    """The artifact failed verification or could not be loaded; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str, integrity: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.integrity = integrity


@dataclass
class LoadedModel:
    manifest: ArtifactManifest
    path: Path
    model: OnnxModel
    load_seconds: float


def load_model(
    manifest_uri: str, cache_dir: Path, requested_provider: str | None, intra_op_threads: int
) -> LoadedModel:
    """Blocking: fetch + verify + open + warm up. Raises ModelRefused with a reason."""
    started = time.perf_counter()
    try:
        manifest, path = fetch_verified(manifest_uri, cache_dir)
    except ArtifactIntegrityError as error:
        raise ModelRefused(error.reason, f"artifact {manifest_uri} refused: {error}", integrity=True) from error
    except (OSError, ValueError) as error:
        raise ModelRefused("FetchFailed", f"artifact {manifest_uri} could not be fetched: {error}", integrity=False) from error
    if not manifest.gate.deployable:
        raise ModelRefused(
            "NotDeployable",
            f"artifact {manifest_uri} did not pass its accuracy gate ({manifest.gate.reason}); not serving it",
            integrity=False,
        )
    provider = requested_provider or normalise_provider(manifest.execution_provider)
    try:
        model = OnnxModel(path, provider, intra_op_threads)
        model.warm_up()
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises several unrelated types
        raise ModelRefused("LoadFailed", f"verified artifact {manifest_uri} could not be loaded: {error}", integrity=False) from error
    return LoadedModel(manifest, path, model, time.perf_counter() - started)
