"""The kopf layer: thin handlers that read, call the planner, and apply what it decided."""
