"""What goes into the core (events) and what comes out of it (actions).

These are plain values: the core never touches a socket, and the adapters
never decide anything. Addresses are ipaddress interface objects
(ADDR/PREFIX), interface names are strings.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import IP, Address, Config
from .catalogue import Kind

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TABLE_MAIN = 254


# ------------------------------------------------------------------ routes

class RouteKey(NamedTuple):
    """How the kernel tells one route from another: two routes with the same
    key are one route, replaced in place."""
    family: int                # 4 or 6
    table: int
    dst: Network
    tos: int
    priority: int              # the metric


@dataclass(frozen=True)
class OwnedRoute:
    """A route that leaves by a group's NICs, as mpathd keeps it."""
    key: RouteKey
    gateway: IP | None          # the router; None for a route straight onto the link
    home: str | None            # the NIC it was learned on or declared for; None: any
    prefsrc: IP | None = None   # only if the kernel or the operator had one
    spec: object = None         # every other attribute, opaque to the core: the
                                # adapter's record of the kernel's route, or the
                                # RouteConfig of a declared one
    declared: bool = False      # from groups.yaml: put back if another program deletes it

    @property
    def family(self) -> int:
        return self.key.family

    def describe(self) -> str:
        k = self.key
        dst = "default" if k.dst.prefixlen == 0 else str(k.dst)
        via = f" via {self.gateway}" if self.gateway is not None else ""
        table = "" if k.table == TABLE_MAIN else f" table {k.table}"
        metric = f" metric {k.priority}" if k.priority else ""
        return f"{dst}{via}{table}{metric}"


class PathKey(NamedTuple):
    """A way out of a group: one kernel nexthop group for the routes through
    one router (gateway), or for a route without a router one NIC."""
    group: str
    family: int
    gateway: IP | None
    home: str | None            # None: spread over the active NICs


# ------------------------------------------------------------------ events

@dataclass(frozen=True)
class LinkInfo:
    """A NIC as the kernel describes it in RTM_NEWLINK."""
    name: str
    index: int
    mac: str | None
    running: bool              # IFF_RUNNING: carrier present and admin up
    loopback_or_p2p: bool = False
    up: bool = True            # IFF_UP: administratively up (ip link set up)


@dataclass(frozen=True)
class Started:
    """The kernel's state at start-up: every link, every address, and every
    route that leaves by a NIC (the core keeps those of its groups)."""
    links: tuple[LinkInfo, ...]
    addresses: tuple[tuple[str, Address], ...]
    routes: tuple[OwnedRoute, ...] = ()


@dataclass(frozen=True)
class Resynced:
    """A fresh dump of the kernel's state, after netlink overflowed or an
    action failed: the core re-learns where every address really is. After
    an overflow the routes are read again too (None: not read)."""
    links: tuple[LinkInfo, ...]
    addresses: tuple[tuple[str, Address], ...]
    routes: tuple[OwnedRoute, ...] | None = None


@dataclass(frozen=True)
class LinkChanged:
    link: LinkInfo


@dataclass(frozen=True)
class LinkRemoved:
    name: str
    index: int


@dataclass(frozen=True)
class LinkRenamed:
    """A NIC the kernel knows by its index got a new name (udev at boot, or
    an operator: Linux renames only a NIC that is down). Its addresses stay
    on it."""
    old: str
    link: LinkInfo


@dataclass(frozen=True)
class AddressAdded:
    """An address appeared that mpathd did not add itself."""
    ifname: str
    address: Address


@dataclass(frozen=True)
class AddressRemoved:
    """An address vanished that mpathd did not remove itself."""
    ifname: str
    address: Address


@dataclass(frozen=True)
class RouteAdded:
    """Another program added or replaced a route that leaves by a group NIC
    (a network manager re-adding its default route, say)."""
    route: OwnedRoute


@dataclass(frozen=True)
class RouteRemoved:
    """A route that left by a group NIC, or by one of mpathd's paths, is
    gone: deleted by another program, or by the kernel itself (by_kernel:
    a device set down or removed, an address gone)."""
    key: RouteKey
    by_kernel: bool


class ProbeReply(NamedTuple):
    """An ICMP echo reply with our id, or an ARP reply to the NIC's MAC,
    received on a NIC's probe socket.
    (This and SendProbe come once per probe: a NamedTuple is as immutable as
    the frozen dataclasses and several times cheaper to build.)"""
    ifname: str
    family: int
    src: IP
    seq: int
    nonce: int
    kind: int
    rx: float                  # kernel receive time, on the monotonic clock
    sent: float | None = None  # when the probe went to the kernel (read at sendto, carried in
                               # the probe and echoed back), on the monotonic clock
    mac: bytes | None = None   # an ARP reply's sender MAC (kind KIND_ARP; no seq or nonce then)


@dataclass(frozen=True)
class NeighboursRead:
    """The IPv4 addresses in the host's neighbour table that are resolved
    (the answer to ReadNeighbours): host targets for ARP probing."""
    addresses: tuple[IP, ...]


@dataclass(frozen=True)
class Tick:
    """Time has passed; the core's next_deadline() has been reached."""


@dataclass(frozen=True)
class ConfigReloaded:
    """A new, valid configuration, with the kernel's links and addresses as
    they are now: apply only what differs."""
    config: Config
    links: tuple[LinkInfo, ...]
    addresses: tuple[tuple[str, Address], ...]


@dataclass(frozen=True)
class Offline:
    """The operator takes a NIC out of service (ipmpctl offline)."""
    ifname: str
    force: bool = False


