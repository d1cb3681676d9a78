"""Fetch the artifact, verify it, and only then open it with ONNX Runtime.

A corrupt or mismatched artifact is never handed to ONNX Runtime: :func:`fetch_verified` checks the
blob's sha256 and size against the manifest first, and a failure becomes :class:`ModelRefused`, which
keeps the server unready for good (a restart with a good artifact is the way out).

A fetch that failed because the store could not answer now (:mod:`transient`) is not a refusal: it raises
:class:`StoreUnavailable`, and the data plane tries again with back-off. Whatever a later try fetches is
verified exactly as the first would have been.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from optimodel_contracts.artifacts import ArtifactManifest, fetch_verified

from .model import OnnxModel
from .providers import normalise_provider
from .transient import classify_fetch_error

log = logging.getLogger(__name__)


class ModelRefused(Exception):
    """The artifact failed verification or could not be loaded; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str, integrity: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.integrity = integrity


class StoreUnavailable(Exception):
    """The artifact store could not be reached or answered "not now": the fetch is worth another try.
    ``reason`` is HostUnreachable or StoreUnavailable (:mod:`transient`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class LoadedModel:
    manifest: ArtifactManifest
    path: Path
    model: OnnxModel
    load_seconds: float


def load_model(
    manifest_uri: str, cache_dir: Path, requested_provider: str | None, intra_op_threads: int
) -> LoadedModel:
    """Blocking: fetch + verify + open + warm up. Raises ModelRefused with a reason, or StoreUnavailable
    when the store could not answer (then nothing was verified, and nothing is refused)."""
    started = time.perf_counter()
    try:
        manifest, path = fetch_verified(manifest_uri, cache_dir)
    except Exception as error:  # noqa: BLE001 - file systems raise unrelated types (botocore's are not OSError)
        failure = classify_fetch_error(error)
        if failure.transient:
            raise StoreUnavailable(failure.reason, f"artifact {manifest_uri} could not be fetched: {failure.detail}") from error
        if failure.integrity:
            raise ModelRefused(failure.reason, f"artifact {manifest_uri} refused: {error}", integrity=True) from error
        raise ModelRefused(failure.reason, f"artifact {manifest_uri} could not be fetched ({failure.reason}): "
                           f"{failure.detail}", integrity=False) from error
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
