"""The local cluster's S3-compatible object store: SeaweedFS (Apache-2.0), built from the Go module proxy.

One `weed server` process runs a master, a volume server, a filer and the S3 gateway, as a host process
like Prometheus. Its internals listen on loopback; the S3 gateway listens on the pod bridge address, and
pods reach it as any in-cluster store, through the Service `s3.optimodel-storage.svc` (port 8333), a
selector-less Service whose one EndpointSlice names the bridge address (as kube-dns and Prometheus).

Access is by S3 signature (v4) with keys this module generates once per cluster and keeps in the state
directory (`seaweedfs/identities.json`, 0600). Two identities:
- `optimodel` (read, write, list): the Secret `optimodel-storage/s3-credentials` carries its keys and the
  in-cluster endpoint under the names botocore reads (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_ENDPOINT_URL); copy it into a model's namespace and name it in `spec.artifacts.credentials`.
- `optimodel-operator` (read, list): the operator reads run records and manifests from the store, never
  writes there; the Secret `optimodel-system/optimodel-store-credentials` carries its keys for the
  operator Deployment (the operator itself has no access to Secrets: the kubelet, here the node agent,
  puts them into its environment).

The bucket `optimodel` is created at start.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .build import _go_build, _is_built
from .components import host_service
from .go_modules import go_and_proxy
from .paths import StateLayout, cache_root

# Keep in step with gobuild-seaweedfs/go.mod (a unit test checks they agree). SeaweedFS publishes no
# semantic versions as Go module versions: the pin is a pseudo-version of its main branch.
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
GOBUILD_DIR = Path(__file__).with_name("gobuild-seaweedfs")
BINARY = "weed"

NAMESPACE = "optimodel-storage"
SERVICE = "s3"
SERVICE_PORT = 8333  # SeaweedFS's customary S3 port, as pods see it
IN_CLUSTER_ENDPOINT = f"http://{SERVICE}.{NAMESPACE}.svc.cluster.local:{SERVICE_PORT}"
BUCKET = "optimodel"
USER_SECRET = "s3-credentials"
OPERATOR_NAMESPACE = "optimodel-system"
OPERATOR_SECRET = "optimodel-store-credentials"
WRITER = "optimodel"
READER = "optimodel-operator"

Report = Callable[[str], None]


@dataclass(frozen=True)
class S3Ports:
    """Host ports, away from SeaweedFS's defaults (8333, 9333, 8080, 8888) so a SeaweedFS of the machine's
    own never collides; each gRPC port is set too (the default, port+10000, is not ours to assume free)."""

    s3: int = 18333
    s3_grpc: int = 28333
    master: int = 19333
    master_grpc: int = 29333
    volume: int = 18080
    volume_grpc: int = 28080
    filer: int = 18888
    filer_grpc: int = 28888

    def all(self) -> list[int]:
        return [self.s3, self.s3_grpc, self.master, self.master_grpc, self.volume, self.volume_grpc,
                self.filer, self.filer_grpc]


@dataclass(frozen=True)
class Keys:
    access_key: str
    secret_key: str


# --- build -------------------------------------------------------------------------------------------
def binaries_dir(version: str = SEAWEEDFS_VERSION) -> Path:
    return cache_root() / "seaweedfs" / version / "bin"


def binary() -> Path:
    return binaries_dir() / BINARY


def is_built() -> bool:
    return _is_built(binaries_dir(), GOBUILD_DIR, (BINARY,))


def build(on_output: Report | None = None) -> Path:
    """Build (or reuse) `weed`; returns its path. Cold: several minutes on 2 cores (about 2,400 packages)."""
    bin_dir = binaries_dir()
    if _is_built(bin_dir, GOBUILD_DIR, (BINARY,)):
        return bin_dir / BINARY
    _, goproxy = go_and_proxy("SeaweedFS")
    # `tool`: the go.mod's tool directive names SeaweedFS's main package; the binary takes its name, weed.
    _go_build(GOBUILD_DIR, bin_dir, ["tool"], (BINARY,), "-s -w", on_output,
              extra_env={"GOPROXY": goproxy, "GOWORK": "off"})
    return bin_dir / BINARY


# --- configuration -----------------------------------------------------------------------------------
def data_dir(layout: StateLayout) -> Path:
    return layout.root / "seaweedfs"


def identities_file(layout: StateLayout) -> Path:
    return data_dir(layout) / "identities.json"


def _new_keys() -> Keys:
    # The shapes AWS uses (20 upper-case letters and digits; 40 characters), so no client chokes on them.
    alphabet = string.ascii_uppercase + string.digits
    access = "".join(secrets.choice(alphabet) for _ in range(20))
    return Keys(access, base64.b64encode(secrets.token_bytes(30)).decode().replace("/", "x").replace("+", "y"))


def identity_config(writer: Keys, reader: Keys) -> dict:
    """SeaweedFS's S3 identity file (`-s3.config`): the writer may read, write and list the bucket
    (and create it), the operator's identity only read and list."""
    return {
        "identities": [
            {"name": WRITER, "credentials": [{"accessKey": writer.access_key, "secretKey": writer.secret_key}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": READER, "credentials": [{"accessKey": reader.access_key, "secretKey": reader.secret_key}],
             "actions": [f"Read:{BUCKET}", f"List:{BUCKET}"]},
        ]
    }


def ensure_identities(layout: StateLayout) -> tuple[Keys, Keys]:
    """The cluster's (writer, reader) keys: generated on the first start, the same ever after (a restarted
    store keeps serving the Secrets pods already hold). Creates the store's folders too (weed does not)."""
    for folder in ("volumes", "master"):
        (data_dir(layout) / folder).mkdir(parents=True, exist_ok=True)
    path = identities_file(layout)
    try:
        identities = {i["name"]: i["credentials"][0] for i in json.loads(path.read_text())["identities"]}
        return (Keys(identities[WRITER]["accessKey"], identities[WRITER]["secretKey"]),
                Keys(identities[READER]["accessKey"], identities[READER]["secretKey"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    writer, reader = _new_keys(), _new_keys()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(identity_config(writer, reader), indent=2))
    partial.chmod(0o600)
    partial.replace(path)
    return writer, reader


def argv(layout: StateLayout, weed: str, bridge_address: str, loopback: str = "127.0.0.1",
         ports: S3Ports = S3Ports()) -> list[str]:
    """`weed server` with the filer and the S3 gateway; internals on loopback, S3 on the bridge address."""
    data = data_dir(layout)
    return [
        weed, "server",
        f"-dir={data / 'volumes'}",
        # The filer keeps its metadata (leveldb) under the master's folder too.
        f"-master.dir={data / 'master'}",
        # -ip is also the address the filer and the gateway reach the volume server at: loopback.
        f"-ip={loopback}",
        f"-ip.bind={loopback}",
        f"-master.port={ports.master}", f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}", f"-volume.port.grpc={ports.volume_grpc}",
        "-filer", f"-filer.port={ports.filer}", f"-filer.port.grpc={ports.filer_grpc}",
        f"-filer.localSocket={data / 'filer.sock'}",
        "-s3", f"-s3.port={ports.s3}", f"-s3.port.grpc={ports.s3_grpc}", f"-s3.ip.bind={bridge_address}",
        f"-s3.config={identities_file(layout)}",
        f"-s3.localSocket={data / 's3.sock'}",
        # Neither the Iceberg catalog nor the Lance namespace server is used; off, they bind no port.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # No usage reports: nothing leaves this machine.
        "-master.telemetry=false",
        # A development store on a shared disk: small volumes, grown on demand.
        "-master.volumeSizeLimitMB=256", "-volume.max=0", "-master.volumePreallocate=false",
    ]


def host_endpoint(bridge_address: str, ports: S3Ports = S3Ports()) -> str:
    """Where the host (tests, `optimodel` commands) reaches the S3 gateway directly."""
    return f"http://{bridge_address}:{ports.s3}"


def _secret(name: str, namespace: str, keys: Keys, endpoint: str, labels: str) -> str:
    data = {"AWS_ACCESS_KEY_ID": keys.access_key, "AWS_SECRET_ACCESS_KEY": keys.secret_key,
            "AWS_ENDPOINT_URL": endpoint}
    encoded = "\n".join(f"  {key}: {base64.b64encode(value.encode()).decode()}" for key, value in data.items())
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {namespace}
  labels: {labels}
type: Opaque
data:
{encoded}
"""


def service_manifests(bridge_address: str, writer: Keys, ports: S3Ports = S3Ports()) -> str:
    """The store as pods find it: namespace, selector-less Service, its EndpointSlice, the writer's Secret."""
    labels = "{app.kubernetes.io/name: seaweedfs, app.kubernetes.io/managed-by: optimodel-localcluster}"
    service = host_service(NAMESPACE, SERVICE, "seaweedfs", "s3", SERVICE_PORT, bridge_address, ports.s3)
    return f"""{service}---
{_secret(USER_SECRET, NAMESPACE, writer, IN_CLUSTER_ENDPOINT, labels)}"""


def operator_secret(reader: Keys) -> str:
    labels = "{app.kubernetes.io/name: seaweedfs, app.kubernetes.io/managed-by: optimodel-localcluster}"
    return _secret(OPERATOR_SECRET, OPERATOR_NAMESPACE, reader, IN_CLUSTER_ENDPOINT, labels)


def install(kubectl: Callable[..., subprocess.CompletedProcess[str]], bridge_address: str, writer: Keys,
            reader: Keys) -> None:
    """Apply the Service, its EndpointSlice and both Secrets (idempotent)."""
    kubectl("apply", "-f", "-", input=service_manifests(bridge_address, writer))
    # The operator's namespace is the kustomization's (deploy/kustomize/base/namespace.yaml); created here
    # only when missing, never applied, so the two appliers never undo each other's labels.
    if kubectl("get", "namespace", OPERATOR_NAMESPACE, check=False).returncode != 0:
        kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    kubectl("apply", "-f", "-", input=operator_secret(reader))


# --- the bucket --------------------------------------------------------------------------------------
def client(endpoint: str, keys: Keys):  # type: ignore[no-untyped-def]  # botocore's client has no static type
    """A botocore S3 client (botocore comes with s3fs; imported here so the rest of the package needs none)."""
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, aws_access_key_id=keys.access_key, aws_secret_access_key=keys.secret_key,
        region_name="us-east-1",
        config=botocore.config.Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1},
                                      s3={"addressing_style": "path"}),
    )


def ensure_bucket(endpoint: str, writer: Keys, bucket: str = BUCKET) -> bool:
    """Create the bucket unless it exists; False while the store cannot say yet (the filer is starting)."""
    import botocore.exceptions

    s3 = client(endpoint, writer)
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            return False
    except botocore.exceptions.BotoCoreError:
        return False
    try:
        s3.create_bucket(Bucket=bucket)
        return True
    except botocore.exceptions.ClientError as error:
        return error.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
    except botocore.exceptions.BotoCoreError:
        return False

