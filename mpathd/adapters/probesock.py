"""Probe sockets: ICMP echo out of one NIC, replies in, no decisions.

One raw socket per NIC and address family, opened when probing starts:
SO_BINDTODEVICE plus bind() to the test address, so that a probe leaves
through its own NIC even when the routing table prefers another, TTL/hop limit 1, an ICMP filter that passes only echo
replies, and kernel receive time stamps. The echo request is built once
with scapy; each probe patches its sequence number, nonce, time stamp and
checksum into one buffer kept per socket. Replies are parsed by offset,
never dissected.

RTTs are the kernel's receive time stamp (SO_TIMESTAMPNS, CLOCK_REALTIME,
moved to the monotonic clock as it is read) less the send time: the
monotonic clock read as the probe is patched, just before sendto(), and
echoed back by the target in the probe's payload. It costs no system call
and no state per probe; the core checks that it lies between the probe's
scheduled time and its answer, so a mangled payload changes nothing. (A
kernel transmit time stamp, SO_TIMESTAMPING, would add a recvmsg() of the
error queue and a wake-up per probe, for the microseconds between here and
the driver; only the first probes of a path wait longer, for neighbour
resolution, and those are never sampled: core/probe.py.)
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import struct
import time
from typing import Callable

from scapy.layers.inet import ICMP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest

from ..core.catalogue import Kind
from ..core.events import ProbeReply, SendProbe
from .log import event

PAYLOAD = struct.Struct("!QQB3x")           # nonce, send time (ns), kind
_SEQ = struct.Struct("!H")
SO_TIMESTAMPNS = 35


def received_at(anc) -> float:
    """When the kernel received a datagram (SO_TIMESTAMPNS, on the real-time
    clock), on the monotonic clock the core uses; now if it gave none."""
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack("qq", value[:16])
            return (sec * 1_000_000_000 + nsec - (time.time_ns() - time.monotonic_ns())) / 1e9
    return time.monotonic()
_SOL_RAW = 255
_ICMP_FILTER = 1                            # IPv4 raw, level SOL_RAW: bitmask of types to block
_ICMP6_FILTER = 1
_ECHO_REPLY4, _ECHO_REPLY6 = 0, 129
_WARN_EVERY_S = 10.0


_WORDS = struct.Struct(f"!{(8 + PAYLOAD.size) // 2}H")     # a probe: header and payload


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"            # never extends a caller's bytearray
    words = _WORDS if len(data) == _WORDS.size else struct.Struct(f"!{len(data) // 2}H")
    total = sum(words.unpack(data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _Sock:
    def __init__(self, ifname: str, family: int, index: int, source, ident: int):
        self.ifname, self.family, self.index, self.ident = ifname, family, index, ident
        if family == 4:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMP)
            s.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", 0xFFFFFFFF & ~(1 << _ECHO_REPLY4)))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(str(source)))
            s.bind((str(source), 0))
            header = bytes(ICMP(type=8, code=0, id=ident, seq=0))[:8]
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMPV6)
            block = [0xFFFFFFFF] * 8
            block[_ECHO_REPLY6 >> 5] &= ~(1 << (_ECHO_REPLY6 & 31))
            s.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *block))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            s.bind((str(source), 0, 0, index))
            header = bytes(IPv6() / ICMPv6EchoRequest(id=ident, seq=0))[40:48]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock = s
        # the probe, patched in place for each send: type, code, checksum,
        # id (from scapy), then sequence number and payload
        self.buf = bytearray(header[:2] + b"\0\0" + header[4:6] + bytes(2 + PAYLOAD.size))
        self.dsts: dict = {}                       # target -> sockaddr, built once per target
        self.warned_at = 0.0

    def packet(self, seq: int, nonce: int, kind: int) -> bytearray:
        buf = self.buf
        _SEQ.pack_into(buf, 6, seq)
        PAYLOAD.pack_into(buf, 8, nonce, time.monotonic_ns(), kind)
        if self.family == 4:                       # the kernel checksums ICMPv6 itself
            _SEQ.pack_into(buf, 2, 0)
            _SEQ.pack_into(buf, 2, checksum(buf))
        return buf


class ProbeSockets:
    def __init__(self, register: Callable, unregister: Callable,
                 deliver: Callable[[ProbeReply], None]):
        self._register, self._unregister, self._deliver = register, unregister, deliver
        self._socks: dict[tuple[str, int], _Sock] = {}
        self._rng = random.SystemRandom()
        self._ips: dict[str, object] = {}          # source text -> address: parsed once, not per reply

    def open(self, ifname: str, family: int, index: int, source) -> None:
        self.close(ifname, family)
        s = _Sock(ifname, family, index, source, self._rng.getrandbits(16))
        self._socks[(ifname, family)] = s
        self._register(s.sock, lambda: self._read(s))

    def close(self, ifname: str, family: int) -> None:
        s = self._socks.pop((ifname, family), None)
        if s is not None:
            self._unregister(s.sock)
            s.sock.close()

    def close_all(self) -> None:
        for key in list(self._socks):
            self.close(*key)

    def send(self, p: SendProbe) -> None:
        s = self._socks.get((p.ifname, p.family))
        if s is None:
            return                                 # its socket could not be opened: the core retries
        dst = s.dsts.get(p.dst)
        if dst is None:
            if len(s.dsts) > 64:
                s.dsts.clear()
            dst = s.dsts[p.dst] = (str(p.dst), 0) if p.family == 4 else (str(p.dst), 0, 0, s.index)
        try:
            s.sock.sendto(s.packet(p.seq, p.nonce, p.kind), dst)
        except BlockingIOError:
            pass                                   # as in.mpathd: counts as sent, and is lost
        except OSError as e:                       # EPERM from a firewall, ENETUNREACH: lost too
            now = time.monotonic()
            if now - s.warned_at >= _WARN_EVERY_S:
                s.warned_at = now
                event(logging.WARNING, Kind.PROBE_ERROR, f"probe from {s.ifname} to {p.dst} failed: {e.strerror}",
                      s.ifname)

    def _read(self, s: _Sock) -> None:
        """One datagram per readiness: epoll is level-triggered, so a second
        one brings the loop back at once, and the common case costs no
        failing recvmsg()."""
        try:
            data, anc, _flags, addr = s.sock.recvmsg(2048, 64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            event(logging.WARNING, Kind.PROBE_ERROR, f"probe socket of {s.ifname} (IPv{s.family}): {e.strerror}",
                  s.ifname)
            return
        reply = self._parse(s, data, addr[0], received_at(anc))
        if reply is not None:
            self._deliver(reply)

    def _parse(self, s: _Sock, data: bytes, src: str, rx: float) -> ProbeReply | None:
        if s.family == 4:
            if len(data) < 20:
                return self._bad(s, src, f"truncated IP header ({len(data)} bytes)")
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8:
            return self._bad(s, src, f"reply too short ({len(data)} bytes)")
        icmp_type, code, _ck, ident, seq = struct.unpack_from("!BBHHH", data)
        if ident != s.ident:
            return None                            # another program's ping: not ours, not bad
        if icmp_type != (_ECHO_REPLY4 if s.family == 4 else _ECHO_REPLY6) or code != 0:
            return self._bad(s, src, f"probe reply type {icmp_type} code {code}")
        if len(data) < 8 + PAYLOAD.size:
            return self._bad(s, src, f"probe reply too short: {len(data)} bytes")
        nonce, sent_ns, kind = PAYLOAD.unpack_from(data, 8)
        ip = self._ips.get(src)
        if ip is None:
            if len(self._ips) > 1024:
                self._ips.clear()
            ip = self._ips[src] = ipaddress.ip_address(src.split("%")[0])
        return ProbeReply(s.ifname, s.family, ip, seq, nonce, kind, rx, sent_ns / 1e9)

    def _bad(self, s: _Sock, src: str, why: str) -> None:
        now = time.monotonic()
        if now - s.warned_at >= _WARN_EVERY_S:
            s.warned_at = now
            event(logging.WARNING, Kind.REPLY_MALFORMED,
                  f"ignored a malformed echo reply from {src} on {s.ifname}: {why}", s.ifname)
        return None
