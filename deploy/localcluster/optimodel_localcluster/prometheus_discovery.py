"""Pod discovery for Debian's Prometheus, which is built without Kubernetes service discovery.

Debian's `prometheus` package (2.42) drops `kubernetes_sd_configs`. Rather than replace the
real server, this small bridge watches pods through the API server, with Prometheus' own
read-only identity, and writes the targets as a `file_sd_configs` file that Prometheus reloads
by itself. It follows the usual annotations: `prometheus.io/scrape: "true"`, `prometheus.io/port`,
`prometheus.io/path`, `prometheus.io/scheme`. Target labels are those the usual
`kubernetes-pods` relabelling would give: namespace, pod, node, and the pod's own labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("optimodel.prometheus-discovery")

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


def scrape_target(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The file_sd target group for one pod, or None if it is not to be scraped (yet)."""
    metadata = pod.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    status = pod.get("status", {})
    if annotations.get("prometheus.io/scrape") != "true":
        return None
    if status.get("phase") != "Running" or not status.get("podIP") or metadata.get("deletionTimestamp"):
        return None
    port = annotations.get("prometheus.io/port")
    if port is None:
        ports = [p["containerPort"] for c in pod.get("spec", {}).get("containers", []) for p in c.get("ports") or []]
        if not ports:
            return None
        port = str(ports[0])
    labels = {_LABEL_NAME.sub("_", key): value for key, value in (metadata.get("labels") or {}).items()}
    labels.update(
        namespace=metadata.get("namespace", ""),
        pod=metadata.get("name", ""),
        node=pod.get("spec", {}).get("nodeName", ""),
        __metrics_path__=annotations.get("prometheus.io/path", "/metrics"),
        __scheme__=annotations.get("prometheus.io/scheme", "http"),
    )
    return {"targets": [f"{status['podIP']}:{port}"], "labels": labels}


def render_targets(pods: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    groups = [scrape_target(pod) for _, pod in sorted(pods.items())]
    return [group for group in groups if group is not None]


def write_atomically(path: Path, groups: list[dict[str, Any]]) -> None:
    # Prometheus watches the file: it must never see half of it.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(groups, handle, indent=1)
    os.replace(handle.name, path)


def run(kubeconfig: Path, output: Path) -> None:
    from kubernetes import client, config, watch

    config.load_kube_config(str(kubeconfig))
    core = client.CoreV1Api(client.ApiClient())
    output.parent.mkdir(parents=True, exist_ok=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    written: list[dict[str, Any]] | None = None
    while not stopping:
        try:
            listing = core.list_pod_for_all_namespaces(_preload_content=False)
            body = json.loads(listing.data)
            pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in body["items"]}
            version = body["metadata"]["resourceVersion"]
            while not stopping:
                groups = render_targets(pods)
                if groups != written:
                    write_atomically(output, groups)
                    written = groups
                    log.info("%d scrape targets", len(groups))
                stream = watch.Watch().stream(
                    core.list_pod_for_all_namespaces, resource_version=version, timeout_seconds=5,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    obj = event["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                    if event["type"] == "DELETED":
                        pods.pop(key, None)
                    else:
                        pods[key] = obj
                    groups = render_targets(pods)
                    if groups != written:
                        write_atomically(output, groups)
                        written = groups
                        log.info("%d scrape targets", len(groups))
                    if stopping:
                        break
        except Exception as error:  # noqa: BLE001 - any API hiccup: relist after a pause
            if stopping:
                break
            log.warning("pod watch interrupted (%s); relisting", error)
            time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    run(args.kubeconfig, args.output)


if __name__ == "__main__":
    main()
