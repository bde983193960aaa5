"""Traffic programs that the lab runs inside its namespaces.

    python lab/traffic.py tcp-server ADDR PORT SECONDS
    python lab/traffic.py tcp-client ADDR PORT SECONDS INTERVAL_MS
    python lab/traffic.py spoof IFNAME DSTMAC SRC DST SECONDS RATE
    python lab/traffic.py arp-spoof IFNAME DSTMAC SRC SECONDS RATE
    python lab/traffic.py udp-echo ADDR PORT SECONDS
    python lab/traffic.py udp-stream ADDR PORT SECONDS RATE
    python lab/traffic.py flood ADDR PORT SECONDS
    python lab/traffic.py hog SECONDS
    python lab/traffic.py probe-floor IFNAME SRC DST COUNT RATE
    python lab/traffic.py udp-flows SRC DST PORT FLOWS COUNT RATE
    python lab/traffic.py udp-sink ADDR PORT SECONDS

The client sends a 16-byte numbered message every INTERVAL_MS over one TCP
connection, reads the echo, and prints one JSON line: how many were echoed,
the largest gap between two echoes, and the error that ended it, if any.
`udp-stream` sends numbered datagrams at RATE per second to a `udp-echo` and
prints the gaps in the echoes it gets back (wall-clock start and length), so
an outage is measured as a peer sees it. `flood` sends as fast as it can,
`hog` burns one CPU, `probe-floor` is the least a probe can cost: a bare
raw-socket echo loop bound to a NIC, for comparison with the daemon.

`udp-flows` sends COUNT numbered datagrams on each of FLOWS UDP sockets bound
to SRC (so FLOWS distinct source ports, one flow each), RATE rounds per
second, and prints the ports it used and how many it sent. `udp-sink` counts what arrives per
source port and whether a flow's sequence numbers ever went backwards
(reordering within the flow); it prints one JSON line when SECONDS are up or
when it is sent SIGTERM.

`spoof` plays an attacker: it sends forged ICMP echo replies from SRC to DST
(a test address) with guessed ids, sequence numbers and payloads, RATE per
second, straight onto the wire of IFNAME.

`arp-spoof` forges ARP replies: from SRC's IP with the attacker's own MAC,
to DSTMAC, as answers to the address-less ARP probes, RATE per second.

Every loop is bounded by SECONDS.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time


def tcp_server(addr: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(seconds)
    print("listening", flush=True)
    conn, _ = srv.accept()
    while time.monotonic() < deadline:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = conn.recv(4096)
        except socket.timeout:
            break
        if not data:
            break
        conn.sendall(data)


def tcp_client(addr: str, port: int, seconds: float, interval_ms: float) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    result = {"echoed": 0, "max_gap_ms": 0.0, "error": None}
    deadline = time.monotonic() + seconds
    last = time.monotonic()
    try:
        sock = socket.create_connection((addr, port), timeout=5) if family == socket.AF_INET \
            else socket.create_connection((addr, port, 0, 0), timeout=5)
        print(json.dumps({"connected": True}), flush=True)
        last = time.monotonic()
        n = 0
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(n.to_bytes(16, "big"))
            got = b""
            while len(got) < 16:
                chunk = sock.recv(16 - len(got))
                if not chunk:
                    raise ConnectionError("connection closed by the server")
                got += chunk
            now = time.monotonic()
            result["max_gap_ms"] = max(result["max_gap_ms"], (now - last) * 1000)
            last = now
            n += 1
            result["echoed"] = n
            time.sleep(interval_ms / 1000)
    except socket.timeout:
        # the run ended while an echo was outstanding: that wait is a gap too
        result["max_gap_ms"] = max(result["max_gap_ms"], (time.monotonic() - last) * 1000)
    except (OSError, ConnectionError) as e:
        result["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result), flush=True)


def spoof(ifname: str, dstmac: str, src: str, dst: str, seconds: float, rate: int) -> None:
    import random

    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    from mpathd.adapters.probesock import checksum
    rng = random.Random()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((ifname, 0))
    template = bytearray(bytes(Ether(dst=dstmac) / IP(src=src, dst=dst, ttl=64)
                               / ICMP(type=0, id=0, seq=0) / (b"\0" * 20)))
    icmp = 14 + 20
    print("spoofing", flush=True)
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline and sent < rate * seconds:
        frame = bytearray(template)
        struct.pack_into("!HH", frame, icmp + 4, rng.getrandbits(16), rng.getrandbits(16))
        frame[icmp + 8:icmp + 28] = rng.randbytes(20)
        struct.pack_into("!H", frame, icmp + 2, 0)
        struct.pack_into("!H", frame, icmp + 2, checksum(bytes(frame[icmp:])))
        sock.send(bytes(frame))
        sent += 1
        time.sleep(1 / rate)
    print(json.dumps({"sent": sent}), flush=True)


def udp_echo(addr: str, port: int, seconds: float) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("listening", flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            break
        sock.sendto(data, peer)


def udp_stream(addr: str, port: int, seconds: float, rate: float) -> None:
    """Numbered datagrams at `rate`; report every gap in the echoes longer
    than three sending periods, as [wall-clock start, milliseconds]."""
    import select
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    period = 1.0 / rate
    print("streaming", flush=True)
    start = time.monotonic()
    wall0 = time.time() - start
    deadline = start + seconds
    n = received = 0
    last = start
    gaps = []
    next_send = start
    while (now := time.monotonic()) < deadline:
        if now >= next_send:
            try:
                sock.sendto(n.to_bytes(8, "big"), (addr, port))
            except OSError:
                pass                               # no route for a moment: that is an outage too
            n += 1
            next_send += period
        r, _, _ = select.select([sock], [], [], max(0.0, min(next_send, deadline) - time.monotonic()))
        while r:
            try:
                sock.recv(64)
            except BlockingIOError:
                break
            t = time.monotonic()
            received += 1
            if t - last > 3 * period:
                gaps.append([round(wall0 + last, 6), round((t - last) * 1000, 3)])
            last = t
    print(json.dumps({"sent": n, "received": received, "gaps": gaps}), flush=True)


def flood(addr: str, port: int, seconds: float) -> None:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    payload = bytes(1200)
    print("flooding", flush=True)
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        for _ in range(100):
            try:
                sock.sendto(payload, (addr, port))
                sent += 1
            except OSError:
                pass
    print(json.dumps({"sent": sent}), flush=True)


def arp_spoof(ifname: str, dstmac: str, src: str, seconds: float, rate: int) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((ifname, 0x0806))
    own = sock.getsockname()[4]
    dst = bytes.fromhex(dstmac.replace(":", ""))
    frame = (dst + own + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x02" + own
             + socket.inet_aton(src) + dst + bytes(4))
    print("spoofing", flush=True)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.send(frame)
        sent += 1
        time.sleep(1 / rate)
    print(json.dumps({"sent": sent}), flush=True)


def hog(seconds: float) -> None:
    print("hogging", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def probe_floor(ifname: str, src: str, dst: str, count: int, rate: float) -> None:
    """The least a probe can cost in Python: a raw ICMP socket bound to the
    NIC and the source, a fixed packet with a new sequence number, one
    recv, a check of id and sequence. Prints CPU seconds per probe."""
    import resource
    import select

    from mpathd.adapters.probesock import checksum
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.bind((src, 0))
    sock.setblocking(False)
    ident = 0x4D50
    print("probing", flush=True)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    answered = 0
    period = 1.0 / rate
    next_send = time.monotonic()
    for seq in range(count):
        header = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF) + bytes(24))
        struct.pack_into("!H", header, 2, checksum(bytes(header)))
        sock.sendto(bytes(header), (dst, 0))
        deadline = next_send + period
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data = sock.recv(2048)
            ihl = (data[0] & 0x0F) * 4
            if struct.unpack_from("!HH", data, ihl + 4) == (ident, seq & 0xFFFF):
                answered += 1
        next_send = deadline
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    print(json.dumps({"probes": count, "answered": answered, "cpu_per_probe_us": cpu / count * 1e6}),
          flush=True)


_FLOW = struct.Struct("!II")             # flow index, sequence number within the flow


def udp_flows(src: str, dst: str, port: int, flows: int, count: int, rate: float) -> None:
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    socks = []
    for _ in range(flows):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((src, 0))
        socks.append(s)
    print("sending", flush=True)
    # a round every 1/rate s; the deadline also bounds a run that falls behind
    period = 1.0 / rate
    deadline = time.monotonic() + count * period + 5
    sent = errors = 0
    next_round = time.monotonic()
    for seq in range(count):
        if time.monotonic() > deadline:
            break
        for i, s in enumerate(socks):
            try:
                s.sendto(_FLOW.pack(i, seq), (dst, port))
                sent += 1
            except OSError:
                errors += 1                   # no route for a moment
        next_round += period
        time.sleep(max(0.0, next_round - time.monotonic()))
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks], "sent": sent, "errors": errors}),
          flush=True)


def udp_sink(addr: str, port: int, seconds: float) -> None:
    import signal

    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    flows: dict[int, dict] = {}
    last: dict[int, int] = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print("listening", flush=True)
    deadline = time.monotonic() + seconds
    while not stop and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.1))
        try:
            data, peer = sock.recvfrom(64)
        except (socket.timeout, InterruptedError):
            continue
        if len(data) != _FLOW.size:
            continue
        _, seq = _FLOW.unpack(data)
        flow = flows.setdefault(peer[1], {"count": 0, "reordered": False})
        flow["count"] += 1
        if seq < last.get(peer[1], -1):
            flow["reordered"] = True
        last[peer[1]] = max(seq, last.get(peer[1], -1))
    print(json.dumps({"flows": flows}), flush=True)


def main(argv: list[str]) -> None:
    cmd, *args = argv
    if cmd == "spoof":
        ifname, dstmac, src, dst, seconds, rate = args
        spoof(ifname, dstmac, src, dst, float(seconds), int(rate))
        return
    if cmd == "arp-spoof":
        ifname, dstmac, src, seconds, rate = args
        arp_spoof(ifname, dstmac, src, float(seconds), int(rate))
        return
    if cmd == "hog":
        hog(float(args[0]))
        return
    if cmd == "probe-floor":
        ifname, src, dst, count, rate = args
        probe_floor(ifname, src, dst, int(count), float(rate))
        return
    if cmd == "udp-flows":
        src, dst, port, flows, count, rate = args
        udp_flows(src, dst, int(port), int(flows), int(count), float(rate))
        return
    addr, port, seconds, *rest = args
    if cmd == "tcp-server":
        tcp_server(addr, int(port), float(seconds))
    elif cmd == "tcp-client":
        tcp_client(addr, int(port), float(seconds), float(rest[0]))
    elif cmd == "udp-echo":
        udp_echo(addr, int(port), float(seconds))
    elif cmd == "udp-stream":
        udp_stream(addr, int(port), float(seconds), float(rest[0]))
    elif cmd == "udp-sink":
        udp_sink(addr, int(port), float(seconds))
    elif cmd == "flood":
        flood(addr, int(port), float(seconds))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
