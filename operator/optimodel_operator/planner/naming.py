"""Names and labels of the objects an OptimizedModel owns.

Kubernetes limits a label value and a Service name to 63 characters, while an OptimizedModel's name
may have 253: names too long are shortened deterministically (a cut plus a hash of the whole), so the
same inputs always give the same child name and two different models never share one.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL_MAX = 63

GROUP_PREFIX = "optimodel.io"
LABEL_MODEL = f"{GROUP_PREFIX}/model"
LABEL_REVISION = f"{GROUP_PREFIX}/revision"
LABEL_POOL = f"{GROUP_PREFIX}/pool"
LABEL_VARIANT = f"{GROUP_PREFIX}/variant"
LABEL_PROVIDER = f"{GROUP_PREFIX}/provider"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "optimodel"
ANNOTATION_CONFIG_HASH = f"{GROUP_PREFIX}/config-hash"
ANNOTATION_ARTIFACT_SHA256 = f"{GROUP_PREFIX}/artifact-sha256"
ANNOTATION_MANIFEST = f"{GROUP_PREFIX}/manifest"
ANNOTATION_VARIANT_KIND = f"{GROUP_PREFIX}/variant-kind"
ANNOTATION_DRIFT_PROFILED = f"{GROUP_PREFIX}/drift-profiled"
# On the OptimizedModel: fault flags for the servers of its current revision (tests and demos), e.g.
# "latency-ms=150" or "input-shift=2,error-ratio=0.1".
ANNOTATION_INJECT_FAULTS = f"{GROUP_PREFIX}/inject-faults"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(*parts: str, limit: int = DNS_LABEL_MAX) -> str:
    """`parts` joined by '-', lower-cased and cut to `limit` with a hash suffix when too long."""
    joined = re.sub(r"[^a-z0-9-]+", "-", "-".join(p for p in parts if p).lower()).strip("-")
    if len(joined) <= limit:
        return joined
    suffix = short_hash(joined, 8)
    return f"{joined[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"


def label_value(value: str) -> str:
    """A label value for `value` (at most 63 characters, shortened deterministically)."""
    return dns_label(value)
