"""What goes into the core (events) and what comes out of it (actions).

These are plain values: the core never touches a socket, and the adapters
never decide anything. Addresses are ipaddress interface objects
(ADDR/PREFIX), interface names are strings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import IP, Address, Config
from .catalogue import Kind


# ------------------------------------------------------------------ events

@dataclass(frozen=True)
class LinkInfo:
    """A NIC as the kernel describes it in RTM_NEWLINK."""
    name: str
    index: int
    mac: str | None
    running: bool              # IFF_RUNNING: carrier present and admin up
    loopback_or_p2p: bool = False


@dataclass(frozen=True)
class Started:
    """The kernel's state at start-up: every link and every address."""
    links: tuple[LinkInfo, ...]
    addresses: tuple[tuple[str, Address], ...]


@dataclass(frozen=True)
class Resynced:
    """A fresh dump of the kernel's state, after netlink overflowed or an
    action failed: the core re-learns where every address really is."""
    links: tuple[LinkInfo, ...]
    addresses: tuple[tuple[str, Address], ...]


@dataclass(frozen=True)
class LinkChanged:
    link: LinkInfo


@dataclass(frozen=True)
class LinkRemoved:
    name: str
    index: int


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
class Route:
    family: int                # 4 or 6
    dst: str                   # network, e.g. "0.0.0.0/0"
    gateway: str | None


@dataclass(frozen=True)
class RoutesChanged:
    """The kernel's routes, after any change (probe targets come from them)."""
    routes: tuple[Route, ...]


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
    """An adapter could not carry out an action; error is its reason."""
    action: "Action"
    error: str


Event = (Started | Resynced | LinkChanged | LinkRemoved | AddressAdded | AddressRemoved
         | RoutesChanged | ProbeReply | NeighboursRead | Tick | ConfigReloaded | Offline | Online | ActionFailed)


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


@dataclass(frozen=True)
class ReleaseInterface:
    """A NIC is gone or left every group: close what was opened for it."""
    ifname: str


@dataclass(frozen=True)
class AddAddress:
    ifname: str
    address: Address
    test: bool = False         # test addresses are installed so that the kernel never picks them


@dataclass(frozen=True)
class RemoveAddress:
    ifname: str
    address: Address


@dataclass(frozen=True)
class MoveAddress:
    """Make-before-break: add on dst, re-point routes, delete from src."""
    address: Address
    src: str
    dst: str
    src_failed: bool           # flush src's neighbour queue (packets stuck behind a dead NIC)


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


@dataclass(frozen=True)
class Refused:
    """An operator's request (offline, online) that was not carried out."""
    reason: str


@dataclass(frozen=True)
class StateChanged:
    """The status summary changed (for sd_notify STATUS= and watchers)."""
    summary: str = field(default="")


Action = (PrepareInterface | ReleaseInterface | AddAddress | RemoveAddress | MoveAddress
          | Announce | StartProbing | StopProbing | SendProbe | ReadNeighbours | Log | Refused | StateChanged)

ERR, WARNING, INFO = logging.ERROR, logging.WARNING, logging.INFO
