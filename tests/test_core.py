"""The sans-I/O core with time passed by hand and an in-memory kernel."""

import logging
import random
import textwrap

import pytest

from fakekernel import A, FakeKernel, Net, moves
from mpathd.config import Config, Defaults, parse_groups
from mpathd.core import timing
from mpathd.core.catalogue import Kind
from mpathd.core.events import (AddAddress, AddressAdded, AddressRemoved, Announce, LinkChanged,
                                LinkInfo, LinkRemoved, LinkRenamed, Log, PrepareInterface, RemoveAddress,
                                Resynced, SetLinkUp, Started, Tick)
from mpathd.core.machine import Core
from mpathd.core.reports import status, summary
from mpathd.core.states import ProbeState


TWO = """
groups:
  g:
    interfaces:
      eth0: {data: [192.0.2.100/24, "2001:db8:1::100/64"], test: [192.0.2.10/24]}
      eth1: {data: [192.0.2.101/24], test: [192.0.2.11/24]}
"""

STANDBY = """
groups:
  g:
    interfaces:
      eth0: {data: [192.0.2.100/24]}
      eth1: {data: [192.0.2.101/24]}
      eth2: {standby: true}
"""


def test_start_places_addresses_on_their_homes_and_installs_test_addresses():
    kern = FakeKernel(TWO)
    assert kern.kernel["eth0"] == {A("192.0.2.100/24"), A("2001:db8:1::100/64"), A("192.0.2.10/24")}
    assert kern.kernel["eth1"] == {A("192.0.2.101/24"), A("192.0.2.11/24")}
    assert {a.ifname for a in kern.actions if isinstance(a, PrepareInterface)} == {"eth0", "eth1"}
    tests = [a for a in kern.actions if isinstance(a, AddAddress) and a.test]
    assert {str(a.address) for a in tests} == {"192.0.2.10/24", "192.0.2.11/24"}
    assert summary(kern.core.groups) == "1 group ok"


def test_carrier_loss_moves_addresses_and_announces_then_failback():
    kern = FakeKernel(TWO)
    out = kern.link("eth0", False)
    assert kern.holder("192.0.2.100/24") == "eth1" and kern.holder("2001:db8:1::100/64") == "eth1"
    moved = moves(out)
    assert all(m.ifname == "eth0" and m.moved_to == "eth1" and m.flush_neighbours for m in moved)
    assert len(moved) == 2
    assert {a.address for a in out if isinstance(a, Announce)} == {m.address for m in moved}
    # announced as soon as it is on the new NIC, and only then is the old copy deleted
    for m in moved:
        add = out.index(AddAddress("eth1", m.address))
        announce = out.index(Announce("eth1", m.address))
        assert add < announce < out.index(m)
    assert "The link has gone down on eth0" in kern.logs(out)
    assert "IP interface failure detected on eth0 of group g" in kern.logs(out)
    assert any(t.startswith("Successfully failed over from NIC eth0 to NIC eth1") for t in kern.logs(out))
    assert summary(kern.core.groups) == "1 group degraded: eth0 failed"

    out = kern.link("eth0", True)
    assert kern.holder("192.0.2.100/24") == "eth0" and kern.holder("192.0.2.101/24") == "eth1"
    assert "IP interface repair detected on eth0 of group g" in kern.logs(out)
    assert any(t.startswith("Successfully failed back to NIC eth0") for t in kern.logs(out))
    assert not any(m.flush_neighbours for m in moves(out))


def test_failback_no_keeps_repaired_nic_inactive_until_needed():
    kern = FakeKernel(TWO, failback=False)
    kern.link("eth0", False)
    kern.link("eth0", True)
    eth0 = kern.core.nics["eth0"]
    assert eth0.functioning and eth0.inactive
    assert kern.holder("192.0.2.100/24") == "eth1"
    # now eth1 fails: eth0 is needed again and takes everything
    kern.link("eth1", False)
    assert not eth0.inactive
    assert kern.kernel["eth0"] >= {A("192.0.2.100/24"), A("192.0.2.101/24"), A("2001:db8:1::100/64")}


def test_standby_takes_over_first_and_returns_to_inactive():
    kern = FakeKernel(STANDBY)
    eth2 = kern.core.nics["eth2"]
    assert eth2.inactive and not eth2.active
    kern.link("eth0", False)
    assert eth2.active
    assert kern.holder("192.0.2.100/24") == "eth2"        # the standby, not the loaded eth1
    kern.link("eth0", True)
    assert eth2.inactive and kern.holder("192.0.2.100/24") == "eth0"
    assert kern.kernel["eth2"] == set()


