"""The rollout's analysis: what to ask Prometheus about one revision on one pool, and what the answers mean.

``queries`` holds every PromQL template (scoped by label to namespace, model, revision and pool over a
window); ``answers`` the raw shapes a provider returns; ``measurement`` turns answers into measurements
(Successful / Failed / Inconclusive / Error) against the spec's thresholds; ``assess`` turns one run's
measurements into a verdict (Pass / Fail / Error / NoData). All of that is pure: no I/O, table-tested.
``provider`` is the one module that talks to Prometheus (prometheus-api-client). See docs/analysis.md.
"""
