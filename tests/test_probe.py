"""Probe-based detection in the sans-I/O core, with time passed by hand and
a simulated link (fakekernel.Net): replies come back after an RTT unless the
path drops them."""

import random

import pytest

from fakekernel import GROUP, IP, ROUTER, Net, route
from mpathd.core import timing
from mpathd.core.events import LinkChanged, LinkInfo, ProbeReply, Tick
from mpathd.core.probe import Prober, RttEstimator
from mpathd.core.reports import status

def test_probes_are_sent_in_the_second_half_of_each_interval():
    p = Prober(4, 1.0, random.Random(1))
    p.set_targets("routes", [ROUTER])
    p.start(0.0)
    sends = []
    now = 0.0
    while now < 100:
        now = p.deadline()
        probes, missed = p.due(now)
        p.expire(now)
        if probes:
            sends.append(now)
    assert missed == 0
    first = sends[0]
    assert 0 <= first <= 1.0
    for k, t in enumerate(sends[1:], 1):
        assert first + (k - 0.5) <= t <= first + k + 1e-9, (k, t)
    gaps = [b - a for a, b in zip(sends, sends[1:])]
    assert min(gaps) >= 0.5 - 1e-9 and max(gaps) <= 1.5 + 1e-9


def test_rtt_estimator_follows_jacobson_karels():
    e = RttEstimator()
    e.update(0.010)
    assert e.crtt == pytest.approx(0.010 + 4 * 0.005)
    e.update(0.018)                 # err 8 ms: avg += 1 ms, dev += (8 - 5) / 4
    assert e.avg == pytest.approx(0.011) and e.dev == pytest.approx(0.00575)


def test_healthy_group_finds_the_router_target_and_is_ok():
    net = Net()
    net.run(10)
    rows = status(net.core, net.now)["targets"]
    assert {(r["interface"], r["mode"], tuple(r["targets"])) for r in rows} == {
        ("eth0", "routes", ("192.0.2.1",)), ("eth1", "routes", ("192.0.2.1",))}
    assert all(i["probe"] == "ok" and i["state"] == "ok" for i in status(net.core, net.now)["interfaces"])
    assert not [line for _, line in net.log if "failure" in line]


@pytest.mark.parametrize("fdt_ms", [100, 250, 1000, 10_000, 60_000])
@pytest.mark.parametrize("seed", range(8))
def test_silent_loss_is_detected_within_the_fdt(fdt_ms, seed):
    net = Net(fdt_ms=fdt_ms, seed=seed)
    fdt = fdt_ms / 1000
    net.run(3 * fdt)
    t_break = net.now + random.Random(seed).uniform(0, fdt)
    net.run(t_break)
    net.broken["eth0"] = 1.0
    net.run(t_break + 2 * fdt)
    detected = net.when("IP interface failure detected on eth0 of group g")
    assert detected is not None
    assert detected - t_break <= fdt, f"detected after {detected - t_break:.3f} s, FDT {fdt} s"
    assert net.holder("192.0.2.100/24") == "eth1"
    # repair: ten answers in a row, about 2 x FDT after the path returns
    t_fix = net.now
    net.broken["eth0"] = 0.0
    net.run(t_fix + 3 * fdt)
    repaired = net.when("IP interface repair detected on eth0 of group g")
    assert repaired is not None
    interval = fdt / timing.PROBE_INTERVAL_DIVISOR
    assert repaired - t_fix <= (timing.NUM_PROBE_REPAIRS + 1.5) * interval
    assert net.holder("192.0.2.100/24") == "eth0"


def test_loss_on_every_path_is_a_group_failure_that_moves_nothing():
    net = Net()
    net.run(5)
    net.broken = {"eth0": 1.0, "eth1": 1.0}
    net.run(8)
    assert net.when("All IP interfaces in group g are now unusable") is not None
    assert net.holder("192.0.2.100/24") == "eth0"
    assert net.holder("192.0.2.101/24") == "eth1"
    assert status(net.core, net.now)["groups"][0]["state"] == "failed"
    assert not [line for _, line in net.log if "failed over" in line]
    net.broken = {}
    net.run(12)
    assert status(net.core, net.now)["groups"][0]["state"] == "ok"
    assert net.when("is now usable") is not None


