"""The netlink adapter: the kernel's links and addresses in, the core's
address and route changes out.

Events are read from a raw NETLINK_ROUTE socket and decoded with pyroute2's
marshal. (pyroute2 0.9.7's own IPRoute.bind() reader was seen to drop
RTM_DELADDR notifications, which the daemon must not miss.) Requests go
through a separate pyroute2 IPRoute. The echoes of our own address changes
are told from changes made by others by what we asked for: each request
expects one notification of its kind, NIC and address, for
timing.OWN_ECHO_EXPIRY_S. The kernel stamps IPv4 notifications with the
port id of the socket whose request caused them, so for IPv4 the port id
must match too (and an echo with our port id that we did not expect means
the kernel changed more than we asked); IPv6 notifications carry port id 0
whoever caused them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from collections import defaultdict

from pyroute2 import IPRoute, NetlinkError
from pyroute2.netlink.rtnl import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR,
                                   RTMGRP_IPV6_ROUTE, RTMGRP_LINK)
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.ifinfmsg import IFF_LOOPBACK, IFF_POINTOPOINT, IFF_RUNNING, IFF_UP
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from ..config import Address
from ..core import timing
from ..core.catalogue import Kind
from ..core.events import (AddAddress, AddressAdded, AddressRemoved, ArpGuarded, Event, LinkChanged, LinkInfo,
                           LinkRemoved, LinkRenamed, NeighboursRead, RemoveAddress, Resynced, RouteAdded, RouteRemoved,
                           SetLinkUp)
from .log import event
from .routes import KernelRoute, RouteKeeper

_RCVBUF = 4 << 20
_NUD_NOARP, _NUD_PERMANENT = 0x40, 0x80
_NUD_RESOLVED = 0x02 | 0x04 | 0x08 | 0x10 | _NUD_PERMANENT   # REACHABLE, STALE, DELAY, PROBE, PERMANENT

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


def _set_sysctl(path: str, want: str, ifname: str | None = None) -> str:
    """Write a sysctl (of `ifname`, if it is a NIC's) if it differs, and log
    the change; return the value it had."""
    with open(path) as f:
        have = f.read().strip()
    if have != want:
        with open(path, "w") as f:
            f.write(want)
        event(logging.INFO, Kind.SYSCTL_SET, f"set {path[len('/proc/sys/'):].replace('/', '.')}={want} (was {have})",
              ifname)
    return have


def _retrans_paths(ifname: str) -> list[str]:
    return [f"/proc/sys/net/{fam}/neigh/{ifname}/retrans_time_ms" for fam in ("ipv4", "ipv6")]


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


def ipv6_problem(ifname: str) -> str | None:
    """Why the NIC cannot carry IPv6 addresses, or None. (A NIC whose
    setting cannot be read has no IPv6 at all.)"""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6") as f:
            disabled = f.read().strip() == "1"
    except OSError:
        disabled = True
    return f"IPv6 is disabled on {ifname} (net.ipv6.conf.{ifname}.disable_ipv6=1)" if disabled else None


def _link(msg) -> LinkInfo:
    flags = msg["flags"]
    return LinkInfo(name=msg.get_attr("IFLA_IFNAME"), index=msg["index"],
                    mac=msg.get_attr("IFLA_ADDRESS"),
                    running=bool(flags & IFF_RUNNING and flags & IFF_UP),
                    loopback_or_p2p=bool(flags & (IFF_LOOPBACK | IFF_POINTOPOINT)),
                    up=bool(flags & IFF_UP))


_IFA_F_DADFAILED, _IFA_F_TENTATIVE = 0x08, 0x40


def _address(msg) -> Address:
    ip = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")


def _usable(msg) -> bool:
    """Not an IPv6 address still in (or failed) duplicate address detection:
    it cannot be bound yet. The kernel announces it again once it can."""
    flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
    return not flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED)


class NoSuchInterface(LookupError):
    """An action names a NIC the kernel no longer has (it is going away)."""


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
        self.marshal = MarshalRtnl()
        self.names: dict[int, str] = {}
        self.routes = RouteKeeper(self.ipr, self.names)
        self.retrans_before: dict[str, str] = {}   # sysctl path -> its value before prepare()
        # (kind, ifindex, address) -> the expiry times of the echoes we expect
        self.expected: defaultdict[tuple[str, int, str], list[float]] = defaultdict(list)
        self._renamed: set[int] = set()           # NICs renamed in the batch being read
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
        self.names.clear()
        self.names.update((link.index, link.name) for link in links)
        addrs = tuple((self.names[m["index"]], _address(m)) for m in self.ipr.get_addr()
                      if m["index"] in self.names and _usable(m))
        return links, addrs

    def neighbours(self) -> NeighboursRead:
        """The resolved IPv4 neighbours, one dump of the kernel's table
        (the kernel filters on the family): host targets for ARP probing."""
        return NeighboursRead(tuple(ipaddress.IPv4Address(n.get_attr("NDA_DST"))
                                    for n in self.ipr.get_neighbours(family=socket.AF_INET)
                                    if n["state"] & _NUD_RESOLVED and n.get_attr("NDA_DST")))

    def read(self) -> list[Event]:
        """Drain the event socket; return the changes made by others."""
        out: list[Event] = []
        self._unpredicted = False
        self._renamed.clear()
        while True:
            try:
                data = self.events.recv(1 << 20)
            except BlockingIOError:
                if self._unpredicted:
                    # our own request changed more than we asked (a secondary
                    # address promoted, say): re-read rather than guess
                    self.expected.clear()
                    out.append(Resynced(*self.snapshot()))
                return out
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                event(logging.WARNING, Kind.RESYNC, "netlink event queue overflowed; re-reading the kernel's state")
                self.expected.clear()
                while True:               # discard what is queued: the dump supersedes it
                    try:
                        self.events.recv(1 << 20)
                    except (BlockingIOError, OSError):
                        break
                return [Resynced(*self.snapshot(), routes=self.routes.dump())]
            for msg in self.marshal.parse(data):
                ev = self._decode(msg)
                if ev is not None:
                    out.append(ev)

    def _decode(self, msg) -> Event | None:
        kind = msg["event"]
        if kind == "RTM_NEWLINK":
            link = _link(msg)
            old = self.names.get(link.index)
            self.names[link.index] = link.name
            if old is not None and old != link.name:
                # the core releases the old name and prepares the new one if
                # it is a group NIC
                self._renamed.add(link.index)
                self.routes.group_links.discard(link.index)
                return LinkRenamed(old, link)
            return LinkChanged(link)
        if kind == "RTM_DELLINK":
            name = msg.get_attr("IFLA_IFNAME") or self.names.get(msg["index"], "")
            self.names.pop(msg["index"], None)
            self.routes.link_gone(msg["index"])
            return LinkRemoved(name, msg["index"])
        if kind in ("RTM_NEWADDR", "RTM_DELADDR"):
            name = self.names.get(msg["index"])
            if name is None or (kind == "RTM_NEWADDR" and not _usable(msg)):
                return None
            addr = _address(msg)
            pid = msg["header"]["pid"]
            if pid == self.port or (addr.version == 6 and pid == 0):
                if self._echo((kind, msg["index"], str(addr.ip))):
                    return None
                if pid == self.port:
                    self._unpredicted = True
                    return None
            if kind == "RTM_NEWADDR" and msg["index"] in self._renamed:
                return None      # a rename re-announces every IPv4 address under the new name: no news
            return (AddressAdded if kind == "RTM_NEWADDR" else AddressRemoved)(name, addr)
        if kind in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            return self._route_event(msg)
        return None

    def _route_event(self, msg) -> Event | None:
        """A route of a group NIC (or on one of mpathd's paths) that another
        program or the kernel changed; mpathd's own changes are not news.
        Other NICs' routes are passed over before they are decoded."""
        pid = msg["header"]["pid"]
        oif = msg.get_attr("RTA_OIF")
        if pid == self.port or (oif is not None and oif not in self.routes.group_links):
            return None
        kr = KernelRoute.from_msg(msg)
        if not self.routes.concerns(kr.oif, kr.nhid):
            return None
        if msg["event"] == "RTM_DELROUTE":
            return RouteRemoved(self.routes.key_of(kr), by_kernel=pid == 0)
        route = self.routes.owned(kr)
        return None if route is None else RouteAdded(route)

    def _expect(self, kind: str, idx: int, addr: Address) -> None:
        self.expected[(kind, idx, str(addr.ip))].append(time.monotonic() + timing.OWN_ECHO_EXPIRY_S)

    def _echo(self, key: tuple[str, int, str]) -> bool:
        """Is this notification the echo of one of our requests? (It uses
        up the expectation; expired ones are dropped.)"""
        if key not in self.expected:
            return False
        now = time.monotonic()
        pending = [t for t in self.expected.pop(key) if t > now]
        if not pending:
            return False
        if len(pending) > 1:
            self.expected[key] = pending[1:]
        return True

    # ----------------------------------------------------------- writing

    def index(self, ifname: str) -> int:
        for idx, name in self.names.items():
            if name == ifname:
                return idx
        raise NoSuchInterface(f"no interface {ifname}")

    def down(self, ifname: str) -> bool:
        """Has the NIC no carrier, or is it gone, right now? (Asked after a
        request failed: the event that says so may not be read yet.)"""
        if ifname not in self.names.values():
            return True
        try:
            with open(f"/sys/class/net/{ifname}/carrier") as f:
                return f.read().strip() != "1"
        except OSError:                       # EINVAL while it is set down; gone
            return True

    def prepare(self, ifname: str, index: int, neigh_retrans_ms: int, spreading: bool,
                families: set[int]) -> None:
        """Set the sysctls a group NIC needs; warn about those that break it,
        and if it cannot carry one of its group's address families (the
        kernel would refuse them, and the core keeps the family off it while
        it refuses). Its group spreads flows: hash
        them by ports too (L4), or every flow from one address to one
        destination takes the same NIC."""
        self.routes.group_links.add(index)
        wanted = [(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", want) for key, want in NIC_SYSCTLS.items()]
        wanted += [(path, str(neigh_retrans_ms)) for path in _retrans_paths(ifname)]
        if spreading:
            wanted += [(f"/proc/sys/net/{fam}/fib_multipath_hash_policy", "1") for fam in ("ipv4", "ipv6")]
        for path, want in wanted:
            try:
                was = _set_sysctl(path, want, ifname)
            except OSError as e:
                event(logging.WARNING, Kind.SYSCTL_FAILED, f"cannot set {path}: {e.strerror}", ifname)
                continue
            if path.endswith("/retrans_time_ms"):
                self.retrans_before.setdefault(path, was)   # a second prepare keeps the first
        for problem in check_sysctls(ifname):
            event(logging.WARNING, Kind.NIC_UNSUITABLE, problem, ifname)
        if 6 in families and (problem := ipv6_problem(ifname)):
            event(logging.WARNING, Kind.NIC_UNSUITABLE, f"{problem}, but its group has IPv6 data addresses: "
                                                        f"they cannot fail over to {ifname}", ifname)

    def set_up(self, act: SetLinkUp) -> None:
        """IFF_UP on the device of the action's index, in one RTM_NEWLINK
        request. The kernel's notification of it (and of the carrier that
        follows) comes back as a LinkChanged like any other."""
        self.ipr.link("set", index=act.index, state="up")

    def release(self, ifname: str) -> None:
        """A NIC left its group or is gone: its routes are no longer ours to
        watch, and it gets back the neighbour retry interval it had before
        prepare() (the ARP settings stay: it must still not answer for
        others). A NIC that is gone took its settings with it."""
        for idx, name in self.names.items():
            if name == ifname:
                self.routes.group_links.discard(idx)
        for path in _retrans_paths(ifname):
            was = self.retrans_before.pop(path, None)
            if was is not None:
                try:
                    _set_sysctl(path, was, ifname)
                except OSError:
                    pass

    def release_all(self) -> None:
        for path in list(self.retrans_before):
            self.release(path.split("/")[-2])

    def guard_arp(self, enable: bool, members: tuple[str, ...]) -> ArpGuarded:
        """ARP flux protection: every NIC of this namespace answers ARP only
        for its own addresses (arp_ignore is the larger of `all` and the
        NIC's own value). Then list the NICs outside the groups that still
        answer for any address."""
        problem = None if enable else "ARP flux protection is off (ARP_FLUX_PROTECTION=no)"
        if enable:
            try:
                _set_sysctl("/proc/sys/net/ipv4/conf/all/arp_ignore", "1")
            except OSError as e:
                problem = f"cannot set net.ipv4.conf.all.arp_ignore=1: {e.strerror}"
        floor = int(read_sysctl("all", "arp_ignore") or 0)
        exposed = tuple(link.name for link in map(_link, self.ipr.get_links())
                        if link.name not in members and not link.loopback_or_p2p
                        and max(floor, int(read_sysctl(link.name, "arp_ignore") or 0)) == 0)
        return ArpGuarded(problem, exposed)

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
        self._expect("RTM_NEWADDR", idx, addr)

    def _delete(self, idx: int, addr: Address, prefix: int) -> None:
        try:
            self.ipr.addr("del", index=idx, address=str(addr.ip), prefixlen=prefix)
        except NetlinkError as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise
            return
        self._expect("RTM_DELADDR", idx, addr)

    def remove_address(self, act: RemoveAddress) -> None:
        """Delete an address; after a move off a failed NIC, drop the packets
        queued behind it too. A NIC that is gone (its RTM_DELLINK read, not
        yet handled) took its addresses with it: nothing to do."""
        idx = next((i for i, name in self.names.items() if name == act.ifname), None)
        if idx is None:
            return
        self._delete(idx, act.address, act.address.network.prefixlen)
        if act.flush_neighbours:
            self._flush_neighbours(idx, act.address.version)

    def _flush_neighbours(self, idx: int, version: int) -> None:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        for n in self.ipr.get_neighbours(family=family, ifindex=idx):
            if n["state"] & (_NUD_NOARP | _NUD_PERMANENT):
                continue
            try:
                self.ipr.neigh("del", ifindex=idx, dst=n.get_attr("NDA_DST"), family=family)
            except NetlinkError:
                pass                          # already gone
