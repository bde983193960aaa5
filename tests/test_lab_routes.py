"""The route model with the real daemon in the lab (issue 10): routes that
leave by a group's NICs are owned (kernel nexthop objects of protocol
mpathd), leave only by active NICs, keep every attribute, come back after
what the kernel flushes, and spread flows over the active NICs. After every
fault step every data address must still reach the far host beyond the
router, with a ping from that address."""

import json
import os
import signal
import time

import pytest

from lab import FAR4, LINK_PAIR_GROUP, LINK_TRIO_GROUP, ROUTER4, ROUTER6, wait_for

FDT = "FAILURE_DETECTION_TIME=1000\n"          # where probing matters: detection in ~1 s, repair in ~1.5 s
SETTLE = 5                                     # s for the routes to follow a carrier fault or a repair
MPATHD = ("mpathd", "117")                     # the protocol of mpathd's nexthops, named or not

DATA = ["192.0.2.100/24", "192.0.2.101/24"]
BOTH = ["eth0", "eth1"]
STATIC = "203.0.113.0/24"


def routes_of(lab, family="-4", table="main") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in lab.route_paths(family, table):
        out.setdefault(r["dst"], []).append(r)
    return out


def settle(lab, want: dict[str, list[str]], family="-4", table="main", timeout=SETTLE) -> dict[str, dict]:
    """Wait until each destination in `want` has one route in `table`, owned
    by mpathd and leaving exactly by the NICs given; return those routes."""
    deadline = time.monotonic() + timeout
    while True:
        now = routes_of(lab, family, table)
        if all(len(now.get(dst, [])) == 1 and now[dst][0]["paths"] == nics and owned(now[dst][0])
               for dst, nics in want.items()):
            return {dst: now[dst][0] for dst in want}
        if time.monotonic() > deadline:
            seen = {dst: [(r["paths"], r.get("nhid")) for r in now.get(dst, [])] for dst in want}
            raise AssertionError(f"table {table}: wanted {want}, routes are {seen}")
        time.sleep(0.05)


def owned(route: dict) -> bool:
    """The route points at nexthop objects that mpathd made."""
    return "nhid" in route and bool(route["hops"]) and all(h.get("protocol") in MPATHD for h in route["hops"])


def add_routes(lab, *extra: str) -> None:
    """A default route and a static route through eth0, as an operator or a
    network manager adds them."""
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", *extra)
    lab.sh("host", "ip", "route", "add", STATIC, "via", ROUTER4, "dev", "eth0", *extra)


def pair_with_routes(make_lab):
    """The link-only pair, with the default and static routes through eth0
    added and owned (spread over both NICs)."""
    lab = make_lab(nics=2)
    d = lab.start_daemon(LINK_PAIR_GROUP)
    add_routes(lab)
    settle(lab, {"default": BOTH, STATIC: BOTH})
    return lab, d