def test_random_loss_rarely_fails_and_total_loss_does():
    # 20% loss: five in a row has probability 0.2^5 per probe. Over 60 s at
    # FDT 1 s (~420 probes) with this seed there is no run of five.
    net = Net(seed=3)
    net.broken["eth0"] = 0.2
    net.run(60)
    assert net.nic("eth0").health.probers[4].stats["lost"] > 40          # the loss was real
    assert net.when("failure detected") is None
    net.broken["eth0"] = 1.0
    net.run(62)
    assert net.when("IP interface failure detected on eth0") is not None


def test_spoofed_replies_never_count():
    net = Net()
    net.run(5)
    net.broken["eth0"] = 1.0
    p = net.nic("eth0").health.probers[4]
    for seq in range(0, 0x10000, 97):            # wrong nonces for every seq, and a wrong source
        net.feed(ProbeReply("eth0", 4, ROUTER, seq, 12345, 1, net.now))
        net.feed(ProbeReply("eth0", 4, IP("192.0.2.66"), p.seq, 0, 1, net.now))
    net.run(7)
    assert net.when("IP interface failure detected on eth0") is not None


def test_late_reply_turns_a_loss_into_an_answer():
    p = Prober(4, 1.0, random.Random(0))
    p.set_targets("routes", [ROUTER])
    p.start(0.0)
    now = p.deadline()
    (probe,), _ = p.due(now)
    p.expire(now + 2)
    assert p.slots[-1].status == "lost" and p.consecutive("lost") == 1
    assert p.reply(ROUTER, probe.seq, probe.nonce, now + 2.1) == "late-ack"
    assert p.consecutive("lost") == 0 and p.consecutive("acked") == 1


def test_the_rtt_runs_from_when_the_probe_was_sent_not_scheduled():
    # the daemon sends each probe 60 ms after the core scheduled it; the
    # path takes 1 ms. A send time outside [scheduled, answer] is ignored.
    p = Prober(4, 0.1, random.Random(0))
    p.set_targets("routes", [ROUTER])
    p.start(0.0)
    for _ in range(30):
        now = p.deadline()
        (probe,), _ = p.due(now)
        assert p.reply(ROUTER, probe.seq, probe.nonce, now + 0.061, sent=now + 0.060) == "ack"
    assert [round(r.rtt, 6) for r in list(p.records)[-3:]] == [0.001] * 3
    assert p.targets[0].rtt.crtt < 0.005
    now = p.deadline()
    (probe,), _ = p.due(now)
    p.reply(ROUTER, probe.seq, probe.nonce, now + 0.002, sent=now + 0.5)       # after the answer
    now = p.deadline()
    (probe2,), _ = p.due(now)
    p.reply(ROUTER, probe2.seq, probe2.nonce, now + 0.003, sent=now - 7)       # before the schedule
    assert [round(r.rtt, 6) for r in list(p.records)[-2:]] == [0.002, 0.003]


def test_a_dead_target_is_replaced_without_failing_the_nic():
    yaml = GROUP + "    targets: [192.0.2.1, 192.0.2.2, 192.0.2.3]\n"
    net = Net(yaml=yaml)
    net.run(5)
    net.dead_targets.add(IP("192.0.2.2"))
    net.run(20)
    assert net.when("probe target 192.0.2.2 (inet eth0) stopped answering") is not None
    assert net.when("failure detected") is None
    rows = {r["interface"]: r for r in status(net.core, net.now)["targets"]}
    assert rows["eth0"]["mode"] == "static" and "192.0.2.2" not in rows["eth0"]["targets"]


