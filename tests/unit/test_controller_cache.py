"""Steady-state reads from watch caches (controller/cache.py), and their safety.

A small in-memory API server stands in for kube-apiserver: resourceVersions from one counter, every change
queued as a watch event that the test delivers when it chooses (so the cache can be made to lag), through
kopf's own index implementation fed by the operator's index function. Every request the controller sends to
it is counted by verb and kind.
"""

from __future__ import annotations

import copy
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from kopf._core.engines.indexing import OperatorIndexer
from kubernetes.client.exceptions import ApiException

from optimodel_operator.controller import kube
from optimodel_operator.controller.cache import DEPLOYMENTS, JOBS, MODELS, SERVICES, WatchCache
from optimodel_operator.controller.quiet import apply_patch
from optimodel_operator.planner.loop import Actions
from optimodel_operator.planner.naming import LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY
from optimodel_operator.planner.view import ResourceView

NS, MODEL, UID = "ns", "m", "uid-m"
PLURAL = {"Job": JOBS, "Deployment": DEPLOYMENTS, "Service": SERVICES, "OptimizedModel": MODELS}


class Server:
    """Objects by (plural, namespace, name); each change bumps the one resourceVersion counter and is queued
    as a watch event."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (type, plural, body)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.uids = 0

    def put(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (plural, body["metadata"]["namespace"], body["metadata"]["name"])
        kind = "ADDED" if key not in self.objects else "MODIFIED"
        self.version += 1
        body = copy.deepcopy(body)
        if kind == "ADDED":
            self.uids += 1
            body["metadata"].setdefault("uid", f"uid-{self.uids}")
        body["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = body
        self.events.append((kind, plural, copy.deepcopy(body)))
        return copy.deepcopy(body)

    def delete(self, plural: str, namespace: str, name: str) -> None:
        body = self.objects.pop((plural, namespace, name))
        self.events.append(("DELETED", plural, body))

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.requests[("GET", plural)] += 1
        if (plural, namespace, name) not in self.objects:
            raise ApiException(status=404)
        return copy.deepcopy(self.objects[(plural, namespace, name)])

    def list(self, plural: str, namespace: str, label_selector: str) -> Any:
        self.requests[("LIST", plural)] += 1
        key, _, value = label_selector.partition("=")
        return SimpleNamespace(items=[copy.deepcopy(o) for (p, ns, _), o in self.objects.items()
                                      if p == plural and ns == namespace
                                      and (o["metadata"].get("labels") or {}).get(key) == value])


class Watch:
    """kopf's indices of the four kinds, fed by the operator's index function as kopf's watch streams would."""

    def __init__(self, server: Server, cache: WatchCache) -> None:
        self.server, self.cache = server, cache
        self.indexers = {plural: OperatorIndexer() for plural in (MODELS, JOBS, DEPLOYMENTS, SERVICES)}
        for plural, indexer in self.indexers.items():
            cache.attach(plural, indexer.index)
        cache.mark_synced()

    def _feed(self, kind: str | None, plural: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"], meta.get("uid"))
        if kind == "DELETED":
            self.indexers[plural].discard(key)
            return
        label = None if plural == MODELS else (meta.get("labels") or {}).get(LABEL_MODEL)
        self.indexers[plural].replace(key, self.cache.index(plural, body, label))

    def deliver(self, count: int | None = None) -> None:
        """Deliver the queued events (all, or the first `count`)."""
        taken = self.server.events[:count] if count is not None else list(self.server.events)
        del self.server.events[:len(taken)]
        for kind, plural, body in taken:
            self._feed(kind, plural, body)

    def relist(self) -> None:
        """kopf listing a kind anew after its stream broke: the events queued meanwhile are lost (deletions too);
        what exists now is delivered, as kopf does, through the index function."""
        self.server.events.clear()
        for (plural, _, _), body in list(self.server.objects.items()):
            self._feed(None, plural, copy.deepcopy(body))


class Resource:
    """The dynamic client's resource of one kind on the fake server."""

    def __init__(self, server: Server, plural: str) -> None:
        self.server, self.plural = server, plural

    def get(self, name: str, namespace: str) -> Any:
        body = self.server.get(self.plural, namespace, name)
        return SimpleNamespace(metadata=SimpleNamespace(resourceVersion=body["metadata"]["resourceVersion"]))

    def create(self, body: dict[str, Any], namespace: str) -> Any:
        self.server.requests[("POST", self.plural)] += 1
        if (self.plural, namespace, body["metadata"]["name"]) in self.server.objects:
            raise ApiException(status=409)
        made = self.server.put(self.plural, {**body, "metadata": {**body["metadata"], "namespace": namespace}})
        return SimpleNamespace(metadata=SimpleNamespace(resourceVersion=made["metadata"]["resourceVersion"]))

    def server_side_apply(self, body: dict[str, Any], name: str, namespace: str, **_: Any) -> Any:
        self.server.requests[("APPLY", self.plural)] += 1
        current = self.server.objects.get((self.plural, namespace, name))
        wanted = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
        stripped = None if current is None else {
            **current, "metadata": {k: v for k, v in current["metadata"].items() if k not in ("uid", "resourceVersion")}}
        if stripped != wanted:
            if current is not None:
                wanted["metadata"]["uid"] = current["metadata"]["uid"]
            current = self.server.put(self.plural, wanted)
        return SimpleNamespace(metadata=SimpleNamespace(resourceVersion=current["metadata"]["resourceVersion"]))

    def delete(self, name: str, namespace: str, **_: Any) -> None:
        self.server.requests[("DELETE", self.plural)] += 1
        if (self.plural, namespace, name) not in self.server.objects:
            raise ApiException(status=404)
        self.server.delete(self.plural, namespace, name)


def make_clients(server: Server) -> Any:
    def get_model(group: str, version: str, namespace: str, plural: str, name: str) -> dict[str, Any]:
        return server.get(MODELS, namespace, name)

    def patch_status(group: str, version: str, namespace: str, plural: str, name: str,
                     body: dict[str, Any]) -> dict[str, Any]:
        server.requests[("PATCH", MODELS)] += 1
        current = server.objects[(MODELS, namespace, name)]
        return server.put(MODELS, {**current, "status": apply_patch(current.get("status") or {}, body["status"])})

    return SimpleNamespace(
        custom=SimpleNamespace(get_namespaced_custom_object=get_model,
                               patch_namespaced_custom_object_status=patch_status),
        batch=SimpleNamespace(list_namespaced_job=lambda ns, label_selector: server.list(JOBS, ns, label_selector)),
        apps=SimpleNamespace(
            list_namespaced_deployment=lambda ns, label_selector: server.list(DEPLOYMENTS, ns, label_selector)),
        core=SimpleNamespace(list_namespaced_service=lambda ns, label_selector: server.list(SERVICES, ns, label_selector)),
        dynamic=SimpleNamespace(resources=SimpleNamespace(
            get=lambda api_version, kind: Resource(server, PLURAL[kind]))),
    )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[Server, Watch, WatchCache, Any]:
    server, cache = Server(), WatchCache()
    watch = Watch(server, cache)
    monkeypatch.setattr(kube, "_resource", lambda clients, obj: Resource(server, PLURAL[obj["kind"]]))
    monkeypatch.setattr(kube, "_applied", {})
    server.put(MODELS, {"apiVersion": "optimodel.io/v1alpha1", "kind": "OptimizedModel",
                        "metadata": {"namespace": NS, "name": MODEL, "uid": UID, "generation": 1},
                        "spec": {}, "status": {"currentStep": 0}})
    watch.deliver()
    return server, watch, cache, make_clients(server)


def child(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1" if kind == "Deployment" else "v1", "kind": kind,
            "metadata": {"name": name, "labels": {LABEL_MODEL: MODEL, LABEL_MANAGED_BY: MANAGED_BY},
                         "ownerReferences": [{"kind": "OptimizedModel", "name": MODEL, "uid": UID,
                                              "apiVersion": "optimodel.io/v1alpha1"}]},
            "spec": spec}


CHILDREN = Actions(apply=(child("Deployment", "m-cpu", replicas=1), child("Service", "m"), child("Service", "m-cpu")))
VIEW = ResourceView(name=MODEL, namespace=NS, generation=1, spec={}, status={}, uid=UID, annotations={})


def reconcile_reads(server: Server, cache: WatchCache, clients: Any) -> Counter[tuple[str, str]]:
    """What one steady reconcile of handlers.reconcile_model sends: read the model, observe, apply."""
    before = Counter(server.requests)
    kube.model(clients, cache, NS, MODEL)
    kube.observe(clients, VIEW, [], lambda plan: None, cache=cache)
    kube.apply_actions(clients, NS, CHILDREN, cache)
    return server.requests - before


def test_without_the_cache_each_steady_reconcile_reads_eight_times(world: Any) -> None:
    """The requests a steady reconcile made before (docs/scale.md): GET model, LIST jobs, deployments and services,
    GET each applied child. handlers.reconcile_model after a wake-up read the model twice (the wake-up's own GET)."""
    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN)
    before = Counter(server.requests)
    kube.read_model(clients, NS, MODEL)
    kube.observe(clients, VIEW, [], lambda plan: None)
    kube.apply_actions(clients, NS, CHILDREN)
    assert server.requests - before == Counter({("GET", MODELS): 1, ("LIST", JOBS): 1, ("LIST", DEPLOYMENTS): 1,
                                                ("LIST", SERVICES): 1, ("GET", DEPLOYMENTS): 1, ("GET", SERVICES): 2})