def test_failed_addresses_go_to_the_least_loaded_active_nic():
    kern = FakeKernel("""
    groups:
      g:
        interfaces:
          eth0: {data: [192.0.2.100/24, 192.0.2.102/24]}
          eth1: {data: [192.0.2.101/24, 192.0.2.103/24, 192.0.2.104/24]}
          eth2: {}
    """)
    kern.link("eth0", False)
    assert kern.holder("192.0.2.100/24") == "eth2" and kern.holder("192.0.2.102/24") == "eth2"


def test_group_addresses_are_spread_and_rebalanced():
    kern = FakeKernel("""
    groups:
      g:
        interfaces:
          eth0: {}
          eth1: {}
        data: [192.0.2.100/24, 192.0.2.101/24, 192.0.2.102/24, 192.0.2.103/24]
    """)
    assert [len(kern.kernel[n]) for n in ("eth0", "eth1")] == [2, 2]
    kern.link("eth1", False)
    assert len(kern.kernel["eth0"]) == 4
    kern.link("eth1", True)
    assert [len(kern.kernel[n]) for n in ("eth0", "eth1")] == [2, 2]


def test_group_failure_moves_nothing_and_is_logged_once():
    kern = FakeKernel(TWO)
    kern.link("eth1", False)
    before = {n: set(s) for n, s in kern.kernel.items()}
    out = kern.link("eth0", False)
    assert not moves(out)
    assert kern.kernel == before
    assert "All IP interfaces in group g are now unusable" in kern.logs(out)
    out = kern.link("eth1", True)
    assert "At least 1 IP interface (eth1) in group g is now usable" in kern.logs(out)
    assert kern.holder("192.0.2.100/24") == "eth1"


def test_missing_nic_at_start_is_hosted_elsewhere_and_gets_addresses_back():
    kern = FakeKernel(TWO, present=["eth1"])
    assert kern.holder("192.0.2.100/24") == "eth1"
    assert "moving addresses from missing IPv4 interfaces: eth0 (moved to eth1)" in kern.logs()
    assert "moving addresses from missing IPv6 interfaces: eth0 (moved to eth1)" in kern.logs()
    kern.kernel["eth0"] = set()
    kern.running["eth0"] = True
    kern.do(LinkChanged(kern.info("eth0")))
    assert kern.holder("192.0.2.100/24") == "eth0"
    assert A("192.0.2.10/24") in kern.kernel["eth0"]


def test_missing_nic_with_no_alternative_is_reported():
    kern = FakeKernel("groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n", present=[])
    assert "moving addresses from missing IPv4 interfaces: eth0 (couldn't move; no alternative interface)" \
        in kern.logs()


def test_unplugged_nic_is_a_failure_and_replug_fails_back():
    kern = FakeKernel(TWO)
    kern.kernel["eth0"] = set()                     # the device takes its addresses with it
    out = kern.do(LinkRemoved("eth0", kern.index["eth0"]))
    assert kern.holder("192.0.2.100/24") == "eth1"
    assert "IP interface failure detected on eth0 of group g" in kern.logs(out)
    kern.index["eth0"] = 42
    kern.do(LinkChanged(kern.info("eth0")))
    assert kern.holder("192.0.2.100/24") == "eth0"


def test_restart_adopts_addresses_where_they_are():
    # after a failover, eth0 came back while the daemon was down: FAILBACK=no
    # leaves everything where it is.
    kernel = {"eth0": [], "eth1": ["192.0.2.100/24", "2001:db8:1::100/64", "192.0.2.101/24"]}
    kern = FakeKernel(TWO, failback=False, kernel=kernel)
    assert not any(isinstance(a, AddAddress) and not a.test for a in kern.actions)
    assert kern.core.nics["eth0"].inactive
    # with FAILBACK=yes the addresses go home
    kern = FakeKernel(TWO, failback=True, kernel=kernel)
    assert kern.holder("192.0.2.100/24") == "eth0"


def test_duplicate_at_start_is_removed_from_all_but_one():
    kern = FakeKernel(TWO, kernel={"eth0": ["192.0.2.100/24"], "eth1": ["192.0.2.100/24"]})
    assert kern.holder("192.0.2.100/24") == "eth0"
    assert any("removing it from eth1" in t for t in kern.logs())