def test_multicast_discovery_finds_hosts_and_ignores_our_own():
    net = Net(routes=(), hosts=["192.0.2.2", "192.0.2.3", "192.0.2.10"])
    net.run(5)
    rows = {r["interface"]: r for r in status(net.core, net.now)["targets"]}
    assert rows["eth0"]["mode"] == "multicast"
    assert sorted(rows["eth0"]["targets"]) == ["192.0.2.2", "192.0.2.3"]   # .10 is eth0's own


def test_no_targets_is_reported_and_counts_as_working():
    net = Net(routes=())
    net.run(5)
    assert net.when("No probe targets found (inet eth0)") is not None
    st = {i["name"]: i for i in status(net.core, net.now)["interfaces"]}
    assert st["eth0"]["probe"] == "unknown" and st["eth0"]["state"] == "unknown"
    assert net.core.nics["eth0"].active


def test_ipv6_probing_from_link_local():
    yaml = GROUP.replace("test: [192.0.2.10/24]", "test: [link-local]").replace(
        "test: [192.0.2.11/24]", "test: [link-local]")
    net = Net(yaml=yaml, routes=(route("::/0", "fe80::1"),))
    net.run(3)
    rows = {r["interface"]: r for r in status(net.core, net.now)["targets"]}
    assert rows["eth0"]["family"] == 6 and rows["eth0"]["targets"] == ["fe80::1"]
    assert rows["eth0"]["testaddr"] == "fe80::a0"
    net.broken["eth0"] = 1.0
    net.run(5)
    assert net.holder("192.0.2.100/24") == "eth1"


def test_both_families_must_fail_and_one_repairs():
    yaml = GROUP.replace("test: [192.0.2.10/24]", "test: [192.0.2.10/24, link-local]")
    net = Net(yaml=yaml, routes=(route("0.0.0.0/0", "192.0.2.1"), route("::/0", "fe80::1")))
    net.run(3)
    p6 = net.nic("eth0").health.probers[6]
    net.dead_targets.add(IP("fe80::1"))          # only IPv6 goes unanswered
    net.run(6)
    assert p6.verdict == "failed" and net.when("failure detected on eth0") is None
    net.broken["eth0"] = 1.0
    net.run(9)
    assert net.when("failure detected on eth0") is not None


def test_fdt_is_raised_when_rtt_makes_it_unachievable_and_lowered_later():
    net = Net(fdt_ms=100, rtt=0.030)             # interval 14 ms, RTT 30 ms
    net.run(5)
    assert net.when('Cannot meet requested failure detection time of 100 ms on (inet eth') is not None
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] > 100
    assert net.when("failure detected") is None
    net.rtt = 0.0002
    net.run(5 + 4 * timing.FDT_SETTLING_S)
    assert net.when('Improved failure detection time') is not None
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] == 100


def static_targets(n):
    return GROUP + f"    targets: [{', '.join(f'192.0.2.{k}' for k in range(1, n + 1))}]\n"


@pytest.mark.parametrize("slow_rtt", [0.5, 1.2])     # 1.2 s: answers still arrive after the drop
def test_one_slow_target_among_fast_ones_is_dropped_and_the_fdt_kept(slow_rtt):
    net = Net(yaml=static_targets(4), fdt_ms=1000)     # interval 143 ms
    net.slow[IP("192.0.2.4")] = slow_rtt
    net.run(30)
    assert net.when("probe target 192.0.2.4 (inet eth0) is much slower than the other targets") is not None
    assert net.when("Cannot meet requested failure detection time") is None
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] == 1000
    rows = {t["interface"]: t["targets"] for t in status(net.core, net.now)["targets"]}
    assert rows["eth0"] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert net.when("failure detected") is None


def test_a_slow_host_target_is_dropped_rediscovery_runs_and_it_rests():
    hosts = ["192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"]
    net = Net(routes=(), hosts=hosts, fdt_ms=1000)
    net.slow[IP("192.0.2.2")] = 1.2
    p = net.nic("eth0").health.probers[4]
    net.run(2)                                   # all five found; the slow one not yet judged
    assert len(p.targets) == 5
    discoveries = p.stats["discovery"]
    net.run(30)
    assert net.when("probe target 192.0.2.2 (inet eth0) is much slower than the other targets") is not None
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] == 1000
    assert IP("192.0.2.2") not in [t.addr for t in p.targets]
    assert len(p.targets) == 4 and p.stats["discovery"] > discoveries   # looked for another
    assert len([t for t, line in net.log if "192.0.2.2 (inet eth0) is much slower" in line]) == 1
    assert p.stats["lost"] >= 0


