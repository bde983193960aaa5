"""The sans-I/O core with time passed by hand and an in-memory kernel."""

import ipaddress
import logging
import random
import textwrap

import pytest

from mpathd.core import timing
from mpathd.config import Config, Defaults, parse_groups
from mpathd.core.machine import Core
from mpathd.core.reports import status, summary
from mpathd.core.events import (AddAddress, AddressAdded, AddressRemoved, Announce, LinkChanged,
                           LinkInfo, LinkRemoved, Log, MoveAddress, PrepareInterface, RemoveAddress,
                           Started, Tick)

A = ipaddress.ip_interface

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


class Lab:
    """The core plus a kernel made of dicts: it applies the core's actions
    the way the netlink adapter would."""

    def __init__(self, yaml: str, failback: bool = True, present=None, down=(), kernel=None):
        self.now = 0.0
        cfg = Config(defaults=Defaults(failback=failback), groups=parse_groups(textwrap.dedent(yaml), "t"))
        self.core = Core(cfg)
        names = [i.name for g in cfg.groups for i in g.interfaces]
        present = names if present is None else present
        self.index = {n: i + 1 for i, n in enumerate(dict.fromkeys([*names, *present]))}
        self.running = {n: n not in down for n in present}
        self.kernel: dict[str, set] = {n: set() for n in present}
        for ifname, addr in (kernel or {}).items():
            for a in addr:
                self.kernel[ifname].add(A(a))
        self.actions: list = []
        self.do(Started(tuple(self.info(n) for n in present),
                        tuple((n, a) for n, s in self.kernel.items() for a in s)))

    def info(self, name):
        return LinkInfo(name, self.index[name], f"02:00:00:00:00:{self.index[name]:02x}", self.running[name])

    def do(self, event):
        actions = self.core.handle(event, self.now)
        for a in actions:
            match a:
                case AddAddress():
                    self.kernel[a.ifname].add(a.address)
                case RemoveAddress():
                    self.kernel[a.ifname].discard(a.address)
                case MoveAddress():
                    assert a.address in self.kernel[a.src], a
                    self.kernel[a.dst].add(a.address)
                    self.kernel[a.src].discard(a.address)
        self.actions += actions
        self.check_invariant()
        return actions

    def link(self, name, running):
        self.running[name] = running
        return self.do(LinkChanged(self.info(name)))

    def holder(self, addr):
        (h,) = [n for n, s in self.kernel.items() if A(addr) in s]
        return h

    def logs(self, actions=None):
        return [a.text for a in (self.actions if actions is None else actions) if isinstance(a, Log)]

    def check_invariant(self):
        """Every data address is on exactly one NIC of its group, and on an
        active one whenever the group has one."""
        for g in self.core.groups:
            for addr in g.home():
                holders = [n for n, s in self.kernel.items() if addr in s]
                assert len(holders) <= 1, (addr, holders)
                present = [n for n in g.nics if n.present]
                if present:
                    assert len(holders) == 1, (addr, self.kernel)
                if any(n.active for n in g.nics):
                    assert self.core.nics[holders[0]].active, (addr, holders)


def test_start_places_addresses_on_their_homes_and_installs_test_addresses():
    lab = Lab(TWO)
    assert lab.kernel["eth0"] == {A("192.0.2.100/24"), A("2001:db8:1::100/64"), A("192.0.2.10/24")}
    assert lab.kernel["eth1"] == {A("192.0.2.101/24"), A("192.0.2.11/24")}
    assert {a.ifname for a in lab.actions if isinstance(a, PrepareInterface)} == {"eth0", "eth1"}
    tests = [a for a in lab.actions if isinstance(a, AddAddress) and a.test]
    assert {str(a.address) for a in tests} == {"192.0.2.10/24", "192.0.2.11/24"}
    assert summary(lab.core.groups) == "1 group ok"


def test_carrier_loss_moves_addresses_and_announces_then_failback():
    lab = Lab(TWO)
    out = lab.link("eth0", False)
    assert lab.holder("192.0.2.100/24") == "eth1" and lab.holder("2001:db8:1::100/64") == "eth1"
    moves = [a for a in out if isinstance(a, MoveAddress)]
    assert all(m.src == "eth0" and m.dst == "eth1" and m.src_failed for m in moves) and len(moves) == 2
    assert {a.address for a in out if isinstance(a, Announce)} == {m.address for m in moves}
    # announcements come after the move they announce
    assert out.index(moves[0]) < out.index(next(a for a in out if isinstance(a, Announce)))
    assert "The link has gone down on eth0" in lab.logs(out)
    assert "IP interface failure detected on eth0 of group g" in lab.logs(out)
    assert any(t.startswith("Successfully failed over from NIC eth0 to NIC eth1") for t in lab.logs(out))
    assert summary(lab.core.groups) == "1 group degraded: eth0 failed"

    out = lab.link("eth0", True)
    assert lab.holder("192.0.2.100/24") == "eth0" and lab.holder("192.0.2.101/24") == "eth1"
    assert "IP interface repair detected on eth0 of group g" in lab.logs(out)
    assert any(t.startswith("Successfully failed back to NIC eth0") for t in lab.logs(out))
    assert not any(isinstance(a, MoveAddress) and a.src_failed for a in out)


