"""The kubelet log endpoint: mutual TLS with the cluster CA, tail, previous, missing pods."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from optimodel_localcluster.node_agent.logserver import LogServers, find_pod_dir, tail_lines
from optimodel_localcluster.pki import CertificateRequest, ensure_pki


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    ensure_pki(tmp_path / "pki", [
        CertificateRequest("kubelet-serving", "node-agent", server=True, dns_names=("localhost",),
                           ip_addresses=("127.0.0.1",)),
        CertificateRequest("apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True),
    ])
    pod = tmp_path / "pods" / "ns_web_uid-1"
    pod.mkdir(parents=True)
    (pod / "main.log").write_text("one\ntwo\nthree\n")
    (pod / "main.previous.log").write_text("before\n")
    port = free_port()
    servers = LogServers(tmp_path, {"cpu-0": port})
    servers.start()
    yield tmp_path, port
    servers.stop()


def client(state: Path, with_certificate: bool = True) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(str(state / "pki" / "apiserver-kubelet-client.crt"),
                                str(state / "pki" / "apiserver-kubelet-client.key"))
    return httpx.Client(verify=context, timeout=5)


def test_logs_are_served_to_the_api_servers_client_certificate(served: tuple[Path, int]) -> None:
    state, port = served
    base = f"https://127.0.0.1:{port}/containerLogs/ns/web/main"
    with client(state) as http:
        assert http.get(base).text == "one\ntwo\nthree\n"
        assert http.get(base, params={"tailLines": "2"}).text == "two\nthree\n"
        assert http.get(base, params={"previous": "true"}).text == "before\n"
        assert http.get(base, params={"limitBytes": "3"}).text == "one"
        missing = http.get(f"https://127.0.0.1:{port}/containerLogs/ns/absent/main")
        assert missing.status_code == 404 and "ns/absent" in missing.text
        assert http.get(f"https://127.0.0.1:{port}/exec/ns/web/main").status_code == 404


def test_clients_without_a_cluster_certificate_are_refused(served: tuple[Path, int]) -> None:
    state, port = served
    with client(state, with_certificate=False) as http, pytest.raises(httpx.HTTPError):
        http.get(f"https://127.0.0.1:{port}/containerLogs/ns/web/main")


def test_a_taken_port_is_retried_until_free(tmp_path: Path, served: tuple[Path, int]) -> None:
    state, port = served
    blocker = socket.socket()
    blocked_port = free_port()
    blocker.bind(("127.0.0.1", blocked_port))
    blocker.listen()
    servers = LogServers(state, {"cpu-1": blocked_port})
    servers.start()
    try:
        assert servers.servers == []
        blocker.close()
        deadline = time.monotonic() + 15
        while not servers.servers and time.monotonic() < deadline:
            time.sleep(0.2)
        with client(state) as http:
            assert http.get(f"https://127.0.0.1:{blocked_port}/containerLogs/ns/web/main").text.startswith("one")
    finally:
        servers.stop()


def test_find_pod_dir_and_tail(tmp_path: Path) -> None:
    (tmp_path / "pods" / "ns_web_u1").mkdir(parents=True)
    (tmp_path / "pods" / "ns_web-2_u2").mkdir(parents=True)
    assert find_pod_dir(tmp_path, "ns", "web") == tmp_path / "pods" / "ns_web_u1"
    assert find_pod_dir(tmp_path, "ns", "nope") is None
    assert tail_lines(b"a\nb\nc", 1) == b"c"
    assert tail_lines(b"a\nb\n", 0) == b""
