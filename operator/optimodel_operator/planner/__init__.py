"""Pure decisions of the operator: (resource, observations, clock) → status, events, errors.

No kopf, no Kubernetes client, no I/O (an import-linter contract keeps it so); the kopf handlers
in optimodel_operator.controller read, call these functions and apply what they return.
"""
