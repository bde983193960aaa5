"""ARP probe sockets: address-less ARP requests out of one NIC, replies in,
no decisions.

One AF_PACKET socket per NIC that probes with `arp`, opened when its probing
starts and bound to the NIC, so a probe leaves through its own NIC whatever
the routing table says. A classic BPF filter in the kernel passes only ARP
replies whose Ethernet destination is the NIC's MAC: the socket never wakes
for the broadcast requests on the link, nor for frames the NIC sends. The
filter is attached before the socket is bound to the ARP protocol, so no
other frame can slip in between.

The request is an RFC 5227 probe: broadcast, sender MAC the NIC's, sender
IP 0.0.0.0, target IP the probe target. Because its sender IP is
unspecified, neither the target nor any other host on the link makes a
neighbour entry from it, and the target answers with a unicast reply to the
NIC's MAC. It is built once per socket; a probe patches the target IP into
it. Replies are parsed by offset and delivered with their sender IP and MAC
and the kernel's receive time stamp; which probe one answers is the core's
business (core/arp.py).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import socket
import struct
import time
from typing import Callable

from ..core.catalogue import Kind
from ..core.events import ProbeReply, SendProbe
from ..core.probe import KIND_ARP
from .log import event
from .probesock import SO_TIMESTAMPNS, received_at

ETH_P_ARP = 0x0806
_ARP_REPLY = 2
_SO_ATTACH_FILTER = 26
_FRAME = 42                                 # Ethernet header 14 + ARP for IPv4 over Ethernet 28
_TPA = 38                                   # offset of the ARP target IP in the frame
_WARN_EVERY_S = 10.0

# classic BPF: load, compare and jump, return
_LDH_ABS, _LDW_ABS, _JEQ_K, _RET_K = 0x28, 0x20, 0x15, 0x06
_INSN = struct.Struct("HBBI")


def reply_filter(mac: bytes) -> bytes:
    """The kernel filter: an ARP reply to `mac`, else dropped."""
    accept = _FRAME
    prog = [
        (_LDH_ABS, 0, 0, 12), (_JEQ_K, 0, 7, ETH_P_ARP),                 # EtherType ARP
        (_LDH_ABS, 0, 0, 20), (_JEQ_K, 0, 5, _ARP_REPLY),                # opcode: reply
        (_LDW_ABS, 0, 0, 0), (_JEQ_K, 0, 3, int.from_bytes(mac[:4], "big")),   # to our MAC
        (_LDH_ABS, 0, 0, 4), (_JEQ_K, 0, 1, int.from_bytes(mac[4:6], "big")),
        (_RET_K, 0, 0, accept),
        (_RET_K, 0, 0, 0),
    ]
    return b"".join(_INSN.pack(*insn) for insn in prog)


def _attach(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // _INSN.size, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)      # the kernel copies the program


def request(mac: bytes) -> bytearray:
    """The probe: broadcast, from `mac` and 0.0.0.0; target IP patched per probe."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + bytes(4) + bytes(6) + bytes(4)
    return bytearray(eth + arp)


class _Sock:
    def __init__(self, ifname: str, index: int):
        self.ifname, self.index = ifname, index
        # protocol 0 receives nothing until the filter is on and the ARP bind is made
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        try:
            s.bind((ifname, 0))
            self.mac = s.getsockname()[4]
            if len(self.mac) != 6:
                raise OSError(f"{ifname} has no Ethernet address")
            _attach(s, reply_filter(self.mac))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((ifname, ETH_P_ARP))
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.buf = request(self.mac)
        self.warned_at = 0.0


class ArpSockets:
    def __init__(self, register: Callable, unregister: Callable,
                 deliver: Callable[[ProbeReply], None]):
        self._register, self._unregister, self._deliver = register, unregister, deliver
        self._socks: dict[str, _Sock] = {}
        self._ips: dict[bytes, object] = {}        # sender IP bytes -> address: parsed once, not per reply

    def __contains__(self, ifname: str) -> bool:
        return ifname in self._socks

    def open(self, ifname: str, index: int) -> None:
        self.close(ifname)
        s = _Sock(ifname, index)
        self._socks[ifname] = s
        self._register(s.sock, lambda: self._read(s))

    def refresh(self, ifname: str, mac: str | None) -> None:
        """The NIC's MAC changed: the request and the filter carry the new one."""
        s = self._socks.get(ifname)
        if s is not None and mac is not None and bytes.fromhex(mac.replace(":", "")) != s.mac:
            self.open(ifname, s.index)

    def close(self, ifname: str) -> None:
        s = self._socks.pop(ifname, None)
        if s is not None:
            self._unregister(s.sock)
            s.sock.close()

    def close_all(self) -> None:
        for ifname in list(self._socks):
            self.close(ifname)

    def send(self, p: SendProbe) -> None:
        s = self._socks.get(p.ifname)
        if s is None:
            return                                 # its socket could not be opened: the core retries
        s.buf[_TPA:_TPA + 4] = p.dst.packed
        try:
            s.sock.send(s.buf)
        except BlockingIOError:
            pass                                   # as an ICMP probe: counts as sent, and is lost
        except OSError as e:                       # ENETDOWN and the like: lost too
            if time.monotonic() - s.warned_at >= _WARN_EVERY_S:
                s.warned_at = time.monotonic()
                event(logging.WARNING, Kind.PROBE_ERROR, f"ARP probe from {s.ifname} to {p.dst} failed: {e.strerror}",
                      s.ifname)

    def _read(self, s: _Sock) -> None:
        """One frame per readiness, as the ICMP probe sockets."""
        try:
            data, anc, _flags, _addr = s.sock.recvmsg(_FRAME, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            event(logging.WARNING, Kind.PROBE_ERROR, f"ARP probe socket of {s.ifname}: {e.strerror}", s.ifname)
            return
        rx = received_at(anc)
        # the filter passed an ARP reply to our MAC; IPv4 over Ethernet is
        # checked here (hardware type, protocol type, address lengths)
        if len(data) < _FRAME or data[14:20] != b"\x00\x01\x08\x00\x06\x04":
            return
        spa = data[28:32]
        ip = self._ips.get(spa)
        if ip is None:
            if len(self._ips) > 1024:
                self._ips.clear()
            ip = self._ips[spa] = ipaddress.IPv4Address(spa)
        self._deliver(ProbeReply(s.ifname, 4, ip, 0, 0, KIND_ARP, rx, mac=data[22:28]))
