"""Kernel side of the route model: nexthop objects, nexthop groups and the
routes that point at them, over netlink, without forking `ip`.

pyroute2 0.9.7 has no message class for nexthops, so `nhmsg` is defined here
on pyroute2's own netlink message base (include/uapi/linux/nexthop.h). The
replies are decoded by the IPRoute's marshal once `KernelRoutes` has added
the class to it.

Routes are read as a `KernelRoute`: a frozen value holding every attribute
the kernel reported, most of them as the kernel's own bytes, so that a route
re-installed from it (pointing at a nexthop group, or back at a plain
gateway) differs from the original only in its path. pyroute2's rtmsg does
not know RTA_NH_ID, so the codec reads and writes the attributes itself and
sends them with `rawrtmsg`, whose attributes are opaque bytes.

Errors from the kernel surface as pyroute2's NetlinkError with the errno.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

from pyroute2 import NetlinkError
from pyroute2.netlink import (NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
                              nla, nla_string, nlmsg)

from ..core.catalogue import Kind
from ..core.events import OwnedRoute, RouteKey as CoreRouteKey
from .log import event

# Message types and the multicast group (include/uapi/linux/rtnetlink.h).
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106

# mpathd's routing protocol number, in rtm_protocol and nh_protocol of what it
# creates, so that `ip route` / `ip nexthop` show whose it is and a restart
# finds it again. 117 is in no list we know of: not the kernel's RTPROT_*
# (rtnetlink.h: 0-4, 8-18, 42, 99, 186-192), not iproute2's rt_protos, not
# FRR's 186-198, not BIRD (12), Calico (80) or keepalived (18). The name is
# given to iproute2 by contrib/iproute2/rt_protos.d/mpathd.conf.
RTPROT_MPATHD = 117

NEXTHOP_GRP_TYPE_RES = 1
RTNH_F_ONLINK = 4
USER_HZ = 100              # clock_t unit of the resilient group timers


class nhmsg(nlmsg):
    """struct nhmsg and the NHA_* attributes of include/uapi/linux/nexthop.h."""

    fields = (
        ('family', 'B'),
        ('scope', 'B'),
        ('protocol', 'B'),
        ('resvd', 'B'),
        ('flags', 'I'),
    )

    nla_map = (
        ('NHA_UNSPEC', 'none'),
        ('NHA_ID', 'uint32'),
        ('NHA_GROUP', 'nexthop_grp'),
        ('NHA_GROUP_TYPE', 'uint16'),
        ('NHA_BLACKHOLE', 'flag'),
        ('NHA_OIF', 'uint32'),
        ('NHA_GATEWAY', 'ipaddr'),
        ('NHA_ENCAP_TYPE', 'uint16'),
        ('NHA_ENCAP', 'cdata'),
        ('NHA_GROUPS', 'flag'),
        ('NHA_MASTER', 'uint32'),
        ('NHA_FDB', 'flag'),
        ('NHA_RES_GROUP', 'res_group | nested'),
        ('NHA_RES_BUCKET', 'res_bucket | nested'),
        ('NHA_OP_FLAGS', 'uint32'),
        ('NHA_GROUP_STATS', 'cdata'),
        ('NHA_HW_STATS_ENABLE', 'uint32'),
        ('NHA_HW_STATS_USED', 'uint32'),
    )

    class nexthop_grp(nla_string):
        """An array of struct nexthop_grp {u32 id; u8 weight; u8 weight_high;
        u16 resvd2}, as a tuple of (id, weight) with the weight 1..65536 (the
        kernel stores it minus one, the high byte in weight_high)."""

        _ENTRY = struct.Struct('=IBBH')

        def encode(self):
            self['value'] = b''.join(self._ENTRY.pack(nh, (w - 1) & 0xFF, (w - 1) >> 8, 0)
                                     for nh, w in self.value)
            nla_string.encode(self)

        def decode(self):
            nla_string.decode(self)
            self.value = tuple((nh, (high << 8 | low) + 1)
                               for nh, low, high, _ in self._ENTRY.iter_unpack(self['value']))

    class res_group(nla):
        nla_map = (
            ('NHA_RES_GROUP_PAD', 'none'),
            ('NHA_RES_GROUP_BUCKETS', 'uint16'),
            ('NHA_RES_GROUP_IDLE_TIMER', 'uint32'),
            ('NHA_RES_GROUP_UNBALANCED_TIMER', 'uint32'),
            ('NHA_RES_GROUP_UNBALANCED_TIME', 'uint64'),
        )

    class res_bucket(nla):
        nla_map = (
            ('NHA_RES_BUCKET_PAD', 'none'),
            ('NHA_RES_BUCKET_INDEX', 'uint16'),
            ('NHA_RES_BUCKET_IDLE_TIME', 'uint64'),
            ('NHA_RES_BUCKET_NH_ID', 'uint32'),
        )


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Resilient:
    """Parameters of a resilient group. Timers in seconds, as `ip nexthop`
    takes them; the kernel counts them in clock_t (1/USER_HZ s)."""
    buckets: int = 128
    idle_timer: float = 120.0
    unbalanced_timer: float = 0.0
    unbalanced_time: float = 0.0         # read-only: how long the group has been unbalanced


@dataclass(frozen=True)
class Nexthop:
    """A nexthop object or group as the kernel reported it."""
    id: int
    family: int
    protocol: int
    flags: int = 0
    scope: int = 0
    oif: int | None = None
    gateway: str | None = None
    blackhole: bool = False
    group: tuple[tuple[int, int], ...] = ()      # (member id, weight)
    group_type: int | None = None
    resilient: Resilient | None = None

    @classmethod
    def from_msg(cls, msg: nhmsg) -> "Nexthop":
        res = msg.get_attr('NHA_RES_GROUP')
        return cls(id=msg.get_attr('NHA_ID'), family=msg['family'], protocol=msg['protocol'],
                   flags=msg['flags'], scope=msg['scope'], oif=msg.get_attr('NHA_OIF'),
                   gateway=msg.get_attr('NHA_GATEWAY'),
                   blackhole=msg.get_attr('NHA_BLACKHOLE') is not None,
                   group=msg.get_attr('NHA_GROUP') or (), group_type=msg.get_attr('NHA_GROUP_TYPE'),
                   resilient=None if res is None else Resilient(
                       buckets=res.get_attr('NHA_RES_GROUP_BUCKETS'),
                       idle_timer=res.get_attr('NHA_RES_GROUP_IDLE_TIMER') / USER_HZ,
                       unbalanced_timer=res.get_attr('NHA_RES_GROUP_UNBALANCED_TIMER') / USER_HZ,
                       unbalanced_time=(res.get_attr('NHA_RES_GROUP_UNBALANCED_TIME') or 0) / USER_HZ))


# Route attributes (include/uapi/linux/rtnetlink.h, enum rtattr_type_t).
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 2, 3, 4, 5, 6, 7
RTA_METRICS, RTA_MULTIPATH, RTA_CACHEINFO, RTA_TABLE, RTA_VIA, RTA_PREF = 8, 9, 12, 15, 18, 20
RTA_NH_ID = 30
RTAX_LOCK, RTAX_MTU, RTAX_CC_ALGO = 1, 2, 16
RTAX_NAMES = {1: 'lock', 2: 'mtu', 3: 'window', 4: 'rtt', 5: 'rttvar', 6: 'ssthresh', 7: 'cwnd',
              8: 'advmss', 9: 'reordering', 10: 'hoplimit', 11: 'initcwnd', 12: 'features',
              13: 'rto_min', 14: 'initrwnd', 15: 'quickack', 16: 'congctl', 17: 'fastopen_no_cookie'}
# The path of a route: replaced when it is pointed at a nexthop or back at a
# gateway. Every other attribute is kept as the kernel's bytes.
_PATH = frozenset({RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_VIA, RTA_NH_ID})
# Reported by the kernel but not part of the route: statistics and ages.
_REPORT_ONLY = frozenset({RTA_CACHEINFO})
# Attributes decoded into fields of their own (with the path and RTA_TABLE).
_OWN = frozenset({RTA_DST, RTA_SRC, RTA_PRIORITY, RTA_PREFSRC, RTA_METRICS, RTA_PREF, RTA_TABLE})
# rtm_flags the kernel sets on its own and refuses in a request (DEAD,
# LINKDOWN, OFFLOAD, RTM_F_* notify bits): only onlink is the operator's.
_RTM_FLAGS_SENT = RTNH_F_ONLINK

_RTMSG = struct.Struct('=BBBBBBBBI')
_NLA = struct.Struct('=HH')
_NLMSGHDR_LEN = 16


def _nlas(buf: bytes, offset: int, end: int) -> Iterable[tuple[int, bytes]]:
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(buf, offset)
        if length < 4:
            break
        yield kind & 0x3FFF, bytes(buf[offset + 4:offset + length])
        offset += (length + 3) & ~3


def _pack_nla(kind: int, payload: bytes) -> bytes:
    data = _NLA.pack(4 + len(payload), kind) + payload
    return data + b'\0' * (-len(data) % 4)


def _addr(family: int, raw: bytes | None) -> str | None:
    return None if raw is None else socket.inet_ntop(family, raw)


@dataclass(frozen=True)
class RouteKey:
    """What the kernel tells routes apart by. IPv4: table, dst, tos,
    priority. IPv6: table, dst, src, priority (tos is always 0)."""
    family: int
    table: int
    dst: str | None           # None: the default route
    dst_len: int
    tos: int
    src: str | None
    src_len: int
    priority: int


@dataclass(frozen=True)
class KernelRoute:
    """A route as the kernel reported it, every attribute kept.

    `metrics` holds RTA_METRICS as (RTAX type, value) in the kernel's order:
    u32 values, and the congestion control name (RTAX_CC_ALGO) as text; the
    lock bits are RTAX_LOCK's value. `other` holds every remaining attribute
    (RTA_FLOW, RTA_MARK, RTA_ENCAP, RTA_EXPIRES, ...) as (type, bytes)."""
    family: int
    table: int
    dst: str | None
    dst_len: int
    src: str | None
    src_len: int
    tos: int
    priority: int | None
    protocol: int
    scope: int
    type: int
    flags: int
    pref: int | None = None
    prefsrc: str | None = None
    gateway: str | None = None
    oif: int | None = None
    nhid: int | None = None
    multipath: bytes | None = None
    via: bytes | None = None
    metrics: tuple[tuple[int, int | str], ...] = ()
    other: tuple[tuple[int, bytes], ...] = ()

    @property
    def key(self) -> RouteKey:
        v6 = self.family == socket.AF_INET6
        return RouteKey(self.family, self.table, self.dst, self.dst_len, 0 if v6 else self.tos,
                        self.src if v6 else None, self.src_len if v6 else 0, self.priority or 0)

    @property
    def onlink(self) -> bool:
        return bool(self.flags & RTNH_F_ONLINK)

    def metric(self, name: str) -> int | str | None:
        """One RTAX value by its `ip route` name ('mtu', 'initcwnd', 'lock'...)."""
        return next((v for k, v in self.metrics if RTAX_NAMES.get(k) == name), None)

    # ----------------------------------------------------------- decode

    @classmethod
    def from_msg(cls, msg) -> "KernelRoute":
        """From a pyroute2 rtmsg (IPRoute.get_routes, MarshalRtnl), read from
        the bytes it was decoded from."""
        start = msg.offset
        return cls.from_bytes(msg.data[start:start + msg['header']['length']])

    @classmethod
    def from_bytes(cls, buf: bytes) -> "KernelRoute":
        """From one whole RTM_NEWROUTE/RTM_DELROUTE message, netlink header included."""
        (family, dst_len, src_len, tos, table, protocol, scope, rtype,
         flags) = _RTMSG.unpack_from(buf, _NLMSGHDR_LEN)
        attrs: dict[int, bytes] = {}
        other = []
        for kind, payload in _nlas(buf, _NLMSGHDR_LEN + _RTMSG.size, len(buf)):
            if kind in _OWN or kind in _PATH:
                attrs[kind] = payload
            elif kind not in _REPORT_ONLY:
                other.append((kind, payload))
        u32 = lambda k: None if k not in attrs else struct.unpack('=I', attrs[k])[0]  # noqa: E731
        metrics = tuple((k, v.split(b'\0', 1)[0].decode() if k == RTAX_CC_ALGO else struct.unpack('=I', v)[0])
                        for k, v in _nlas(attrs.get(RTA_METRICS, b''), 0, len(attrs.get(RTA_METRICS, b''))))
        nhid = u32(RTA_NH_ID)
        # With net.ipv4.nexthop_compat_mode=1 (the default) the kernel also
        # reports the nexthop's gateway and device on a route that uses one;
        # they are the nexthop's, not the route's.
        path = {} if nhid is not None else attrs
        return cls(family=family, table=u32(RTA_TABLE) or table, dst=_addr(family, attrs.get(RTA_DST)),
                   dst_len=dst_len, src=_addr(family, attrs.get(RTA_SRC)), src_len=src_len, tos=tos,
                   priority=u32(RTA_PRIORITY), protocol=protocol, scope=scope, type=rtype,
                   flags=flags if nhid is None else flags & ~RTNH_F_ONLINK,
                   pref=attrs[RTA_PREF][0] if RTA_PREF in attrs else None,
                   prefsrc=_addr(family, attrs.get(RTA_PREFSRC)),
                   gateway=_addr(family, path.get(RTA_GATEWAY)),
                   oif=None if RTA_OIF not in path else struct.unpack('=I', path[RTA_OIF])[0],
                   nhid=nhid, multipath=path.get(RTA_MULTIPATH), via=path.get(RTA_VIA),
                   metrics=metrics, other=tuple(other))

    # ----------------------------------------------------------- encode

    def _attrs(self) -> list[tuple[int, bytes]]:
        fam = self.family
        out = [(RTA_TABLE, struct.pack('=I', self.table))]
        if self.dst is not None:
            out.append((RTA_DST, socket.inet_pton(fam, self.dst)))
        if self.src is not None:
            out.append((RTA_SRC, socket.inet_pton(fam, self.src)))
        if self.priority is not None:
            out.append((RTA_PRIORITY, struct.pack('=I', self.priority)))
        if self.prefsrc is not None:
            out.append((RTA_PREFSRC, socket.inet_pton(fam, self.prefsrc)))
        if self.pref is not None:
            out.append((RTA_PREF, bytes([self.pref])))
        if self.metrics:
            out.append((RTA_METRICS, b''.join(
                _pack_nla(k, v.encode() + b'\0' if isinstance(v, str) else struct.pack('=I', v))
                for k, v in self.metrics)))
        return out + list(self.other)

    def _message(self, attrs: list[tuple[int, bytes]], flags: int) -> "rawrtmsg":
        msg = rawrtmsg()
        msg['family'], msg['dst_len'], msg['src_len'], msg['tos'] = (
            self.family, self.dst_len, self.src_len, self.tos)
        msg['table'] = self.table if self.table < 256 else 252     # RT_TABLE_COMPAT; RTA_TABLE rules
        msg['proto'], msg['scope'], msg['type'], msg['flags'] = (
            self.protocol, self.scope, self.type, flags)
        msg['attrs'] = [(f'RTA_{k}', v) for k, v in attrs]
        return msg

    def via_nexthop(self, nhid: int) -> "rawrtmsg":
        """The RTM_NEWROUTE request that makes this route use nexthop `nhid`."""
        return self._message(self._attrs() + [(RTA_NH_ID, struct.pack('=I', nhid))], 0)

    def via_gateway(self, gateway: str | None, oif: int, onlink: bool | None = None) -> "rawrtmsg":
        """The RTM_NEWROUTE request for this route as a plain `via GATEWAY
        dev OIF` route (gateway None: a device route). onlink None keeps the
        route's own flag."""
        path = [(RTA_OIF, struct.pack('=I', oif))]
        if gateway is not None:
            path.append((RTA_GATEWAY, socket.inet_pton(self.family, gateway)))
        flag = self.onlink if onlink is None else onlink
        return self._message(self._attrs() + path, RTNH_F_ONLINK if flag else 0)