def test_foreign_deletion_is_put_back_and_foreign_copy_removed():
    kern = FakeKernel(TWO)
    kern.kernel["eth0"].discard(A("192.0.2.100/24"))
    out = kern.do(AddressRemoved("eth0", A("192.0.2.100/24")))
    assert kern.holder("192.0.2.100/24") == "eth0"
    assert any("was removed from eth0 by another program" in t for t in kern.logs(out))
    kern.kernel["eth1"].add(A("192.0.2.100/24"))
    out = kern.do(AddressAdded("eth1", A("192.0.2.100/24")))
    assert RemoveAddress("eth1", A("192.0.2.100/24")) in out
    kern.kernel["eth0"].discard(A("192.0.2.10/24"))
    out = kern.do(AddressRemoved("eth0", A("192.0.2.10/24")))
    assert AddAddress("eth0", A("192.0.2.10/24"), test=True) in out


def test_link_down_at_start_is_a_failure():
    kern = FakeKernel(TWO, down=["eth0"])
    assert kern.holder("192.0.2.100/24") == "eth1"
    assert "The link has gone down on eth0" in kern.logs()


def set_up(actions):
    return [a for a in actions if isinstance(a, SetLinkUp)]


def test_a_group_nic_found_administratively_down_is_brought_up_once_per_device():
    kern = FakeKernel(TWO, admin_down=["eth0", "eth1"])
    assert set_up(kern.actions) == [SetLinkUp("eth0", 1), SetLinkUp("eth1", 2)]
    assert "IP interface eth0 of group g is administratively down; bringing it up" in kern.logs()
    assert next(a for a in kern.actions if isinstance(a, Log) and a.ifname == "eth0").kind == Kind.BROUGHT_UP
    # failed until the kernel reports them running
    assert "IP interface failure detected on eth0 of group g" in kern.logs()
    kern.link("eth0", True)
    kern.link("eth1", True)
    assert (kern.holder("192.0.2.100/24"), kern.holder("192.0.2.101/24")) == ("eth0", "eth1")
    # an operator's `ip link set eth1 down` is a failure, and stays so: not on
    # the event, not when the kernel is re-read
    out = kern.link("eth1", False, up=False)
    out += kern.do(Resynced(tuple(kern.info(n) for n in kern.index),
                            tuple((n, a) for n, s in kern.kernel.items() for a in s)))
    assert not set_up(out)
    assert "IP interface failure detected on eth1 of group g" in kern.logs(out)
    assert kern.holder("192.0.2.101/24") == "eth0"
    # ... until the operator sets it up again
    kern.link("eth1", True)
    assert kern.holder("192.0.2.101/24") == "eth1"
    # re-plugged under its name, down: a new device, brought up
    kern.kernel["eth1"] = set()
    kern.do(LinkRemoved("eth1", 2))
    kern.index["eth1"] = 42
    out = kern.link("eth1", False, up=False)
    assert set_up(out) == [SetLinkUp("eth1", 42)]
    kern.link("eth1", True)
    assert kern.holder("192.0.2.101/24") == "eth1"


def test_a_nic_in_no_group_is_never_brought_up():
    yaml = "groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
    core = Core(Config(defaults=Defaults(track_only_groups=False), groups=parse_groups(yaml, "t")))
    down = LinkInfo("eth9", 3, None, False, up=False)
    out = core.handle(Started((LinkInfo("eth0", 2, None, True), down), ()), 0.0)
    out += core.handle(LinkRemoved("eth9", 3), 0.0) + core.handle(LinkChanged(down), 0.0)
    assert "IP interface eth9 is present (index 3)" in [a.text for a in out if isinstance(a, Log)]
    assert not set_up(out)


def test_flapping_link_only_nic_holds_repair_for_a_minute():
    kern = FakeKernel(STANDBY)
    for _ in range(2):
        kern.link("eth0", False)
        kern.now += 1
        kern.link("eth0", True)
        kern.now += 1
    assert kern.core.nics["eth0"].active
    kern.link("eth0", False)
    kern.now += 1
    out = kern.link("eth0", True)                  # the third link-up within a minute
    assert "The link has come up on eth0 more than 2 times in the last minute; disabling repair " \
           "until it stabilizes" in kern.logs(out)
    assert kern.core.nics["eth0"].failed and kern.holder("192.0.2.100/24") == "eth2"
    deadline = kern.core.next_deadline()
    assert deadline == pytest.approx(1 + timing.LINK_FLAP_WINDOW_S)
    kern.now = deadline
    out = kern.do(Tick())
    assert "IP interface repair detected on eth0 of group g" in kern.logs(out)
    assert kern.holder("192.0.2.100/24") == "eth0"