def holders_are(lab, want: dict[str, list[str]], timeout=SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while (now := {a: lab.holders(a) for a in want}) != want:
        assert time.monotonic() < deadline, f"addresses: wanted {want}, got {now}"
        time.sleep(0.05)


def link_fault(lab, how: str, nic: str) -> None:
    if how == "unplug":
        lab.unplug(nic)
    else:
        lab.sh("host", "ip", "link", "set", nic, "down")


def link_repair(lab, how: str, nic: str) -> None:
    if how == "unplug":
        lab.replug(nic)
    else:
        lab.sh("host", "ip", "link", "set", nic, "up")


@pytest.mark.parametrize("how", ["unplug", "admin-down"])
def test_routes_survive_a_nic_removed_or_set_down_and_come_back(make_lab, how):
    """The kernel flushes every route and nexthop of a NIC that is removed
    or set down; mpathd rebuilds them on the survivor, and on both NICs
    after the re-plug or link-up."""
    lab, _ = pair_with_routes(make_lab)
    lab.assert_reach_far(DATA)

    link_fault(lab, how, "eth0")
    holders_are(lab, {"192.0.2.100/24": ["eth1"], "192.0.2.101/24": ["eth1"]})
    settle(lab, {"default": ["eth1"], STATIC: ["eth1"]})
    lab.assert_reach_far(DATA)

    link_repair(lab, how, "eth0")
    holders_are(lab, {"192.0.2.100/24": ["eth0"], "192.0.2.101/24": ["eth1"]})
    settle(lab, {"default": BOTH, STATIC: BOTH})
    lab.assert_reach_far(DATA)


def attributes(route: dict) -> dict:
    """What a move must not change: everything but the next hops."""
    return {k: v for k, v in route.items()
            if k not in ("nhid", "nexthops", "dev", "gateway", "flags", "hops", "paths", "gateways")}


def test_attributes_are_kept_across_failover_and_failback(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(LINK_PAIR_GROUP)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "proto", "static")
    lab.sh("host", "ip", "route", "add", STATIC, "via", ROUTER4, "dev", "eth0", "metric", "50",
           "mtu", "lock", "1400", "initcwnd", "20", "table", "100")
    lab.sh("host", "ip", "rule", "add", "from", "192.0.2.100", "table", "100")
    main = {"dst": "default", "protocol": "static", "locked": []}
    policy = {"dst": STATIC, "metric": 50, "metrics": [{"mtu": 1400, "initcwnd": 20}], "locked": ["mtu"]}

    def check(nics):
        (r,) = settle(lab, {"default": nics}).values()
        assert attributes(r) == main and r["gateways"] == [ROUTER4]
        (t,) = settle(lab, {STATIC: nics}, table="100").values()
        assert attributes(t) == policy and t["gateways"] == [ROUTER4]
        # no route ever gets a source it did not have
        assert [r for r in lab.route_paths(table="all") if "prefsrc" in r and r.get("protocol") != "kernel"] == []
        assert any(rule.get("src") == "192.0.2.100" and rule.get("table") == "100"
                   for rule in lab.ip_json("host", "-4", "rule", "show"))
        lab.assert_reach_far(DATA)

    check(BOTH)
    lab.cut("eth0")
    d.wait_log("Successfully failed over from NIC eth0 to NIC eth1")
    check(["eth1"])
    lab.restore("eth0")
    d.wait_log("Successfully failed back to NIC eth0")
    check(BOTH)


@pytest.mark.parametrize("spreading", [True, False])
def test_a_route_through_a_nic_without_data_addresses_moves_on_silent_failure(make_lab, spreading):
    """eth1 holds only a test address; a route learned on it must leave it
    when its probes fail, though no address moves."""
    lab = make_lab(nics=2)
    group = ("groups:\n  ipmp0:\n"
             f"    spreading: {'true' if spreading else 'false'}\n"
             "    interfaces:\n"
             "      eth0: {data: [192.0.2.100/24], test: [192.0.2.10/24]}\n"
             "      eth1: {test: [192.0.2.11/24]}\n")
    d = lab.start_daemon(group, defaults=FDT)
    # eth1 has no prefix route (test addresses are /32): the router is on-link
    lab.sh("host", "ip", "route", "add", "198.51.100.0/24", "via", ROUTER4, "dev", "eth1", "onlink")
    home = BOTH if spreading else ["eth1"]
    settle(lab, {"198.51.100.0/24": home})
    d.wait_probing("eth0", "eth1")
    lab.assert_reach_far(["192.0.2.100/24"])

    lab.drop("eth1")
    settle(lab, {"198.51.100.0/24": ["eth0"]}, timeout=4)       # FDT 1 s, and some slack
    assert next(i for i in d.status()["interfaces"] if i["name"] == "eth1")["state"] == "failed"
    lab.assert_reach_far(["192.0.2.100/24"])

    lab.undrop("eth1")
    settle(lab, {"198.51.100.0/24": home}, timeout=6)           # ten answers, then the move back
    lab.assert_reach_far(["192.0.2.100/24"])


def router_link_local(lab) -> str:
    (link,) = lab.ip_json("rtr", "-6", "addr", "show", "dev", "eth0")
    (ll,) = [a["local"] for a in link["addr_info"] if a["scope"] == "link"]
    return ll


@pytest.mark.parametrize("next_hop", ["global", "link-local"])
def test_ipv6_default_route_is_owned_and_spread_with_no_false_failure(make_lab, next_hop):
    """A global next hop is a route to own, never a probe target (eth1 has
    no prefix route to it); the route leaves by the NIC with the group's
    address on that prefix (the kernel refuses the nexthop elsewhere) and
    follows it on failover. A link-local one spreads over both NICs and is
    the target of every NIC the route leaves by."""
    lab = make_lab(nics=2)
    d = lab.start_daemon("""
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24, "2001:db8:1::100/64"], test: [link-local]}
      eth1: {data: [192.0.2.101/24], test: [link-local]}
""", defaults=FDT)
    via = ROUTER6 if next_hop == "global" else router_link_local(lab)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0")
    lab.sh("host", "ip", "-6", "route", "add", "default", "via", via, "dev", "eth0")
    six = ["eth0"] if next_hop == "global" else BOTH
    settle(lab, {"default": six}, family="-6")
    d.wait_probing("eth0", "eth1")
    deadline = time.monotonic() + 5                          # five FDTs of probing
    while time.monotonic() < deadline:
        states = {i["name"]: (i["state"], i["probe"]) for i in d.status()["interfaces"]}
        assert states == {"eth0": ("ok", "ok"), "eth1": ("ok", "ok")}, states
        time.sleep(0.1)
    assert "failure detected" not in d.log()
    targets = {t["interface"]: t["targets"] for t in d.status()["targets"] if t["family"] == 6}
    if next_hop == "global":
        assert not any(ROUTER6 in t for t in targets.values()), targets
    else:
        assert targets == {"eth0": [via], "eth1": [via]}, targets
    settle(lab, {"default": six}, family="-6")
    lab.assert_reach_far(DATA + ["2001:db8:1::100/64"])
    lab.cut("eth0")
    settle(lab, {"default": ["eth1"]}, family="-6")
    lab.assert_reach_far(DATA + ["2001:db8:1::100/64"])


def test_a_reload_that_changes_a_prefix_keeps_the_routes(make_lab):
    """A new prefix is a delete and an add: the kernel drops what depended
    on the old address."""
    lab, d = pair_with_routes(make_lab)
    d.write_config(LINK_PAIR_GROUP.replace("192.0.2.100/24", "192.0.2.100/25"))
    d.ctl("reload")
    holders_are(lab, {"192.0.2.100/25": ["eth0"]})
    settle(lab, {"default": BOTH, STATIC: BOTH})
    lab.assert_reach_far(["192.0.2.100/25", "192.0.2.101/24"])


def test_kill_9_in_the_middle_of_a_move_then_a_restart(make_lab):
    lab, d = pair_with_routes(make_lab)
    lab.cut("eth0")
    d.stop(signal.SIGKILL)
    d = lab.start_daemon(LINK_PAIR_GROUP)
    holders_are(lab, {"192.0.2.100/24": ["eth1"], "192.0.2.101/24": ["eth1"]})
    settle(lab, {"default": ["eth1"], STATIC: ["eth1"]})
    lab.assert_reach_far(DATA)
    lab.restore("eth0")
    holders_are(lab, {"192.0.2.100/24": ["eth0"], "192.0.2.101/24": ["eth1"]})
    settle(lab, {"default": BOTH, STATIC: BOTH})
    lab.assert_reach_far(DATA)
    assert "Traceback" not in d.log()


def test_a_policy_routing_table_follows_the_failover(make_lab):
    """Pings from 192.0.2.100 use table 100 only: a default there left on
    the dead NIC (the kernel keeps a route whose carrier is gone) makes them
    fail."""
    lab = make_lab(nics=2)
    lab.start_daemon(LINK_PAIR_GROUP)
    lab.sh("host", "ip", "rule", "add", "from", "192.0.2.100", "table", "100")
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "table", "100")
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0")
    settle(lab, {"default": BOTH}, table="100")
    lab.assert_reach_far(DATA)
    lab.cut("eth0")
    holders_are(lab, {"192.0.2.100/24": ["eth1"]})
    settle(lab, {"default": ["eth1"]}, table="100")
    settle(lab, {"default": ["eth1"]})
    lab.assert_reach_far(DATA)
    lab.restore("eth0")
    settle(lab, {"default": BOTH}, table="100")
    lab.assert_reach_far(DATA)