def _key_message(key: RouteKey) -> "rawrtmsg":
    msg = rawrtmsg()
    msg['family'], msg['dst_len'], msg['src_len'], msg['tos'] = key.family, key.dst_len, key.src_len, key.tos
    msg['table'] = key.table if key.table < 256 else 252
    # scope NOWHERE, protocol and type 0: match whatever the route has
    msg['proto'], msg['scope'], msg['type'], msg['flags'] = 0, 255, 0, 0
    attrs = [(RTA_TABLE, struct.pack('=I', key.table)), (RTA_PRIORITY, struct.pack('=I', key.priority))]
    if key.dst is not None:
        attrs.append((RTA_DST, socket.inet_pton(key.family, key.dst)))
    if key.src is not None:
        attrs.append((RTA_SRC, socket.inet_pton(key.family, key.src)))
    msg['attrs'] = [(f'RTA_{k}', v) for k, v in attrs]
    return msg


class rawrtmsg(nlmsg):
    """struct rtmsg with every attribute as opaque bytes, named RTA_<type>:
    what the codec sends, byte for byte."""
    fields = (
        ('family', 'B'),
        ('dst_len', 'B'),
        ('src_len', 'B'),
        ('tos', 'B'),
        ('table', 'B'),
        ('proto', 'B'),
        ('scope', 'B'),
        ('type', 'B'),
        ('flags', 'I'),
    )
    nla_map = tuple((k, f'RTA_{k}', 'cdata') for k in range(64))


