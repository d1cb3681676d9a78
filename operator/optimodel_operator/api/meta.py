"""Names of the OptimizedModel API: one place, used by the CRD generator, the operator and the tests."""

from __future__ import annotations

from typing import Final

GROUP: Final = "optimodel.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "OptimizedModel"
LIST_KIND: Final = "OptimizedModelList"
PLURAL: Final = "optimizedmodels"
SINGULAR: Final = "optimizedmodel"
SHORT_NAMES: Final = ("om",)
CATEGORIES: Final = ("optimodel",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
