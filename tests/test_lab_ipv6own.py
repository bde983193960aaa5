"""Own IPv6 address changes are told from others' without the port id (the
kernel stamps IPv6 address notifications with port id 0): a quick flap
with IPv6 data addresses (issue 11, point 4)."""

import time

from lab import wait_for

GROUP = """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24, "2001:db8:1::100/64", "2001:db8:1::102/64"]}
      eth1: {data: [192.0.2.101/24, "2001:db8:1::101/64"]}
"""
V6 = ("2001:db8:1::100/64", "2001:db8:1::102/64")


def test_quick_flaps_with_ipv6_data_addresses_look_like_our_own(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(GROUP)
    mon = lab.monitor()
    try:
        # Down and up back to back: the notifications of the failover arrive
        # after the failback has been decided. Two flaps: a third link-up
        # within a minute would be held for flapping.
        flaps = 2
        for n in range(1, flaps + 1):
            lab.sh("sw", "sh", "-c", "ip link set p-eth0 down; ip link set p-eth0 up")
            wait_for(lambda: d.log().count("Successfully failed back to NIC eth0") == n, what="failback")
            time.sleep(0.3)
        assert all(lab.holders(a) == ["eth0"] for a in V6)
        log = d.log()
        assert "by another program" not in log and "appeared on" not in log, log
        # one add per move and address: nothing was put back or removed twice
        for a in V6:
            adds = [e for e in mon.events if e[1] and e[3] == a]
            assert len(adds) == 2 * flaps, (a, adds)
        assert "re-reading" not in log
    finally:
        mon.close()


def test_another_programs_ipv6_change_is_still_seen(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(GROUP)
    lab.sh("host", "ip", "addr", "del", "2001:db8:1::100/64", "dev", "eth0")
    d.wait_log("data address 2001:db8:1::100/64 was removed from eth0 by another program; putting it back")
    wait_for(lambda: lab.holders("2001:db8:1::100/64") == ["eth0"], what="put back")
    lab.sh("host", "ip", "addr", "add", "2001:db8:1::102/64", "dev", "eth1", "nodad")
    d.wait_log("data address 2001:db8:1::102/64 appeared on eth1 while eth0 holds it; removing it from eth1")
    wait_for(lambda: lab.holders("2001:db8:1::102/64") == ["eth0"], what="copy removed")