def test_failback_no_keeps_repaired_nic_inactive_until_needed():
    lab = Lab(TWO, failback=False)
    lab.link("eth0", False)
    lab.link("eth0", True)
    eth0 = lab.core.nics["eth0"]
    assert eth0.functioning and eth0.inactive
    assert lab.holder("192.0.2.100/24") == "eth1"
    # now eth1 fails: eth0 is needed again and takes everything
    lab.link("eth1", False)
    assert not eth0.inactive
    assert lab.kernel["eth0"] >= {A("192.0.2.100/24"), A("192.0.2.101/24"), A("2001:db8:1::100/64")}


def test_standby_takes_over_first_and_returns_to_inactive():
    lab = Lab(STANDBY)
    eth2 = lab.core.nics["eth2"]
    assert eth2.inactive and not eth2.active
    lab.link("eth0", False)
    assert eth2.active
    assert lab.holder("192.0.2.100/24") == "eth2"        # the standby, not the loaded eth1
    lab.link("eth0", True)
    assert eth2.inactive and lab.holder("192.0.2.100/24") == "eth0"
    assert lab.kernel["eth2"] == set()


def test_failed_addresses_go_to_the_least_loaded_active_nic():
    lab = Lab("""
    groups:
      g:
        interfaces:
          eth0: {data: [192.0.2.100/24, 192.0.2.102/24]}
          eth1: {data: [192.0.2.101/24, 192.0.2.103/24, 192.0.2.104/24]}
          eth2: {}
    """)
    lab.link("eth0", False)
    assert lab.holder("192.0.2.100/24") == "eth2" and lab.holder("192.0.2.102/24") == "eth2"


def test_group_addresses_are_spread_and_rebalanced():
    lab = Lab("""
    groups:
      g:
        interfaces:
          eth0: {}
          eth1: {}
        data: [192.0.2.100/24, 192.0.2.101/24, 192.0.2.102/24, 192.0.2.103/24]
    """)
    assert [len(lab.kernel[n]) for n in ("eth0", "eth1")] == [2, 2]
    lab.link("eth1", False)
    assert len(lab.kernel["eth0"]) == 4
    lab.link("eth1", True)
    assert [len(lab.kernel[n]) for n in ("eth0", "eth1")] == [2, 2]


def test_group_failure_moves_nothing_and_is_logged_once():
    lab = Lab(TWO)
    lab.link("eth1", False)
    before = {n: set(s) for n, s in lab.kernel.items()}
    out = lab.link("eth0", False)
    assert not any(isinstance(a, MoveAddress) for a in out)
    assert lab.kernel == before
    assert "All IP interfaces in group g are now unusable" in lab.logs(out)
    out = lab.link("eth1", True)
    assert "At least 1 IP interface (eth1) in group g is now usable" in lab.logs(out)
    assert lab.holder("192.0.2.100/24") == "eth1"


def test_missing_nic_at_start_is_hosted_elsewhere_and_gets_addresses_back():
    lab = Lab(TWO, present=["eth1"])
    assert lab.holder("192.0.2.100/24") == "eth1"
    assert "moving addresses from missing IPv4 interfaces: eth0 (moved to eth1)" in lab.logs()
    assert "moving addresses from missing IPv6 interfaces: eth0 (moved to eth1)" in lab.logs()
    lab.kernel["eth0"] = set()
    lab.running["eth0"] = True
    lab.do(LinkChanged(lab.info("eth0")))
    assert lab.holder("192.0.2.100/24") == "eth0"
    assert A("192.0.2.10/24") in lab.kernel["eth0"]


def test_missing_nic_with_no_alternative_is_reported():
    lab = Lab("groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n", present=[])
    assert "moving addresses from missing IPv4 interfaces: eth0 (couldn't move; no alternative interface)" \
        in lab.logs()


