"""The pod network: one Linux bridge on the host, a network namespace and a veth pair per pod (iproute2).

Every pod of every simulated node sits on the same bridge (one L2 segment, the whole pod network as
one subnet), so pods reach each other and the host reaches them at their pod IP; the host's address
on the bridge is the pods' default gateway.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
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
        _ip("-n", namespace, "link", "set", temp_peer, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/{network.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", str(gateway))
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
    return removed