def test_a_steady_reconcile_reads_nothing_from_the_api_once_the_watch_delivered_its_writes(world: Any) -> None:
    server, watch, cache, clients = world
    assert kube.apply_actions(clients, NS, CHILDREN, cache) == [
        ("Created", "Deployment", "m-cpu"), ("Created", "Service", "m"), ("Created", "Service", "m-cpu")]
    watch.deliver()
    for _ in range(3):
        assert reconcile_reads(server, cache, clients) == Counter()
    observed = kube.observe(clients, VIEW, [], lambda plan: None, cache=cache)
    assert set(observed.deployments) == {"m-cpu"} and observed.services == frozenset({"m", "m-cpu"})


def test_a_model_is_never_planned_from_a_copy_older_than_the_last_status_patch(world: Any) -> None:
    """The status drives the rollout's state machine: a reconcile that read the cached model from before its own
    last patch would take the same step again. Until the watch delivers the patched version, the model is read
    from the API server."""
    server, watch, cache, clients = world
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 0
    kube.patch_status(clients, NS, MODEL, {"currentStep": 1}, cache)
    stale = cache.lookup(MODELS, NS, MODEL)
    assert stale == (False, None), "the cache still holds step 0: it must not answer"
    assert watch.indexers[MODELS].index[("name", NS, MODEL)]  # it does hold the stale body, step 0
    assert list(watch.indexers[MODELS].index[("name", NS, MODEL)])[0]["status"]["currentStep"] == 0
    before = server.requests[("GET", MODELS)]
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 1
    assert server.requests[("GET", MODELS)] == before + 1
    watch.deliver()
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 1
    assert server.requests[("GET", MODELS)] == before + 1, "delivered: read from the cache"
    # A later change by someone else (a command annotation) delivered after the patch is used as well.
    server.put(MODELS, {**server.objects[(MODELS, NS, MODEL)], "metadata": {
        **server.objects[(MODELS, NS, MODEL)]["metadata"], "annotations": {"optimodel.io/command": "promote"}}})
    watch.deliver()
    assert kube.model(clients, cache, NS, MODEL)["metadata"]["annotations"] == {"optimodel.io/command": "promote"}
    assert server.requests[("GET", MODELS)] == before + 1


