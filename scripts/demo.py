"""The demo behind scripts/demo: one group of two NICs and a standby, all
probing at an FDT of 1 s. A cable is pulled and put back; then a path fails
silently (the switch drops every frame of eth1 while its carrier stays up,
which a link monitor such as bonding's miimon cannot see) and only mpathd's
probes catch it; then the path is repaired. Along the way, 32 flows from one
data address show outbound load spreading over the active NICs. It takes
under 15 s."""


import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # lab/ is not installed: the checkout's

from lab import FAR4, ROUTER4, Lab, mac_of, wait_for

GROUPS = """\
groups:
  ipmp0:
    interfaces:
      eth0:
        data: [192.0.2.100/24, "2001:db8:1::100/64"]
        test: [192.0.2.10/24]
      eth1:
        data: [192.0.2.101/24]
        test: [192.0.2.11/24]
      eth2:
        standby: true
        test: [192.0.2.12/24]
"""
DEFAULTS = "FAILURE_DETECTION_TIME=1000\n"
NICS = ("eth0", "eth1", "eth2")
# How many of eth1's last probes to show around its silent failure: the
# answered ones before the fault and the five losses that fail it.
PROBE_LINES = 8


def step(title: str) -> None:
    print(f"\n=== {title}\n", flush=True)


def show(d, *views: str) -> None:
    for view in views:
        print(d.ctl(view).stdout.rstrip() + "\n")


def reach(lab, address: str) -> str:
    return "answers" if lab.ping("far", address) else "DOES NOT ANSWER"


def neighbour(lab, address: str) -> str:
    """The router's neighbour entry for `address`: which NIC's MAC it has."""
    entry = lab.neighbour("rtr", address) or {}
    mac = entry.get("lladdr", "none")
    nic = next((n for i, n in enumerate(NICS) if mac_of(i) == mac), "?")
    return f"{mac} ({nic}), {'/'.join(entry.get('state', []))}"


FLOWS, PORT = 32, 7000


def spreading(lab, title: str) -> None:
    """32 UDP flows from 192.0.2.100 to the far host, counted per NIC at the
    switch ports: outbound traffic leaves by every active NIC, per flow."""
    counter = lab.count_frames(NICS, f"udp dport {PORT}", per="udp sport")
    sink = lab.traffic("far", "udp-sink", FAR4, str(PORT), "10")
    sender = lab.traffic("host", "udp-flows", "192.0.2.100", FAR4, str(PORT), str(FLOWS), "10", "50")
    sender.communicate(timeout=20)
    time.sleep(0.2)                                     # the last datagrams in flight
    sink.terminate()
    sink.communicate(timeout=10)
    seen = counter.read()
    counter.close()
    shares = ", ".join(f"{n}: {len(seen[n])}" for n in NICS)
    print(f"{title}: {FLOWS} UDP flows from 192.0.2.100 to {FAR4} left by {shares} "
          f"(flows per NIC; no flow on two NICs: {len({p for n in NICS for p in seen[n]}) == FLOWS})")


def main() -> int:
    started = time.monotonic()
    with Lab(nics=3) as lab:
        step("the lab: host NICs eth0, eth1, eth2 on one switch, a router at 192.0.2.1, "
             f"a far host {FAR4} beyond it; FDT 1 s; groups.yaml:")
        print(GROUPS)
        lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
        d = lab.start_daemon(GROUPS, defaults=DEFAULTS)
        d.wait_probing(*NICS)
        step("mpathd is running: ipmpctl groups, interfaces, addresses")
        show(d, "groups", "interfaces", "addresses")
        print(f"the far host -> 192.0.2.100: {reach(lab, '192.0.2.100')}; -> 192.0.2.101: {reach(lab, '192.0.2.101')}")
        print()
        spreading(lab, "outbound load spreading (the standby eth2 carries none)")

        step("1. a cable pull: eth0's switch port goes down (bonding and teamd handle this too)")
        t0 = time.monotonic()
        lab.cut("eth0")
        wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="failover")
        print(f"192.0.2.100 moved to the standby eth2 after {1000 * (time.monotonic() - t0):.0f} ms\n")
        show(d, "interfaces", "addresses")
        print(f"the router's neighbour entry for 192.0.2.100: {neighbour(lab, '192.0.2.100')}")
        print(f"the far host -> 192.0.2.100: {reach(lab, '192.0.2.100')}")

        step("plugging eth0 back in (a repair needs ten answered probes)")
        t0 = time.monotonic()
        lab.restore("eth0")
        wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="failback")
        wait_for(lambda: lab.holders("2001:db8:1::100/64") == ["eth0"], timeout=10, what="failback")
        print(f"192.0.2.100 back on eth0 after {time.monotonic() - t0:.1f} s\n")
        show(d, "interfaces")

        step("2. a silent path failure: the switch drops every frame of eth1, its carrier stays up")
        flags = lab.ip_json("host", "link", "show", "eth1")[0]["flags"]
        print(f"eth1 as the kernel sees it: {','.join(flags)}  (carrier up: a link monitor sees nothing wrong)")
        probes = lab.spawn("host", [sys.executable, "-m", "mpathd.ctl", "--control", d.control, "probes", "-n"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(0.5)                             # a few answered probes first
        t0 = time.monotonic()
        lab.drop("eth1")
        d.wait_log("IP interface failure detected on eth1", timeout=5)
        detected = time.monotonic() - t0
        wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth2"], what="failover")
        time.sleep(0.3)                             # the stream polls five times a second
        probes.send_signal(signal.SIGINT)
        out = probes.communicate(timeout=10)[0].splitlines()
        print(f"\nipmpctl probes (eth1's last {PROBE_LINES}):")
        print("\n".join([out[0]] + [line for line in out[1:] if " eth1 " in line][-PROBE_LINES:]))
        print(f"\nfive losses in a row: eth1 failed {detected:.2f} s after the fault (FDT 1 s)\n")
        show(d, "interfaces", "addresses")
        print(f"the far host -> 192.0.2.101: {reach(lab, '192.0.2.101')}")
        spreading(lab, "with eth1 failed, the standby eth2 is active")

        step("repairing the path: the switch forwards eth1's frames again")
        t0 = time.monotonic()
        lab.undrop("eth1")
        wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth1"], timeout=10, what="repair")
        print(f"192.0.2.101 back on eth1 after {time.monotonic() - t0:.1f} s\n")
        show(d, "groups", "interfaces")
        print(f"the far host -> 192.0.2.101: {reach(lab, '192.0.2.101')}")

        step("what mpathd logged")
        print(d.log())
        d.stop()
    step(f"lab removed; the demo took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