def test_a_foreign_default_route_is_owned_again_within_a_second(make_lab):
    lab = make_lab(nics=2)
    lab.start_daemon(LINK_PAIR_GROUP)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0")
    settle(lab, {"default": BOTH})
    # as NetworkManager does when it thinks its connection came back; one
    # batch, so that the daemon cannot put its own back in between
    batch = os.path.join(lab.dir, "foreign.batch")
    with open(batch, "w") as f:
        f.write(f"route del default\nroute add default via {ROUTER4} dev eth0\n")
    lab.sh("host", "ip", "-batch", batch)
    t0 = time.monotonic()
    settle(lab, {"default": BOTH}, timeout=1)
    print(f"foreign default route owned again after {1000 * (time.monotonic() - t0):.0f} ms")
    lab.assert_reach_far(DATA)


# ------------------------------------------------------------- load spreading

FLOWS, PORT = 32, 7000
RATE = 50                 # rounds a second: 32 × 50 datagrams/s, light for the 2-core CI


def flows_by_nic(counter) -> dict[str, set[int]]:
    return {nic: set(ports) for nic, ports in counter.read().items()}


def start_flows(lab, seconds: float):
    sink = lab.traffic("far", "udp-sink", FAR4, str(PORT), str(seconds + 10))
    sender = lab.traffic("host", "udp-flows", "192.0.2.100", FAR4, str(PORT), str(FLOWS),
                         str(int(seconds * RATE)), str(RATE))
    return sink, sender


