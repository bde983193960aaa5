"""ipmpctl check: a configuration against the live system.

It reads the two files (any error there is the usual one line, exit 2),
then looks at the NICs as the kernel has them now and lists every problem
an IPMP group would have: missing NICs, duplicate MACs, mixed link types,
sysctls that break IPMP, a group's subnet also used outside it, address
families that not every member can carry, and ARP probing (`test: [arp]`)
on a NIC that cannot send ARP or in a group whose targets can only come from
the neighbour table.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from pyroute2 import IPRoute

from ..config import Config
from ..adapters.kernel import check_sysctls, ipv6_problem, read_sysctl


_ARPHRD_ETHER = 1


def _router_on(gateways: list[str | None], nets) -> bool:
    return any(gw is not None and any(ipaddress.ip_address(gw) in net for net in nets if net.version == 4)
               for gw in gateways)


def problems(cfg: Config) -> list[str]:
    out: list[str] = []
    with IPRoute() as ipr:
        links = {m.get_attr("IFLA_IFNAME"): m for m in ipr.get_links()}
        by_index = {m["index"]: name for name, m in links.items()}
        addrs = [(by_index.get(m["index"], "?"),
                  ipaddress.ip_interface(f"{m.get_attr('IFA_LOCAL') or m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"))
                 for m in ipr.get_addr()]
        routes = [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=socket.AF_INET)]
    for g in cfg.groups:
        members = [i.name for i in g.interfaces]
        present = [n for n in members if n in links]
        for n in members:
            if n not in links:
                out.append(f"group {g.name}: interface {n} does not exist")
        macs: dict[str, str] = {}
        for n in present:
            mac = links[n].get_attr("IFLA_ADDRESS")
            if mac in macs:
                out.append(f"group {g.name}: {n} has the same hardware address {mac} as {macs[mac]}; "
                           f"mpathd would offline {n}")
            macs.setdefault(mac, n)
        types = {n: links[n]["ifi_type"] for n in present}
        if len(set(types.values())) > 1:
            listing = ", ".join(f"{n}: type {t}" for n, t in types.items())
            out.append(f"group {g.name}: its NICs are not all of one link type ({listing})")
        for n in present:
            out += [f"group {g.name}: {p}" for p in check_sysctls(n)]
        nets = {a.network for i in g.interfaces for a in (*i.data, *i.test)} | {a.network for a in g.data}
        for ifname, a in addrs:
            if ifname not in members and any(a.ip in net for net in nets) and not a.ip.is_link_local:
                out.append(f"group {g.name}: {ifname} has {a}, on the group's subnet, but is not in the "
                           f"group; one subnet belongs to one group")
        v4_test = [i.name for i in g.interfaces if i.test or i.test_arp]
        arp = [i.name for i in g.interfaces if i.test_arp]
        for n in arp:
            if n in links and links[n]["ifi_type"] != _ARPHRD_ETHER:
                out.append(f"group {g.name}: {n} probes with 'arp' but is not an Ethernet NIC "
                           f"(type {links[n]['ifi_type']}); give it an IPv4 test address instead")
        if arp and not any(t.version == 4 for t in g.targets) and not _router_on(routes, nets):
            out.append(f"group {g.name}: {', '.join(arp)} probe with 'arp', but no target is configured "
                       f"and no IPv4 route has its router on the group's subnet: targets can only come "
                       f"from the neighbour table, and until a host is there the NICs are not probed")
        v6_test = [i.name for i in g.interfaces if i.test_link_local]
        for fam, probing in ((4, v4_test), (6, v6_test)):
            if probing and len(probing) != len(members):
                missing = [n for n in members if n not in probing]
                out.append(f"group {g.name}: {', '.join(missing)} not probing over IPv{fam} like "
                           f"{', '.join(probing)}: give every member an IPv{fam} test address"
                           f"{' (or arp)' if fam == 4 else ''} or none")
        if any(a.version == 6 for i in g.interfaces for a in i.data) or any(a.version == 6 for a in g.data) \
                or v6_test:
            for n in present:
                if problem := ipv6_problem(n):
                    out.append(f"group {g.name}: {problem}, but the group has IPv6 addresses or probes")
    members = {i.name for g in cfg.groups for i in g.interfaces}
    flux = [n for n, m in links.items() if n not in members and n != "lo" and m["flags"] & 1
            and max(int(read_sysctl(x, "arp_ignore") or 0) for x in ("all", n)) == 0]
    if cfg.groups and flux and not cfg.defaults.arp_flux_protection:   # else mpathd sets it at start
        out.append(f"{', '.join(sorted(flux))} (in no group) answer ARP for any local address "
                   f"(arp_ignore=0): on the same link as a group they can answer for its addresses "
                   f"before the group's NICs do; set net.ipv4.conf.all.arp_ignore=1 "
                   f"(ARP_FLUX_PROTECTION=no)")
    if os.geteuid() != 0:
        out.append("not running as root: some settings could not be read")
    return out