# ---------------------------------------------------------------- requests

_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
_DELETE = NLM_F_REQUEST | NLM_F_ACK


class KernelRoutes:
    """Nexthops, nexthop groups and routes through an existing pyroute2
    IPRoute. Every call is one netlink request (a dump for `nexthops`)."""

    def __init__(self, ipr):
        self.ipr = ipr
        # pyroute2 0.9.7's IPRoute never sets this status key, which the
        # generic NetlinkSocket.nlm_request reads: False makes it return
        # the replies as a tuple (and raise a NetlinkError at once).
        if 'nlm_generator' not in ipr.status:
            ipr.status['nlm_generator'] = False
        for kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
            ipr.marshal.msg_map[kind] = nhmsg

    def _request(self, msg, kind: int, flags: int) -> list:
        return list(self.ipr.nlm_request(msg, kind, flags))

    def set_nexthop(self, nhid: int, family: int, oif: int, gateway: str | None = None,
                    onlink: bool = False, protocol: int = RTPROT_MPATHD) -> None:
        """Create or replace nexthop `nhid`: `via GATEWAY dev OIF`, or only
        `dev OIF` when gateway is None."""
        msg = nhmsg()
        msg['family'], msg['protocol'], msg['flags'] = family, protocol, RTNH_F_ONLINK if onlink else 0
        msg['attrs'] = [('NHA_ID', nhid), ('NHA_OIF', oif)]
        if gateway is not None:
            msg['attrs'].append(('NHA_GATEWAY', gateway))
        self._request(msg, RTM_NEWNEXTHOP, _REPLACE)

    def set_group(self, nhid: int, members: Iterable[tuple[int, int]],
                  resilient: Resilient | None = None, protocol: int = RTPROT_MPATHD) -> None:
        """Create or replace group `nhid` of (member id, weight): resilient
        with those parameters, or hash-threshold (plain mpath) when None. A
        resilient group's bucket count cannot change on replace."""
        msg = nhmsg()
        msg['family'], msg['protocol'] = socket.AF_UNSPEC, protocol
        msg['attrs'] = [('NHA_ID', nhid), ('NHA_GROUP', tuple(members))]
        if resilient is not None:
            msg['attrs'] += [('NHA_GROUP_TYPE', NEXTHOP_GRP_TYPE_RES), ('NHA_RES_GROUP', {'attrs': [
                ('NHA_RES_GROUP_BUCKETS', resilient.buckets),
                ('NHA_RES_GROUP_IDLE_TIMER', round(resilient.idle_timer * USER_HZ)),
                ('NHA_RES_GROUP_UNBALANCED_TIMER', round(resilient.unbalanced_timer * USER_HZ))]})]
        self._request(msg, RTM_NEWNEXTHOP, _REPLACE)

    def delete_nexthop(self, nhid: int) -> None:
        msg = nhmsg()
        msg['attrs'] = [('NHA_ID', nhid)]
        self._request(msg, RTM_DELNEXTHOP, _DELETE)

    def nexthops(self, protocol: int | None = RTPROT_MPATHD) -> list[Nexthop]:
        """Every nexthop and group of `protocol` (None: of any). The kernel
        filters nexthop dumps by device, master and kind, not by protocol,
        so the protocol is matched here."""
        found = [Nexthop.from_msg(m) for m in self._request(nhmsg(), RTM_GETNEXTHOP,
                                                            NLM_F_REQUEST | NLM_F_DUMP)]
        return [nh for nh in found if protocol is None or nh.protocol == protocol]

    def install(self, request: rawrtmsg) -> None:
        """Send a request made by KernelRoute.via_nexthop or via_gateway, as
        create-or-replace."""
        self._request(request, RTM_NEWROUTE, _REPLACE)

    def routes(self, family: int, table: int | None = None, oif: int | None = None) -> list[KernelRoute]:
        """The routes of one table and/or one device. On an IPRoute made with
        strict_check=True the kernel filters the dump itself (measured with
        5,376 other routes: 0.2 ms instead of 390 ms; pyroute2's own
        get_routes decodes them all even then); without it the kernel sends
        every route and they are filtered here."""
        msg = rawrtmsg()
        msg['family'] = family
        msg['attrs'] = [(f'RTA_{k}', struct.pack('=I', v)) for k, v in ((RTA_TABLE, table), (RTA_OIF, oif))
                        if v is not None]
        found = [KernelRoute.from_msg(m) for m in self._request(msg, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP)]
        return [r for r in found if (table is None or r.table == table)
                and (oif is None or r.oif == oif)]

    def delete_route(self, key: RouteKey) -> None:
        self._request(_key_message(key), RTM_DELROUTE, _DELETE)


