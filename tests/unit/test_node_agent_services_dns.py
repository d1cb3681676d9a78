"""What a pod gets to find the cluster: Service variables, resolv.conf, token refresh timing (pure parts)."""

from __future__ import annotations

import pytest

from optimodel_localcluster.node_agent.plan import PlanError, container_plan, resolv_conf, service_env
from optimodel_localcluster.node_agent.volumes import has_service_account_token, token_refresh_delay

KUBERNETES = {
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]},
}
MODEL_SERVER = {
    "metadata": {"name": "model-server", "namespace": "ml"},
    "spec": {"clusterIP": "10.96.7.7", "ports": [{"port": 80, "protocol": "TCP"},
                                                 {"name": "metrics", "port": 9090, "protocol": "TCP"}]},
}
HEADLESS = {"metadata": {"name": "headless", "namespace": "ml"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}
OTHER_NAMESPACE = {"metadata": {"name": "elsewhere", "namespace": "other"},
                   "spec": {"clusterIP": "10.96.9.9", "ports": [{"port": 80}]}}


def test_kubernetes_service_variables_are_those_in_cluster_clients_read() -> None:
    env = service_env([KUBERNETES], "ml", enable_service_links=False)
    assert env == {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
    }


def test_service_links_cover_the_pods_namespace_only_and_skip_headless_services() -> None:
    env = service_env([KUBERNETES, MODEL_SERVER, HEADLESS, OTHER_NAMESPACE], "ml", enable_service_links=True)
    assert env["MODEL_SERVER_SERVICE_HOST"] == "10.96.7.7"
    assert env["MODEL_SERVER_SERVICE_PORT"] == "80"  # the first port, named or not
    assert env["MODEL_SERVER_SERVICE_PORT_METRICS"] == "9090"
    assert env["MODEL_SERVER_PORT"] == "tcp://10.96.7.7:80"
    assert env["MODEL_SERVER_PORT_9090_TCP_ADDR"] == "10.96.7.7"
    assert not any(name.startswith(("HEADLESS_", "ELSEWHERE_")) for name in env)
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    without_links = service_env([KUBERNETES, MODEL_SERVER], "ml", enable_service_links=False)
    assert "MODEL_SERVER_SERVICE_HOST" not in without_links and "KUBERNETES_SERVICE_HOST" in without_links


def test_container_env_overrides_service_variables_and_can_expand_them() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ml", "uid": "u"}, "spec": {"containers": []}, "status": {}}
    container = {"name": "c", "command": ["run", "$(KUBERNETES_SERVICE_HOST)"],
                 "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
                         {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"}]}
    plan = container_plan(pod, container, source=None, volume_paths={}, node_allocatable={},  # type: ignore[arg-type]
                          entrypoints={}, default_path="/bin", hostname="p",
                          services=service_env([KUBERNETES], "ml", False), resolv_conf_path="/pods/p/resolv.conf")
    assert plan.env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert plan.env["API"] == "https://10.96.0.1:6443"
    assert plan.argv == ["run", "10.96.0.1"]
    resolv = [m for m in plan.mounts if m.container_path == "/etc/resolv.conf"]
    assert len(resolv) == 1 and resolv[0].host_path == "/pods/p/resolv.conf" and resolv[0].read_only


def _pod(**spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "ml"}, "spec": {"containers": [], **spec}}


HOST = "# the host's\nnameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n"


def test_cluster_first_resolv_conf_has_the_cluster_dns_search_path_and_ndots() -> None:
    text = resolv_conf(_pod(), ["10.96.0.10"], "cluster.local", HOST)
    assert text == ("nameserver 10.96.0.10\n"
                    "search ml.svc.cluster.local svc.cluster.local cluster.local\n"
                    "options ndots:5\n")


def test_dns_config_is_merged_and_policies_follow_the_kubelet() -> None:
    merged = resolv_conf(
        _pod(dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["extra.example"],
                        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}),
        ["10.96.0.10"], "cluster.local", HOST,
    )
    assert merged is not None
    assert merged.splitlines() == [
        "nameserver 10.96.0.10", "nameserver 1.1.1.1",
        "search ml.svc.cluster.local svc.cluster.local cluster.local extra.example",
        "options ndots:2 edns0",
    ]
    # The host's own file: Default, and ClusterFirst on the host network.
    assert resolv_conf(_pod(dnsPolicy="Default"), ["10.96.0.10"], "cluster.local", HOST) is None
    assert resolv_conf(_pod(hostNetwork=True), ["10.96.0.10"], "cluster.local", HOST) is None
    with_host_net = resolv_conf(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), ["10.96.0.10"],
                                "cluster.local", HOST)
    assert with_host_net is not None and with_host_net.startswith("nameserver 10.96.0.10\n")
    default_plus = resolv_conf(_pod(dnsPolicy="Default", dnsConfig={"searches": ["x.example"]}), ["10.96.0.10"],
                               "cluster.local", HOST)
    assert default_plus == "nameserver 192.0.2.53\nsearch corp.example x.example\noptions timeout:2\n"
    none = resolv_conf(_pod(dnsPolicy="None", dnsConfig={"nameservers": ["9.9.9.9"]}), ["10.96.0.10"],
                       "cluster.local", HOST)
    assert none == "nameserver 9.9.9.9\n"
    with pytest.raises(PlanError):
        resolv_conf(_pod(dnsPolicy="Bogus"), ["10.96.0.10"], "cluster.local", HOST)


def test_tokens_are_rewritten_at_80_percent_of_their_life_and_at_least_daily() -> None:
    assert token_refresh_delay(3607, 3607) == pytest.approx(2885.6)
    # The API server may grant longer (a year for the admission plugin's 3607 s): the request's life counts.
    assert token_refresh_delay(3607, 365 * 86400) == pytest.approx(2885.6)
    assert token_refresh_delay(600, 300) == pytest.approx(240)
    assert token_refresh_delay(10 * 86400, 10 * 86400) == 86400
    access = {"name": "kube-api-access-x", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}
    assert has_service_account_token(access)
    assert not has_service_account_token({"name": "cfg", "configMap": {"name": "c"}})


def test_termination_message_is_the_file_or_on_failure_the_log_tail() -> None:
    from optimodel_localcluster.node_agent.plan import termination_message

    fallback = {"name": "c", "terminationMessagePolicy": "FallbackToLogsOnError"}
    assert termination_message({"name": "c"}, b'{"reason": "X"}', b"log\n", 2) == '{"reason": "X"}'
    assert termination_message(fallback, b"", b"".join(b"line %d\n" % i for i in range(200)), 2) == "".join(
        f"line {i}\n" for i in range(120, 200))
    assert termination_message(fallback, b"", b"ok\n", 0) is None  # logs only on error
    assert termination_message({"name": "c"}, b"", b"boom\n", 1) is None  # policy File: the file only
    assert len(termination_message({"name": "c"}, b"x" * 10000, b"", 1) or "") == 4096
    pod = {"metadata": {"name": "p", "namespace": "ml", "uid": "u"}, "spec": {"containers": []}, "status": {}}
    plan = container_plan(pod, {"name": "c", "command": ["true"], "terminationMessagePath": "/tmp/msg"},
                          source=None, volume_paths={}, node_allocatable={}, entrypoints={},  # type: ignore[arg-type]
                          default_path="/bin", hostname="p", termination_log_path="/pods/p/run/c.termination-log")
    assert [(m.host_path, m.container_path, m.read_only) for m in plan.mounts] == [
        ("/pods/p/run/c.termination-log", "/tmp/msg", False)]