def test_a_patch_delivered_before_its_answer_arrived_counts_as_delivered(world: Any) -> None:
    server, watch, cache, clients = world
    patched = make_clients(server).custom.patch_namespaced_custom_object_status("", "", NS, "", MODEL,
                                                                               {"status": {"currentStep": 2}})
    watch.deliver()  # the watch was quicker than the patch's answer
    cache.wrote(MODELS, NS, MODEL, patched["metadata"]["resourceVersion"])
    assert cache.lookup(MODELS, NS, MODEL)[1]["status"]["currentStep"] == 2


def test_a_relist_that_skipped_the_written_version_is_confirmed_by_one_read(world: Any) -> None:
    server, watch, cache, clients = world
    kube.patch_status(clients, NS, MODEL, {"currentStep": 1}, cache)
    kube.patch_status(clients, NS, MODEL, {"currentStep": 2}, cache)
    watch.relist()  # step 1's and step 2's events lost; the listing brings step 2's version
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 2  # one GET; same version as cached
    before = server.requests[("GET", MODELS)]
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 2
    assert server.requests[("GET", MODELS)] == before, "confirmed current: no further read"


def test_a_child_just_created_and_not_yet_in_the_cache_is_neither_missed_nor_created_twice(world: Any) -> None:
    server, watch, cache, clients = world
    assert len(kube.apply_actions(clients, NS, CHILDREN, cache)) == 3
    # Nothing delivered yet: observing falls back to the API and sees the three children.
    observed = kube.observe(clients, VIEW, [], lambda plan: None, cache=cache)
    assert set(observed.deployments) == {"m-cpu"} and observed.services == frozenset({"m", "m-cpu"})
    # The next apply checks against the API server: no second "Created", no write.
    applies = server.requests[("APPLY", DEPLOYMENTS)] + server.requests[("APPLY", SERVICES)]
    assert kube.apply_actions(clients, NS, CHILDREN, cache) == []
    assert server.requests[("APPLY", DEPLOYMENTS)] + server.requests[("APPLY", SERVICES)] == applies
    # A Job created twice (the second plan from a cache without it) is refused by the server and tolerated.
    job = Actions(create=(child("Job", "m-optimize-cpu-1"),))
    assert kube.apply_actions(clients, NS, job, cache) == [("Created", "Job", "m-optimize-cpu-1")]
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).jobs.keys() == {"m-optimize-cpu-1"}
    assert kube.apply_actions(clients, NS, job, cache) == []
    assert server.requests[("POST", JOBS)] == 2 and len([k for k in server.objects if k[0] == JOBS]) == 1
    # Delivered: the cache answers, and the reconcile reads nothing.
    watch.deliver()
    assert reconcile_reads(server, cache, clients) == Counter()