def test_log_levels_are_errors_for_failures_and_info_for_repairs():
    kern = FakeKernel(TWO)
    out = kern.link("eth0", False)
    levels = {a.kind: a.level for a in out if isinstance(a, Log)}
    assert levels["failure"] == levels["failover"] == levels["link_down"] == logging.ERROR
    out = kern.link("eth0", True)
    levels = {a.kind: a.level for a in out if isinstance(a, Log)}
    assert levels["repair"] == levels["failback"] == levels["link_up"] == logging.INFO


def test_probe_is_unknown_for_a_nic_that_is_not_being_probed():
    net = Net()
    net.run(5)
    assert net.nic("eth0").probe_state() == ProbeState.OK
    net.feed(LinkChanged(LinkInfo("eth0", 1, None, False)))         # probing stops
    assert net.nic("eth0").probe_state() == ProbeState.UNKNOWN
    net.feed(LinkRemoved("eth0", 1))
    assert next(i for i in status(net.core, net.now)["interfaces"] if i["name"] == "eth0")["probe"] == "unknown"
    assert net.nic("eth1").probe_state() == ProbeState.OK


@pytest.mark.parametrize("seed", range(20))
def test_random_link_events_keep_the_invariant(seed):
    """Carrier flaps and NIC removals in random order: the invariant is
    checked after every event by Lab.do()."""
    rng = random.Random(seed)
    kern = FakeKernel(STANDBY + "    data: [192.0.2.200/24, \"2001:db8:1::200/64\"]\n", failback=rng.random() < 0.5)
    for _ in range(60):
        kern.now += rng.uniform(0, 30)
        name = rng.choice(["eth0", "eth1", "eth2"])
        r = rng.random()
        if r < 0.8 and kern.core.nics[name].present:
            kern.link(name, not kern.running[name])
        elif kern.core.nics[name].present:
            kern.kernel[name] = set()
            kern.do(LinkRemoved(name, kern.index[name]))
        else:
            kern.index[name] += 10
            kern.running[name] = True
            kern.do(LinkChanged(kern.info(name)))
        if kern.core.next_deadline() is not None and rng.random() < 0.3:
            kern.now = kern.core.next_deadline()
            kern.do(Tick())


def test_track_all_watches_nics_in_no_group_and_moves_nothing():
    yaml = "groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
    cfg = Config(defaults=Defaults(track_only_groups=False), groups=parse_groups(yaml, "t"))
    core = Core(cfg)
    lo = LinkInfo("lo", 1, None, True, loopback_or_p2p=True)
    out = core.handle(Started((lo, LinkInfo("eth0", 2, None, True), LinkInfo("eth9", 3, None, True)), ()), 0.0)
    assert not any(isinstance(a, PrepareInterface) and a.ifname == "eth9" for a in out)
    names = {i["name"]: i for i in status(core, 0.0)["interfaces"]}
    assert set(names) == {"eth0", "eth9"} and names["eth9"]["group"] is None
    out = core.handle(LinkChanged(LinkInfo("eth9", 3, None, False)), 0.0)
    texts = [a.text for a in out if isinstance(a, Log)]
    assert "IP interface failure detected on eth9" in texts
    assert not any(isinstance(a, (AddAddress, RemoveAddress)) for a in out)
    out = core.handle(LinkChanged(LinkInfo("eth9", 3, None, True)), 0.0)
    assert "IP interface repair detected on eth9" in [a.text for a in out if isinstance(a, Log)]
    # with the default (yes), NICs in no group are not watched
    core = Core(Config(groups=cfg.groups))
    core.handle(Started((LinkInfo("eth0", 2, None, True), LinkInfo("eth9", 3, None, True)), ()), 0.0)
    assert [i["name"] for i in status(core, 0.0)["interfaces"]] == ["eth0"]


