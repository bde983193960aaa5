"""The address ledger: where the kernel has each managed address.

It knows every data address of the groups and where it is (`where`), which
test addresses are installed, every address of this host (never a probe
target) and each NIC's IPv6 link-local address (its probe source). One
classification, classify(), tells a kernel address apart: a test address of
that NIC, a data address, a data address with the wrong prefix, or none of
ours. The same path serves the start, a resync and a change made by
another program.

The ledger is updated as the core emits actions; the kernel reports only
changes made by others, and failures. It decides nothing about placement:
it takes the kernel's word and removes what contradicts one copy per address.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Iterable

from ..config import IP, Address
from .catalogue import Kind
from .events import WARNING, Action, Log, RemoveAddress

if TYPE_CHECKING:
    from .machine import Group, Nic


class Seen(enum.Enum):
    TEST = "test"                # a configured test address of the NIC it is on
    DATA = "data"                # a configured data address
    WRONG_PREFIX = "wrong prefix"  # the IP of a data address with another prefix
    OTHER = "other"              # not ours


class Ledger:
    def __init__(self, emit: Callable[[Action], None]):
        self._emit = emit
        self.where: dict[Address, str | None] = {}          # data address -> NIC holding it
        self.group_of: dict[Address, Group] = {}
        self.tests_present: set[tuple[str, Address]] = set()
        self.own: set[IP] = set()                            # every address of this host
        self.link_local: dict[str, ipaddress.IPv6Address] = {}
        self._by_ip: dict[IP, Address] = {}
        self._tests: dict[tuple[str, IP], Address] = {}
        self._configured: set[IP] = set()
        self._nics: dict[str, Nic] = {}

    def rebuild(self, groups: Iterable[Group], nics: dict[str, Nic]) -> None:
        """Take the addresses of a (new) configuration; every data address
        is nowhere until the kernel or a placement says otherwise."""
        self._nics = nics
        self._tests = {(n.name, t.ip): t for n in nics.values() for t in n.cfg.test}
        self.where, self.group_of, self._by_ip = {}, {}, {}
        self._configured = {ip for _, ip in self._tests}
        for g in groups:
            for addr in g.home():
                self.where[addr] = None
                self.group_of[addr] = g
                self._by_ip[addr.ip] = addr
                self._configured.add(addr.ip)
        self.own = set(self._configured)

    # ------------------------------------------------------ classification

    def classify(self, ifname: str, kaddr: Address) -> tuple[Seen, Address | None]:
        """What a kernel address on `ifname` is to us, and the configured
        address it stands for."""
        test = self._tests.get((ifname, kaddr.ip))
        if test is not None:
            return Seen.TEST, test
        addr = self._by_ip.get(kaddr.ip)
        if addr is None:
            return Seen.OTHER, None
        return (Seen.DATA if addr == kaddr else Seen.WRONG_PREFIX), addr

    def _seen(self, ifname: str, kaddr: Address) -> tuple[Seen, Address | None]:
        """An address is present: note it as local, and classify it; a test
        address is installed, a wrong prefix is replaced."""
        self.own.add(kaddr.ip)
        if ifname in self._nics and kaddr.version == 6 and kaddr.ip.is_link_local:
            self.link_local.setdefault(ifname, kaddr.ip)
        seen, addr = self.classify(ifname, kaddr)
        if seen is Seen.TEST:
            self.tests_present.add((ifname, addr))    # type: ignore[arg-type]
        elif seen is Seen.WRONG_PREFIX:
            self._log(f"{kaddr} on {ifname} has not the configured prefix of {addr}; replacing it",
                      Kind.WRONG_PREFIX, addr, ifname)  # type: ignore[arg-type]
            self._emit(RemoveAddress(ifname, kaddr))
        return seen, addr

    # ------------------------------------------------------ what the kernel says

    def learn(self, addresses: Iterable[tuple[str, Address]]) -> dict[Address, list[str]]:
        """Take the kernel's word for where managed addresses are (at start
        and on every resync). Copies of a data address on several NICs are
        removed but for one, preferring an active member of its group; one
        found only outside its group is moved into it by the placement that
        follows. Returns the holders of each data address found."""
        observed: dict[Address, list[str]] = defaultdict(list)
        self.tests_present = set()
        self.own = set(self._configured)
        self.link_local = {}
        for ifname, kaddr in addresses:
            seen, addr = self._seen(ifname, kaddr)
            if seen is Seen.DATA:
                observed[addr].append(ifname)           # type: ignore[index]
        for addr in self.where:
            holders = observed.get(addr, [])
            members = [n for n in holders if self._nics.get(n) in self.group_of[addr].nics]
            keep = next((n for n in members if self._nics[n].active), (members or holders or [None])[0])
            self.where[addr] = keep
            for other in holders:
                if other != keep:
                    self._remove_duplicate(addr, other, keep)
        return observed

    def added(self, ifname: str, kaddr: Address) -> None:
        """Another program added an address."""
        seen, addr = self._seen(ifname, kaddr)
        if seen is not Seen.DATA:
            return
        holder = self.where[addr]                       # type: ignore[index]
        if holder == ifname:
            return
        if holder is None:
            self.where[addr] = ifname          # someone put it back for us; adopt it (placement
            return                             # moves it if that NIC is not the right one)
        self._remove_duplicate(addr, ifname, holder)    # type: ignore[arg-type]

    def removed(self, ifname: str, kaddr: Address, group: str, teardown: bool = False) -> None:
        """Another program deleted an address: a managed one is put back
        (test addresses by the core's next settle, data addresses by the
        next placement). `group` is that of the NIC it was on. With
        `teardown` the NIC is down and the kernel took the address itself
        (IPv6 addresses when a NIC is set down, all of them when it is
        removed): the same, without blaming another program."""
        if kaddr.ip not in self._configured:
            self.own.discard(kaddr.ip)
        if self.link_local.get(ifname) == kaddr.ip:
            del self.link_local[ifname]
        seen, addr = self.classify(ifname, kaddr)
        if seen is Seen.TEST and (ifname, addr) in self.tests_present:
            self.tests_present.discard((ifname, addr))  # type: ignore[arg-type]
            if not teardown:
                self._emit(Log(WARNING, f"test address {addr} was removed from {ifname} by another "
                                        f"program; putting it back", Kind.ADDRESS_RESTORED, group, ifname))
        elif seen is Seen.DATA and self.where[addr] == ifname:  # type: ignore[index]
            self.where[addr] = None                     # type: ignore[index]
            if not teardown:
                self._log(f"data address {addr} was removed from {ifname} by another program; "
                          f"putting it back", Kind.ADDRESS_RESTORED, addr, ifname)  # type: ignore[arg-type]

    def gone(self, ifname: str) -> None:
        """The device is gone and took its addresses with it."""
        for addr, holder in self.where.items():
            if holder == ifname:
                self.where[addr] = None
        self.tests_present = {t for t in self.tests_present if t[0] != ifname}
        self.link_local.pop(ifname, None)

    def renamed(self, old: str, new: str) -> list[Address]:
        """A NIC was renamed and kept its addresses: its data addresses are
        now on `new`. Returns the test addresses installed on it under the
        old name (they still are, under the new one)."""
        for addr, holder in self.where.items():
            if holder == old:
                self.where[addr] = new
        if old in self.link_local:
            self.link_local[new] = self.link_local.pop(old)
        tests = [t for name, t in self.tests_present if name == old]
        self.tests_present = {t for t in self.tests_present if t[0] != old}
        return tests

    def _remove_duplicate(self, addr: Address, ifname: str, holder: str | None) -> None:
        self._log(f"data address {addr} appeared on {ifname} while {holder} holds it; "
                  f"removing it from {ifname}", Kind.DUPLICATE_REMOVED, addr, ifname)
        self._emit(RemoveAddress(ifname, addr))

    def _log(self, text: str, kind: Kind, addr: Address, ifname: str) -> None:
        self._emit(Log(WARNING, text, kind, self.group_of[addr].name, ifname))
