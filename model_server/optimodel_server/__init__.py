"""The optimodel model server: a verified ONNX artifact served over the Open Inference Protocol (v2).

Layers (each module has one job; the HTTP layer knows nothing about ONNX Runtime and the model knows
nothing about HTTP):

- ``endpoints``: thin Starlette endpoints, the only place that speaks HTTP.
- ``protocol``: the OIP v2 wire codec (JSON and the binary-tensor extension), hand-checked on the hot path.
- ``dataplane``: protocol-free operations (infer, metadata, readiness) over the served model.
- ``batching``: adaptive batching behind a bounded queue.
- ``model``: the ONNX Runtime session and its input checks.
- ``loader``: fetches and verifies the artifact before anything is loaded.
- ``metrics`` / ``drift``: Prometheus metrics and the PSI drift monitor.
- ``errors``: domain errors and the single mapping of them to HTTP status codes.
"""

__version__ = "0.1.0"
