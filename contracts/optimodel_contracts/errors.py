"""The one error type of the optimization Job, and the catalog of its machine-readable reasons.

Part of the contracts: the Job writes ``{"reason", "message"}`` to its termination message and the
operator copies the reason into the resource's status, so both sides read the same catalog.

A reason is a CamelCase word the operator copies into the resource's status condition; the message
is a sentence for a person. Neither ever contains a traceback.
"""

from __future__ import annotations

# Configuration
CONFIG_INVALID = "ConfigInvalid"
UNKNOWN_METRIC = "UnknownMetric"
VARIANT_PARENT_UNKNOWN = "VariantParentUnknown"
# Source model
SOURCE_UNREADABLE = "SourceUnreadable"
SOURCE_INVALID = "SourceInvalid"
SOURCE_HASH_MISMATCH = "SourceHashMismatch"
FACTORY_NOT_FOUND = "FactoryNotFound"
STATE_DICT_MISMATCH = "StateDictMismatch"
TORCH_SOURCE_REQUIRED = "TorchSourceRequired"
EXPORT_FAILED = "ExportFailed"
# Data
DATASET_UNREADABLE = "DatasetUnreadable"
DATASET_FORMAT_UNKNOWN = "DatasetFormatUnknown"
DATASET_EMPTY = "DatasetEmpty"
DATASET_TOO_SMALL = "DatasetTooSmall"
INPUT_MISMATCH = "InputMismatch"
SHAPE_MISMATCH = "ShapeMismatch"
LABELS_MISSING = "LabelsMissing"
# Variants and results
VARIANT_FAILED = "VariantFailed"
STORE_WRITE_FAILED = "StoreWriteFailed"
# Locations (optimodel_jobs.probes opens every input and the store before any step runs). "Not found" is
# SourceUnreadable / DatasetUnreadable ("does not exist") for an input and StoreNotFound for the store's bucket.
FILESYSTEM_MISSING = "FileSystemMissing"  # no fsspec implementation for the URI's protocol (s3fs, gcsfs ...)
HOST_UNREACHABLE = "HostUnreachable"  # connection refused, DNS failure, no answer before the deadline
CREDENTIALS_MISSING = "CredentialsMissing"  # none found (or HTTP 401)
CREDENTIALS_INVALID = "CredentialsInvalid"  # found, and rejected by the service (unknown key, bad signature)
PERMISSION_DENIED = "PermissionDenied"  # the identity is known and may not read the input / write the store
STORE_NOT_FOUND = "StoreNotFound"  # the store's bucket does not exist


class ReasonedError(Exception):
    """An error with a machine-readable CamelCase ``reason`` and a ``message`` for a person: the shape
    every error of the contracts has (the Job's refusals, unusable artifacts, unusable run records)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


class OptimizeError(ReasonedError):
    """A problem with the Job's input or a step, with a reason from the catalog above."""


def exception_chain(error: BaseException) -> list[BaseException]:
    """The error, then its causes (explicit ``__cause__`` first, else the implicit ``__context__``), each once:
    the Job's probes and the model server classify a failure by what lies at the bottom of it (fsspec, s3fs and
    botocore wrap the socket error that says what happened)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
