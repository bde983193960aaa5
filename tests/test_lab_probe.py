"""Probe-based detection with the real daemon in the lab: silent loss made
with nftables rules in the switch, the carrier stays up."""

import json
import time

import pytest

from lab import PAIR_GROUP as GROUP
from lab import ARP_PAIR_GROUP, ROUTER4, mac_of, wait_for

FDT = "FAILURE_DETECTION_TIME=1000\n"          # probes every ~140 ms



def with_default_route(lab):
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")


def targets(d):
    return {(t["interface"], t["family"]): t for t in d.status()["targets"]}


def probes_ok(d):
    return all(i["probe"] == "ok" for i in d.status()["interfaces"])


def test_silent_loss_fails_the_nic_and_repair_brings_it_back(make_lab):
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: probes_ok(d), what="probes answered")
    assert targets(d)[("eth0", 4)]["mode"] == "routes"
    assert targets(d)[("eth0", 4)]["targets"] == [ROUTER4]
    lab.drop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=10, what="failover")
    d.wait_log("IP interface failure detected on eth0 of group ipmp0")
    eth0 = next(i for i in d.status()["interfaces"] if i["name"] == "eth0")
    assert (eth0["link"], eth0["probe"], eth0["state"]) == ("up", "failed", "failed")
    assert lab.ping("far", "192.0.2.100")
    lab.undrop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="failback")
    d.wait_log("IP interface repair detected on eth0 of group ipmp0")
    assert lab.ping("far", "192.0.2.100")


@pytest.mark.parametrize("group", [GROUP, ARP_PAIR_GROUP], ids=["icmp", "arp"])
def test_loss_on_every_path_is_a_group_failure(make_lab, group):
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(group, defaults=FDT)
    wait_for(lambda: probes_ok(d), what="probes answered")
    before = lab.addresses()
    lab.drop("eth0")
    lab.drop("eth1")
    d.wait_log("All IP interfaces in group ipmp0 are now unusable", timeout=10)
    time.sleep(0.5)
    assert lab.addresses() == before
    assert "failed over" not in d.log()
    assert d.status()["groups"][0]["state"] == "failed"
    lab.undrop("eth1")
    d.wait_log("is now usable", timeout=10)
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=10, what="move to the repaired NIC")
    assert lab.ping("far", "192.0.2.100") and lab.ping("far", "192.0.2.101")


def test_targets_from_routes_multicast_and_config(make_lab):
    lab = make_lab(nics=2, targets=1)
    d = lab.start_daemon(GROUP, defaults=FDT)            # no routes: multicast discovery
    row = wait_for(lambda: (r := targets(d)[("eth0", 4)])["targets"] and r, what="discovery")
    assert row["mode"] == "multicast"
    wait_for(lambda: sorted(targets(d)[("eth0", 4)]["targets"]) == [ROUTER4, lab.target4(1)],
             what="router and target host both found")
    d.wait_log(f"probe target {lab.target4(1)} found by multicast for eth0")
    with_default_route(lab)                              # a route appears: router targets win
    wait_for(lambda: targets(d)[("eth0", 4)]["mode"] == "routes", what="route targets")
    assert targets(d)[("eth1", 4)]["targets"] == [ROUTER4]
    d.stop()
    d = lab.start_daemon(GROUP + f"    targets: [{lab.target4(1)}]\n", defaults=FDT)
    wait_for(lambda: targets(d)[("eth0", 4)]["mode"] == "static", what="configured targets")
    assert targets(d)[("eth0", 4)]["targets"] == [lab.target4(1)]
    wait_for(lambda: probes_ok(d), what="configured target answers")


def test_a_dead_target_is_replaced_without_failover(make_lab):
    lab = make_lab(nics=2, targets=2)
    d = lab.start_daemon(GROUP + f"    targets: [{ROUTER4}, {lab.target4(1)}, {lab.target4(2)}]\n",
                         defaults=FDT)
    wait_for(lambda: probes_ok(d), what="probes answered")
    lab.drop("tgt1")
    d.wait_log(f"probe target {lab.target4(1)} (inet eth0) stopped answering", timeout=10)
    time.sleep(1)
    assert "failure detected" not in d.log()
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    assert lab.target4(1) not in targets(d)[("eth0", 4)]["targets"]