@dataclass(frozen=True)
class Online:
    """The operator puts an offline NIC back (ipmpctl online)."""
    ifname: str


@dataclass(frozen=True)
class ActionFailed:
    """An adapter could not carry out an action; error is its reason. With
    nic_down, a NIC it was for had no carrier or was gone when it failed:
    the kernel's event about that follows, and the failure is no news.
    Every refusal of an event's actions comes back before the next event."""
    action: "Action"
    error: str
    nic_down: bool = False


@dataclass(frozen=True)
class ArpGuarded:
    """What GuardArp found: why the protection is not in force (None if it
    is), and the NICs outside the groups that answer ARP for any of the
    host's addresses (effective arp_ignore=0)."""
    problem: str | None
    exposed: tuple[str, ...]


Event = (Started | Resynced | LinkChanged | LinkRemoved | LinkRenamed | AddressAdded | AddressRemoved
         | RouteAdded | RouteRemoved | ProbeReply | NeighboursRead | Tick | ConfigReloaded | Offline | Online
         | ActionFailed | ArpGuarded)


# ----------------------------------------------------------------- actions

@dataclass(frozen=True)
class PrepareInterface:
    """A group NIC is present: set its sysctls, open its send socket and
    build the announcements of every data address it may come to hold."""
    ifname: str
    index: int
    mac: str | None
    addresses: tuple[Address, ...]
    neigh_retrans_ms: int      # how often the kernel re-asks for an unresolved neighbour
    spreading: bool = False    # its group spreads flows: hash them by port (L4), not by address


@dataclass(frozen=True)
class ReleaseInterface:
    """A NIC is gone or left every group: close what was opened for it."""
    ifname: str


@dataclass(frozen=True)
class SetLinkUp:
    """Set a group NIC administratively up: the device of this index, not
    whatever may carry the name by then."""
    ifname: str
    index: int


@dataclass(frozen=True)
class AddAddress:
    ifname: str
    address: Address
    test: bool = False         # test addresses are installed so that the kernel never picks them


@dataclass(frozen=True)
class RemoveAddress:
    """Delete an address. The second half of a move (make-before-break) names
    the NIC it moved to: if adding it there failed, it is not deleted."""
    ifname: str
    address: Address
    moved_to: str | None = None
    flush_neighbours: bool = False   # src failed: drop the packets queued behind it


@dataclass(frozen=True)
class SetPath:
    """Make the path's kernel nexthop group hold exactly these members
    (NIC name, ifindex), creating the per-NIC nexthops it needs."""
    path: PathKey
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class DropPath:
    """No owned route uses the path any more: delete its nexthop group."""
    path: PathKey


@dataclass(frozen=True)
class InstallRoute:
    """Replace the route in the kernel so that it leaves by the path (a path
    without a router: straight out of its one member)."""
    route: OwnedRoute
    path: PathKey
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RestoreRoute:
    """Give a learned route back as a plain route through one NIC: it left
    mpathd's care (its NIC or its group left the configuration)."""
    route: OwnedRoute
    ifname: str
    index: int


@dataclass(frozen=True)
class DeleteRoute:
    """A declared route that left the configuration."""
    route: OwnedRoute


@dataclass(frozen=True)
class Announce:
    """Gratuitous ARP (IPv4) or unsolicited NA (IPv6) for address from ifname."""
    ifname: str
    address: Address


@dataclass(frozen=True)
class StartProbing:
    """Open the probe socket of a NIC for one family, bound to the NIC and to
    the test address; with `arp`, a packet socket bound to the NIC that sends
    ARP requests from 0.0.0.0."""
    ifname: str
    family: int
    index: int
    source: IP
    arp: bool = False


@dataclass(frozen=True)
class ReadNeighbours:
    """Read the host's IPv4 neighbour table once (answered by NeighboursRead)."""


@dataclass(frozen=True)
class StopProbing:
    ifname: str
    family: int


class SendProbe(NamedTuple):
    ifname: str
    family: int
    dst: IP
    seq: int
    nonce: int
    kind: int


@dataclass(frozen=True)
class Log:
    level: int
    text: str
    kind: Kind                 # the event catalogue's entry: MPATHD_EVENT and MESSAGE_ID
    group: str | None = None
    ifname: str | None = None
    moved: tuple[tuple[str, Address], ...] = ()   # the adds (NIC, address) a move's line
                                                  # reports: written only if none was refused


@dataclass(frozen=True)
class Refused:
    """An operator's request (offline, online) that was not carried out."""
    reason: str


@dataclass(frozen=True)
class StateChanged:
    """The status summary changed (for sd_notify STATUS= and watchers)."""
    summary: str = field(default="")


@dataclass(frozen=True)
class GuardArp:
    """Keep NICs outside the groups from answering ARP for the groups'
    addresses (ARP flux): set net.ipv4.conf.all.arp_ignore=1 if `enable`,
    then report what is exposed as ArpGuarded. `members` are the group NICs."""
    enable: bool
    members: tuple[str, ...]


RouteAction = SetPath | DropPath | InstallRoute | RestoreRoute | DeleteRoute

Action = (PrepareInterface | ReleaseInterface | SetLinkUp | AddAddress | RemoveAddress | Announce
          | StartProbing | StopProbing | SendProbe | ReadNeighbours | Log | Refused | StateChanged | RouteAction
          | GuardArp)

ERR, WARNING, INFO = logging.ERROR, logging.WARNING, logging.INFO
