"""The demo behind scripts/demo: one group of two NICs and a standby, a
cable pulled and put back, with `ipmpctl status` at each step."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # lab/ is not installed: the checkout's

from lab import ROUTER4, Lab, wait_for

GROUPS = """\
groups:
  ipmp0:
    interfaces:
      eth0:
        data: [192.0.2.100/24, "2001:db8:1::100/64"]
      eth1:
        data: [192.0.2.101/24]
      eth2:
        standby: true
"""


def step(title: str) -> None:
    print(f"\n=== {title}\n", flush=True)


def main() -> int:
    with Lab(nics=3) as lab:
        step("the lab: host NICs eth0, eth1, eth2 on one switch, a router at 192.0.2.1; groups.yaml:")
        print(GROUPS)
        d = lab.start_daemon(GROUPS)
        lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "src", "192.0.2.100")
        step("mpathd is running: ipmpctl status")
        print(d.ctl("status").stdout)
        print("router -> 198.51.100.x beyond it -> 192.0.2.100:",
              "reachable" if lab.ping("far", "192.0.2.100") else "UNREACHABLE")

        step("pulling the cable of eth0 (its switch port goes down)")
        lab.cut("eth0")
        wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="failover")
        print(d.ctl("status").stdout)
        print("\nrouter's neighbour entry for 192.0.2.100:", lab.neighbour("rtr", "192.0.2.100"))
        print("192.0.2.100 from beyond the router:",
              "reachable" if lab.ping("far", "192.0.2.100") else "UNREACHABLE")

        step("plugging eth0 back in")
        lab.restore("eth0")
        wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], what="failback")
        time.sleep(0.2)
        print(d.ctl("status").stdout)

        step("what mpathd logged")
        print(d.log())
        d.stop()
    step("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
