"""The pod network: one Linux bridge on the host, a network namespace and a veth pair per pod (iproute2).

Every pod of every simulated node sits on the same bridge (one L2 segment, the whole pod network as
one subnet), so pods reach each other and the host reaches them at their pod IP; the host's address
on the bridge is the pods' default gateway.

Services: kube-proxy (nftables mode) DNATs ClusterIPs in the host's network namespace. For that the
bridge forwards (IPv4 forwarding on `omc0` only, not host-wide), bridged traffic passes the host's IP
hooks (br_netfilter, so a reply from a backend pod to a client pod on the same bridge is un-NATed), and
the service range is routed onto the bridge from the host's own address there, so host-side clients
reach ClusterIPs whatever the host's default route. The bridge's deletion takes the route and the
per-bridge sysctl with it; `delete_kube_proxy_rules` removes kube-proxy's nftables tables.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .config import NETNS_PREFIX, VETH_PREFIX

log = logging.getLogger(__name__)


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed


def netns_name(pod_uid: str) -> str:
    return f"{NETNS_PREFIX}{pod_uid}"


def veth_name(pod_uid: str) -> str:
    # Interface names are at most 15 characters.
    return f"{VETH_PREFIX}{hashlib.sha1(pod_uid.encode()).hexdigest()[:8]}"


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def ensure_bridge(name: str, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network) -> None:
    if _ip("link", "show", name, check=False).returncode != 0:
        _ip("link", "add", name, "type", "bridge")
    cidr = f"{address}/{network.prefixlen}"
    if cidr not in _ip("-o", "addr", "show", "dev", name).stdout:
        _ip("addr", "add", cidr, "dev", name)
    _ip("link", "set", name, "up")


def _write_sysctl(path: Path, value: str) -> None:
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
            log.info("set %s = %s", path, value)
    except OSError as error:
        raise NetworkError(f"cannot set {path} to {value}: {error}") from error


def prepare_service_routing(
    bridge: str, address: ipaddress.IPv4Address, service_network: ipaddress.IPv4Network
) -> None:
    """What kube-proxy needs of the host (idempotent): forwarding on the bridge, br_netfilter, the service route."""
    _write_sysctl(Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding"), "1")
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
    if not bridge_nf.exists():
        raise NetworkError(
            "br_netfilter is not available (no /proc/sys/net/bridge/bridge-nf-call-iptables): replies between "
            "pods on the bridge could not be un-NATed by kube-proxy's rules"
        )
    _write_sysctl(bridge_nf, "1")
    _ip("route", "replace", str(service_network), "dev", bridge, "src", str(address))
    if shutil.which("nft") is not None:
        ensure_hairpin_table()


def prepare_host(
    bridge: str, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network,
    service_network: ipaddress.IPv4Network,
) -> None:
    ensure_bridge(bridge, address, network)
    prepare_service_routing(bridge, address, service_network)


# kube-proxy's nftables mode keeps everything it programs in one table per IP family.
KUBE_PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
# Ours, beside kube-proxy's: hairpin masquerade for every pod of every simulated node (see ensure_hairpin_table).
HAIRPIN_TABLE = ("ip", "optimodel-hairpin")
_HAIRPIN_RULESET = f"""\
table {HAIRPIN_TABLE[0]} {HAIRPIN_TABLE[1]} {{
    set pods {{
        type ipv4_addr . ipv4_addr
        comment "pod IP . pod IP: a connection from a pod to itself through a Service"
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ct status dnat ip saddr . ip daddr @pods masquerade fully-random
    }}
}}
"""


def _nft(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["nft", *args], capture_output=True, text=True)
    except FileNotFoundError:
        return None  # no nft: nothing of kube-proxy's can exist either


def _tables() -> set[tuple[str, ...]]:
    listing = _nft("list", "tables")
    if listing is None or listing.returncode != 0:
        return set()
    return {tuple(line.split()[1:3]) for line in listing.stdout.splitlines() if line.startswith("table ")}


def ensure_hairpin_table() -> None:
    """Masquerade a pod's connection to itself through a Service (idempotent).

    kube-proxy masquerades hairpin connections only for the endpoints of the node it serves, but the one
    kube-proxy of this host serves the pods of every simulated node. Without masquerade the pod would get
    its own packet back with its own address as the source, and drop it. Pods join the set as their
    network is made (`create_pod_network`); cleanup removes the table."""
    if HAIRPIN_TABLE in _tables():
        return
    loaded = subprocess.run(["nft", "-f", "-"], input=_HAIRPIN_RULESET, capture_output=True, text=True)
    if loaded.returncode != 0:
        raise NetworkError(f"nft: cannot load the hairpin table: {loaded.stderr.strip()}")


def _add_hairpin_member(address: ipaddress.IPv4Address) -> None:
    if _nft("list", "tables") is None:
        return  # no nft on this host (a bare agent run); kube-proxy cannot run either
    ensure_hairpin_table()
    added = _nft("add", "element", *HAIRPIN_TABLE, "pods", f"{{ {address} . {address} }}")
    if added is not None and added.returncode != 0:
        raise NetworkError(f"nft add element (hairpin {address}): {added.stderr.strip()}")


def kube_proxy_rules() -> list[str]:
    """kube-proxy's nftables tables (and our hairpin table beside them) present on the host, as `family name`."""
    present = _tables()
    return [f"{family} {name}" for family, name in (*KUBE_PROXY_TABLES, HAIRPIN_TABLE) if (family, name) in present]


