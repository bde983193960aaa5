"""Traffic programs that the lab runs inside its namespaces.

    python -m mpathd.labtraffic tcp-server ADDR PORT SECONDS
    python -m mpathd.labtraffic tcp-client ADDR PORT SECONDS INTERVAL_MS
    python -m mpathd.labtraffic spoof IFNAME DSTMAC SRC DST SECONDS RATE

The client sends a 16-byte numbered message every INTERVAL_MS over one TCP
connection, reads the echo, and prints one JSON line: how many were echoed,
the largest gap between two echoes, and the error that ended it, if any.
`spoof` plays an attacker: it sends forged ICMP echo replies from SRC to DST
(a test address) with guessed ids, sequence numbers and payloads, RATE per
second, straight onto the wire of IFNAME.

Every loop is bounded by SECONDS.
"""

from __future__ import annotations

import json
import socket
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
    import struct

    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    from .probesock import checksum
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


def main(argv: list[str]) -> None:
    cmd, *args = argv
    if cmd == "spoof":
        ifname, dstmac, src, dst, seconds, rate = args
        spoof(ifname, dstmac, src, dst, float(seconds), int(rate))
        return
    addr, port, seconds, *rest = args
    if cmd == "tcp-server":
        tcp_server(addr, int(port), float(seconds))
    elif cmd == "tcp-client":
        tcp_client(addr, int(port), float(seconds), float(rest[0]))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
