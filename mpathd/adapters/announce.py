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
"""

from __future__ import annotations

import socket

from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from ..config import Address


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


class Announcer:
    def __init__(self) -> None:
        self._socks: dict[str, socket.socket] = {}
        self._frames: dict[tuple[str, Address], bytes] = {}

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

    def send(self, ifname: str, addr: Address) -> None:
        self._socks[ifname].send(self._frames[(ifname, addr)])