def test_a_child_lagging_behind_its_last_write_is_read_from_the_api(world: Any) -> None:
    """A Deployment scaled or re-applied by this process: the watch still shows the version before."""
    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN, cache)
    watch.deliver()
    bigger = Actions(apply=(child("Deployment", "m-cpu", replicas=3),))
    assert kube.apply_actions(clients, NS, bigger, cache) == [("Updated", "Deployment", "m-cpu")]
    before = server.requests[("LIST", DEPLOYMENTS)]
    observed = kube.observe(clients, VIEW, [], lambda plan: None, cache=cache)
    assert observed.deployments["m-cpu"].replicas == 3
    assert server.requests[("LIST", DEPLOYMENTS)] == before + 1
    watch.deliver()
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments["m-cpu"].replicas == 3
    assert server.requests[("LIST", DEPLOYMENTS)] == before + 1


def test_a_child_deleted_by_someone_leaves_the_cache_and_is_created_again(world: Any) -> None:
    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN, cache)
    watch.deliver()
    server.delete(SERVICES, NS, "m-cpu")
    watch.deliver()  # DELETED
    observed = kube.observe(clients, VIEW, [], lambda plan: None, cache=cache)
    assert observed.services == frozenset({"m"})
    assert kube.apply_actions(clients, NS, CHILDREN, cache) == [("Created", "Service", "m-cpu")]
    assert (SERVICES, NS, "m-cpu") in server.objects


