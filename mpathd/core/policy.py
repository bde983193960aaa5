"""The group policy: which NICs are active, and where each data address goes.

It follows Solaris IPMP (illumos mpd_probe.c and the kernel's ipmp.c):

* A NIC is *functioning* when it is present, not failed and not offline; it
  is *active* when it is functioning and not INACTIVE. Only active NICs
  carry data addresses.
* When an active NIC fails or goes offline, one INACTIVE functioning NIC is
  activated first, a standby preferred (phyint_activate_another).
* A repaired or new NIC becomes active unless it is a standby and the group
  already has enough active NICs, or FAILBACK=no applies
  (phyint_transition_to_running).
* A home address lives on its home NIC while that NIC is active. Otherwise,
  and for group addresses, an address stays on the active NIC that holds it;
  if that NIC is not active it goes to the active NIC with the fewest data
  addresses. Group addresses are then rebalanced until no two active NICs
  differ by more than one address (ipmp_ill_activate).
* With no active NIC (a group failure) nothing moves.
* A NIC that refused an address family (disable_ipv6=1, say) is passed over
  for that family while it waits for its retry (`barred`); an address that
  no active NIC can take stays where it is.

Everything here is a pure function of the NIC objects it is given.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from ..config import Address
from .states import GroupState


class Member(Protocol):
    name: str
    standby: bool
    inactive: bool

    @property
    def present(self) -> bool: ...
    @property
    def functioning(self) -> bool: ...
    @property
    def active(self) -> bool: ...


def activate_another(members: list[Member], gone: Member | None) -> Member | None:
    """Clear INACTIVE on one functioning INACTIVE member other than `gone`,
    preferring a standby; return it, or None if there was none."""
    candidates = [m for m in members if m is not gone and m.functioning and m.inactive]
    pick = next((m for m in candidates if m.standby), candidates[-1] if candidates else None)
    if pick is not None:
        pick.inactive = False
    return pick


def transition_to_running(members: list[Member], nic: Member, *, repair: bool,
                          failback: bool) -> None:
    """Set `nic`'s INACTIVE flag as it starts working: at start-up, on repair
    (repair=True) or when brought online (repair=False)."""
    others = [m for m in members if m is not nic]
    nnonstandby = sum(1 for m in members if not m.standby)
    nactive = sum(1 for m in others if m.active)
    if nic.standby:
        nic.inactive = nactive >= nnonstandby
    elif not repair or failback:
        nic.inactive = False
        if nactive >= nnonstandby:
            standby = next((m for m in others if m.standby and m.active), None)
            if standby is not None:
                standby.inactive = True
    else:
        # FAILBACK=no: stay out of the way unless the group needs this NIC.
        nic.inactive = nactive > 0


def ensure_one_active(members: list[Member]) -> Member | None:
    """If the group has functioning members but none active (all INACTIVE),
    activate one; the standby preference of activate_another applies."""
    if any(m.active for m in members):
        return None
    return activate_another(members, gone=None)


def place(members: list[Member], home: dict[Address, str | None],
          where: dict[Address, str | None],
          barred: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset()) -> dict[Address, str | None]:
    """Return the desired NIC of every address in `home` (address -> home NIC
    name, or None for a group address), given where each is now and the
    (NIC, family) pairs that take no address."""
    def takes(name: str | None, addr: Address) -> bool:
        return (name, addr.version) not in barred

    by_name = {m.name: m for m in members}
    active = [m for m in members if m.active]
    desired: dict[Address, str | None] = {}
    if not active:
        # Group failure: nothing moves. An address that is nowhere (its NIC
        # vanished, or it was deleted) still gets a place: its home NIC if it
        # exists, else any NIC that does (and takes its family).
        present = [m for m in members if m.present]
        for addr, h in home.items():
            cur = where.get(addr)
            if cur is not None and cur in by_name and by_name[cur].present:
                desired[addr] = cur
            elif h is not None and by_name[h].present and takes(h, addr):
                desired[addr] = h
            else:
                desired[addr] = next((m.name for m in present if takes(m.name, addr)), None)
        return desired

    load = {m.name: 0 for m in active}
    pending: list[Address] = []
    for addr, h in home.items():
        cur = where.get(addr)
        if h is not None and by_name[h].active and takes(h, addr):
            target: str | None = h
        elif cur in load and takes(cur, addr):
            target = cur
        else:
            pending.append(addr)
            continue
        desired[addr] = target
        load[target] += 1           # type: ignore[index]
    for addr in pending:
        fits = [n for n in load if takes(n, addr)]
        if not fits:
            desired[addr] = where.get(addr)           # no active NIC takes it: it stays
            continue
        target = min(fits, key=load.__getitem__)      # first of the least loaded, in config order
        desired[addr] = target
        load[target] += 1

    group_addrs = [a for a, h in home.items() if h is None and desired[a] in load]
    while group_addrs:
        lo = min(load, key=load.__getitem__)
        movable = [a for a in group_addrs if load[desired[a]] - load[lo] > 1 and takes(lo, a)]  # type: ignore[index]
        if not movable:
            break
        addr = max(movable, key=lambda a: load[desired[a]])  # type: ignore[index]
        load[desired[addr]] -= 1                              # type: ignore[index]
        desired[addr] = lo
        load[lo] += 1
    return desired


def group_state(members: Iterable[Member]) -> GroupState:
    """OK: every member usable; DEGRADED: some; FAILED: none."""
    states = [m.functioning for m in members]
    if states and all(states):
        return GroupState.OK
    return GroupState.DEGRADED if any(states) else GroupState.FAILED
