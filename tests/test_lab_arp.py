"""ARP probing (`test: [arp]`) with the real daemon in the lab: RFC 5227
probes from 0.0.0.0, no test address anywhere. Faults are nftables rules in
the switch (the carrier stays up); after each one the data addresses must
reach the host beyond the router. (The group failure with ARP probing is
in test_lab_probe.py, beside the one with ICMP.)"""

import json
import sys
import time

from lab import ARP_PAIR_GROUP, ARP_TRIO_GROUP, FAR4, ROUTER4, mac_of, wait_for

FDT_S = 1.0
FDT = "FAILURE_DETECTION_TIME=1000\n"          # probes every ~140 ms
DATA = {"192.0.2.100/24", "192.0.2.101/24"}


def with_default_route(lab):
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")


def rows(d):
    return {t["interface"]: t for t in d.status()["targets"] if t["family"] == 4}


def iface(d, name):
    return next(i for i in d.status()["interfaces"] if i["name"] == name)


def reaches_far(lab, *sources):
    """Every data address reaches the host beyond the router."""
    for src in sources:
        assert lab.sh("host", "ping", "-c", "1", "-W", "1", "-I", src.split("/")[0], FAR4,
                      check=False).returncode == 0, f"{src} does not reach {FAR4}"


def no_test_addresses(lab, data=DATA):
    """No 192.0.2.x on the host's NICs but the data addresses."""
    found = {a for addrs in lab.addresses().values() for a in addrs if a.startswith("192.0.2.")}
    assert found <= data, found


def test_silent_loss_fails_an_arp_nic_within_the_fdt_and_repair_brings_it_back(make_lab):
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(ARP_PAIR_GROUP, defaults=FDT)
    d.wait_probing("eth0", "eth1")
    row = rows(d)["eth0"]
    assert (row["method"], row["mode"], row["testaddr"], row["targets"]) == ("arp", "routes", "0.0.0.0", [ROUTER4])
    assert "arp/routes" in d.ctl("targets").stdout
    wait_for(lambda: d.request("probes")["probes"], what="a finished probe")
    assert {p["method"] for p in d.request("probes")["probes"]} == {"arp"}
    assert " arp " in d.ctl("probes", "--once").stdout
    no_test_addresses(lab)
    lab.drop("eth0")
    t0 = time.monotonic()
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=FDT_S + 1, interval=0.01,
             what="failover within FDT + 1 s")
    d.wait_log("IP interface failure detected on eth0 of group ipmp0")
    assert time.monotonic() - t0 <= FDT_S + 1
    assert (iface(d, "eth0")["link"], iface(d, "eth0")["probe"]) == ("up", "failed")
    reaches_far(lab, *DATA)
    lab.undrop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="failback")
    d.wait_log("IP interface repair detected on eth0 of group ipmp0")
    reaches_far(lab, *DATA)
    no_test_addresses(lab)


def test_a_standby_with_only_arp_is_probed_takes_over_and_goes_back_to_inactive(make_lab):
    lab = make_lab(nics=3)
    with_default_route(lab)
    d = lab.start_daemon(ARP_TRIO_GROUP, defaults=FDT)
    d.wait_probing("eth0", "eth1", "eth2")
    wait_for(lambda: iface(d, "eth2")["probes"]["acked"] > 0, what="the standby's probes answered")
    assert iface(d, "eth2")["inactive"]
    assert lab.addresses()["eth2"] == set()
    lab.drop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], timeout=FDT_S + 1, what="standby takes over")
    assert not iface(d, "eth2")["inactive"]
    reaches_far(lab, *DATA)
    lab.undrop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="failback")
    wait_for(lambda: iface(d, "eth2")["inactive"], what="standby INACTIVE again")
    assert lab.addresses()["eth2"] == set()
    reaches_far(lab, *DATA)
    no_test_addresses(lab)


def test_a_dead_arp_target_is_replaced_without_failover(make_lab):
    lab = make_lab(nics=2, targets=2)
    with_default_route(lab)
    d = lab.start_daemon(ARP_PAIR_GROUP + f"    targets: [{ROUTER4}, {lab.target4(1)}, {lab.target4(2)}]\n",
                         defaults=FDT)
    d.wait_probing("eth0", "eth1")
    assert rows(d)["eth0"]["mode"] == "static"
    lab.drop("tgt1")
    d.wait_log(f"probe target {lab.target4(1)} (arp eth0) stopped answering", timeout=10)
    time.sleep(1)
    assert "failure detected" not in d.log()
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    assert lab.target4(1) not in rows(d)["eth0"]["targets"]
    reaches_far(lab, *DATA)