def reload(kern, yaml, **defaults):
    from mpathd.core.events import ConfigReloaded
    cfg = Config(defaults=Defaults(**defaults), groups=parse_groups(textwrap.dedent(yaml), "t"))
    for g in cfg.groups:                         # new NICs already exist in the kernel
        for i in g.interfaces:
            kern.index.setdefault(i.name, len(kern.index) + 1)
            kern.running.setdefault(i.name, True)
            kern.kernel.setdefault(i.name, set())
    return kern.do(ConfigReloaded(cfg, tuple(kern.info(n) for n in kern.running),
                                 tuple((n, a) for n, s in kern.kernel.items() for a in s)))


def test_reload_applies_only_the_difference():
    kern = FakeKernel(STANDBY)
    eth1 = kern.core.nics["eth1"]
    out = reload(kern, STANDBY.replace("eth1: {data: [192.0.2.101/24]}",
                                      "eth1: {data: [192.0.2.101/24, 192.0.2.102/24]}")
                 + "      eth3: {data: [192.0.2.103/24]}\n")
    assert kern.core.nics["eth1"] is eth1                      # untouched NICs keep their state
    assert not moves(out)
    assert kern.holder("192.0.2.102/24") == "eth1" and kern.holder("192.0.2.103/24") == "eth3"
    assert kern.holder("192.0.2.100/24") == "eth0"
    assert any("configuration reloaded: " in t and "eth3 added to group g" in t
               and "data address 192.0.2.102/24 added" in t for t in kern.logs(out))
    # remove eth0 from the group: its address is no longer configured and goes
    out = reload(kern, STANDBY.replace("      eth0: {data: [192.0.2.100/24]}\n", ""))
    assert A("192.0.2.100/24") not in kern.kernel["eth0"]
    assert RemoveAddress("eth0", A("192.0.2.100/24")) in out
    assert "eth0" not in kern.core.nics


def test_reload_moves_addresses_off_a_nic_that_left():
    kern = FakeKernel(STANDBY + "    data: [192.0.2.200/24]\n")
    kern.link("eth1", False)
    assert kern.holder("192.0.2.101/24") == "eth2"
    reload(kern, STANDBY.replace("      eth2: {standby: true}\n", "") + "    data: [192.0.2.200/24]\n")
    assert kern.holder("192.0.2.101/24") == "eth0"


def test_offline_moves_addresses_and_refuses_the_last_usable():
    from mpathd.core.events import Offline, Online, Refused
    kern = FakeKernel(STANDBY)
    out = kern.do(Offline("eth0"))
    assert kern.holder("192.0.2.100/24") == "eth2"
    assert status(kern.core, kern.now)["interfaces"][0]["state"] == "offline"
    assert not any(isinstance(a, Refused) for a in out)
    assert Refused("interface eth0 is already offline") in kern.do(Offline("eth0"))
    kern.do(Offline("eth1"))
    out = kern.do(Offline("eth2"))
    assert any(isinstance(a, Refused) and "no other functioning" in a.reason for a in out)
    assert kern.core.nics["eth2"].active
    kern.do(Offline("eth2", force=True))
    assert kern.core.nics["eth2"].offline
    kern.do(Online("eth0"))
    assert kern.holder("192.0.2.100/24") == "eth0" and kern.holder("192.0.2.101/24") == "eth0"
    assert Refused("interface eth0 is not offline") in kern.do(Online("eth0"))
    assert any(isinstance(a, Refused) for a in kern.do(Offline("eth9")))


def test_duplicate_mac_offlines_the_later_nic_until_unique():
    kern = FakeKernel(STANDBY)
    eth0_mac = kern.info("eth0").mac
    out = kern.do(LinkChanged(LinkInfo("eth1", kern.index["eth1"], eth0_mac, True)))
    assert "IP interface eth1 has a hardware address which is not unique in group g; offlining" in kern.logs(out)
    assert kern.core.nics["eth1"].offline and kern.holder("192.0.2.101/24") == "eth2"
    out = kern.link("eth1", True)              # its own MAC again
    assert "IP interface eth1 now has a unique hardware address in group g; onlining" in kern.logs(out)
    assert kern.holder("192.0.2.101/24") == "eth1"


# ---- regressions found in review


def test_start_with_a_data_address_on_a_nic_outside_its_group():
    kern = FakeKernel(TWO, failback=False, present=["eth0", "eth1", "eth5"],
              kernel={"eth5": ["192.0.2.100/24"]})
    assert kern.holder("192.0.2.100/24") == "eth0"          # moved into the group, no crash


