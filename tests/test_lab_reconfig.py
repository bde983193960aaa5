"""Dynamic reconfiguration with the real daemon in the lab: missing and
hot-plugged NICs, reload, offline/online, foreign changes, crash recovery,
duplicate MACs and ipmpctl check."""

import signal
import sys
import time

from lab import LINK_V6_PAIR_GROUP, ROUTER4, ROUTER6, TRIO_GROUP, mac_of, wait_for

GROUP = TRIO_GROUP
FDT = "FAILURE_DETECTION_TIME=1000\n"


def iface(d, name):
    return next(i for i in d.status()["interfaces"] if i["name"] == name)


def test_missing_nic_at_start_is_covered_then_joins(make_lab):
    lab = make_lab(nics=3)
    lab.unplug("eth0")
    d = lab.start_daemon(GROUP, defaults=FDT)
    # each address goes to the least loaded active NIC: the standby, then eth1 on a tie
    assert lab.holders("192.0.2.100/24") == ["eth2"]
    assert lab.holders("2001:db8:1::100/64") == ["eth1"]
    d.wait_log("moving addresses from missing IPv4 interfaces: eth0 (moved to eth2)")
    d.wait_log("moving addresses from missing IPv6 interfaces: eth0 (moved to eth1)")
    lab.replug("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="addresses home")
    assert "192.0.2.10/32" in lab.addresses()["eth0"]
    assert iface(d, "eth2")["inactive"]


def test_hot_unplug_is_a_failure_and_replug_fails_back(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(GROUP, defaults=FDT)
    d.wait_probing("eth0", "eth1", "eth2")
    assert iface(d, "eth0")["probe"] == "ok"
    lab.unplug("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="failover")
    d.wait_log("IP interface eth0 of group ipmp0 has been removed from kernel")
    d.wait_log("IP interface failure detected on eth0 of group ipmp0")
    d.wait_log("Successfully failed over from NIC eth0 to NIC eth2 (192.0.2.100/24)")
    d.wait_log("Successfully failed over from NIC eth0 to NIC eth1 (2001:db8:1::100/64)")
    assert iface(d, "eth0")["probe"] == "unknown" and iface(d, "eth0")["state"] == "failed"
    time.sleep(0.5)
    assert not d.untrue(), d.log()
    lab.replug("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == lab.holders("2001:db8:1::100/64") == ["eth0"],
             timeout=10, what="failback of both families")


def test_reload_applies_only_the_difference_and_keeps_probe_history(make_lab):
    lab = make_lab(nics=3)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: iface(d, "eth1")["probe"] == "ok", what="probing")
    sent = iface(d, "eth1")["probes"]["sent"]
    d.write_config(GROUP.replace("eth1: {data: [192.0.2.101/24]", "eth1: {data: [192.0.2.101/24, 192.0.2.102/24]")
                   .replace("      eth2: {standby: true, test: [192.0.2.12/24]}\n", ""))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("configuration reloaded: ")
    wait_for(lambda: lab.holders("192.0.2.102/24") == ["eth1"], what="new address placed")
    assert "eth2 left group ipmp0" in d.log()
    assert "192.0.2.12/32" not in lab.addresses()["eth2"]      # eth2's test address went with it
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    assert "moved" not in d.log().split("configuration reloaded")[1]
    assert iface(d, "eth1")["probes"]["sent"] >= sent           # same prober, same history
    assert [i["name"] for i in d.status()["interfaces"]] == ["eth0", "eth1"]
    # a bad file is refused whole; the running configuration stays
    d.write_config(GROUP + "      eth9: {data: [192.0.2.100/24]}\n")
    p = d.ctl("reload", check=False)
    assert p.returncode == 1 and "reload refused" in p.stderr and "configured twice" in p.stderr
    assert lab.holders("192.0.2.102/24") == ["eth1"]
    assert [i["name"] for i in d.status()["interfaces"]] == ["eth0", "eth1"]
    d.write_config(GROUP)
    assert d.ctl("reload").returncode == 0
    wait_for(lambda: lab.holders("192.0.2.102/24") == [], what="address removed")
    assert [i["name"] for i in d.status()["interfaces"]] == ["eth0", "eth1", "eth2"]


def test_offline_and_online(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(GROUP, defaults=FDT)
    d.ctl("offline", "eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="addresses moved away")
    assert iface(d, "eth0")["state"] == "offline" and iface(d, "eth0")["probe"] == "disabled"
    d.ctl("offline", "eth1")
    p = d.ctl("offline", "eth2", check=False)
    assert p.returncode == 1 and "no other functioning interfaces" in p.stderr
    assert lab.holders("192.0.2.101/24") == ["eth2"]
    p = d.ctl("offline", "eth0", check=False)
    assert p.returncode == 1 and "already offline" in p.stderr
    d.ctl("online", "eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], what="addresses back")
    d.ctl("online", "eth1")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth1"], what="addresses back")
    assert iface(d, "eth2")["inactive"]
    p = d.ctl("online", "eth1", check=False)
    assert p.returncode == 1 and "not offline" in p.stderr


def test_foreign_changes_are_undone(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(GROUP, defaults=FDT)
    lab.sh("host", "ip", "addr", "del", "192.0.2.100/24", "dev", "eth0")
    t0 = time.monotonic()
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=5, what="address put back")
    assert time.monotonic() - t0 < 1.0
    d.wait_log("data address 192.0.2.100/24 was removed from eth0 by another program; putting it back")
    lab.sh("host", "ip", "addr", "del", "192.0.2.11/32", "dev", "eth1")
    wait_for(lambda: "192.0.2.11/32" in lab.addresses()["eth1"], timeout=1, what="test address back")
    lab.sh("host", "ip", "addr", "add", "192.0.2.101/24", "dev", "eth0")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth1"], timeout=1, what="copy removed")
    d.wait_log("data address 192.0.2.101/24 appeared on eth0 while eth1 holds it; removing it from eth0")


def test_kill9_mid_move_and_restart_reconciles(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(GROUP, defaults=FDT)
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"]
             and lab.holders("2001:db8:1::100/64") in (["eth1"], ["eth2"]), what="failover")
    v6 = lab.holders("2001:db8:1::100/64")
    d.stop(signal.SIGKILL)
    # the state a kill in the middle of a move leaves: added on the new NIC,
    # not yet deleted from the old one
    lab.sh("host", "ip", "addr", "add", "192.0.2.101/24", "dev", "eth2")
    lab.restore("eth0")
    d2 = lab.start_daemon(GROUP, defaults=FDT + "FAILBACK=no\n")
    assert lab.holders("192.0.2.101/24") in (["eth1"], ["eth2"])   # one copy, wherever it was
    assert lab.holders("192.0.2.100/24") == ["eth2"]                 # healthy: adopted, not moved
    assert lab.holders("2001:db8:1::100/64") == v6
    assert "failed over" not in d2.log() and "failed back" not in d2.log()
    # a clean stop leaves everything where it is
    before = lab.addresses()
    assert d2.stop() == 0
    assert lab.addresses() == before


def test_duplicate_mac_offlines_the_later_nic(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(GROUP, defaults=FDT)
    lab.sh("host", "ip", "link", "set", "eth1", "address", mac_of(0))
    d.wait_log("IP interface eth1 has a hardware address which is not unique in group ipmp0; offlining")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth2"], what="moved off the duplicate")
    assert iface(d, "eth1")["state"] == "offline" and iface(d, "eth1")["hwaddrdup"]
    assert d.ctl("interfaces", "-P", "-o", "interface,flags").stdout.splitlines()[1] == "eth1:------h"
    lab.sh("host", "ip", "link", "set", "eth1", "address", mac_of(1))
    d.wait_log("IP interface eth1 now has a unique hardware address in group ipmp0; onlining")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth1"], timeout=10, what="back home")


def test_ipmpctl_check(make_lab, tmp_path):
    lab = make_lab(nics=3)
    good = tmp_path / "groups.yaml"
    good.write_text(GROUP)

    def check(path, defaults="/dev/null"):
        return lab.sh("host", sys.executable, "-m", "mpathd.ctl", "check", "--config", str(path),
                      "--defaults", defaults, check=False)

    p = check(good)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "configuration OK: 1 groups, 3 interfaces" in p.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GROUP + "      eth7: {test: [192.0.2.17/24]}\n")
    lab.sh("host", "ip", "link", "set", "eth1", "address", mac_of(0))
    lab.sysctl("host", "net.ipv4.conf.eth2.rp_filter=1")
    lab.sh("host", "ip", "addr", "add", "192.0.2.50/24", "dev", "lo")
    p = check(bad)
    assert p.returncode == 1
    out = p.stdout
    assert "interface eth7 does not exist" in out
    assert "eth1 has the same hardware address" in out
    assert "rp_filter=1" in out and "eth2" in out
    assert "lo has 192.0.2.50/24, on the group's subnet, but is not in the group" in out
    lab.sh("host", "ip", "link", "add", "stray", "type", "veth", "peer", "name", "stray1")
    lab.sh("host", "ip", "link", "set", "stray", "up")
    assert "stray (in no group)" not in check(bad).stdout        # mpathd will set arp_ignore
    opted_out = tmp_path / "defaults"
    opted_out.write_text("ARP_FLUX_PROTECTION=no\n")
    assert "stray (in no group) answer ARP for any local address" in check(bad, str(opted_out)).stdout
    bad.write_text("groups:\n  g:\n    interfaces:\n      eth0: {bogus: 1}\n")
    p = check(bad)
    assert p.returncode == 2 and p.stderr.startswith(f"ipmpctl: {bad}:4: unknown key 'bogus'")


DATA = ["192.0.2.100/24", "2001:db8:1::100/64", "192.0.2.101/24"]


def default_routes(lab):
    """Routes beyond the router, added once the daemon has placed the addresses (mpathd adopts them)."""
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4)
    lab.sh("host", "ip", "-6", "route", "add", "default", "via", ROUTER6)


def test_a_nic_renamed_away_from_its_configured_name_leaves_and_loses_nothing(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(LINK_V6_PAIR_GROUP)
    default_routes(lab)
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    lab.rename("eth0", "lan0")
    d.wait_log("IP interface eth0 of group ipmp0 was renamed lan0")
    wait_for(lambda: all(lab.holders(a) == ["eth1"] for a in DATA), what="addresses on eth1")
    lab.assert_reach_far(DATA)
    assert iface(d, "eth0")["state"] == "failed"
    lab.cut("eth0")                        # lan0's cable: not a group NIC any more
    time.sleep(0.3)
    assert all(lab.holders(a) == ["eth1"] for a in DATA)
    lab.assert_reach_far(DATA)
    assert "appeared on" not in d.log() and "no interface" not in d.log(), d.log()


def test_a_nic_renamed_to_its_configured_name_joins_and_is_watched(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(LINK_V6_PAIR_GROUP.replace("eth0:", "lan0:"))     # udev has not renamed eth0 yet
    default_routes(lab)
    d.wait_log("moving addresses from missing IPv4 interfaces: lan0 (moved to eth1)")
    lab.rename("eth0", "lan0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == lab.holders("2001:db8:1::100/64") == ["lan0"],
             what="the addresses on lan0")
    assert iface(d, "lan0")["state"] == "ok"
    lab.assert_reach_far(DATA)
    lab.cut("eth0")                        # lan0's cable
    wait_for(lambda: all(lab.holders(a) == ["eth1"] for a in DATA), what="failover from lan0")
    d.wait_log("IP interface failure detected on lan0 of group ipmp0")
    lab.assert_reach_far(DATA)
    assert "appeared on" not in d.log() and "no interface" not in d.log(), d.log()