def test_unplugged_nic_is_a_failure_and_replug_fails_back():
    lab = Lab(TWO)
    lab.kernel["eth0"] = set()                     # the device takes its addresses with it
    out = lab.do(LinkRemoved("eth0", lab.index["eth0"]))
    assert lab.holder("192.0.2.100/24") == "eth1"
    assert "IP interface failure detected on eth0 of group g" in lab.logs(out)
    lab.index["eth0"] = 42
    lab.do(LinkChanged(lab.info("eth0")))
    assert lab.holder("192.0.2.100/24") == "eth0"


def test_restart_adopts_addresses_where_they_are():
    # after a failover, eth0 came back while the daemon was down: FAILBACK=no
    # leaves everything where it is.
    kernel = {"eth0": [], "eth1": ["192.0.2.100/24", "2001:db8:1::100/64", "192.0.2.101/24"]}
    lab = Lab(TWO, failback=False, kernel=kernel)
    assert not any(isinstance(a, (MoveAddress, AddAddress)) and not a.test
                   for a in lab.actions if isinstance(a, (MoveAddress, AddAddress)))
    assert lab.core.nics["eth0"].inactive
    # with FAILBACK=yes the addresses go home
    lab = Lab(TWO, failback=True, kernel=kernel)
    assert lab.holder("192.0.2.100/24") == "eth0"


def test_duplicate_at_start_is_removed_from_all_but_one():
    lab = Lab(TWO, kernel={"eth0": ["192.0.2.100/24"], "eth1": ["192.0.2.100/24"]})
    assert lab.holder("192.0.2.100/24") == "eth0"
    assert any("removing it from eth1" in t for t in lab.logs())


def test_foreign_deletion_is_put_back_and_foreign_copy_removed():
    lab = Lab(TWO)
    lab.kernel["eth0"].discard(A("192.0.2.100/24"))
    out = lab.do(AddressRemoved("eth0", A("192.0.2.100/24")))
    assert lab.holder("192.0.2.100/24") == "eth0"
    assert any("was removed from eth0 by another program" in t for t in lab.logs(out))
    lab.kernel["eth1"].add(A("192.0.2.100/24"))
    out = lab.do(AddressAdded("eth1", A("192.0.2.100/24")))
    assert RemoveAddress("eth1", A("192.0.2.100/24")) in out
    lab.kernel["eth0"].discard(A("192.0.2.10/24"))
    out = lab.do(AddressRemoved("eth0", A("192.0.2.10/24")))
    assert AddAddress("eth0", A("192.0.2.10/24"), test=True) in out


def test_link_down_at_start_is_a_failure():
    lab = Lab(TWO, down=["eth0"])
    assert lab.holder("192.0.2.100/24") == "eth1"
    assert "The link has gone down on eth0" in lab.logs()


def test_flapping_link_only_nic_holds_repair_for_a_minute():
    lab = Lab(STANDBY)
    for _ in range(2):
        lab.link("eth0", False)
        lab.now += 1
        lab.link("eth0", True)
        lab.now += 1
    assert lab.core.nics["eth0"].active
    lab.link("eth0", False)
    lab.now += 1
    out = lab.link("eth0", True)                  # the third link-up within a minute
    assert "The link has come up on eth0 more than 2 times in the last minute; disabling repair " \
           "until it stabilizes" in lab.logs(out)
    assert lab.core.nics["eth0"].failed and lab.holder("192.0.2.100/24") == "eth2"
    deadline = lab.core.next_deadline()
    assert deadline == pytest.approx(1 + timing.LINK_FLAP_WINDOW_S)
    lab.now = deadline
    out = lab.do(Tick())
    assert "IP interface repair detected on eth0 of group g" in lab.logs(out)
    assert lab.holder("192.0.2.100/24") == "eth0"


def test_log_levels_are_errors_for_failures():
    lab = Lab(TWO)
    out = lab.link("eth0", False)
    levels = {a.kind: a.level for a in out if isinstance(a, Log)}
    assert levels["failure"] == logging.ERROR and levels["failover"] == logging.ERROR


