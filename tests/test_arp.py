"""ARP probing in the sans-I/O core, with a fake clock and the simulated
link (fakekernel.Net): the same engine and verdicts as ICMP probing, replies
matched by sender IP and time, a pinned MAC per target, hosts from the
neighbour table."""

from fakekernel import ROUTER, Net, mac_of
from mpathd.core.events import AddAddress, ProbeReply, ReadNeighbours, StartProbing
from mpathd.core.probe import KIND_ARP
from mpathd.core.reports import status

ARP = """
groups:
  g:
    interfaces:
      eth0: {data: [192.0.2.100/24], test: [arp]}
      eth1: {data: [192.0.2.101/24], test: [arp]}
"""


def row(net, name):
    return next(r for r in status(net.core, net.now)["targets"] if r["interface"] == name)


def test_arp_probing_installs_no_address_and_opens_arp_sockets():
    net = Net(ARP)
    net.run(5)
    starts = [a for a in net.actions if isinstance(a, StartProbing)]
    assert {(a.ifname, a.family, a.arp, str(a.source)) for a in starts} == {
        ("eth0", 4, True, "0.0.0.0"), ("eth1", 4, True, "0.0.0.0")}
    assert not [a for a in net.actions if isinstance(a, AddAddress) and a.test]
    r = row(net, "eth0")
    assert (r["method"], r["mode"], r["testaddr"], r["targets"]) == ("arp", "routes", "0.0.0.0", ["192.0.2.1"])
    assert net.nic("eth0").probe_state() == "ok"


def test_silent_loss_fails_an_arp_nic_within_the_fdt_and_ten_answers_repair_it():
    net = Net(ARP)
    net.run(5)
    net.broken["eth0"] = 1.0
    net.run(7)
    assert net.holder("192.0.2.100/24") == "eth1"
    assert 5 < net.when("failure detected on eth0") <= 6
    del net.broken["eth0"]
    net.run(10)
    assert net.holder("192.0.2.100/24") == "eth0"


def test_an_arp_reply_answers_only_a_probe_outstanding_to_its_sender():
    net = Net(ARP)
    net.run(5)
    p = net.nic("eth0").health.probers[4]
    acked = p.stats["acked"]
    stray = ProbeReply("eth0", 4, ROUTER, 0, 0, KIND_ARP, net.now, mac=mac_of(ROUTER))
    for _ in range(3):                        # nothing outstanding: none of them counts
        net.feed(stray)
    other = ProbeReply("eth0", 4, ROUTER.__class__("192.0.2.7"), 0, 0, KIND_ARP, net.now, mac=b"\x02" * 6)
    net.feed(other)
    assert p.stats["acked"] == acked


def test_a_reply_from_another_mac_counts_as_a_loss_and_is_logged_once():
    net = Net(ARP)
    net.run(5)                                # the router's MAC is pinned
    net.forger = b"\x02\x66\x66\x66\x66\x66"  # answers first, every time
    net.run(8)
    lines = [line for _, line in net.log if "answered ARP from 02:66:66:66:66:66" in line]
    assert len(lines) == 1                    # once for the group, whichever NIC heard it first
    assert "not from its known 02:00:c0:00:02:01" in lines[0]
    # every probe was lost: both NICs fail, which is the group's failure
    assert net.when("All IP interfaces in group g are now unusable") is not None
    assert net.holder("192.0.2.100/24") == "eth0"


def test_a_group_failure_forgets_the_pinned_macs():
    net = Net(ARP)
    net.run(5)
    net.forger = b"\x02\x66\x66\x66\x66\x66"
    net.run(8)                                # group failure: pins forgotten
    net.forger = None
    net.run(12)                               # the real MAC is learnt again and answers
    assert net.when("is now usable") is not None


def test_arp_hosts_come_from_the_neighbour_table_and_none_is_reported():
    net = Net(ARP, routes=())
    net.run(3)
    assert net.when("No probe targets found (arp eth0)") is not None
    assert row(net, "eth0")["no_targets"] and row(net, "eth0")["mode"] == "neighbours"
    assert net.nic("eth0").probe_state() == "unknown"
    reads = sum(isinstance(a, ReadNeighbours) for a in net.actions)
    assert 2 <= reads <= 4                    # at most one dump a second, not one per probe
    net.neighbours = ("192.0.2.33", "192.0.2.100", "198.51.100.9")    # own and off-subnet are no targets
    net.run(5)
    assert net.when("probe target 192.0.2.33 found in the neighbour table for eth0") is not None
    assert row(net, "eth1")["targets"] == ["192.0.2.33"] and not row(net, "eth0")["no_targets"]
    assert net.nic("eth0").probe_state() == "ok"
