"""The local cluster's S3 store (seaweedfs.py) as configuration: the pin, the flags, the identities and the
manifests `dev up` applies; the store itself is exercised in tests/integration/test_s3_store.py."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import yaml

from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import COMPONENTS
from optimodel_localcluster.paths import StateLayout

BRIDGE = "10.244.0.1"


def test_the_version_matches_the_go_module_pin() -> None:
    go_mod = (seaweedfs.GOBUILD_DIR / "go.mod").read_text()
    # `go mod tidy` lists a module that only a tool directive imports as indirect.
    pin = rf"^\s*(require )?github.com/seaweedfs/seaweedfs {re.escape(seaweedfs.SEAWEEDFS_VERSION)}( // indirect)?$"
    assert re.search(pin, go_mod, re.M)
    assert re.search(r"^tool github.com/seaweedfs/seaweedfs/weed$", go_mod, re.M), "`go build tool` builds weed"
    assert (seaweedfs.GOBUILD_DIR / "go.sum").read_text().count("github.com/seaweedfs/seaweedfs ") == 2


def test_identities_are_made_once_private_and_kept(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    writer, reader = seaweedfs.ensure_identities(layout)
    path = seaweedfs.identities_file(layout)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert seaweedfs.ensure_identities(layout) == (writer, reader), "a second `up` keeps the keys pods hold"
    assert writer != reader and len(writer.access_key) == 20 and len(writer.secret_key) == 40
    actions = {i["name"]: i["actions"] for i in json.loads(path.read_text())["identities"]}
    assert set(actions[seaweedfs.READER]) == {f"Read:{seaweedfs.BUCKET}", f"List:{seaweedfs.BUCKET}"}
    assert "Write" in actions[seaweedfs.WRITER]
    assert (tmp_path / "seaweedfs" / "volumes").is_dir() and (tmp_path / "seaweedfs" / "master").is_dir()


def test_flags_keep_internals_on_loopback_and_nothing_leaves_the_machine(tmp_path: Path) -> None:
    argv = seaweedfs.argv(StateLayout(tmp_path), "/bin/weed", BRIDGE)
    flags = dict(a.lstrip("-").split("=", 1) for a in argv[2:] if "=" in a)
    assert argv[:2] == ["/bin/weed", "server"] and "-s3" in argv and "-filer" in argv
    assert flags["ip"] == flags["ip.bind"] == "127.0.0.1" and flags["s3.ip.bind"] == BRIDGE
    assert flags["master.telemetry"] == "false"
    assert flags["s3.port.iceberg"] == flags["s3.port.lance"] == "0"
    ports = seaweedfs.S3Ports()
    assert int(flags["s3.port"]) == ports.s3 and len(set(ports.all())) == len(ports.all())
    assert all(str(tmp_path) in flags[k] for k in ("dir", "master.dir", "s3.config", "filer.localSocket"))


def test_manifests_expose_the_gateway_and_hand_out_the_keys() -> None:
    writer, reader = seaweedfs.Keys("W" * 20, "w" * 40), seaweedfs.Keys("R" * 20, "r" * 40)
    documents = {d["kind"]: d for d in yaml.safe_load_all(seaweedfs.service_manifests(BRIDGE, writer))}
    assert documents["Service"]["metadata"] == {**documents["Service"]["metadata"], "name": "s3",
                                                "namespace": seaweedfs.NAMESPACE}
    assert "selector" not in documents["Service"]["spec"], "the endpoint is the host, not pods"
    slice_ = documents["EndpointSlice"]
    assert slice_["endpoints"][0]["addresses"] == [BRIDGE]
    assert slice_["ports"][0]["port"] == seaweedfs.S3Ports().s3
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "s3"

    def decoded(document: dict) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in document["data"].items()}

    assert decoded(documents["Secret"]) == {"AWS_ACCESS_KEY_ID": writer.access_key,
                                            "AWS_SECRET_ACCESS_KEY": writer.secret_key,
                                            "AWS_ENDPOINT_URL": seaweedfs.IN_CLUSTER_ENDPOINT}
    operator = yaml.safe_load(seaweedfs.operator_secret(reader))
    assert operator["metadata"] == {**operator["metadata"], "name": seaweedfs.OPERATOR_SECRET,
                                    "namespace": seaweedfs.OPERATOR_NAMESPACE}
    assert decoded(operator)["AWS_ACCESS_KEY_ID"] == reader.access_key


def test_the_operator_deployment_takes_the_store_secret_when_it_exists() -> None:
    deployment = yaml.safe_load((Path(__file__).parents[2] / "deploy/kustomize/base/deployment.yaml").read_text())
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": seaweedfs.OPERATOR_SECRET, "key": key, "optional": True}


def test_the_store_is_a_component_of_the_cluster() -> None:
    assert COMPONENTS[-1] == "seaweedfs", "started last, stopped first"