def test_reload_with_a_new_test_address_reopens_the_probe_socket():
    from mpathd.core.events import StartProbing, StopProbing
    kern = FakeKernel(TWO)
    out = reload(kern, TWO.replace("192.0.2.10/24", "192.0.2.20/24"))
    assert StopProbing("eth0", 4) in out
    assert any(isinstance(a, StartProbing) and a.ifname == "eth0" and str(a.source) == "192.0.2.20"
               for a in out)


def test_reload_with_a_new_prefix_replaces_the_addresses():
    kern = FakeKernel(TWO)
    reload(kern, TWO.replace("192.0.2.100/24", "192.0.2.100/25").replace("192.0.2.101/24", "192.0.2.101/25"))
    assert kern.kernel["eth0"] & {A("192.0.2.100/24"), A("192.0.2.100/25")} == {A("192.0.2.100/25")}
    assert kern.holder("192.0.2.101/25") == "eth1"
    assert not any(A("192.0.2.101/24") in s for s in kern.kernel.values())


def test_a_new_mac_rebuilds_the_announcements():
    kern = FakeKernel(TWO)
    out = kern.do(LinkChanged(LinkInfo("eth0", kern.index["eth0"], "02:aa:00:00:00:01", True)))
    assert [a.mac for a in out if isinstance(a, PrepareInterface)] == ["02:aa:00:00:00:01"]


def test_reload_recomputes_inactive_for_new_and_changed_nics():
    kern = FakeKernel(TWO)
    reload(kern, TWO + "      eth2: {standby: true}\n")
    assert kern.core.nics["eth2"].inactive and kern.kernel["eth2"] == set()
    kern = FakeKernel(STANDBY)                                        # swap which NIC is the standby
    reload(kern, STANDBY.replace("eth2: {standby: true}", "eth2: {}").replace(
        "eth1: {data: [192.0.2.101/24]}", "eth1: {standby: true}"))
    assert kern.core.nics["eth1"].inactive and kern.core.nics["eth2"].active


def test_reload_to_failback_yes_fails_back():
    kern = FakeKernel(TWO, failback=False)
    kern.link("eth0", False)
    kern.link("eth0", True)
    assert kern.holder("192.0.2.100/24") == "eth1"
    reload(kern, TWO, failback=True)
    assert kern.holder("192.0.2.100/24") == "eth0"


def test_with_failback_no_a_nic_that_appears_later_is_used():
    kern = FakeKernel(TWO, failback=False, present=["eth1"])
    assert kern.holder("192.0.2.100/24") == "eth1"
    kern.kernel["eth0"] = set()
    kern.running["eth0"] = True
    out = kern.do(LinkChanged(kern.info("eth0")))
    assert kern.holder("192.0.2.100/24") == "eth0"
    assert not any("repair detected" in t for t in kern.logs(out))


def test_nics_in_no_group_survive_a_reload():
    from mpathd.core.events import ConfigReloaded
    yaml = "groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
    cfg = Config(defaults=Defaults(track_only_groups=False), groups=parse_groups(yaml, "t"))
    core = Core(cfg)
    links = (LinkInfo("eth0", 2, None, True), LinkInfo("eth9", 3, None, True))
    core.handle(Started(links, ()), 0.0)
    core.handle(ConfigReloaded(cfg, links, ()), 0.0)
    assert {i["name"] for i in status(core, 0.0)["interfaces"]} == {"eth0", "eth9"}


def test_a_route_the_kernel_dropped_is_put_back_after_the_news_that_follows():
    """The kernel tells of the routes it drops with a NIC's nexthops just
    before the NIC's carrier loss: nothing is re-made on that NIC; the
    carrier loss moves the routes, and a drop with no news after it is put
    back KERNEL_NEWS_S later."""
    from fakekernel import route
    from mpathd.core.events import InstallRoute, RouteRemoved, SetPath
    link_only = TWO.replace(", test: [192.0.2.10/24]", "").replace(", test: [192.0.2.11/24]", "")
    cfg = Config(groups=parse_groups(textwrap.dedent(link_only) + "    spreading: false\n", "t"))
    core = Core(cfg)                       # no probing: the route news is the only deadline
    r = route("0.0.0.0/0", "192.0.2.1")
    out = core.handle(Started((LinkInfo("eth0", 2, None, True), LinkInfo("eth1", 3, None, True)), (), (r,)), 0.0)
    assert [a.members for a in out if isinstance(a, SetPath)] == [(("eth0", 2),)]
    assert not [a for a in core.handle(RouteRemoved(r.key, by_kernel=True), 1.0) if isinstance(a, (SetPath, InstallRoute))]
    out = core.handle(LinkChanged(LinkInfo("eth0", 2, None, False)), 1.0001)
    assert [a.members for a in out if isinstance(a, SetPath)] == [(("eth1", 3),)]
    assert [type(a) for a in out if isinstance(a, (SetPath, InstallRoute))] == [SetPath, InstallRoute]
    assert core.next_deadline() == pytest.approx(1.0 + timing.KERNEL_NEWS_S)
    assert not [a for a in core.handle(Tick(), 1.0 + timing.KERNEL_NEWS_S) if isinstance(a, (SetPath, InstallRoute))]
    core.handle(RouteRemoved(r.key, by_kernel=True), 2.0)            # no news follows
    out = core.handle(Tick(), 2.0 + timing.KERNEL_NEWS_S)
    assert [type(a) for a in out if isinstance(a, (SetPath, InstallRoute))] == [SetPath, InstallRoute]


