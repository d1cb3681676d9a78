"""Which image a model server runs: onnxruntime on CPU pools, onnxruntime-gpu on pools that need a GPU."""

from __future__ import annotations

from optimodel_operator.api.spec import parse_spec
from optimodel_operator.builders.server import build_server_deployment
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

CONFIG = PlannerConfig(server_image="registry.example/optimodel/server:1.2", server_gpu_image="registry.example/optimodel/server-gpu:1.2")


def _image_per_pool(pools: list[dict]) -> dict[str, str]:
    spec = base_manifest()["spec"]
    spec["nodePools"] = pools
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, status={}, uid="uid-1")
    parsed = parse_spec(spec)
    images = {}
    for pool in parsed.node_pools:
        deployment = build_server_deployment(view, pool, "r1", "int8", "file:///s/manifests/int8/x.json", "a" * 64, CONFIG)
        images[pool.name] = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return images


def test_gpu_pools_run_the_gpu_image_and_cpu_pools_the_cpu_one() -> None:
    images = _image_per_pool([
        {"name": "cpu", "executionProvider": "cpu", "replicas": 1},
        {"name": "cuda", "executionProvider": "cuda", "gpus": 1, "replicas": 1},
        {"name": "trt", "executionProvider": "tensorrt", "gpus": 1, "replicas": 1},
    ])
    assert images == {
        "cpu": "registry.example/optimodel/server:1.2",
        "cuda": "registry.example/optimodel/server-gpu:1.2",
        "trt": "registry.example/optimodel/server-gpu:1.2",
    }
