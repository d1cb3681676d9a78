"""The OptimizedModel CRD, generated from the pydantic API types (pure: no kopf, no Kubernetes client)."""
