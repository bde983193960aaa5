"""The group policy (mpathd/core/policy.py), one table per rule. A NIC is
written as a short string: its name, then flags: s standby, i INACTIVE,
f failed (not functioning), m missing (not present)."""

import ipaddress
from dataclasses import dataclass

import pytest

from mpathd.core import policy
from mpathd.core.states import GroupState


@dataclass(eq=False)
class M:
    name: str
    standby: bool = False
    inactive: bool = False
    failed: bool = False
    missing: bool = False

    @property
    def present(self):
        return not self.missing

    @property
    def functioning(self):
        return self.present and not self.failed

    @property
    def active(self):
        return self.functioning and not self.inactive


def group(spec: str) -> list[M]:
    """'eth0 eth1:si eth2:f' -> members."""
    out = []
    for word in spec.split():
        name, _, flags = word.partition(":")
        out.append(M(name, "s" in flags, "i" in flags, "f" in flags, "m" in flags))
    return out


def inactive(members) -> str:
    return " ".join(m.name for m in members if m.inactive)


@pytest.mark.parametrize("spec, gone, picked", [
    ("eth0 eth1:i eth2:si", "eth0", "eth2"),        # a standby first
    ("eth0 eth1:i eth2:i", "eth0", "eth2"),         # else the last INACTIVE one
    ("eth0 eth1:i eth2:sif", "eth0", "eth1"),       # a failed standby is no candidate
    ("eth0 eth1", "eth0", None),                    # nothing INACTIVE: nothing to activate
])
def test_activate_another(spec, gone, picked):
    members = group(spec)
    by = {m.name: m for m in members}
    got = policy.activate_another(members, by[gone])
    assert (got.name if got else None) == picked
    if got:
        assert not got.inactive


@pytest.mark.parametrize("spec, nic, repair, failback, after", [
    # a standby stays INACTIVE while the non-standby NICs are all active
    ("eth0 eth1 eth2:s", "eth2", False, True, "eth2"),
    ("eth0 eth1:f eth2:s", "eth2", False, True, ""),
    # a repaired NIC becomes active with FAILBACK=yes, and the standby that stood in steps back
    ("eth0 eth1 eth2:s", "eth0", True, True, "eth2"),
    # with FAILBACK=no a repaired NIC stays out of the way while others are active
    ("eth0 eth1", "eth0", True, False, "eth0"),
    ("eth0 eth1:f", "eth0", True, False, ""),
    # brought online (not a repair): FAILBACK=no does not apply
    ("eth0 eth1", "eth0", False, False, ""),
])
def test_transition_to_running(spec, nic, repair, failback, after):
    members = group(spec)
    by = {m.name: m for m in members}
    policy.transition_to_running(members, by[nic], repair=repair, failback=failback)
    assert inactive(members) == after


@pytest.mark.parametrize("spec, activated", [
    ("eth0:i eth1:si", "eth1"),
    ("eth0 eth1:i", None),                  # one is active already
    ("eth0:f eth1:f", None),                # none functions
])
def test_ensure_one_active(spec, activated):
    got = policy.ensure_one_active(group(spec))
    assert (got.name if got else None) == activated


A = ipaddress.ip_interface
X, Y, Z, G1, G2, G3 = (A(f"192.0.2.{n}/24") for n in (100, 101, 102, 200, 201, 202))


@pytest.mark.parametrize("spec, home, where, desired", [
    # home addresses live on their active home NIC
    ("eth0 eth1", {X: "eth0", Y: "eth1"}, {}, {X: "eth0", Y: "eth1"}),
    # a failed NIC's address goes to the least loaded active NIC, the first in config order on a tie
    ("eth0:f eth1 eth2", {X: "eth0", Y: "eth1"}, {X: "eth0", Y: "eth1"}, {X: "eth2", Y: "eth1"}),
    ("eth0:f eth1 eth2", {X: "eth0"}, {X: "eth0"}, {X: "eth1"}),
    # an address on an active NIC that is not its (inactive) home stays there
    ("eth0:i eth1", {X: "eth0"}, {X: "eth1"}, {X: "eth1"}),
    # group addresses are spread, then rebalanced to differ by at most one
    ("eth0 eth1", {G1: None, G2: None, G3: None}, {}, {G1: "eth0", G2: "eth1", G3: "eth0"}),
    ("eth0 eth1", {G1: None, G2: None, G3: None}, {G1: "eth0", G2: "eth0", G3: "eth0"},
     {G1: "eth1", G2: "eth0", G3: "eth0"}),
    # a group failure moves nothing; an address that is nowhere goes home if its NIC exists
    ("eth0:f eth1:f", {X: "eth0", Y: "eth1"}, {X: "eth1", Y: None}, {X: "eth1", Y: "eth1"}),
    ("eth0:m eth1:f", {X: "eth0"}, {X: None}, {X: "eth1"}),
    ("eth0:m eth1:m", {X: "eth0"}, {X: None}, {X: None}),
])
def test_place(spec, home, where, desired):
    assert policy.place(group(spec), home, where) == desired


@pytest.mark.parametrize("spec, state", [
    ("eth0 eth1", GroupState.OK),
    ("eth0 eth1:i", GroupState.OK),          # INACTIVE still functions
    ("eth0:f eth1", GroupState.DEGRADED),
    ("eth0:m eth1", GroupState.DEGRADED),
    ("eth0:f eth1:m", GroupState.FAILED),
    ("", GroupState.FAILED),
])
def test_group_state(spec, state):
    assert policy.group_state(group(spec)) == state
