"""Where probes go: probe targets from the configuration and the routes.

In order of preference (Solaris IPMP):
1. targets listed in groups.yaml (mode `static`);
2. from the routing table (mode `routes`): first host routes to addresses on
   the probe subnet (the Solaris way of pinning targets), then the routers
   of default and static routes on that subnet;
3. otherwise hosts that answer an echo to 224.0.0.1 or ff02::1 (mode
   `multicast`), discovered by the probe engine.

An address of this host is never a target, whatever the source: its echo
would come back through the host itself and hide a dead NIC.

For IPv4 the probe subnet is that of the group's test addresses; when a
member probes with ARP (it has no test address), the group's IPv4 data
subnets are probe subnets too, and instead of multicast discovery the hosts
come from the host's neighbour table (neighbour_hosts). IPv6 probes
come from link-local addresses, so an IPv6 router target is a link-local
next hop, or a next hop on one of the group's IPv6 data prefixes.
"""

from __future__ import annotations

from typing import Iterable

from ..config import IP, GroupConfig
from .events import OwnedRoute


def _on_subnet(group: GroupConfig, family: int, ip: IP) -> bool:
    if ip.version != family or ip.is_multicast or ip.is_unspecified:
        return False
    if family == 4:
        return (any(ip in t.network for i in group.interfaces for t in i.test)
                or (any(i.test_arp for i in group.interfaces)
                    and any(ip in a.network for a in _data(group) if a.version == 4)))
    return ip.is_link_local or any(ip in a.network for a in _data(group) if a.version == 6)


def _data(group: GroupConfig):
    yield from group.data
    for i in group.interfaces:
        yield from i.data


def choose(group: GroupConfig, family: int, routes: Iterable[OwnedRoute],
           own: set[IP]) -> tuple[str, list[IP]]:
    """Return (mode, targets) for one family of a group, from the routes that
    leave by the group's NICs; an empty list in mode 'multicast' means:
    discover hosts. An IPv6 router is a target only by its link-local
    address (as in.mpathd): a global next hop is reached through the
    group's prefix route, which a member without a data address lacks, so
    probing it would fail that member."""
    static = [t for t in group.targets if t.version == family and t not in own]
    if static:
        return "static", static
    hosts: list[IP] = []
    routers: list[IP] = []
    for r in routes:
        if r.family != family:
            continue
        net = r.key.dst
        if (r.gateway is None and net.prefixlen == net.max_prefixlen
                and _on_subnet(group, family, net.network_address)):
            hosts.append(net.network_address)
        elif r.gateway is not None and _on_subnet(group, family, r.gateway) and (
                family == 4 or r.gateway.is_link_local):
            routers.append(r.gateway)
    found = [a for a in dict.fromkeys(hosts + routers) if a not in own]
    return ("routes", found) if found else ("multicast", [])


def on_probe_subnet(group: GroupConfig, family: int, ip: IP) -> bool:
    """May a host that answered multicast discovery be a target?"""
    return _on_subnet(group, family, ip)


def neighbour_hosts(group: GroupConfig, neighbours: Iterable[IP], own: set[IP]) -> list[IP]:
    """The hosts of the neighbour table that may be ARP probe targets: on
    the group's IPv4 probe subnet and not this host's own."""
    return [ip for ip in dict.fromkeys(neighbours) if ip not in own and _on_subnet(group, 4, ip)]
