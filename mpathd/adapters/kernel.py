"""The netlink adapter: the kernel's links and addresses in, the core's
address and route changes out.

Events are read from a raw NETLINK_ROUTE socket and decoded with pyroute2's
marshal. (pyroute2 0.9.7's own IPRoute.bind() reader was seen to drop
RTM_DELADDR notifications, which the daemon must not miss.) Requests go
through a separate pyroute2 IPRoute. The kernel stamps every notification
with the port id of the socket whose request caused it, which is how the
echoes of our own changes are told from changes made by others.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import Counter

from pyroute2 import IPRoute, NetlinkError
from pyroute2.netlink.rtnl import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR,
                                   RTMGRP_IPV6_ROUTE, RTMGRP_LINK)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOOPBACK, IFF_POINTOPOINT, IFF_RUNNING, IFF_UP
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from ..config import Address
from ..core.events import (AddAddress, AddressAdded, AddressRemoved, Event, LinkChanged, LinkInfo,
                     LinkRemoved, MoveAddress, NeighboursRead, RemoveAddress, Resynced, Route,
                     RoutesChanged)

log = logging.getLogger("mpathd")

_RCVBUF = 4 << 20
_NUD_NOARP, _NUD_PERMANENT = 0x40, 0x80
_NUD_RESOLVED = 0x02 | 0x04 | 0x08 | 0x10 | _NUD_PERMANENT   # REACHABLE, STALE, DELAY, PROBE, PERMANENT
_RTPROT_KERNEL, _RTPROT_RA = 2, 9
_TABLE_LOCAL = 255

# What a group NIC needs: answer ARP only for its own addresses (otherwise
# every NIC answers for an address that moved, and neighbours keep the old
# MAC), source ARP from the best local address, and promote a secondary
# address instead of deleting it with the primary.
NIC_SYSCTLS = {"arp_ignore": "1", "arp_announce": "2", "promote_secondaries": "1"}


def read_sysctl(ifname: str, key: str) -> str | None:
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}") as f:
            return f.read().strip()
    except OSError:
        return None


def check_sysctls(ifname: str) -> list[str]:
    """Settings that break IPMP on this NIC, as sentences (empty if none).
    The kernel uses max(all, dev) for rp_filter and all OR dev for arp_filter."""
    problems = []
    rp = max(int(read_sysctl(n, "rp_filter") or 0) for n in ("all", ifname))
    if rp == 1:
        problems.append(f"rp_filter=1 (strict) on {ifname} drops probe replies and traffic that "
                        f"arrives on one NIC for an address on another; use 0 or 2")
    if "1" in (read_sysctl("all", "arp_filter"), read_sysctl(ifname, "arp_filter")):
        problems.append(f"arp_filter=1 on {ifname} makes it ignore ARP for its own addresses; use 0")
    return problems


def _link(msg) -> LinkInfo:
    flags = msg["flags"]
    return LinkInfo(name=msg.get_attr("IFLA_IFNAME"), index=msg["index"],
                    mac=msg.get_attr("IFLA_ADDRESS"),
                    running=bool(flags & IFF_RUNNING and flags & IFF_UP),
                    loopback_or_p2p=bool(flags & (IFF_LOOPBACK | IFF_POINTOPOINT)))


_IFA_F_DADFAILED, _IFA_F_TENTATIVE = 0x08, 0x40


def _address(msg) -> Address:
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")


def _usable(msg) -> bool:
    """Not an IPv6 address still in (or failed) duplicate address detection:
    it cannot be bound yet. The kernel announces it again once it can."""
    flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
    return not flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED)


class Kernel:
    def __init__(self) -> None:
        self.ipr = IPRoute()
        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                    socket.NETLINK_ROUTE)
        try:
            self.events.setsockopt(socket.SOL_SOCKET, 33, _RCVBUF)   # SO_RCVBUFFORCE
        except OSError:
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        self.events.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
                          | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        self._routes: tuple[Route, ...] | None = None
        self.marshal = MarshalRtnl()
        self.names: dict[int, str] = {}
        self.expected: Counter[tuple[str, int, str]] = Counter()
        self.ipr.get_links()                      # the request socket gets its port id
        self.port = self.ipr.getsockname()[0]

    def fileno(self) -> int:
        return self.events.fileno()

    def close(self) -> None:
        self.events.close()
        self.ipr.close()

    # ----------------------------------------------------------- reading

    def snapshot(self) -> tuple[tuple[LinkInfo, ...], tuple[tuple[str, Address], ...]]:
        links = tuple(_link(m) for m in self.ipr.get_links())
        self.names = {link.index: link.name for link in links}
        addrs = tuple((self.names[m["index"]], _address(m)) for m in self.ipr.get_addr()
                      if m["index"] in self.names and _usable(m))
        return links, addrs

    def neighbours(self) -> NeighboursRead:
        """The resolved IPv4 neighbours, one dump of the kernel's table
        (the kernel filters on the family): host targets for ARP probing."""
        return NeighboursRead(tuple(ipaddress.IPv4Address(n.get_attr("NDA_DST"))
                                    for n in self.ipr.get_neighbours(family=socket.AF_INET)
                                    if n["state"] & _NUD_RESOLVED and n.get_attr("NDA_DST")))

    def routes(self) -> tuple[Route, ...]:
        out = []
        for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for r in self.ipr.get_routes(family=family):
                table = r.get_attr("RTA_TABLE") or r["table"]
                if table == _TABLE_LOCAL or r["type"] != 1:          # unicast routes only
                    continue
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
                out.append(Route(fam, f"{dst}/{r['dst_len']}", r.get_attr("RTA_GATEWAY")))
        return tuple(out)

    def routes_changed(self) -> RoutesChanged | None:
        """The routes, if they differ from the last ones reported."""
        routes = self.routes()
        if routes == self._routes:
            return None
        self._routes = routes
        return RoutesChanged(routes)

    def read(self) -> list[Event]:
        """Drain the event socket; return the changes made by others, and
        the routing table once after any route change."""
        out: list[Event] = []
        route_change = False
        self._unpredicted = False
        while True:
            try:
                data = self.events.recv(1 << 20)
            except BlockingIOError:
                if self._unpredicted:
                    # our own request changed more than we asked (a secondary
                    # address promoted, say): re-read rather than guess
                    self.expected.clear()
                    out.append(Resynced(*self.snapshot()))
                if route_change and (ev := self.routes_changed()) is not None:
                    out.append(ev)
                return out
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                log.warning("netlink event queue overflowed; re-reading the kernel's state")
                self.expected.clear()
                while True:               # discard what is queued: the dump supersedes it
                    try:
                        self.events.recv(1 << 20)
                    except (BlockingIOError, OSError):
                        break
                self._routes = None
                return [Resynced(*self.snapshot())] + [ev for ev in [self.routes_changed()] if ev]
            for msg in self.marshal.parse(data):
                if msg["event"] in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    route_change = True
                    continue
                ev = self._decode(msg)
                if ev is not None:
                    out.append(ev)

    def _decode(self, msg) -> Event | None:
        kind = msg["event"]
        if kind == "RTM_NEWLINK":
            link = _link(msg)
            self.names[link.index] = link.name
            return LinkChanged(link)
        if kind == "RTM_DELLINK":
            name = msg.get_attr("IFLA_IFNAME") or self.names.get(msg["index"], "")
            self.names.pop(msg["index"], None)
            return LinkRemoved(name, msg["index"])
        if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
            name = self.names.get(msg["index"])
            if name is None or (kind == "RTM_NEWADDR" and not _usable(msg)):
                return None
            addr = _address(msg)
            key = (kind, msg["index"], str(addr.ip))
            if msg["header"]["pid"] == self.port:
                if self.expected[key] > 0:
                    self.expected[key] -= 1
                    if not self.expected[key]:
                        del self.expected[key]
                else:
                    self._unpredicted = True
                return None
            return (AddressAdded if kind == "RTM_NEWADDR" else AddressRemoved)(name, addr)
        return None

    # ----------------------------------------------------------- writing

    def index(self, ifname: str) -> int:
        for idx, name in self.names.items():
            if name == ifname:
                return idx
        raise LookupError(f"no interface {ifname}")

    def prepare(self, ifname: str, neigh_retrans_ms: int) -> None:
        """Set the sysctls a group NIC needs; warn about those that break it."""
        wanted = [(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", want) for key, want in NIC_SYSCTLS.items()]
        wanted += [(f"/proc/sys/net/{fam}/neigh/{ifname}/retrans_time_ms", str(neigh_retrans_ms))
                   for fam in ("ipv4", "ipv6")]
        for path, want in wanted:
            try:
                with open(path) as f:
                    have = f.read().strip()
                if have != want:
                    with open(path, "w") as f:
                        f.write(want)
                    log.info("set %s=%s (was %s)", path[len("/proc/sys/"):].replace("/", "."), want, have)
            except OSError as e:
                log.warning("cannot set %s: %s", path, e.strerror)
        for problem in check_sysctls(ifname):
            log.warning("%s", problem)

    def add_address(self, act: AddAddress) -> None:
        addr = act.address
        # A test address goes on as a /32 (a /128 would be the IPv6 analogue):
        # it makes no prefix route, so the kernel never picks it as a source.
        prefix = addr.max_prefixlen if act.test else addr.network.prefixlen
        self._add(self.index(act.ifname), addr, prefix)

    def _add(self, idx: int, addr: Address, prefix: int) -> None:
        flags = IFA_F_NODAD if addr.version == 6 else 0
        try:
            self.ipr.addr("add", index=idx, address=str(addr.ip), prefixlen=prefix, flags=flags)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
            return
        self.expected[("RTM_NEWADDR", idx, str(addr.ip))] += 1

    def _delete(self, idx: int, addr: Address, prefix: int) -> None:
        try:
            self.ipr.addr("del", index=idx, address=str(addr.ip), prefixlen=prefix)
        except NetlinkError as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise
            return
        self.expected[("RTM_DELADDR", idx, str(addr.ip))] += 1

    def remove_address(self, act: RemoveAddress) -> None:
        self._delete(self.index(act.ifname), act.address, act.address.network.prefixlen)

    def move_address(self, act: MoveAddress) -> None:
        """Make-before-break, so the address is never absent: add on dst, re-point the
        routes that went through src for this subnet, delete from src, then
        drop packets queued behind a dead src."""
        addr = act.address
        src, dst = self.index(act.src), self.index(act.dst)
        self._add(dst, addr, addr.network.prefixlen)
        self._repoint_routes(addr, src, dst)
        self._delete(src, addr, addr.network.prefixlen)
        if act.src_failed:
            self._flush_neighbours(src, addr.version)

    def _repoint_routes(self, addr: Address, src: int, dst: int) -> None:
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        for r in self.ipr.get_routes(family=family, oif=src):
            gw = r.get_attr("RTA_GATEWAY")
            table = r.get_attr("RTA_TABLE") or r["table"]
            if gw is None or table == _TABLE_LOCAL or r["proto"] in (_RTPROT_KERNEL, _RTPROT_RA):
                continue
            gwip = ipaddress.ip_address(gw)
            if not (gwip in addr.network or (gwip.version == 6 and gwip.is_link_local)):
                continue
            prefsrc = r.get_attr("RTA_PREFSRC")
            if prefsrc is not None and ipaddress.ip_address(prefsrc) != addr.ip:
                continue                     # it belongs to another address of src
            dst_prefix = r["dst_len"]
            spec = dict(dst=f"{r.get_attr('RTA_DST') or ('0.0.0.0' if family == socket.AF_INET else '::')}"
                            f"/{dst_prefix}",
                        family=family, table=table, gateway=gw, oif=dst, prefsrc=str(addr.ip),
                        proto=r["proto"], scope=r["scope"], type=r["type"])
            priority = r.get_attr("RTA_PRIORITY")
            if priority is not None:
                spec["priority"] = priority
            self.ipr.route("replace", **spec)
            log.info("route %s via %s moved from %s to %s with source %s", spec["dst"], gw,
                     self.names.get(src), self.names.get(dst), addr.ip)

    def _flush_neighbours(self, idx: int, version: int) -> None:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        for n in self.ipr.get_neighbours(family=family, ifindex=idx):
            if n["state"] & (_NUD_NOARP | _NUD_PERMANENT):
                continue
            try:
                self.ipr.neigh("del", ifindex=idx, dst=n.get_attr("NDA_DST"), family=family)
            except NetlinkError:
                pass                          # already gone