def test_an_address_of_this_host_is_never_a_target():
    yaml = GROUP + "    targets: [192.0.2.11, 192.0.2.1]\n"     # .11 is eth1's test address
    net = Net(yaml=yaml)
    net.run(3)
    rows = {r["interface"]: r["targets"] for r in status(net.core, net.now)["targets"]}
    assert rows == {"eth0": ["192.0.2.1"], "eth1": ["192.0.2.1"]}


def test_a_slow_target_among_too_few_raises_the_fdt():
    net = Net(yaml=static_targets(3), fdt_ms=1000)
    net.slow[IP("192.0.2.3")] = 0.5
    net.run(15)
    assert net.when("is much slower than the other targets") is None
    assert net.when("Cannot meet requested failure detection time of 1000 ms") is not None
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] > 1000


def test_late_sends_are_counted_and_not_held_against_the_nic():
    net = Net()
    net.run(3)
    net.broken["eth0"] = 1.0
    # the daemon is descheduled for a while: every probe it sends is late
    p = net.nic("eth0").health.probers[4]
    for _ in range(8):
        net.now = p.next_send + p.interval * 0.9
        net.feed(Tick())
    assert p.stats["late"] >= 5
    assert net.when("failure detected on eth0") is None


def test_link_down_needs_fresh_answers_to_repair():
    net = Net()
    net.run(3)
    net.feed(LinkChanged(LinkInfo("eth0", 1, None, False)))
    assert net.holder("192.0.2.100/24") == "eth1"
    net.feed(LinkChanged(LinkInfo("eth0", 1, None, True)))
    assert net.holder("192.0.2.100/24") == "eth1"          # not yet: probes must answer
    net.run(net.now + 3)
    assert net.holder("192.0.2.100/24") == "eth0"


def test_a_raised_fdt_comes_down_while_a_member_is_failed():
    net = Net(fdt_ms=100, rtt=0.030)
    net.run(5)
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] > 100
    net.feed(LinkChanged(LinkInfo("eth1", 2, None, False)))
    net.rtt = 0.0002
    net.run(5 + 4 * timing.FDT_SETTLING_S)
    assert status(net.core, net.now)["groups"][0]["fdt_ms"] == 100


def test_a_probe_socket_that_fails_to_open_is_tried_again():
    from mpathd.core.events import ActionFailed, StartProbing
    net = Net()
    p = net.nic("eth0").health.probers[4]
    assert p.running
    net.feed(ActionFailed(StartProbing("eth0", 4, 1, IP("192.0.2.10")), "OSError: no"))
    assert not p.running
    retry = net.core.next_deadline()
    assert retry is not None
    net.run(net.now + timing.PROBE_START_RETRY_S + 0.1)
    assert p.running


def test_a_discovered_host_that_becomes_a_router_target_keeps_other_hosts_out():
    """Discovery found the router as a host; then a route through it appears:
    it is a router target now, and a late discovery answer from another host
    does not bring multicast mode back."""
    net = Net(routes=(), hosts=["192.0.2.1", "192.0.2.2"])
    net.run(3)
    p = net.core.nics["eth0"].health.probers[4]
    assert p.mode == "multicast"
    from mpathd.core.events import RouteAdded
    net.feed(RouteAdded(route("0.0.0.0/0", "192.0.2.1")))
    assert (p.mode, [t.addr for t in p.targets]) == ("routes", [ROUTER])
    assert not p.add_host(IP("192.0.2.2"), net.now)
    net.run(3)
    assert (p.mode, [t.addr for t in p.targets]) == ("routes", [ROUTER])