@pytest.mark.parametrize("seed", range(20))
def test_random_link_events_keep_the_invariant(seed):
    """Carrier flaps and NIC removals in random order: the invariant is
    checked after every event by Lab.do()."""
    rng = random.Random(seed)
    lab = Lab(STANDBY + "    data: [192.0.2.200/24, \"2001:db8:1::200/64\"]\n", failback=rng.random() < 0.5)
    for _ in range(60):
        lab.now += rng.uniform(0, 30)
        name = rng.choice(["eth0", "eth1", "eth2"])
        r = rng.random()
        if r < 0.8 and lab.core.nics[name].present:
            lab.link(name, not lab.running[name])
        elif lab.core.nics[name].present:
            lab.kernel[name] = set()
            lab.do(LinkRemoved(name, lab.index[name]))
        else:
            lab.index[name] += 10
            lab.running[name] = True
            lab.do(LinkChanged(lab.info(name)))
        if lab.core.next_deadline() is not None and rng.random() < 0.3:
            lab.now = lab.core.next_deadline()
            lab.do(Tick())


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
    assert not any(isinstance(a, (MoveAddress, AddAddress, RemoveAddress)) for a in out)
    out = core.handle(LinkChanged(LinkInfo("eth9", 3, None, True)), 0.0)
    assert "IP interface repair detected on eth9" in [a.text for a in out if isinstance(a, Log)]
    # with the default (yes), NICs in no group are not watched
    core = Core(Config(groups=cfg.groups))
    core.handle(Started((LinkInfo("eth0", 2, None, True), LinkInfo("eth9", 3, None, True)), ()), 0.0)
    assert [i["name"] for i in status(core, 0.0)["interfaces"]] == ["eth0"]


def reload(lab, yaml, **defaults):
    from mpathd.core.events import ConfigReloaded
    cfg = Config(defaults=Defaults(**defaults), groups=parse_groups(textwrap.dedent(yaml), "t"))
    for g in cfg.groups:                         # new NICs already exist in the kernel
        for i in g.interfaces:
            lab.index.setdefault(i.name, len(lab.index) + 1)
            lab.running.setdefault(i.name, True)
            lab.kernel.setdefault(i.name, set())
    return lab.do(ConfigReloaded(cfg, tuple(lab.info(n) for n in lab.running),
                                 tuple((n, a) for n, s in lab.kernel.items() for a in s)))


def test_reload_applies_only_the_difference():
    lab = Lab(STANDBY)
    eth1 = lab.core.nics["eth1"]
    out = reload(lab, STANDBY.replace("eth1: {data: [192.0.2.101/24]}",
                                      "eth1: {data: [192.0.2.101/24, 192.0.2.102/24]}")
                 + "      eth3: {data: [192.0.2.103/24]}\n")
    assert lab.core.nics["eth1"] is eth1                      # untouched NICs keep their state
    assert not any(isinstance(a, MoveAddress) for a in out)
    assert lab.holder("192.0.2.102/24") == "eth1" and lab.holder("192.0.2.103/24") == "eth3"
    assert lab.holder("192.0.2.100/24") == "eth0"
    assert any("configuration reloaded: " in t and "eth3 added to group g" in t
               and "data address 192.0.2.102/24 added" in t for t in lab.logs(out))
    # remove eth0 from the group: its address is no longer configured and goes
    out = reload(lab, STANDBY.replace("      eth0: {data: [192.0.2.100/24]}\n", ""))
    assert A("192.0.2.100/24") not in lab.kernel["eth0"]
    assert RemoveAddress("eth0", A("192.0.2.100/24")) in out
    assert "eth0" not in lab.core.nics


def test_reload_moves_addresses_off_a_nic_that_left():
    lab = Lab(STANDBY + "    data: [192.0.2.200/24]\n")
    lab.link("eth1", False)
    assert lab.holder("192.0.2.101/24") == "eth2"
    reload(lab, STANDBY.replace("      eth2: {standby: true}\n", "") + "    data: [192.0.2.200/24]\n")
    assert lab.holder("192.0.2.101/24") == "eth0"


def test_offline_moves_addresses_and_refuses_the_last_usable():
    from mpathd.core.events import Offline, Online, Refused
    lab = Lab(STANDBY)
    out = lab.do(Offline("eth0"))
    assert lab.holder("192.0.2.100/24") == "eth2"
    assert status(lab.core, lab.now)["interfaces"][0]["state"] == "offline"
    assert not any(isinstance(a, Refused) for a in out)
    assert Refused("interface eth0 is already offline") in lab.do(Offline("eth0"))
    lab.do(Offline("eth1"))
    out = lab.do(Offline("eth2"))
    assert any(isinstance(a, Refused) and "no other functioning" in a.reason for a in out)
    assert lab.core.nics["eth2"].active
    lab.do(Offline("eth2", force=True))
    assert lab.core.nics["eth2"].offline
    lab.do(Online("eth0"))
    assert lab.holder("192.0.2.100/24") == "eth0" and lab.holder("192.0.2.101/24") == "eth0"
    assert Refused("interface eth0 is not offline") in lab.do(Online("eth0"))
    assert any(isinstance(a, Refused) for a in lab.do(Offline("eth9")))


