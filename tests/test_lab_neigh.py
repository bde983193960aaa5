"""The neighbour retry interval of group NICs: never below its floor, given
back when a NIC leaves its group and at a clean stop (issue 11, point 6)."""

from lab import TRIO_GROUP, wait_for


def retrans(lab, nic):
    return tuple(int(lab.sh("host", "sysctl", "-n", f"net.{fam}.neigh.{nic}.retrans_time_ms").stdout)
                 for fam in ("ipv4", "ipv6"))


def test_retrans_time_floor_and_restore(make_lab):
    lab = make_lab(nics=3)
    lab.sysctl("host", "net.ipv4.neigh.eth2.retrans_time_ms=700", "net.ipv6.neigh.eth2.retrans_time_ms=900")
    d = lab.start_daemon(TRIO_GROUP, defaults="FAILURE_DETECTION_TIME=100\n")
    # the probe interval is 14 ms; the floor is 100 ms
    assert [retrans(lab, n) for n in ("eth0", "eth1", "eth2")] == [(100, 100)] * 3
    d.write_config(TRIO_GROUP.replace("      eth2: {standby: true, test: [192.0.2.12/24]}\n", ""))
    d.ctl("reload")
    wait_for(lambda: retrans(lab, "eth2") == (700, 900), what="eth2's own values back")
    assert "set net.ipv4.neigh.eth2.retrans_time_ms=700 (was 100)" in d.log()
    assert retrans(lab, "eth0") == retrans(lab, "eth1") == (100, 100)
    assert d.stop() == 0
    assert retrans(lab, "eth0") == retrans(lab, "eth1") == (1000, 1000)