def test_forged_arp_replies_never_keep_a_cut_nic_alive(make_lab):
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(ARP_PAIR_GROUP, defaults=FDT)
    d.wait_probing("eth0", "eth1")          # the router's real MAC is known from here on
    lab.station("evil", "192.0.2.66")
    spoofer = lab.traffic("evil", "arp-spoof", "eth0", mac_of(0), ROUTER4, "8", "2000")
    lab.drop("eth0", direction="out")       # eth0's probes never reach anyone; forgeries reach eth0
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=FDT_S + 1,
             what="failover despite forged replies")
    assert iface(d, "eth0")["probe"] == "failed"
    out, _ = spoofer.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])["sent"] > 1000
    assert iface(d, "eth0")["probe"] == "failed"       # still, after 8 s of forgeries
    evil = lab.mac("evil", "eth0")
    assert d.log().count(f"probe target {ROUTER4} answered ARP from {evil}") == 1
    reaches_far(lab, "192.0.2.100/24", "192.0.2.101/24")


def test_arp_probes_create_no_neighbour_entries_and_no_addresses(make_lab):
    lab = make_lab(nics=2, targets=1)
    d = lab.start_daemon(ARP_PAIR_GROUP + f"    targets: [{ROUTER4}, {lab.target4(1)}]\n", defaults=FDT)
    d.wait_probing("eth0", "eth1")
    time.sleep(2)                            # some 30 probes, no other IPv4 traffic from the host
    assert sum(i["probes"]["acked"] for i in d.status()["interfaces"]) >= 20
    for role in ("rtr", "tgt1", "host"):
        assert lab.ip_json(role, "-4", "neigh", "show") == [], role
    no_test_addresses(lab)
    # the check can see an entry: one ping from a data address makes them
    assert lab.sh("host", "ping", "-c", "1", "-W", "1", "-I", "192.0.2.100", lab.target4(1),
                  check=False).returncode == 0
    assert lab.neighbour("tgt1", "192.0.2.100") and lab.neighbour("host", lab.target4(1))


def test_arp_targets_come_from_the_neighbour_table_and_their_absence_is_reported(make_lab):
    lab = make_lab(nics=2, targets=1)
    d = lab.start_daemon(ARP_PAIR_GROUP, defaults=FDT)     # no route, no configured target
    d.wait_log("No probe targets found (arp eth0)", timeout=10)
    row = rows(d)["eth0"]
    assert (row["mode"], row["targets"], row["no_targets"]) == ("neighbours", [], True)
    assert "(none found)" in d.ctl("targets").stdout
    assert iface(d, "eth0")["probe"] == "unknown"
    assert lab.ping("host", lab.target4(1))       # the host talks to tgt1: it enters the neighbour table
    d.wait_log(f"probe target {lab.target4(1)} found in the neighbour table for eth0", timeout=5)
    d.wait_probing("eth0", "eth1")
    assert rows(d)["eth1"]["targets"] == [lab.target4(1)]
    assert not rows(d)["eth0"]["no_targets"]


def test_ipmpctl_check_knows_arp(make_lab, tmp_path):
    lab = make_lab(nics=3)
    path = tmp_path / "groups.yaml"
    path.write_text(ARP_PAIR_GROUP)

    def check():
        return lab.sh("host", sys.executable, "-m", "mpathd.ctl", "check", "--config", str(path),
                      "--defaults", "/dev/null", check=False)

    p = check()                                   # no route, no target: only the neighbour table
    assert p.returncode == 1 and "eth0, eth1 probe with 'arp', but no target is configured" in p.stdout
    with_default_route(lab)
    assert "probe with 'arp', but no target" not in check().stdout
    path.write_text(ARP_PAIR_GROUP + "      eth2: {standby: true, test: [link-local]}\n")
    out = check().stdout
    assert "eth2 not probing over IPv4 like eth0, eth1: give every member an IPv4 test address (or arp)" in out
    path.write_text(ARP_PAIR_GROUP.replace("eth1:", "lo:"))
    assert "lo probes with 'arp' but is not an Ethernet NIC (type 772)" in check().stdout
