"""Link-based failover with the real daemon in a namespace lab: break real
links, read the kernel's state."""

import json
import re
import sys
import time

from lab import LINK_PAIR_GROUP, LINK_TRIO_GROUP, LINK_V6_PAIR_GROUP, ROUTER4, ROUTER6, mac_of, wait_for

TWO = """
groups:
  ipmp0:
    interfaces:
      eth0:
        data: [192.0.2.100/24, "2001:db8:1::100/64"]
        test: [192.0.2.10/24]
      eth1:
        data: [192.0.2.101/24]
        test: [192.0.2.11/24]
"""

STANDBY = LINK_TRIO_GROUP


def default_routes(lab):
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "src", "192.0.2.100")
    lab.sh("host", "ip", "-6", "route", "add", "default", "via", ROUTER6, "dev", "eth0")


def route_dev(lab, family="-4", want=None):
    """The NICs the default route leaves by, and its source; with `want`,
    once they are that (the routes follow the addresses in the same batch)."""
    def now():
        found = [(r["paths"], r.get("prefsrc")) for r in lab.route_paths(family) if r["dst"] == "default"]
        return found[0] if len(found) == 1 else found
    if want is not None:
        wait_for(lambda: now() == want, what=f"default route {want}")
    return now()


def test_carrier_loss_fails_over_and_back_ipv4_and_ipv6(make_lab):
    lab = make_lab(nics=2)
    # The NICs probe the router once the default route exists, so repair
    # after link-up waits for 10 answered probes: keep the FDT short.
    d = lab.start_daemon(TWO, defaults="FAILURE_DETECTION_TIME=1000\n")
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    assert lab.holders("2001:db8:1::100/64") == ["eth0"]
    assert lab.holders("192.0.2.101/24") == ["eth1"]
    # test addresses are /32: no prefix route, never a source
    assert "192.0.2.10/32" in lab.addresses()["eth0"]
    default_routes(lab)
    assert lab.ping("far", "192.0.2.100") and lab.ping("far", "2001:db8:1::100")

    lab.cut("eth0")
    wait_for(lambda: lab.holders("2001:db8:1::100/64") == ["eth1"], what="IPv6 failover")
    assert lab.holders("192.0.2.100/24") == ["eth1"]
    # the operator's source is kept; the IPv6 route via a global router
    # follows the group's address on its prefix, and gets no source
    assert route_dev(lab, want=(["eth1"], "192.0.2.100")) == (["eth1"], "192.0.2.100")
    assert route_dev(lab, "-6", want=(["eth1"], None)) == (["eth1"], None)
    assert lab.ping("far", "192.0.2.100") and lab.ping("far", "2001:db8:1::100")
    st = d.status()
    eth0 = next(i for i in st["interfaces"] if i["name"] == "eth0")
    assert (eth0["state"], eth0["link"], eth0["active"]) == ("failed", "down", False)
    assert st["groups"][0]["state"] == "degraded"
    d.wait_log("IP interface failure detected on eth0 of group ipmp0")
    d.wait_log("Successfully failed over from NIC eth0 to NIC eth1")

    lab.restore("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], what="failback")
    wait_for(lambda: lab.holders("2001:db8:1::100/64") == ["eth0"], what="IPv6 failback")
    assert lab.holders("192.0.2.101/24") == ["eth1"]
    assert route_dev(lab, want=(["eth0", "eth1"], "192.0.2.100")) == (["eth0", "eth1"], "192.0.2.100")
    d.wait_log("IP interface repair detected on eth0 of group ipmp0")
    d.wait_log("Successfully failed back to NIC eth0")
    assert lab.ping("far", "192.0.2.100") and lab.ping("far", "2001:db8:1::100")
    assert d.stop() == 0
    # a clean stop leaves the addresses where they are
    assert lab.holders("192.0.2.100/24") == ["eth0"]


def test_failback_no_leaves_addresses_on_the_standin(make_lab):
    lab = make_lab(nics=2)
    # Probing, so repair after link-up takes ten answers: a short FDT, and
    # targets found before the cut (else the repair would be link-only).
    d = lab.start_daemon(TWO, defaults="FAILBACK=no\nFAILURE_DETECTION_TIME=1000\n")
    d.wait_probing("eth0", "eth1")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    lab.restore("eth0")
    d.wait_log("IP interface repair detected on eth0")
    time.sleep(0.3)
    assert lab.holders("192.0.2.100/24") == ["eth1"]
    eth0 = next(i for i in d.status()["interfaces"] if i["name"] == "eth0")
    assert eth0["inactive"] and not eth0["active"] and eth0["link"] == "up"
    # needed again when the other NIC fails
    lab.cut("eth1")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth0"], what="failover to the inactive NIC")
    assert lab.holders("192.0.2.100/24") == ["eth0"]


def test_standby_takes_over_and_returns_to_inactive(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(STANDBY)
    ifs = {i["name"]: i for i in d.status()["interfaces"]}
    assert ifs["eth2"]["standby"] and ifs["eth2"]["inactive"] and not ifs["eth2"]["active"]
    assert lab.addresses()["eth2"] == set()
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="failover to the standby")
    assert next(i for i in d.status()["interfaces"] if i["name"] == "eth2")["active"]
    lab.restore("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], what="failback")
    ifs = {i["name"]: i for i in d.status()["interfaces"]}
    assert ifs["eth2"]["inactive"] and not ifs["eth2"]["active"]
    assert lab.addresses()["eth2"] == set()
    out = d.ctl("groups").stdout
    assert "eth0 eth1 (eth2)" in out


def test_group_failure_moves_nothing(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(TWO, defaults="FAILURE_DETECTION_TIME=1000\n")
    d.wait_probing("eth0", "eth1")
    lab.cut("eth1")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth0"], what="failover")
    before = lab.addresses()
    lab.cut("eth0")
    d.wait_log("All IP interfaces in group ipmp0 are now unusable")
    time.sleep(0.3)
    assert lab.addresses() == before
    assert d.status()["groups"][0]["state"] == "failed"
    lab.restore("eth1")
    d.wait_log("At least 1 IP interface (eth1) in group ipmp0 is now usable")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="move to the repaired NIC")


def test_tcp_connection_from_beyond_the_router_survives_failover(make_lab):
    lab = make_lab(nics=2)
    lab.start_daemon(TWO)
    default_routes(lab)
    server = lab.traffic("host", "tcp-server", "192.0.2.100", "7000", "20")
    client = lab.traffic("far", "tcp-client", "192.0.2.100", "7000", "3", "10")
    time.sleep(1)
    lab.cut("eth0")
    out, _ = client.communicate(timeout=30)
    server.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] is None, result
    assert result["echoed"] > 100, result
    assert lab.holders("192.0.2.100/24") == ["eth1"]
    # the connection kept flowing well after the move
    assert result["max_gap_ms"] < 1500, result


def test_router_learns_the_new_mac_within_100ms(make_lab):
    lab = make_lab(nics=2)
    lab.start_daemon(TWO)
    assert lab.ping("rtr", "192.0.2.100")
    assert lab.neighbour("rtr", "192.0.2.100")["lladdr"] == mac_of(0)
    cap = lab.capture("rtr", "eth0", "arp")
    t_cut = time.time()
    lab.cut("eth0")
    wait_for(lambda: (lab.neighbour("rtr", "192.0.2.100") or {}).get("lladdr") == mac_of(1),
             what="router neighbour entry on the new MAC")
    time.sleep(0.2)
    cap.terminate()
    out, _ = cap.communicate(timeout=10)
    garps = [float(line.split()[0]) for line in out.splitlines()
             if f" {mac_of(1)} > " in line and "who-has 192.0.2.100 tell 192.0.2.100" in line]
    assert garps, out
    assert garps[0] - t_cut < 0.100, f"GARP arrived {1000 * (garps[0] - t_cut):.1f} ms after the cut"


def test_status_json_contract(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(TWO + "    targets: [192.0.2.1]\n")
    st = json.loads(d.ctl("status", "--json").stdout)
    (g,) = st["groups"]
    assert g == {**g, "name": "ipmp0", "state": "ok", "fdt_ms": 10000, "interfaces": ["eth0", "eth1"]}
    for i in st["interfaces"]:
        assert set(i) >= {"name", "group", "state", "active", "standby", "link", "probe"}
        assert i["state"] in ("ok", "failed", "offline", "unknown") and i["link"] == "up"
    assert {(a["address"], a["home"], a["interface"]) for a in st["addresses"]} == {
        ("192.0.2.100/24", "eth0", "eth0"), ("2001:db8:1::100/64", "eth0", "eth0"),
        ("192.0.2.101/24", "eth1", "eth1")}
    assert all(a["group"] == "ipmp0" for a in st["addresses"])
    for t in st["targets"]:
        assert t["mode"] in ("routes", "multicast", "static", "disabled") and isinstance(t["targets"], list)


def run_mpathd(lab, *args):
    return lab.sh("host", sys.executable, "-m", "mpathd.daemon", *args, check=False, timeout=30)


def test_bad_config_is_rejected_with_one_line_and_nothing_applied(make_lab, tmp_path):
    lab = make_lab(nics=2)
    before = lab.addresses()
    bad = tmp_path / "groups.yaml"
    bad.write_text("groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
                   "      eth1: {data: [192.0.2.100/24]}\n")
    p = run_mpathd(lab, "--config", str(bad), "--defaults", "/dev/null", "--control", str(tmp_path / "s"))
    assert p.returncode == 2
    assert p.stderr == f"mpathd: {bad}:5: interface eth1 data: address 192.0.2.100 is configured twice " \
                       f"(also on line 4)\n" or "configured twice" in p.stderr
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    defaults = tmp_path / "mpathd"
    defaults.write_text("FAILBACK=perhaps\n")
    good = tmp_path / "good.yaml"
    good.write_text(TWO)
    p = run_mpathd(lab, "--config", str(good), "--defaults", str(defaults), "--control", str(tmp_path / "s"))
    assert p.returncode == 2 and p.stderr.startswith(f"mpathd: {defaults}:1: Invalid value for FAILBACK")
    assert len(p.stderr.splitlines()) == 1
    p = run_mpathd(lab, "--bogus")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "unrecognized arguments" in p.stderr
    assert lab.addresses() == before
    assert not (tmp_path / "s").exists()


def test_track_all_reports_nics_in_no_group_and_moves_nothing(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(LINK_PAIR_GROUP, defaults="TRACK_INTERFACES_ONLY_WITH_GROUPS=no\n")
    ifs = {i["name"]: i for i in d.status()["interfaces"]}
    assert ifs["eth2"]["group"] is None and ifs["eth2"]["state"] == "ok"
    assert "lo" not in ifs
    before = lab.addresses()
    lab.cut("eth2")
    d.wait_log("IP interface failure detected on eth2\n")
    assert next(i for i in d.status()["interfaces"] if i["name"] == "eth2")["state"] == "failed"
    lab.restore("eth2")
    d.wait_log("IP interface repair detected on eth2\n")
    assert lab.addresses() == before
    assert "net.ipv4.conf.eth2" not in d.log()              # never touched


def test_a_flapping_link_is_held_failed(make_lab):
    lab = make_lab(nics=3)
    d = lab.start_daemon(STANDBY)
    for _ in range(3):
        lab.cut("eth0")
        wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth2"], what="failover")
        lab.restore("eth0")
        time.sleep(0.2)
    d.wait_log("The link has come up on eth0 more than 2 times in the last minute; "
               "disabling repair until it stabilizes")
    time.sleep(0.5)
    assert lab.holders("192.0.2.100/24") == ["eth2"]
    assert next(i for i in d.status()["interfaces"] if i["name"] == "eth0")["state"] == "failed"
    log = d.log()
    assert log.count("Successfully failed over from NIC eth0 to NIC eth2 (192.0.2.100/24)") == 3
    assert log.count("Successfully failed back to NIC eth0 (192.0.2.100/24)") == 2
    assert not d.untrue(), log


def test_quick_flaps_log_only_what_happened(make_lab):
    """Down and up faster than the daemon reads its events, by the cable and
    by admin down (the kernel then deletes the IPv6 addresses itself)."""
    lab = make_lab(nics=2)
    d = lab.start_daemon(LINK_V6_PAIR_GROUP)
    default_routes(lab)
    lab.cut("eth0")                 # two quick flaps (a third link-up would hold the repair)
    lab.restore("eth0")
    for state in ("down", "up", "down"):
        lab.sh("host", "ip", "link", "set", "eth0", state)
    data = ("192.0.2.100/24", V6, "192.0.2.101/24")
    wait_for(lambda: all(lab.holders(a) == ["eth1"] for a in data), what="failover")
    time.sleep(0.5)
    assert all(lab.holders(a) == ["eth1"] for a in data)
    assert iface_probe(d, "eth0") == "disabled" and iface(d, "eth0")["state"] == "failed"
    lab.assert_reach_far(data)
    log = d.log()
    assert log.count("Successfully failed over from NIC eth0 to NIC eth1 (192.0.2.100/24") == 3
    assert log.count("Successfully failed back to NIC eth0 (192.0.2.100/24") == 2
    assert not d.untrue(), log


def iface(d, name):
    return next(i for i in d.status()["interfaces"] if i["name"] == name)


def iface_probe(d, name):
    return iface(d, name)["probe"]


def announcements(cap, mac):
    """Stop a capture of 'arp or icmp6' and return, per announced address,
    the times of the gratuitous ARPs and unsolicited NAs sent from mac."""
    cap.terminate()
    out, _ = cap.communicate(timeout=10)
    seen: dict[str, list[float]] = {}
    for line in out.splitlines():
        if f" {mac} > " not in line:
            continue
        if m := re.search(r"who-has (\S+) tell (\S+),", line):
            if m[1] == m[2]:
                seen.setdefault(m[1], []).append(float(line.split()[0]))
        elif m := re.search(r"neighbor advertisement, tgt is (\S+),", line):
            seen.setdefault(m[1], []).append(float(line.split()[0]))
    return seen


def test_a_move_is_announced_five_times_over_the_first_second(make_lab):
    lab = make_lab(nics=2)
    lab.start_daemon(TWO)
    time.sleep(1.2)                                   # the start-up announcements are over
    cap = lab.capture("rtr", "eth0", "arp or icmp6")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    time.sleep(1.5)
    seen = announcements(cap, mac_of(1))
    assert set(seen) == {"192.0.2.100", "2001:db8:1::100"}, seen
    for addr, times in seen.items():
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert len(times) == 5, (addr, times)
        assert all(0.15 < g < 0.4 for g in gaps), (addr, gaps)      # 200 ms apart, never bunched


def test_a_newer_move_ends_the_repeats_of_the_older_one(make_lab):
    # no test addresses: eth0 is repaired on its carrier alone and the
    # address fails back while eth1 is still repeating its announcements
    lab = make_lab(nics=2)
    lab.start_daemon("groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
                     "      eth1: {data: [192.0.2.101/24]}\n",
                     defaults="ANNOUNCE_COUNT=4\nANNOUNCE_INTERVAL=400\n")
    cap = lab.capture("rtr", "eth0", "arp")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    time.sleep(0.5)
    lab.restore("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], what="failback")
    time.sleep(2)
    from_eth1 = announcements(cap, mac_of(1)).get("192.0.2.100", [])
    assert len(from_eth1) == 2, from_eth1           # at once and 400 ms later, then the failback
    cap = lab.capture("rtr", "eth0", "arp")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="second failover")
    time.sleep(2)
    assert len(announcements(cap, mac_of(1)).get("192.0.2.100", [])) == 4    # the configured count


V6 = "2001:db8:1::100/64"


def where(d, address):
    return next(a["interface"] for a in d.status()["addresses"] if a["address"] == address)


def test_a_nic_that_refuses_ipv6_keeps_the_status_true_and_is_retried(make_lab):
    lab = make_lab(nics=2)
    lab.sysctl("host", "net.ipv6.conf.eth1.disable_ipv6=1")
    d = lab.start_daemon(LINK_V6_PAIR_GROUP)
    d.wait_log("IPv6 is disabled on eth1 (net.ipv6.conf.eth1.disable_ipv6=1), but its group has IPv6 "
               "data addresses: they cannot fail over to eth1")
    default_routes(lab)
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="IPv4 failover")
    d.wait_log("eth1 refused data address 2001:db8:1::100/64")
    assert lab.holders(V6) == ["eth0"] and where(d, V6) == "eth0"     # where the kernel has it
    lab.assert_reach_far(["192.0.2.100/24", "192.0.2.101/24"])
    time.sleep(3.5)                                   # the retries after 1 and 3 s are refused too
    assert lab.holders(V6) == ["eth0"] and where(d, V6) == "eth0"
    assert d.log().count("refused data address") == 1                 # once per cause
    lab.sysctl("host", "net.ipv6.conf.eth1.disable_ipv6=0")
    wait_for(lambda: lab.holders(V6) == ["eth1"], timeout=8, what="the retry at 7 s")
    assert where(d, V6) == "eth1"


def test_a_refused_address_goes_to_a_nic_that_can_carry_it(make_lab):
    lab = make_lab(nics=3)
    lab.sysctl("host", "net.ipv6.conf.eth1.disable_ipv6=1")
    d = lab.start_daemon(LINK_V6_PAIR_GROUP + "      eth2: {standby: true}\n")
    default_routes(lab)
    lab.cut("eth0")
    wait_for(lambda: lab.holders(V6) == ["eth2"], what="IPv6 failover to eth2")
    assert where(d, V6) == "eth2" and lab.holders("192.0.2.100/24") == ["eth2"]
    lab.assert_reach_far(["192.0.2.100/24", "192.0.2.101/24", V6])