def test_ipv6_only_probing(make_lab):
    lab = make_lab(nics=2)
    v6 = GROUP.replace("test: [192.0.2.10/24]", "test: [link-local]").replace(
        "test: [192.0.2.11/24]", "test: [link-local]")
    d = lab.start_daemon(v6, defaults=FDT)
    wait_for(lambda: len(targets(d)[("eth0", 6)]["targets"]) >= 2 and probes_ok(d), what="IPv6 targets")
    row = targets(d)[("eth0", 6)]
    assert row["mode"] == "multicast" and row["testaddr"].startswith("fe80::")
    assert all(t.startswith("fe80::") for t in row["targets"])
    lab.drop("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=10, what="failover")
    d.wait_log("IP interface failure detected on eth0 of group ipmp0")


def test_spoofed_echo_replies_never_keep_a_nic_alive(make_lab):
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: probes_ok(d), what="probes answered")
    lab.station("evil", "192.0.2.66")
    spoofer = lab.traffic("evil", "spoof", "eth0", mac_of(0), ROUTER4, "192.0.2.10", "8", "2000")
    lab.drop("eth0", direction="out")          # eth0's probes never reach anyone
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=10, what="failover despite spoofing")
    out, _ = spoofer.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])["sent"] > 1000
    assert d.status()["interfaces"][0]["probe"] == "failed"


def longest_loss_run(d, nic):
    """The longest run of lost probes as the daemon counts them: probes it
    sent late count neither way."""
    run = longest = 0
    for p in d.request("probes")["probes"]:
        if p["interface"] == nic and not p["late"]:
            run = run + 1 if p["status"] == "lost" else 0
            longest = max(longest, run)
    return longest


def test_random_loss_does_not_fail_the_nic_but_total_loss_does(make_lab):
    # 20% of eth0's probes are lost at random (one way, so 20% of round
    # trips). Five losses in a row do happen by chance (~1% over these 6 s,
    # ~40 probes), and then failing is right: the test asserts that the NIC
    # failed exactly when the probe history holds five consecutive losses.
    lab = make_lab(nics=2)
    with_default_route(lab)
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: probes_ok(d), what="probes answered")
    lab.drop("eth0", percent=20, what="ip protocol icmp", direction="out")
    time.sleep(6)
    eth0 = next(i for i in d.status()["interfaces"] if i["name"] == "eth0")
    assert eth0["probes"]["lost"] >= 1, eth0           # the rule really dropped probes
    assert ("failure detected on eth0" in d.log()) == (longest_loss_run(d, "eth0") >= 5), d.log()
    lab.drop("eth0", percent=100, what="ip protocol icmp", direction="out")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], timeout=10, what="failover at 100% loss")


# Loaded by the daemon's interpreter (PYTHONPATH): every probe of eth0 is
# held up 80 ms between the core scheduling it and the adapter sending it,
# as a stalled host would.
STALL = """
import time
from mpathd.adapters import probesock
send = probesock.ProbeSockets.send
def stalled(self, p):
    if p.ifname == "eth0":
        time.sleep(0.080)
    send(self, p)
probesock.ProbeSockets.send = stalled
"""


def test_a_daemon_stalled_before_sending_measures_the_path_not_itself(make_lab, tmp_path):
    # FDT 1.4 s: a probe every 200 ms. Timed from the schedule, eth0's RTTs
    # would be 80 ms and more (an estimate of 240 ms: the FDT is raised).
    (tmp_path / "sitecustomize.py").write_text(STALL)
    lab = make_lab(nics=2)
    d = lab.start_daemon(GROUP + "    targets: [192.0.2.1]\n", defaults="FAILURE_DETECTION_TIME=1400\n",
                         env={"PYTHONPATH": str(tmp_path)})
    d.wait_probing("eth0", "eth1")
    time.sleep(4)
    rtts = [p["rtt_ms"] for p in d.request("probes")["probes"] if p["interface"] == "eth0" and p["rtt_ms"]]
    assert len(rtts) >= 12 and max(rtts) < 30, rtts
    for t in d.status()["targets"]:
        assert t["rtt"]["192.0.2.1"]["avg_ms"] < 10, t
    assert d.status()["groups"][0]["fdt_ms"] == 1400
    assert "Cannot meet requested failure detection time" not in d.log()