def test_reload_that_turns_spreading_on_prepares_the_nics_for_it():
    """Started without spreading, mpathd never set the L4 hash policy; a
    reload that turns spreading on must (PrepareInterface sets it), and says
    what changed."""
    off = STANDBY.replace("  g:\n", "  g:\n    spreading: false\n")
    kern = FakeKernel(off)
    assert not any(a.spreading for a in kern.actions if isinstance(a, PrepareInterface))
    out = reload(kern, STANDBY)
    assert {a.ifname for a in out if isinstance(a, PrepareInterface) and a.spreading} == {"eth0", "eth1", "eth2"}
    assert any("group g spreading on" in t for t in kern.logs(out))
    out = reload(kern, off)
    assert any("group g spreading off" in t for t in kern.logs(out))


def test_neighbour_retry_interval_has_a_floor_and_is_given_back_on_leaving():
    from mpathd.core.events import ReleaseInterface
    # the probe interval, between the floor and the kernel's default
    assert timing.neigh_retrans_ms(1000) == 142
    assert timing.neigh_retrans_ms(100) == timing.NEIGH_RETRANS_MIN_MS == 100      # not 14
    assert timing.neigh_retrans_ms(60_000) == timing.NEIGH_RETRANS_MAX_MS == 1000
    kern = FakeKernel(STANDBY)
    out = reload(kern, STANDBY.replace("      eth2: {standby: true}\n", ""), fdt_ms=100)
    assert {(a.ifname, a.neigh_retrans_ms) for a in out if isinstance(a, PrepareInterface)} == \
        {("eth0", 100), ("eth1", 100)}
    assert [a.ifname for a in out if isinstance(a, ReleaseInterface)] == ["eth2"]


def test_a_failed_nics_neighbours_are_flushed_once_per_family_not_per_address():
    many = TWO.replace("data: [192.0.2.100/24,", "data: [192.0.2.100/24, 192.0.2.102/24, 192.0.2.103/24,")
    kern = FakeKernel(many)
    out = kern.link("eth0", False)
    moved = moves(out)
    assert len(moved) == 4
    assert sorted(m.address.version for m in moved if m.flush_neighbours) == [4, 6]
    assert moved.index(next(m for m in moved if m.flush_neighbours and m.address.version == 4)) == \
        max(i for i, m in enumerate(moved) if m.address.version == 4)


def rename(kern, old, new):
    """The kernel renames a NIC: same index, its addresses with it."""
    kern.index[new], kern.running[new] = kern.index[old], kern.running.pop(old)
    kern.kernel[new] = kern.kernel.pop(old)
    return kern.do(LinkRenamed(old, kern.info(new)))


def test_a_live_rename_keeps_the_addresses_and_moves_them_into_the_group():
    kern = FakeKernel(TWO)
    out = rename(kern, "eth0", "lan0")
    assert "IP interface eth0 of group g was renamed lan0 (index 1)" in kern.logs(out)
    assert "IP interface failure detected on eth0 of group g" in kern.logs(out)
    # make-before-break off the renamed NIC (checked by FakeKernel), no copy removed as foreign
    assert kern.holder("192.0.2.100/24") == kern.holder("2001:db8:1::100/64") == "eth1"
    assert {(a.ifname, a.moved_to) for a in moves(out)} == {("lan0", "eth1")}
    assert RemoveAddress("lan0", A("192.0.2.10/32")) in out
    assert not any("appeared on" in t for t in kern.logs())
    assert kern.core.nics["eth0"].state().value == "failed"


