"""Telling the neighbours that an address has moved.

IPv4: a gratuitous ARP in request form (op=1, sender = target = the address,
target MAC zero). Linux updates an existing neighbour entry from it even
within its locktime (net.ipv4.neigh.*.locktime), where a reply-form GARP
is ignored.
IPv6: an unsolicited neighbour advertisement to ff02::1 with the override
flag set.

The kernel sends neither when an address is added, so the daemon does. Each
NIC gets one AF_PACKET socket when it joins (a socket per packet costs 12 ms
in close()), and every frame is built once with scapy when the NIC is
prepared; sending is then one send() of cached bytes.

An announcement is repeated (timing.py: DEFAULT_ANNOUNCE_COUNT frames,
DEFAULT_ANNOUNCE_INTERVAL_MS apart, or ANNOUNCE_COUNT / ANNOUNCE_INTERVAL of
/etc/default/mpathd): the first frame goes at once, the repeats when the
daemon's loop reaches next_deadline(), never by waiting. A newer
announcement of the same address replaces the repeats of the older one; the
address leaving the NIC, the NIC losing its carrier or leaving the groups
ends them.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from ..config import Address, Defaults

log = logging.getLogger("mpathd")


def frame(mac: str, addr: Address) -> bytes:
    if addr.version == 4:
        ip = str(addr.ip)
        pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(
            op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=ip)
    else:
        ip = str(addr.ip)
        pkt = (Ether(src=mac, dst="33:33:00:00:00:01")
               / IPv6(src=ip, dst="ff02::1", hlim=255)
               / ICMPv6ND_NA(tgt=ip, R=0, S=0, O=1)
               / ICMPv6NDOptDstLLAddr(lladdr=mac))
    return bytes(pkt)


@dataclass
class _Repeat:
    ifname: str
    due: float                 # monotonic time of the next frame
    left: int                  # frames still to send


class Announcer:
    def __init__(self, defaults: Defaults, clock: Callable[[], float] = time.monotonic) -> None:
        self._socks: dict[str, socket.socket] = {}
        self._frames: dict[tuple[str, Address], bytes] = {}
        self._repeats: dict[Address, _Repeat] = {}
        self._clock = clock
        self.configure(defaults)

    def configure(self, defaults: Defaults) -> None:
        """Take the count and spacing of a (re)loaded configuration; repeats
        under way follow them from their next frame."""
        self.count, self.interval = defaults.announce_count, defaults.announce_interval_ms / 1000

    def open(self, ifname: str, mac: str, addresses: tuple[Address, ...]) -> None:
        self.close(ifname)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # protocol 0: send only
        sock.setblocking(False)
        sock.bind((ifname, 0))
        self._socks[ifname] = sock
        for addr in addresses:
            self._frames[(ifname, addr)] = frame(mac, addr)

    def close(self, ifname: str) -> None:
        sock = self._socks.pop(ifname, None)
        if sock is not None:
            sock.close()
        for key in [k for k in self._frames if k[0] == ifname]:
            del self._frames[key]
        self.cancel(ifname)

    def announce(self, ifname: str, addr: Address) -> None:
        """Send the first frame now (an error is the caller's) and schedule
        the repeats, replacing those of an older announcement of addr. A NIC
        that went down or away before its event was handled sends nothing
        and it is no error: that event moves the address, and the move
        announces afresh."""
        self._repeats.pop(addr, None)
        try:
            self._socks[ifname].send(self._frames[(ifname, addr)])
        except OSError as e:
            if e.errno not in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                raise
            log.debug("announcement of %s on %s not sent: %s", addr, ifname, e.strerror)
            return
        if self.count > 1:
            self._repeats[addr] = _Repeat(ifname, self._clock() + self.interval, self.count - 1)

    def cancel(self, ifname: str, addr: Address | None = None) -> None:
        """No more repeats from ifname: for addr (it left the NIC), or for
        every address (the NIC went down or away)."""
        for a in [a for a, r in self._repeats.items() if r.ifname == ifname and addr in (None, a)]:
            del self._repeats[a]

    def next_deadline(self) -> float | None:
        return min((r.due for r in self._repeats.values()), default=None)

    def tick(self) -> None:
        """Send the repeats that are due. A frame the kernel refuses (the NIC
        went down before its event reached us) ends that address's repeats:
        the first frame was sent, and the next move announces afresh."""
        if not self._repeats:
            return
        now = self._clock()
        for addr, r in [(a, r) for a, r in self._repeats.items() if r.due <= now]:
            try:
                self._socks[r.ifname].send(self._frames[(r.ifname, addr)])
            except (OSError, KeyError) as e:
                log.debug("repeat announcement of %s on %s not sent: %s", addr, r.ifname, e)
                r.left = 0
            r.left -= 1
            if r.left <= 0:
                del self._repeats[addr]
            else:
                r.due = now + self.interval         # a late loop spaces them, never bunches them