def test_duplicate_mac_offlines_the_later_nic_until_unique():
    lab = Lab(STANDBY)
    eth0_mac = lab.info("eth0").mac
    out = lab.do(LinkChanged(LinkInfo("eth1", lab.index["eth1"], eth0_mac, True)))
    assert "IP interface eth1 has a hardware address which is not unique in group g; offlining" in lab.logs(out)
    assert lab.core.nics["eth1"].offline and lab.holder("192.0.2.101/24") == "eth2"
    out = lab.link("eth1", True)              # its own MAC again
    assert "IP interface eth1 now has a unique hardware address in group g; onlining" in lab.logs(out)
    assert lab.holder("192.0.2.101/24") == "eth1"


# ---- regressions found in review


def test_start_with_a_data_address_on_a_nic_outside_its_group():
    lab = Lab(TWO, failback=False, present=["eth0", "eth1", "eth5"],
              kernel={"eth5": ["192.0.2.100/24"]})
    assert lab.holder("192.0.2.100/24") == "eth0"          # moved into the group, no crash


def test_reload_with_a_new_test_address_reopens_the_probe_socket():
    from mpathd.core.events import StartProbing, StopProbing
    lab = Lab(TWO)
    out = reload(lab, TWO.replace("192.0.2.10/24", "192.0.2.20/24"))
    assert StopProbing("eth0", 4) in out
    assert any(isinstance(a, StartProbing) and a.ifname == "eth0" and str(a.source) == "192.0.2.20"
               for a in out)


def test_reload_with_a_new_prefix_replaces_the_addresses():
    lab = Lab(TWO)
    reload(lab, TWO.replace("192.0.2.100/24", "192.0.2.100/25").replace("192.0.2.101/24", "192.0.2.101/25"))
    assert lab.kernel["eth0"] & {A("192.0.2.100/24"), A("192.0.2.100/25")} == {A("192.0.2.100/25")}
    assert lab.holder("192.0.2.101/25") == "eth1"
    assert not any(A("192.0.2.101/24") in s for s in lab.kernel.values())


def test_a_new_mac_rebuilds_the_announcements():
    lab = Lab(TWO)
    out = lab.do(LinkChanged(LinkInfo("eth0", lab.index["eth0"], "02:aa:00:00:00:01", True)))
    assert [a.mac for a in out if isinstance(a, PrepareInterface)] == ["02:aa:00:00:00:01"]


def test_reload_recomputes_inactive_for_new_and_changed_nics():
    lab = Lab(TWO)
    reload(lab, TWO + "      eth2: {standby: true}\n")
    assert lab.core.nics["eth2"].inactive and lab.kernel["eth2"] == set()
    lab = Lab(STANDBY)                                        # swap which NIC is the standby
    reload(lab, STANDBY.replace("eth2: {standby: true}", "eth2: {}").replace(
        "eth1: {data: [192.0.2.101/24]}", "eth1: {standby: true}"))
    assert lab.core.nics["eth1"].inactive and lab.core.nics["eth2"].active


def test_reload_to_failback_yes_fails_back():
    lab = Lab(TWO, failback=False)
    lab.link("eth0", False)
    lab.link("eth0", True)
    assert lab.holder("192.0.2.100/24") == "eth1"
    reload(lab, TWO, failback=True)
    assert lab.holder("192.0.2.100/24") == "eth0"


def test_with_failback_no_a_nic_that_appears_later_is_used():
    lab = Lab(TWO, failback=False, present=["eth1"])
    assert lab.holder("192.0.2.100/24") == "eth1"
    lab.kernel["eth0"] = set()
    lab.running["eth0"] = True
    out = lab.do(LinkChanged(lab.info("eth0")))
    assert lab.holder("192.0.2.100/24") == "eth0"
    assert not any("repair detected" in t for t in lab.logs(out))


def test_nics_in_no_group_survive_a_reload():
    from mpathd.core.events import ConfigReloaded
    yaml = "groups:\n  g:\n    interfaces:\n      eth0: {data: [192.0.2.100/24]}\n"
    cfg = Config(defaults=Defaults(track_only_groups=False), groups=parse_groups(yaml, "t"))
    core = Core(cfg)
    links = (LinkInfo("eth0", 2, None, True), LinkInfo("eth9", 3, None, True))
    core.handle(Started(links, ()), 0.0)
    core.handle(ConfigReloaded(cfg, links, ()), 0.0)
    assert {i["name"] for i in status(core, 0.0)["interfaces"]} == {"eth0", "eth9"}
