"""A small JSON client of the Kubernetes API (plain dicts in and out), configured from a kubeconfig.

The agent reads and writes objects as JSON dicts (status patches, list+watch); `kubernetes.config`
parses the kubeconfig (files or inline data, client certificates or tokens) and httpx does the HTTP.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Json = dict[str, Any]
log = logging.getLogger(__name__)


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class KubeApi:
    def __init__(self, kubeconfig: Path, timeout: float = 15.0) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        headers = {"Accept": "application/json", "User-Agent": "optimodel-node-agent/v1.36.3"}
        token = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
        if token:
            headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        verify: ssl.SSLContext | bool
        if configuration.verify_ssl:
            verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        else:
            verify = ssl._create_unverified_context()
        if configuration.cert_file:
            verify.load_cert_chain(configuration.cert_file, configuration.key_file)
        self.host = configuration.host.rstrip("/")
        self._client = httpx.Client(
            base_url=self.host, headers=headers, verify=verify, timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self._watch_client = httpx.Client(base_url=self.host, headers=headers, verify=verify,
                                          timeout=httpx.Timeout(timeout, read=None))

    def close(self) -> None:
        self._client.close()
        self._watch_client.close()

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                content_type: str = "application/json") -> Json:
        content = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if content is not None else None
        response = self._client.request(method, path, content=content, params=params, headers=headers)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {message}")
        return response.json() if response.content else {}

    def get(self, path: str, params: dict[str, Any] | None = None) -> Json | None:
        try:
            return self.request("GET", path, params=params)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: Json) -> Json:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, body: Json) -> Json:
        return self.request("PATCH", path, body=body, content_type="application/strategic-merge-patch+json")

    def put(self, path: str, body: Json) -> Json:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, body: Json | None = None) -> Json | None:
        try:
            return self.request("DELETE", path, body=body)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def watch(self, path: str, params: dict[str, Any]) -> Iterator[Json]:
        """Events of a watch (the server ends it after `timeoutSeconds`)."""
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        with self._watch_client.stream("GET", path, params=query) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, f"watch {path}: {response.text[:300]}")
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}" + (f"/{sub}" if sub else "")