def test_a_child_deleted_while_the_watch_was_down_is_found_gone_by_the_audit_after_the_relist(world: Any) -> None:
    """kopf's relist does not drop objects deleted meanwhile from its indices; the cache notices the relist (a
    version delivered twice) and lists each kind once."""
    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN, cache)
    watch.deliver()
    server.delete(DEPLOYMENTS, NS, "m-cpu")
    watch.relist()
    assert cache.relisted()
    assert "m-cpu" in kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments, \
        "before the audit, kopf's index still holds it"
    told: list[tuple[str, str]] = []

    def list_all(plural: str) -> list[dict[str, Any]]:
        return [o for (p, _, _), o in server.objects.items() if p == plural]

    assert cache.audit(list_all, lambda plural, body: told.append((plural, body["metadata"]["name"]))) == 1
    assert told == [(DEPLOYMENTS, "m-cpu")] and not cache.relisted()
    assert "m-cpu" not in kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments
    assert kube.apply_actions(clients, NS, CHILDREN, cache) == [("Created", "Deployment", "m-cpu")]
    watch.deliver()
    assert "m-cpu" in kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments


def test_a_child_deleted_by_this_process_is_read_from_the_api_until_the_watch_says_so(world: Any) -> None:
    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN, cache)
    watch.deliver()
    assert kube.apply_actions(clients, NS, Actions(delete=(("Service", "m-cpu"),)), cache) == [
        ("Deleted", "Service", "m-cpu")]
    before = server.requests[("LIST", SERVICES)]
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).services == frozenset({"m"})
    assert server.requests[("LIST", SERVICES)] == before + 1
    watch.deliver()
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).services == frozenset({"m"})
    assert server.requests[("LIST", SERVICES)] == before + 1


def test_before_kopf_listed_everything_the_cache_answers_nothing() -> None:
    cache = WatchCache()
    indexer = OperatorIndexer()
    cache.attach(MODELS, indexer.index)
    assert cache.lookup(MODELS, NS, MODEL) == (False, None)
    assert cache.children(SERVICES, NS, MODEL) is None, "a kind not indexed"
    cache.mark_synced()
    assert cache.lookup(MODELS, NS, MODEL) == (True, None), "listed, and not there"


def test_versions_of_deleted_objects_are_not_remembered_for_ever(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimodel_operator.controller import cache as cache_module

    server, watch, cache, clients = world
    for i in range(3):
        server.put(SERVICES, {**child("Service", f"s{i}"), "metadata": {**child("Service", f"s{i}")["metadata"],
                                                                        "namespace": NS}})
    watch.deliver()
    server.delete(SERVICES, NS, "s0")
    watch.deliver()
    assert (SERVICES, NS, "s0") in cache._delivered
    monkeypatch.setattr(cache_module, "PRUNE_EVERY", 1)  # the next delivery prunes
    server.put(SERVICES, {**server.objects[(SERVICES, NS, "s1")]})
    watch.deliver()
    assert (SERVICES, NS, "s0") not in cache._delivered
    assert (SERVICES, NS, "s1") in cache._delivered and (MODELS, NS, MODEL) in cache._delivered


def test_the_benchmark_splits_reads_into_watches_and_other_reads_of_the_operators_kinds() -> None:
    from optimodel_operator.testing.scripts import load_script

    scale = load_script("benchmarks/scale.py", "optimodel_scale_benchmark_reads")
    delta = {("WATCH", "deployments", "", "cluster"): 3, ("GET", "optimizedmodels", "", "resource"): 2,
             ("LIST", "services", "", "namespace"): 1, ("LIST", "services", "", "cluster"): 1,
             ("GET", "endpoints", "", "resource"): 4, ("GET", "", "", ""): 5, ("PUT", "leases", "", "resource"): 9}
    assert scale.classify_reads(delta) == {"watch": 3, "nonwatch": 13, "operator_nonwatch": 3,
                                           "operator_cluster_lists": 1}
    assert scale.classify_reads({("WATCH", "services", "", "cluster"): 2,
                                 ("GET", "endpointslices", "", "resource"): 1}) == {
        "watch": 2, "nonwatch": 1, "operator_nonwatch": 0, "operator_cluster_lists": 0}
    text = ("# TYPE apiserver_request_total counter\n"
            'apiserver_request_total{code="200",resource="services",scope="cluster",subresource="",verb="LIST"} 2\n'
            'apiserver_request_total{code="200",resource="services",scope="namespace",subresource="",verb="LIST"} 3\n'
            'apiserver_request_total{code="404",resource="services",scope="namespace",subresource="",verb="LIST"} 1\n')
    assert scale.parse_scoped_request_counts(text) == {("LIST", "services", "", "cluster"): 2,
                                                       ("LIST", "services", "", "namespace"): 4}


def test_what_a_reconcile_is_handed_is_a_copy_it_may_change(world: Any) -> None:
    server, watch, cache, clients = world
    model = kube.model(clients, cache, NS, MODEL)
    model["status"]["currentStep"] = 7
    assert kube.model(clients, cache, NS, MODEL)["status"]["currentStep"] == 0


def test_the_audit_lists_namespace_by_namespace_where_a_cluster_wide_list_is_forbidden(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from optimodel_operator.controller import handlers
    from optimodel_operator.controller.cache import CACHE

    asked: list[str | None] = []

    def forbidden(**_: Any) -> Any:
        asked.append(None)
        raise ApiException(status=403)

    def in_namespace(ns: str, label_selector: str) -> Any:
        asked.append(ns)
        assert label_selector == f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(
            to_dict=lambda: {"namespace": ns, "name": "m", "uid": f"u-{ns}", "labels": {}}))])

    fake = SimpleNamespace(core=SimpleNamespace(list_service_for_all_namespaces=forbidden,
                                                list_namespaced_service=in_namespace),
                           batch=SimpleNamespace(list_job_for_all_namespaces=None, list_namespaced_job=None),
                           apps=SimpleNamespace(list_deployment_for_all_namespaces=None,
                                                list_namespaced_deployment=None))
    monkeypatch.setattr(handlers, "_clients", fake)
    monkeypatch.setattr(CACHE, "namespaces", lambda plural: ["a", "b"])
    assert handlers._list_all(SERVICES) == [{"metadata": {"namespace": "a", "name": "m", "uid": "u-a"}},
                                           {"metadata": {"namespace": "b", "name": "m", "uid": "u-b"}}]
    assert asked == [None, "a", "b"]