# ------------------------------------------------- the core's route actions

# Unicast routes only, and never the kernel's own: prefix routes (proto
# kernel), router advertisements (proto ra) and redirects, the local table.
_RTN_UNICAST, _TABLE_LOCAL = 1, 255
_NOT_OWNED_PROTOCOLS = frozenset({1, 2, 9})          # redirect, kernel, ra
_RT_SCOPE_UNIVERSE, _RT_SCOPE_LINK = 0, 253
_RTAX = {name: kind for kind, name in RTAX_NAMES.items()}
_RTAX_LOCK_MTU = 1 << RTAX_MTU
_PREF = {"low": 3, "medium": 0, "high": 1}           # ICMPV6_ROUTER_PREF_*

# The resilient group of every path: 128 buckets spread flows finely enough
# over up to 8 NICs (16 buckets each); idle_timer 1 s and unbalanced_timer 0
# (measured: a repaired NIC gets its share of new flows at once, and no busy
# flow is ever forced over).
RESILIENT = Resilient(buckets=128, idle_timer=1.0, unbalanced_timer=0.0)

# Nexthop ids are one number space for every program on the host: mpathd
# takes free ones from here up (the upper half, where `ip nexthop add` with
# small ids never reaches).
_FIRST_ID = 0x4D500000


class RouteKeeper:
    """Carries out the core's route actions with nexthop objects, and turns
    the kernel's routes into the core's OwnedRoute. It keeps the ids it gave
    to each path and to each (NIC, router) nexthop; it decides nothing."""

    def __init__(self, ipr, names: dict[int, str]):
        self.kr = KernelRoutes(ipr)
        self.names = names                       # ifindex -> name, kept by the Kernel
        self.group_links: set[int] = set()        # ifindexes of the group NICs
        self.path_ids: dict = {}                  # PathKey -> group nexthop id
        self.member_ids: dict[tuple[int, str], int] = {}   # (ifindex, gateway) -> nexthop id
        self.members: dict[int, tuple[int, ...]] = {}      # group id -> member ids
        self.ours: dict[int, Nexthop] = {}        # mpathd's nexthops in the kernel (from the last dump)
        self._taken: set[int] = set()
        self._declared: dict = {}                 # RouteConfig -> KernelRoute
        self._on_ours: dict[RouteKey, KernelRoute] = {}   # routes on an earlier run's nexthops, not yet re-pointed

    # ----------------------------------------------------------- reading

    def dump(self) -> tuple:
        """Every route that leaves by a NIC, as the core's OwnedRoute (the
        core keeps those of its groups). Read at start and after an event
        queue overflow, never per event."""
        every = self.kr.nexthops(protocol=None)
        self._taken = {nh.id for nh in every}
        self.ours = {nh.id: nh for nh in every if nh.protocol == RTPROT_MPATHD}
        out = []
        self._on_ours = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for kr in self.kr.routes(family):
                if kr.nhid in self.ours:
                    self._on_ours[kr.key] = kr
                route = self.owned(kr)
                if route is not None:
                    out.append(route)
        return tuple(out)

    def owned(self, kr: KernelRoute):
        """The core's view of a kernel route, or None if it is none of the
        kinds mpathd may own (or leaves by no NIC it can tell)."""
        if (kr.type != _RTN_UNICAST or kr.table == _TABLE_LOCAL or kr.protocol in _NOT_OWNED_PROTOCOLS
                or kr.src_len or kr.multipath is not None or kr.via is not None):
            return None
        oif, gateway = kr.oif, kr.gateway
        if kr.nhid is not None:
            nh = self.ours.get(kr.nhid)
            first = self.ours.get(nh.group[0][0]) if nh is not None and nh.group else nh
            if first is None:
                return None                        # another program's nexthop: not ours to move
            oif, gateway = first.oif, first.gateway
        home = self.names.get(oif)                 # type: ignore[arg-type]
        if home is None:
            return None
        return OwnedRoute(self.key_of(kr), None if gateway is None else ipaddress.ip_address(gateway),
                          home, None if kr.prefsrc is None else ipaddress.ip_address(kr.prefsrc), kr)

    @staticmethod
    def key_of(kr: KernelRoute) -> CoreRouteKey:
        fam = 4 if kr.family == socket.AF_INET else 6
        dst = ipaddress.ip_network(f"{kr.dst or ('0.0.0.0' if fam == 4 else '::')}/{kr.dst_len}")
        return CoreRouteKey(fam, kr.table, dst, kr.tos, kr.priority or 0)

    def concerns(self, oif: int | None, nhid: int | None) -> bool:
        """Might a route event be about a route of the groups? (Filtered
        before it is decoded: other NICs' routes cost nothing more.)"""
        return oif in self.group_links or (nhid is not None and nhid in self.members)

    def link_gone(self, index: int) -> None:
        """The kernel deleted the NIC's nexthops with it."""
        self.group_links.discard(index)
        for key in [k for k in self.member_ids if k[0] == index]:
            del self.member_ids[key]

    # ----------------------------------------------------------- writing

    def _free_id(self) -> int:
        used = self._taken | set(self.members) | set(self.member_ids.values())
        nhid = _FIRST_ID
        while nhid in used:
            nhid += 1
        self._taken.add(nhid)
        return nhid

    def set_path(self, path, members: tuple[tuple[str, int], ...]) -> None:
        """One nexthop per member (re-made each time: the kernel deletes a
        NIC's nexthops when it loses its carrier), then the group: members
        + 1 requests, whatever the number of routes on the path."""
        family = socket.AF_INET if path.family == 4 else socket.AF_INET6
        gw = str(path.gateway)
        ids = []
        for _, index in members:
            key = (index, gw)
            if key not in self.member_ids:
                self.member_ids[key] = self._free_id()
            # IPv4: on the group's link, valid whether or not the NIC has a
            # prefix route. IPv6 refuses onlink where another NIC has the
            # router's prefix; the core puts such a router only on the NIC
            # that has it, and a link-local one needs no onlink.
            self.kr.set_nexthop(self.member_ids[key], family, index, gw, onlink=path.family == 4)
            ids.append(self.member_ids[key])
        if path not in self.path_ids:
            self.path_ids[path] = self._free_id()
        gid = self.path_ids[path]
        self.kr.set_group(gid, [(i, 1) for i in ids], RESILIENT)
        self.members[gid] = tuple(ids)
        self._delete_unused(keep=self.group_links)     # a NIC that left the groups keeps none of ours

    def drop_path(self, path) -> None:
        gid = self.path_ids.pop(path, None)
        if gid is None:
            return
        self.members.pop(gid, None)
        self._delete(gid)
        self._delete_unused(keep=set())

    def _delete_unused(self, keep: set[int]) -> None:
        """Delete the member nexthops no group uses, except those of the NICs
        in `keep` (a group NIC out of its paths for a while: failed by
        probes, or INACTIVE, gets its nexthop back on repair)."""
        still = {i for ids in self.members.values() for i in ids}
        for key, nhid in list(self.member_ids.items()):
            if nhid not in still and key[0] not in keep:
                del self.member_ids[key]
                self._delete(nhid)

    def _delete(self, nhid: int) -> None:
        try:
            self.kr.delete_nexthop(nhid)
        except NetlinkError as e:
            if e.code != errno.ENOENT:
                raise
        self._taken.discard(nhid)

    def _kernel_route(self, route) -> KernelRoute:
        spec = route.spec
        if isinstance(spec, KernelRoute):
            return spec
        if spec not in self._declared:
            self._declared[spec] = _declared_route(spec)
        return self._declared[spec]

    def install(self, route, path, members: tuple[tuple[str, int], ...]) -> None:
        kr = self._kernel_route(route)
        self._on_ours.pop(kr.key, None)
        if path.gateway is None:
            self.kr.install(kr.via_gateway(None, members[0][1]))
        else:
            self.kr.install(kr.via_nexthop(self.path_ids[path]))

    def restore(self, route, index: int) -> None:
        kr = self._kernel_route(route)
        self.kr.install(kr.via_gateway(None if route.gateway is None else str(route.gateway), index,
                                       onlink=kr.onlink))

    def delete(self, route) -> None:
        try:
            self.kr.delete_route(self._kernel_route(route).key)
        except NetlinkError as e:
            if e.code != errno.ESRCH:
                raise

    def collect_garbage(self) -> int:
        """Delete mpathd's nexthops that no path of this run uses (left by an
        earlier run: its routes were re-pointed at start). Groups first, then
        their members. A route still on one of them (its NIC is in no group
        now) would go with it: it is given back to the nexthop's first NIC as
        a plain route first, as a reload does. Returns how many were deleted."""
        mine = set(self.members) | set(self.member_ids.values())
        stale = sorted((nh for nid, nh in self.ours.items() if nid not in mine),
                       key=lambda nh: not nh.group)
        for kr in self._on_ours.values():
            nh = self.ours[kr.nhid]                # type: ignore[index]
            first = self.ours.get(nh.group[0][0]) if nh.group else nh
            if first is None or first.oif is None:
                continue
            try:
                self.kr.install(kr.via_gateway(first.gateway, first.oif, onlink=first.gateway is not None
                                               and kr.family == socket.AF_INET))
            except NetlinkError as e:
                event(logging.WARNING, Kind.ACTION_FAILED,
                      f"cannot give the route to {kr.dst or 'default'}/{kr.dst_len} (table {kr.table}) back to "
                      f"{self.names.get(first.oif)} as a plain route: {e}", self.names.get(first.oif))
        self._on_ours = {}
        for nh in stale:
            self._delete(nh.id)
        self.ours = {}
        return len(stale)