def test_a_nic_renamed_to_a_configured_name_joins_and_is_watched():
    yaml = TWO.replace("eth0:", "lan0:")
    kern = FakeKernel(yaml, present=["eth0", "eth1"])      # udev has not renamed it yet
    assert kern.holder("192.0.2.100/24") == "eth1"
    kern.link("eth0", False)                               # the operator or udev: down, rename, up
    rename(kern, "eth0", "lan0")
    out = kern.link("lan0", True)
    assert kern.holder("192.0.2.100/24") == kern.holder("2001:db8:1::100/64") == "lan0"
    assert AddAddress("lan0", A("192.0.2.10/24"), test=True) in kern.actions
    assert f"IP interface lan0 of group g is present (index {kern.index['lan0']})" in kern.logs()
    out = kern.link("lan0", False)
    assert "IP interface failure detected on lan0 of group g" in kern.logs(out)
    assert kern.holder("192.0.2.100/24") == "eth1"


LINK_TWO = TWO.replace(", test: [192.0.2.10/24]", "").replace(", test: [192.0.2.11/24]", "")
THREE_V6 = TWO + "      eth2: {standby: true}\n"


def test_a_refused_address_stays_where_the_kernel_has_it_and_is_retried_with_back_off():
    kern = FakeKernel(LINK_TWO)                            # no probes: the retries are the only deadlines
    kern.refuse.add(("eth1", 6))                           # disable_ipv6=1 on eth1
    out = kern.link("eth0", False)
    assert kern.holder("192.0.2.100/24") == "eth1"
    assert kern.holder("2001:db8:1::100/64") == "eth0"     # the kernel still has it there
    assert kern.core.ledger.where[A("2001:db8:1::100/64")] == "eth0"     # and so does the status
    v6 = "2001:db8:1::100/64"
    assert status(kern.core, kern.now)["addresses"] and next(
        a for a in status(kern.core, kern.now)["addresses"] if a["address"] == v6)["interface"] == "eth0"
    refused = [t for t in kern.logs(out) if "refused" in t]
    assert refused == ["eth1 refused data address 2001:db8:1::100/64 (NetlinkError: (13, 'Permission denied')); "
                       "it stays on eth0, and no IPv6 address goes to eth1 until a retry succeeds"]
    assert [t for t in kern.logs(out) if t.startswith("Successfully")] == [
        "Successfully failed over from NIC eth0 to NIC eth1 (192.0.2.100/24)"]     # what really moved
    assert kern.core.groups[0].counts["failovers"] == 1
    while kern.core.next_deadline() < 40:
        kern.now = kern.core.next_deadline()
        out = kern.do(Tick())
        assert not any("refused" in t for t in kern.logs(out))          # logged once per cause
    tries = [t for t, a in kern.refused]
    assert tries == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    kern.refuse.clear()                                    # IPv6 enabled again
    kern.now = kern.core.next_deadline()
    kern.do(Tick())
    assert kern.holder(v6) == "eth1"


def test_a_refused_address_goes_to_a_nic_that_can_take_it():
    kern = FakeKernel(THREE_V6)
    kern.refuse.add(("eth1", 6))
    out = kern.link("eth0", False)
    assert kern.holder("2001:db8:1::100/64") == "eth2"
    assert kern.core.ledger.where[A("2001:db8:1::100/64")] == "eth2"
    assert [t for t in kern.logs(out) if t.startswith("Successfully")] == [
        "Successfully failed over from NIC eth0 to NIC eth2 (192.0.2.100/24)",
        "Successfully failed over from NIC eth0 to NIC eth2 (2001:db8:1::100/64)"]


def test_in_a_group_failure_a_refused_address_is_not_asked_again_at_once():
    kern = FakeKernel(TWO + "    data: [192.0.2.200/24]\n")
    kern.link("eth0", False)
    kern.link("eth1", False)                       # group failure: nothing moves
    holder = kern.holder("192.0.2.200/24")
    kern.refuse |= {("eth0", 4), ("eth1", 4)}
    kern.kernel[holder] = set()                    # the device takes its addresses with it
    kern.do(LinkRemoved(holder, kern.index[holder]))
    asked = [(a.ifname, a.address) for _, a in kern.refused]
    assert len(asked) == len(set(asked))            # each once, then the back-off
    assert kern.core.ledger.where[A("192.0.2.200/24")] is None