def test_a_scale_answered_by_the_typed_client_is_noted_with_its_version(world: Any) -> None:
    """patch_namespaced_deployment_scale answers a V1Scale (snake_case resource_version, unlike the dynamic
    client's objects): the version it carries is the Deployment's, and the cache waits for it."""
    from kubernetes import client as k8s

    server, watch, cache, clients = world
    kube.apply_actions(clients, NS, CHILDREN, cache)
    watch.deliver()

    def scale(name: str, namespace: str, body: dict[str, Any]) -> Any:
        server.requests[("PATCH", DEPLOYMENTS)] += 1
        current = server.objects[(DEPLOYMENTS, namespace, name)]
        done = server.put(DEPLOYMENTS, {**current, "spec": {**current["spec"], **body["spec"]}})
        return k8s.V1Scale(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace,
                                                     resource_version=done["metadata"]["resourceVersion"]),
                           spec=k8s.V1ScaleSpec(replicas=body["spec"]["replicas"]))

    clients.apps.patch_namespaced_deployment_scale = scale
    assert kube.apply_actions(clients, NS, Actions(scale=(("m-cpu", 0),)), cache) == [
        ("Scaled", "Deployment", "m-cpu to 0")]
    before = server.requests[("LIST", DEPLOYMENTS)]
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments["m-cpu"].replicas == 0
    assert server.requests[("LIST", DEPLOYMENTS)] == before + 1, "not delivered yet: listed from the API"
    watch.deliver()
    assert kube.observe(clients, VIEW, [], lambda plan: None, cache=cache).deployments["m-cpu"].replicas == 0
    assert server.requests[("LIST", DEPLOYMENTS)] == before + 1


def test_the_version_is_read_from_each_clients_answer() -> None:
    from kubernetes import client as k8s
    from kubernetes.dynamic.resource import ResourceInstance

    assert kube._version(ResourceInstance(None, {"kind": "Service", "metadata": {"resourceVersion": "42"}})) == "42"
    assert kube._version(k8s.V1Scale(metadata=k8s.V1ObjectMeta(resource_version="43"))) == "43"
    assert kube._version({"metadata": {"resourceVersion": "44"}}) == "44"
    assert kube._version({"metadata": {}}) == "" and kube._version(None) == ""