def delete_kube_proxy_rules() -> list[str]:
    """Remove every table kube-proxy made (it leaves them behind when stopped, as on a real node)."""
    removed = []
    for table in kube_proxy_rules():
        _nft("delete", "table", *table.split())
        removed.append(f"nftables table {table}")
    return removed


def create_pod_network(
    pod_uid: str, address: ipaddress.IPv4Address, network: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address,
    bridge: str,
) -> str:
    """Create the pod's namespace with eth0 at `address`; returns the namespace name. Replaces leftovers."""
    namespace = netns_name(pod_uid)
    delete_pod_network(pod_uid)
    host_side = veth_name(pod_uid)
    temp_peer = "omcp" + host_side[len(VETH_PREFIX):]
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", host_side, "type", "veth", "peer", "name", temp_peer, "netns", namespace)
        _ip("link", "set", host_side, "master", bridge, "up")
        # Hairpin (the kubelet's hairpin-veth mode): a pod reaching a Service whose chosen endpoint is the pod
        # itself gets its frame back through the port it came from (br_netfilter bridges DNATed frames).
        _ip("link", "set", host_side, "type", "bridge_slave", "hairpin", "on")
        _ip("-n", namespace, "link", "set", temp_peer, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/{network.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", str(gateway))
        _add_hairpin_member(address)
    except NetworkError:
        delete_pod_network(pod_uid)
        raise
    return namespace


def kill_namespace_processes(namespace: str) -> None:
    """SIGKILL whatever still runs inside the namespace (processes that left their process group)."""
    if not netns_exists(namespace):
        return
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_pod_network(pod_uid: str) -> None:
    """Idempotent: remove the pod's veth and namespace if they exist."""
    namespace = netns_name(pod_uid)
    kill_namespace_processes(namespace)
    _ip("link", "del", veth_name(pod_uid), check=False)
    if netns_exists(namespace):
        _ip("netns", "del", namespace, check=False)


def our_namespaces() -> list[str]:
    root = Path("/run/netns")
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith(NETNS_PREFIX))


def our_veths() -> list[str]:
    names = []
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(VETH_PREFIX):
                names.append(name)
    return names


def delete_everything(bridge: str) -> list[str]:
    """Remove every namespace and veth with our prefix, then the bridge; returns what was removed."""
    removed: list[str] = []
    for namespace in our_namespaces():
        kill_namespace_processes(namespace)
        _ip("netns", "del", namespace, check=False)
        removed.append(f"netns {namespace}")
    for veth in our_veths():
        _ip("link", "del", veth, check=False)
        removed.append(f"veth {veth}")
    if _ip("link", "show", bridge, check=False).returncode == 0:
        _ip("link", "del", bridge, check=False)
        removed.append(f"bridge {bridge}")
    removed += delete_kube_proxy_rules()
    return removed