def finish_flows(sink, sender) -> tuple[dict, dict]:
    sent = json.loads(sender.communicate(timeout=30)[0].strip().splitlines()[-1])
    time.sleep(0.2)                                      # the last datagrams in flight
    sink.terminate()
    got = json.loads(sink.communicate(timeout=10)[0].strip().splitlines()[-1])["flows"]
    return sent, got


def assert_each_flow_on_one_nic(by_nic: dict[str, set[int]], ports: list[int]) -> None:
    seen = [p for nic_ports in by_nic.values() for p in nic_ports]
    assert sorted(seen) == sorted(ports), f"flows split or missing: {by_nic}"


def test_flows_spread_over_the_active_nics_and_move_only_from_the_failed_one(make_lab):
    """32 UDP flows from one data address to one far host: both active NICs
    carry some, the standby none. After eth0 fails, the standby takes over
    (it is active then), nothing leaves by eth0, eth1 keeps its own flows
    (resilient hashing: only the failed NIC's flows move), and no flow is
    ever reordered."""
    lab = make_lab(nics=3)
    d = lab.start_daemon(LINK_TRIO_GROUP)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0")
    settle(lab, {"default": BOTH})
    counter = lab.count_frames(["eth0", "eth1", "eth2"], f"udp dport {PORT}", per="udp sport")
    sink, sender = start_flows(lab, seconds=3)
    time.sleep(0.8)
    before = flows_by_nic(counter)
    assert len(before["eth0"]) >= 4 and len(before["eth1"]) >= 4 and not before["eth2"], before

    lab.cut("eth0")
    d.wait_log("Successfully failed over from NIC eth0")
    settle(lab, {"default": ["eth1", "eth2"]})
    counter.restart()
    sent, got = finish_flows(sink, sender)
    after = flows_by_nic(counter)
    assert not after["eth0"], after
    assert before["eth1"] <= after["eth1"], f"eth1's own flows moved: before {before}, after {after}"
    assert_each_flow_on_one_nic(before, sent["ports"])
    assert_each_flow_on_one_nic(after, sent["ports"])
    assert sorted(int(p) for p in got) == sorted(sent["ports"]), got
    assert not [p for p, f in got.items() if f["reordered"]], got
    lab.assert_reach_far(DATA)


def test_without_spreading_every_flow_leaves_by_the_address_nic(make_lab):
    lab = make_lab(nics=3)
    lab.start_daemon(LINK_TRIO_GROUP.replace("  ipmp0:\n", "  ipmp0:\n    spreading: false\n"))
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0")
    settle(lab, {"default": ["eth0"]})
    counter = lab.count_frames(["eth0", "eth1", "eth2"], f"udp dport {PORT}", per="udp sport")
    sink, sender = start_flows(lab, seconds=0.5)
    sent, got = finish_flows(sink, sender)
    by_nic = flows_by_nic(counter)
    assert by_nic == {"eth0": set(sent["ports"]), "eth1": set(), "eth2": set()}, by_nic
    assert len(got) == FLOWS and not [p for p, f in got.items() if f["reordered"]], got
    lab.assert_reach_far(DATA)



def test_a_restart_keeps_the_routes_of_a_nic_that_left_the_group(make_lab):
    """The routes point at the earlier run's nexthops; eth0, their first
    member, is in no group now: the restart must not delete them with those
    nexthops, but give them back to eth0 as plain routes (as a reload does)."""
    lab, d = pair_with_routes(make_lab)
    d.stop(signal.SIGTERM)
    d = lab.start_daemon("groups:\n  ipmp0:\n    interfaces:\n      eth1: {data: [192.0.2.101/24]}\n")
    d.wait_log("nexthops an earlier mpathd left unused")
    now = routes_of(lab)
    assert [(r["paths"], "nhid" in r) for dst in ("default", STATIC) for r in now.get(dst, [])] \
        == [(["eth0"], False)] * 2, now
    assert lab.ip_json("host", "nexthop", "show") == []
    lab.assert_reach_far(DATA)


def test_a_nic_that_leaves_the_group_by_reload_keeps_no_nexthop_of_mpathd(make_lab):
    lab, d = pair_with_routes(make_lab)
    d.write_config("groups:\n  ipmp0:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n")
    d.ctl("reload")
    settle(lab, {"default": ["eth0"], STATIC: ["eth0"]})
    wait_for(lambda: not lab.ip_json("host", "nexthop", "show", "dev", "eth1"), timeout=2,
             what="no nexthop left on eth1")
    lab.assert_reach_far(["192.0.2.100/24"])