def _declared_route(cfg) -> KernelRoute:
    """The kernel route of a `routes:` entry of groups.yaml, in mpathd's own
    protocol so that `ip route` says whose it is."""
    family = socket.AF_INET if cfg.dst.version == 4 else socket.AF_INET6
    attrs = dict(cfg.attrs)
    metrics = [(_RTAX[name], attrs[name]) for name in ("mtu", "advmss", "initcwnd", "initrwnd", "hoplimit")
               if name in attrs]
    if attrs.get("mtu_lock"):
        metrics.insert(0, (RTAX_LOCK, _RTAX_LOCK_MTU))
    return KernelRoute(family=family, table=cfg.table,
                       dst=None if cfg.dst.prefixlen == 0 else str(cfg.dst.network_address),
                       dst_len=cfg.dst.prefixlen, src=None, src_len=0, tos=0, priority=cfg.metric,
                       protocol=RTPROT_MPATHD,
                       scope=_RT_SCOPE_UNIVERSE if cfg.via is not None else _RT_SCOPE_LINK,
                       type=_RTN_UNICAST, flags=RTNH_F_ONLINK if attrs.get("onlink") else 0,
                       pref=_PREF[attrs["pref"]] if "pref" in attrs else None,
                       prefsrc=None if cfg.src is None else str(cfg.src), metrics=tuple(metrics))
