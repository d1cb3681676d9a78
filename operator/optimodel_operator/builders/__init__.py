"""Pure builders, one per kind of child object: plain functions that return manifests (dicts).

No I/O and no Kubernetes client: the controller applies what they return.
"""
