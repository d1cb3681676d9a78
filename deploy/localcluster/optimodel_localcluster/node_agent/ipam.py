"""Pod address allocation inside one node's pod CIDR (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class AddressesExhausted(RuntimeError):
    pass


def allocate_address(
    cidr: ipaddress.IPv4Network,
    in_use: Iterable[ipaddress.IPv4Address],
    reserved: Iterable[ipaddress.IPv4Address] = (),
) -> ipaddress.IPv4Address:
    """The lowest free host address of `cidr`; the first host address is kept back as a gateway slot."""
    taken = set(in_use) | set(reserved)
    hosts = list(cidr.hosts())
    for address in hosts[1:]:
        if address not in taken:
            return address
    raise AddressesExhausted(f"no free pod address left in {cidr} ({len(taken)} in use)")
