"""The contracts between the operator, the optimization Jobs and the model server, in one neutral package.

- :mod:`optimodel_contracts.artifacts`: the artifact store's layout, the manifest, verified reads, the
  drift maths shared by the optimizer (reference profile) and the server (PSI of live traffic).
- :mod:`optimodel_contracts.jobconfig`: the optimization Job's configuration (``OptimizeConfig``).
- :mod:`optimodel_contracts.from_resource`: an ``OptimizedModel`` (a plain dict, the API's camelCase)
  -> ``OptimizeConfig``; the one mapping between the API's names and the Job's.
- :mod:`optimodel_contracts.runrecord`: what a Job run writes to ``<store>/runs/<name>/<spec-hash>.json``.
- :mod:`optimodel_contracts.errors`: the Job's refusal reasons (copied by the operator into status).

Imports only the standard library, pydantic, fsspec, numpy and pyyaml: the operator, the Job image and
the server image all import it, and none of them must pull in torch or onnxruntime through it
(an import-linter contract in pyproject.toml keeps it so).
"""
