"""The sans-I/O core: interface and group state machines and the bookkeeping
of where every data address is.

Core.handle(event, now) takes one event (events.py) and the time it is
handled at, and returns the actions to carry out, in order. It never reads a
clock: every decision made for one event sees the same `now`, and tests move
time by hand. The core's
belief of where each address is (`where`) is updated as it emits actions;
adapters report only changes made by others, and failures.
"""

from __future__ import annotations

import ipaddress
import random
from collections import defaultdict
from typing import Iterable

from . import policy, targets, timing
from .catalogue import Kind
from ..config import IP, Address, Config, GroupConfig, InterfaceConfig
from .detect import LinkWatcher
from .events import (ERR, INFO, WARNING, Action, ActionFailed, AddAddress, AddressAdded,
                     AddressRemoved, Announce, ConfigReloaded, Event, LinkChanged, LinkInfo,
                     LinkRemoved, Log, MoveAddress, Offline, Online, PrepareInterface, ProbeReply,
                     Refused, ReleaseInterface,
                     RemoveAddress, Resynced, RoutesChanged, SendProbe, Started, StartProbing,
                     StateChanged, StopProbing, Tick)
from .probe import KIND_DISCOVERY, Prober, Target


class Nic:
    """One NIC of a group, as the core sees it."""

    def __init__(self, cfg: InterfaceConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.standby = cfg.standby
        self.index: int | None = None
        self.mac: str | None = None
        self.link = LinkWatcher()
        self.failed = False          # the verdicts say it does not pass traffic
        self.admin_offline = False   # taken out of service by the operator
        self.hwaddrdup = False       # offlined: its MAC is another member's
        self.inactive = False        # functioning but kept out of use (standby, FAILBACK=no)
        self.repair_held_until: float | None = None   # link-flap damping
        self.fresh = False           # appeared since start: its first repair is its creation
        self.probers: dict[int, Prober] = {}          # by address family
        self.counts = {"failures": 0, "repairs": 0}
        self.link_local: ipaddress.IPv6Address | None = None

    @property
    def present(self) -> bool:
        return self.index is not None

    @property
    def offline(self) -> bool:
        return self.admin_offline or self.hwaddrdup

    def take_link(self, old: "Nic") -> None:
        """Carry what the kernel told us about a NIC over a reload."""
        self.index, self.mac, self.link, self.link_local = old.index, old.mac, old.link, old.link_local
        self.repair_held_until, self.failed = old.repair_held_until, old.failed
        self.admin_offline, self.hwaddrdup = old.admin_offline, old.hwaddrdup
        self.counts = old.counts

    @property
    def functioning(self) -> bool:
        return self.present and not self.failed and not self.offline

    @property
    def active(self) -> bool:
        return self.functioning and not self.inactive

    @property
    def probing(self) -> bool:
        return bool(self.probers)

    def capable(self) -> list[Prober]:
        """Probers that can judge the NIC: they have targets, or they failed
        and must earn their repair."""
        return [p for p in self.probers.values() if p.targets or p.verdict == "failed"]

    def probe_state(self) -> str:
        if not self.probers or self.offline:
            return "disabled"
        capable = self.capable()
        if not capable:
            return "unknown"
        # failure needs every probing family to fail; repair needs one
        return "failed" if all(p.verdict == "failed" for p in capable) else "ok"

    def last_ack(self) -> float | None:
        return max((p.last_ack for p in self.probers.values() if p.last_ack is not None), default=None)

    def source(self, family: int) -> IP | None:
        return self.cfg.test[0].ip if family == 4 else self.link_local

    def state(self) -> str:
        if self.offline:
            return "offline"
        if self.failed or not self.present:
            return "failed"
        return "unknown" if self.probe_state() == "unknown" else "ok"


class Group:
    def __init__(self, cfg: GroupConfig, nics: list[Nic]):
        self.cfg = cfg
        self.name = cfg.name
        self.nics = nics
        self.state: str | None = None  # unknown until the first settle
        self.unusable_logged = False
        self.user_fdt = self.fdt = 0.0  # seconds; fdt rises above user_fdt when RTTs demand
        self.counts = {"failovers": 0, "failbacks": 0}
        self.last_raise: float | None = None

    @property
    def interval(self) -> float:
        return timing.probe_interval(self.fdt)

    def home(self) -> dict[Address, str | None]:
        out: dict[Address, str | None] = {}
        for nic in self.nics:
            for a in nic.cfg.data:
                out[a] = nic.name
        for a in self.cfg.data:
            out[a] = None
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _family(addr: Address) -> str:
    return "IPv4" if addr.version == 4 else "IPv6"


class Core:
    def __init__(self, config: Config, rng: random.Random | None = None):
        self.now = 0.0                      # the time of the event being handled
        self.rng = rng or random.Random()
        self.routes: tuple = ()
        self.own: set[IP] = set()           # every address of this host: never a probe target
        self._dirty = True
        self.config = config
        self.groups: list[Group] = []
        self.nics: dict[str, Nic] = {}
        self.where: dict[Address, str | None] = {}          # data address -> NIC holding it
        self.tests_present: set[tuple[str, Address]] = set()
        self._out: list[Action] = []
        self._summary = ""
        self.started = False
        # TRACK_INTERFACES_ONLY_WITH_GROUPS=no: every other NIC joins the
        # anonymous group, which only detects and reports (in.mpathd's "").
        self.track_all = not config.defaults.track_only_groups
        self.anon = Group(GroupConfig("", ()), [])
        self._build(config)

    # ------------------------------------------------------------ plumbing

    def _build(self, config: Config, old_nics: dict[str, Nic] | None = None,
               old_groups: dict[str, Group] | None = None) -> None:
        """Create the groups and NICs of `config`. On a reload, NICs that stay
        in their group keep their object, link state, probe history, targets
        and RTTs; a group keeps its state and adapted FDT unless the
        configured FDT changed."""
        old_nics, old_groups = old_nics or {}, old_groups or {}
        self.groups, self.nics = [], {}
        for gcfg in config.groups:
            g = Group(gcfg, [])
            og = old_groups.get(gcfg.name)
            g.user_fdt = g.fdt = config.defaults.fdt_ms / 1000
            if og is not None:
                g.state, g.unusable_logged, g.counts = og.state, og.unusable_logged, og.counts
                if og.user_fdt == g.user_fdt:
                    g.fdt, g.last_raise = og.fdt, og.last_raise
            self.groups.append(g)
            for icfg in gcfg.interfaces:
                old = old_nics.get(icfg.name)
                old_test = old.cfg.test if old is not None else ()
                if old is not None and old.cfg.group == icfg.group:
                    nic = old
                    nic.cfg, nic.standby = icfg, icfg.standby
                else:
                    nic = Nic(icfg)
                    if old is not None:
                        nic.take_link(old)
                g.nics.append(nic)
                self.nics[nic.name] = nic
                families = ([4] if icfg.test else []) + ([6] if icfg.test_link_local else [])
                kept = {f: p for f, p in nic.probers.items()
                        if f in families and (f == 6 or old_test == icfg.test)}
                for f, p in nic.probers.items():
                    if f not in kept and p.running:
                        self._out.append(StopProbing(nic.name, f))
                nic.probers = {f: kept.get(f) or Prober(f, g.interval, self.rng) for f in families}
                for p in nic.probers.values():
                    p.interval = g.interval
        self._group_by_nic = {n.name: g for g in self.groups for n in g.nics}
        self.addr_group: dict[Address, Group] = {}
        self.by_ip: dict = {}
        self.configured: set[IP] = {t.ip for n in self.nics.values() for t in n.cfg.test}
        self.where = {}
        for g in self.groups:
            for addr in g.home():
                self.where[addr] = None
                self.addr_group[addr] = g
                self.by_ip[addr.ip] = addr
                self.configured.add(addr.ip)
        self.own = set(self.configured)
        self._stranded: set[Address] = set()

    def _log(self, level: int, text: str, kind: Kind, group: str | None = None,
             ifname: str | None = None) -> None:
        self._out.append(Log(level, text, kind, group, ifname))

    def group_of(self, nic: Nic) -> Group:
        return self._group_by_nic.get(nic.name, self.anon)

    def _find(self, name: str) -> Nic | None:
        return self.nics.get(name) or next((n for n in self.anon.nics if n.name == name), None)

    def _watch_anonymous(self, link: LinkInfo) -> Nic | None:
        """A NIC in no group, tracked when TRACK_INTERFACES_ONLY_WITH_GROUPS=no
        (loopback and point-to-point links excepted)."""
        if not self.track_all or link.loopback_or_p2p:
            return None
        nic = Nic(InterfaceConfig(link.name, ""))
        self.anon.nics.append(nic)
        return nic

    @staticmethod
    def _of(g: Group) -> str:
        return f" of group {g.name}" if g.name else ""

    def _managed(self, addr: Address) -> Address | None:
        """The configured data address with the same IP as `addr`, if any."""
        return self.by_ip.get(addr.ip)

    def next_deadline(self) -> float | None:
        """The earliest moment a Tick has work: a probe to send or expire, a
        probe socket to retry, a flap hold to end. Read on every turn of the
        daemon's loop, so one pass."""
        times = [n.repair_held_until for n in self.anon.nics if n.repair_held_until is not None]
        for n in self.nics.values():
            if n.repair_held_until is not None:
                times.append(n.repair_held_until)
            for p in n.probers.values():
                if not p.running and p.start_after > 0:
                    times.append(p.start_after)
                d = p.deadline()
                if d is not None:
                    times.append(d)
        return min(times) if times else None

    # ------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> list[Action]:
        self.now = now
        self._out = []
        self._dirty = not isinstance(event, (ProbeReply, Tick))
        match event:                                 # the probe path first
            case ProbeReply():
                self._probe_reply(event)
            case Tick():
                self._tick()
            case Started():
                self._start(event)
            case Resynced():
                self._resync(event.links, event.addresses)
            case LinkChanged():
                self._link_changed(event.link)
            case LinkRemoved():
                self._link_removed(event.name, event.index)
            case AddressAdded():
                self._address_added(event.ifname, event.address)
            case AddressRemoved():
                self._address_removed(event.ifname, event.address)
            case RoutesChanged():
                self.routes = event.routes
            case ActionFailed():
                self._log(ERR, f"could not carry out {event.action}: {event.error}", Kind.ACTION_FAILED)
                if isinstance(event.action, StartProbing):
                    self._probe_start_failed(event.action)
            case ConfigReloaded():
                self._reload(event)
            case Offline():
                self._offline(event.ifname, event.force)
            case Online():
                self._online(event.ifname)
        if self._dirty:
            self._settle()
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------ reload

    def _reload(self, ev: ConfigReloaded) -> None:
        """Apply only what differs between the running and the new config."""
        new = ev.config
        old_cfg, old_where, old_tests = self.config, dict(self.where), set(self.tests_present)
        old_nics = {**{n.name: n for n in self.anon.nics}, **self.nics}
        old_cfgs = {name: nic.cfg for name, nic in old_nics.items()}
        old_groups = {g.name: g for g in self.groups}
        old_homes = {g.name: set(g.home()) for g in self.groups}
        changes: list[str] = []
        self.config = new
        self.track_all = not new.defaults.track_only_groups
        self.anon.nics = []             # rebuilt from the kernel's links by the Resynced that follows
        self._build(new, old_nics, old_groups)
        changes += [f"{n} added to group {nic.cfg.group}" for n, nic in self.nics.items()
                    if n not in old_nics]
        for name, old in old_nics.items():
            nic = self.nics.get(name)
            if nic is not None and old.cfg.group == nic.cfg.group:
                if old.cfg != nic.cfg:
                    changes.append(f"{name} changed")
                continue
            if old.cfg.group:
                changes.append(f"{name} left group {old.cfg.group}"
                               + (f" for group {nic.cfg.group}" if nic else ""))
            elif nic is not None:
                changes.append(f"{name} joined group {nic.cfg.group}")
            if old.cfg.group and nic is None:
                for f, p in old.probers.items():
                    if p.running:
                        self._out.append(StopProbing(name, f))
                if old.present:
                    self._out.append(ReleaseInterface(name))
        for addr, holder in old_where.items():
            if addr in self.where:
                self.where[addr] = holder
            else:
                changes.append(f"data address {addr} removed")
                if holder is not None:
                    self._out.append(RemoveAddress(holder, addr))
        changes += [f"data address {a} added" for a in self.where if a not in old_where]
        self.tests_present = set()
        for ifname, t in old_tests:
            nic = self.nics.get(ifname)
            if nic is not None and t in nic.cfg.test:
                self.tests_present.add((ifname, t))
            else:
                self._out.append(RemoveAddress(ifname, ipaddress.ip_interface(f"{t.ip}/{t.max_prefixlen}")))
        for g in self.groups:
            grew = (set(g.home()) != old_homes.get(g.name, set())
                    or old_cfg.defaults.fdt_ms != new.defaults.fdt_ms)
            for nic in g.nics:
                joined = nic.name not in old_nics or old_nics[nic.name].cfg.group != g.name
                if nic.present and (joined or grew):
                    self._out.append(self._prepare(nic, g))
        for key in ("fdt_ms", "failback", "track_only_groups"):
            before, after = getattr(old_cfg.defaults, key), getattr(new.defaults, key)
            if before != after:
                changes.append(f"{key} {before} -> {after}")
        changes += [f"group {n} removed" for n in old_groups if n not in {g.name for g in self.groups}]
        changes += [f"group {g.name} added" for g in self.groups if g.name not in old_groups]
        self._resync(ev.links, ev.addresses)           # new members take their links
        failback_on = new.defaults.failback and not old_cfg.defaults.failback
        for g in self.groups:
            for nic in g.nics:
                before = old_cfgs.get(nic.name)
                changed = (before is None or before.group != g.name or before.standby != nic.standby
                           or (failback_on and nic.inactive and not nic.standby))
                if changed and nic.functioning:
                    # as if it had just been created (Solaris re-plumbs it)
                    policy.transition_to_running(g.nics, nic, repair=False, failback=new.defaults.failback)
            policy.ensure_one_active(g.nics)
        self._log(INFO, "configuration reloaded: " + ("; ".join(changes) or "no changes"), Kind.RELOAD)

    # ------------------------------------------------------- operator requests

    def _offline(self, ifname: str, force: bool) -> None:
        nic = self.nics.get(ifname)
        if nic is None:
            self._out.append(Refused(f"{ifname} is not in an IPMP group"))
            return
        if nic.admin_offline:
            self._out.append(Refused(f"interface {ifname} is already offline"))
            return
        g = self.group_of(nic)
        if not force and not any(m.functioning for m in g.nics if m is not nic):
            self._out.append(Refused(f"cannot offline {ifname}: no other functioning interfaces are "
                                     f"in its IPMP group {g.name} (use --force to take it offline anyway)"))
            return
        was_active = nic.active
        nic.admin_offline, nic.inactive = True, False
        if was_active:
            policy.activate_another(g.nics, nic)
        self._log(ERR, f"IP interface {ifname} of group {g.name} taken offline"
                       + (" (forced: it was the last usable one)" if force else ""), Kind.OFFLINE, g.name, ifname)

    def _online(self, ifname: str) -> None:
        nic = self.nics.get(ifname)
        if nic is None:
            self._out.append(Refused(f"{ifname} is not in an IPMP group"))
            return
        if not nic.admin_offline:
            self._out.append(Refused(f"interface {ifname} is not offline"))
            return
        g = self.group_of(nic)
        nic.admin_offline = False
        self._log(ERR, f"IP interface {ifname} of group {g.name} brought online", Kind.ONLINE, g.name, ifname)
        if nic.functioning:
            policy.transition_to_running(g.nics, nic, repair=False, failback=self.config.defaults.failback)

    def _check_hwaddrs(self, g: Group) -> None:
        """A member whose MAC another member already has is offlined (the
        later one in the configuration), and onlined when it is unique again."""
        seen: set[str] = set()
        for nic in g.nics:
            dup = nic.present and nic.mac is not None and nic.mac in seen
            if nic.present and nic.mac is not None and not dup:
                seen.add(nic.mac)
            if dup and not nic.hwaddrdup:
                was_active = nic.active
                nic.hwaddrdup, nic.inactive = True, False
                if was_active:
                    policy.activate_another(g.nics, nic)
                self._log(ERR, f"IP interface {nic.name} has a hardware address which is not unique in "
                               f"group {g.name}; offlining", Kind.HWADDR_DUPLICATE, g.name, nic.name)
            elif not dup and nic.hwaddrdup:
                nic.hwaddrdup = False
                self._log(ERR, f"IP interface {nic.name} now has a unique hardware address in group "
                               f"{g.name}; onlining", Kind.HWADDR_UNIQUE, g.name, nic.name)
                if nic.functioning:
                    policy.transition_to_running(g.nics, nic, repair=False,
                                                 failback=self.config.defaults.failback)

    def _start(self, ev: Started) -> None:
        self.started = True
        for link in ev.links:
            nic = self.nics.get(link.name) or self._watch_anonymous(link)
            if nic is not None:
                self._attach(nic, link)
        observed = self._learn_addresses(ev.addresses)
        for nic in [*self.nics.values(), *self.anon.nics]:
            # Not working at start: failed before any activation is decided.
            # A missing NIC is reported when its addresses are placed.
            if nic.present and not self._works(nic):
                g = self.group_of(nic)
                self._log(ERR, f"The link has gone down on {nic.name}", Kind.LINK_DOWN, g.name or None, nic.name)
                self._log(ERR, f"IP interface failure detected on {nic.name}{self._of(g)}",
 Kind.FAILURE, g.name or None, nic.name)
            nic.failed = not self._works(nic)
        failback = self.config.defaults.failback
        for g in self.groups:
            # Adopt what the kernel shows: a functioning NIC that holds data
            # addresses is active, so that a restart moves nothing healthy.
            hosting = {nic for addrs in observed.values() for nic in addrs}
            for nic in g.nics:
                if nic.functioning and nic.name in hosting:
                    nic.inactive = False
            for nic in g.nics:
                if not nic.functioning or nic.name in hosting:
                    continue
                elsewhere = any(observed.get(a) and nic.name not in observed[a]
                                and (holder := self.nics.get(observed[a][0])) is not None
                                and holder.functioning for a in nic.cfg.data)
                if not nic.standby and not failback and elsewhere:
                    nic.inactive = True      # it was repaired under FAILBACK=no before the restart
                else:
                    policy.transition_to_running(g.nics, nic, repair=False, failback=failback)
            policy.ensure_one_active(g.nics)

    def _resync(self, links: Iterable[LinkInfo], addresses: Iterable[tuple[str, Address]]) -> None:
        by_name = {link.name: link for link in links}
        for nic in [*self.nics.values(), *self.anon.nics]:
            if nic.name not in by_name and nic.present:
                self._link_removed(nic.name, nic.index)  # type: ignore[arg-type]
        for link in by_name.values():
            self._link_changed(link)
        self._learn_addresses(addresses)

    def _learn_addresses(self, addresses: Iterable[tuple[str, Address]]) -> dict[Address, list[str]]:
        """Take the kernel's word for where managed addresses are. Copies of a
        data address on several NICs are removed but for one, preferring an
        active member of its group; one found only outside its group is moved
        into it by the placement that follows."""
        observed: dict[Address, list[str]] = defaultdict(list)
        self.tests_present = set()
        self.own = set(self.configured)
        for nic in self.nics.values():
            nic.link_local = None
        for ifname, kaddr in addresses:
            self._note_local(ifname, kaddr, True)
            nic = self.nics.get(ifname)
            if nic is not None and any(kaddr.ip == t.ip for t in nic.cfg.test):
                self.tests_present.add((ifname, next(t for t in nic.cfg.test if t.ip == kaddr.ip)))
                continue
            addr = self._managed(kaddr)
            if addr is None:
                continue
            if addr != kaddr:
                self._wrong_prefix(ifname, kaddr, addr)
                continue
            observed[addr].append(ifname)
        for addr in self.where:
            holders = observed.get(addr, [])
            members = [n for n in holders if self.nics.get(n) in self.addr_group[addr].nics]
            keep = next((n for n in members if self.nics[n].active), (members or holders or [None])[0])
            self.where[addr] = keep
            for other in holders:
                if other != keep:
                    self._remove_duplicate(addr, other, keep)  # type: ignore[arg-type]
        return observed

    def _attach(self, nic: Nic, link: LinkInfo) -> str | None:
        """Record a NIC's link; return 'up' or 'down' if its carrier changed."""
        if nic.index != link.index:
            if nic.present:                    # re-plugged under the same name: a new device
                self._detach(nic)
            nic.index, nic.mac = link.index, link.mac
            if nic.cfg.group:                  # NICs in no group are watched, never touched
                self._out.append(self._prepare(nic, self.group_of(nic)))
        elif nic.mac != link.mac:
            nic.mac = link.mac
            if nic.cfg.group:                  # its announcements must carry the new MAC
                self._out.append(self._prepare(nic, self.group_of(nic)))
        return nic.link.observe(link.running)

    def _prepare(self, nic: Nic, g: Group) -> PrepareInterface:
        return PrepareInterface(nic.name, nic.index, nic.mac, tuple(g.home()),  # type: ignore[arg-type]
                                timing.neigh_retrans_ms(round(g.user_fdt * 1000)))

    def _detach(self, nic: Nic) -> None:
        """The device is gone and took its addresses with it."""
        nic.index = None
        nic.link = LinkWatcher()
        nic.link_local = None
        for p in nic.probers.values():
            p.require_repair()
        for addr, holder in self.where.items():
            if holder == nic.name:
                self.where[addr] = None
        self.tests_present = {t for t in self.tests_present if t[0] != nic.name}
        self._out.append(ReleaseInterface(nic.name))

    def _link_changed(self, link: LinkInfo) -> None:
        nic = self._find(link.name) or self._watch_anonymous(link)
        if nic is None:
            return
        g = self.group_of(nic)
        group = g.name or None
        appeared = not nic.present or nic.index != link.index
        if appeared:
            self._log(INFO, f"IP interface {nic.name}{self._of(g)} is present (index {link.index})",
 Kind.NIC_ADDED, group, nic.name)
        if appeared and self.started and nic.failed:
            nic.fresh = True
        change = self._attach(nic, link)
        if change == "down":
            self._log(ERR, f"The link has gone down on {nic.name}", Kind.LINK_DOWN, group, nic.name)
            for p in nic.probers.values():
                p.require_repair()            # repair needs fresh answers after the link returns
        elif change == "up":
            self._log(ERR, f"The link has come up on {nic.name}", Kind.LINK_UP, group, nic.name)
            self._check_flapping(nic)

    def _check_flapping(self, nic: Nic) -> None:
        now = self.now
        if not nic.probing:
            until = nic.link.flap_hold_until(now)
            if until is not None and nic.failed:
                nic.repair_held_until = until
                self._log(ERR, f"The link has come up on {nic.name} more than "
                               f"{timing.LINK_UP_PERMIN} times in the last minute; disabling repair "
                               f"until it stabilizes", Kind.FLAPPING, self.group_of(nic).name or None, nic.name)
        nic.link.record_up(now)

    def _link_removed(self, name: str, index: int) -> None:
        nic = self._find(name)
        if nic is None or nic.index != index:
            return
        g = self.group_of(nic)
        self._log(ERR, f"IP interface {nic.name}{self._of(g)} has been removed from kernel",
 Kind.NIC_REMOVED, g.name or None, nic.name)
        if g is self.anon:
            self.anon.nics.remove(nic)
            return
        self._detach(nic)

    def _wrong_prefix(self, ifname: str, kaddr: Address, addr: Address) -> None:
        """A managed IP with another prefix than configured (the config
        changed, or someone added it by hand): replace it."""
        group = self.addr_group[addr].name
        self._log(WARNING, f"{kaddr} on {ifname} has not the configured prefix of {addr}; replacing it",
 Kind.WRONG_PREFIX, group, ifname)
        self._out.append(RemoveAddress(ifname, kaddr))

    def _note_local(self, ifname: str, kaddr: Address, present: bool) -> None:
        """Keep the set of local addresses, and each NIC's link-local address
        (the source of its IPv6 probes)."""
        if present:
            self.own.add(kaddr.ip)
        elif kaddr.ip not in self.configured:
            self.own.discard(kaddr.ip)
        nic = self.nics.get(ifname)
        if nic is not None and kaddr.version == 6 and kaddr.ip.is_link_local:
            if present and nic.link_local is None:
                nic.link_local = kaddr.ip
            elif not present and nic.link_local == kaddr.ip:
                nic.link_local = None

    def _address_added(self, ifname: str, kaddr: Address) -> None:
        self._note_local(ifname, kaddr, True)
        nic = self.nics.get(ifname)
        if nic is not None:
            for t in nic.cfg.test:
                if t.ip == kaddr.ip:
                    self.tests_present.add((ifname, t))
                    return
        addr = self._managed(kaddr)
        if addr is None:
            return
        if addr != kaddr:
            self._wrong_prefix(ifname, kaddr, addr)
            return
        holder = self.where[addr]
        if holder == ifname:
            return
        if holder is None:
            self.where[addr] = ifname          # someone put it back for us; adopt it (placement
            return                             # moves it if that NIC is not the right one)
        self._remove_duplicate(addr, ifname, holder)

    def _remove_duplicate(self, addr: Address, ifname: str, holder: str | None) -> None:
        group = self.addr_group[addr].name
        self._log(WARNING, f"data address {addr} appeared on {ifname} while {holder} holds it; "
                           f"removing it from {ifname}", Kind.DUPLICATE_REMOVED, group, ifname)
        self._out.append(RemoveAddress(ifname, addr))

    def _address_removed(self, ifname: str, kaddr: Address) -> None:
        self._note_local(ifname, kaddr, False)
        nic = self.nics.get(ifname)
        if nic is not None:
            for t in nic.cfg.test:
                if t.ip == kaddr.ip and (ifname, t) in self.tests_present:
                    self.tests_present.discard((ifname, t))
                    self._log(WARNING, f"test address {t} was removed from {ifname} by another "
                                       f"program; putting it back", Kind.ADDRESS_RESTORED,
                              self.group_of(nic).name, ifname)
                    return
        addr = self._managed(kaddr)
        if addr is None or addr != kaddr or self.where[addr] != ifname:
            return
        self.where[addr] = None
        group = self.addr_group[addr].name
        self._log(WARNING, f"data address {addr} was removed from {ifname} by another program; "
                           f"putting it back", Kind.ADDRESS_RESTORED, group, ifname)

    def _tick(self) -> None:
        now = self.now
        for nic in [*self.nics.values(), *self.anon.nics]:
            if nic.repair_held_until is not None and now >= nic.repair_held_until:
                nic.repair_held_until = None
                self._dirty = True
            for p in nic.probers.values():
                if 0 < p.start_after <= now:
                    p.start_after = 0.0            # time to try the socket again
                    self._dirty = True
        for g in self.groups:
            for nic in g.nics:
                due = False
                for fam, p in nic.probers.items():
                    deadline = p.deadline()
                    if deadline is not None and deadline <= now:
                        self._run_prober(g, nic, fam, p, now)
                        due = True
                if due:
                    self._judge(g, nic)

    def _run_prober(self, g: Group, nic: Nic, fam: int, p: Prober, now: float) -> None:
        def inst() -> str:
            return f"(inet{'' if fam == 4 else '6'} {nic.name})"
        for t in p.expire(now):
            p.drop_target(t, now)
            self._log(INFO, f"probe target {t.addr} {inst()} stopped answering while others answer; "
                            f"probing the others", Kind.TARGET_DEAD, g.name, nic.name)
        probes, missed = p.due(now)
        if missed:
            self._log(INFO, f"missed sending {missed} probes {inst()}: mpathd was not scheduled "
                            f"in time", Kind.PROBES_MISSED, g.name, nic.name)
        for pr in probes:
            self._out.append(SendProbe(nic.name, fam, pr.dst, pr.seq, pr.nonce, pr.kind))
        if (not p.targets and p.discoveries_unanswered >= timing.NUM_PROBE_FAILS
                and not p.no_targets_reported):
            p.no_targets_reported = True
            self._log(ERR, f"No probe targets found {inst()}: nothing answered an echo to "
                           f"{'224.0.0.1' if fam == 4 else 'ff02::1'}; probe-based failure detection "
                           f"is not possible on {nic.name} until a target is configured or answers",
 Kind.NO_TARGETS, g.name, nic.name)

    def _probe_reply(self, ev: ProbeReply) -> None:
        nic = self.nics.get(ev.ifname)
        p = nic.probers.get(ev.family) if nic else None
        if p is None or not p.running:
            return
        g = self.group_of(nic)
        if ev.kind == KIND_DISCOVERY:
            if (ev.src not in self.own and p.discovery(ev.nonce)
                    and targets.on_probe_subnet(g.cfg, ev.family, ev.src)):
                for m in g.nics:                   # discovery is shared by the group
                    q = m.probers.get(ev.family)
                    if q is not None and q.add_host(ev.src, self.now):
                        self._log(INFO, f"probe target {ev.src} found by multicast for {m.name}",
 Kind.TARGET_FOUND, g.name, m.name)
        elif p.reply(ev.src, ev.seq, ev.nonce, ev.rx, learn=nic.functioning and g.state != "failed") is not None:
            self._adapt_fdt(g, nic, ev.family, p.by_seq[ev.seq].target)
        self._judge(g, nic)

    def _adapt_fdt(self, g: Group, nic: Nic, fam: int, target: Target) -> None:
        """Raise the group's FDT when a target's RTT makes it unachievable;
        lower it back when every RTT allows (in.mpathd §5.3)."""
        crtt = target.rtt.crtt
        if crtt is None or (crtt <= g.interval and g.fdt <= g.user_fdt):
            return                              # the common case, on every answer
        now = self.now
        inst = f"(inet{'' if fam == 4 else '6'} {nic.name})"
        user_ms = round(g.user_fdt * 1000)
        if crtt > g.interval and self._exception_target(nic.probers[fam], target, g.interval, now):
            self._log(INFO, f"probe target {target.addr} {inst} is much slower than the other targets "
                            f"({round(crtt * 1000)} ms); probing the others and keeping the failure "
                            f"detection time", Kind.TARGET_SLOW, g.name, nic.name)
        elif crtt > g.interval:
            g.fdt = crtt * timing.FDT_RAISE_FACTOR * timing.PROBE_INTERVAL_DIVISOR
            g.last_raise = now
            self._set_interval(g)
            self._log(INFO, f"Cannot meet requested failure detection time of {user_ms} ms on {inst} "
                            f"new failure detection time for group \"{g.name}\" is "
                            f"{round(g.fdt * 1000)} ms", Kind.FDT_RAISED, g.name, nic.name)
            self._dirty = True
        elif (g.fdt > g.user_fdt and g.last_raise is not None
              and now - g.last_raise > timing.FDT_SETTLING_S
              and all(t.rtt.crtt is not None and t.rtt.crtt < g.interval / timing.FDT_LOWER_TRIGGER
                      for m in g.nics if m.functioning for q in m.probers.values() if q.running
                      for t in q.active_targets(now))):
            g.fdt = max(g.fdt / 2, g.user_fdt)
            g.last_raise = now if g.fdt > g.user_fdt else None
            self._set_interval(g)
            self._log(INFO, f"Improved failure detection time {round(g.fdt * 1000)} ms on {inst} "
                            f"for group \"{g.name}\"", Kind.FDT_LOWERED, g.name, nic.name)
            self._dirty = True

    @staticmethod
    def _exception_target(p: Prober, target: Target, interval: float, now: float) -> bool:
        """Drop `target` if it is the one slow target among enough fast ones."""
        active = p.active_targets(now)
        if len(active) < timing.EXCEPTION_MIN_TARGETS or not any(t is target for t in active):
            return False
        if not all(t.rtt.crtt is not None and t.rtt.crtt <= interval / timing.EXCEPTION_FACTOR
                   for t in active if t is not target):
            return False
        p.drop_target(target, now)
        return True

    def _set_interval(self, g: Group) -> None:
        for m in g.nics:
            for p in m.probers.values():
                p.interval = g.interval

    def _judge(self, g: Group, nic: Nic) -> None:
        """Re-read the probe verdicts of a NIC; a change settles the group.
        When a NIC's probes fail while no other member has heard an answer
        since this NIC's losses began, the whole group has failed: every
        member is failed, nothing moves, and host targets are rediscovered."""
        changed = False
        for p in nic.probers.values():
            verdict = p.verdict
            if p.evaluate() != verdict:
                changed = True
        if not changed:                 # the probe state follows from the verdicts alone
            return
        after = nic.probe_state()
        self._dirty = True
        if after != "failed" or not nic.functioning:
            return
        tff = min((p.first_loss_time() for p in nic.capable() if p.first_loss_time() is not None),
                  default=self.now)
        for m in g.nics:
            if m is nic or not m.functioning or m.link.state == "down":
                continue
            if not m.capable() or (m.last_ack() or float("-inf")) > tff:
                return                            # another member still works: a NIC failure
        for m in g.nics:
            for p in m.probers.values():
                if m is not nic:
                    p.require_repair()
                p.flush_hosts()
    # --------------------------------------------------- verdicts and policy

    def _works(self, nic: Nic) -> bool:
        """The combined verdict of the watchers: carrier, probes, flap damping."""
        return (nic.present and nic.link.state != "down" and nic.repair_held_until is None
                and nic.probe_state() != "failed")

    def _settle(self) -> None:
        """Apply verdict changes, then place addresses, then report."""
        failback = self.config.defaults.failback
        for g in [*self.groups, self.anon]:
            for nic in g.nics:
                works = self._works(nic)
                if works and nic.failed:
                    nic.failed = False
                    if not nic.fresh:
                        nic.counts["repairs"] += 1
                        self._log(ERR, f"IP interface repair detected on {nic.name}{self._of(g)}",
 Kind.REPAIR, g.name or None, nic.name)
                    if not nic.offline and g is not self.anon:
                        # a NIC that appeared is created, not repaired: FAILBACK=no does not apply
                        policy.transition_to_running(g.nics, nic, repair=not nic.fresh, failback=failback)
                    nic.fresh = False
                elif not works and not nic.failed:
                    was_active = nic.active
                    nic.failed, nic.inactive = True, False
                    nic.counts["failures"] += 1
                    self._log(ERR, f"IP interface failure detected on {nic.name}{self._of(g)}",
 Kind.FAILURE, g.name or None, nic.name)
                    if was_active:
                        policy.activate_another(g.nics, nic)
            if g is self.anon:
                continue
            self._check_hwaddrs(g)
            policy.ensure_one_active(g.nics)
            self._place(g)
            self._refresh_group_state(g)
        self._install_test_addresses()
        self._assign_targets()
        for nic in self.nics.values():
            self._sync_probing(nic)
        summary = self.summary()
        if summary != self._summary:
            self._summary = summary
            self._out.append(StateChanged(summary))

    def _place(self, g: Group) -> None:
        home = g.home()
        desired = policy.place(g.nics, home, self.where)
        moves: dict[tuple[str | None, str], list[Address]] = defaultdict(list)
        stranded: list[Address] = []
        for addr in home:
            cur, want = self.where[addr], desired.get(addr)
            if want is None:
                if cur is None:
                    stranded.append(addr)
                continue
            if cur == want:
                continue
            if cur is None:
                self._out.append(AddAddress(want, addr))
            else:
                self._out.append(MoveAddress(addr, cur, want, src_failed=self._broken(cur)))
            self._out.append(Announce(want, addr))
            self.where[addr] = want
            moves[(cur, want)].append(addr)
        for (src, dst), addrs in moves.items():
            listing = ", ".join(str(a) for a in addrs)
            if src is None:
                self._log_restored(g, dst, addrs)
            elif all(home[a] == dst for a in addrs) and not self._broken(src):
                g.counts["failbacks"] += 1
                self._log(ERR, f"Successfully failed back to NIC {dst} ({listing})", Kind.FAILBACK,
                          g.name, dst)
            elif self._broken(src):
                g.counts["failovers"] += 1
                self._log(ERR, f"Successfully failed over from NIC {src} to NIC {dst} ({listing})",
 Kind.FAILOVER, g.name, src)
            else:
                self._log(INFO, f"moved {listing} from NIC {src} to NIC {dst}: "
                                f"{self._why_leaving(src, g)}", Kind.MOVED, g.name, dst)
        newly = [a for a in stranded if a not in self._stranded]
        self._stranded = (self._stranded - set(home)) | set(stranded)
        by_family: dict[str, list[str]] = defaultdict(list)
        for a in newly:
            entry = f"{home[a] or g.name} (couldn't move; no alternative interface)"
            if entry not in by_family[_family(a)]:
                by_family[_family(a)].append(entry)
        for fam, entries in by_family.items():
            self._log(ERR, f"moving addresses from missing {fam} interfaces: {', '.join(entries)}",
 Kind.MISSING_STRANDED, g.name)

    def _broken(self, ifname: str) -> bool:
        """Is this NIC failed? (A NIC that left every group is not.)"""
        nic = self.nics.get(ifname)
        return nic is not None and nic.failed

    def _why_leaving(self, ifname: str, g: Group) -> str:
        nic = self.nics.get(ifname)
        if nic is None or nic not in g.nics:
            return "it left the group"
        if nic.offline:
            return "it is offline"
        if nic.inactive:
            return "it is now INACTIVE"
        return "to balance the group"

    def _log_restored(self, g: Group, dst: str, addrs: list[Address]) -> None:
        """Addresses that were nowhere: their NIC is missing, or someone
        deleted them. Missing NICs get the Solaris boot message."""
        by_family: dict[str, list[str]] = defaultdict(list)
        plain: list[Address] = []
        home = g.home()
        for a in addrs:
            h = home[a]
            if h is not None and not self.nics[h].present:  # its home NIC is missing
                entry = f"{h} (moved to {dst})"
                if entry not in by_family[_family(a)]:
                    by_family[_family(a)].append(entry)
            else:
                plain.append(a)
        for fam, entries in by_family.items():
            self._log(ERR, f"moving addresses from missing {fam} interfaces: {', '.join(entries)}",
 Kind.MISSING_MOVED, g.name, dst)
        if plain:
            self._log(INFO, f"data address {', '.join(str(a) for a in plain)} placed on NIC {dst}",
 Kind.ADDRESS_PLACED, g.name, dst)

    def _refresh_group_state(self, g: Group) -> None:
        state = policy.group_state(g.nics)
        if state == g.state:
            return
        g.state = state
        if state == "failed" and not g.unusable_logged:
            g.unusable_logged = True
            self._log(ERR, f"All IP interfaces in group {g.name} are now unusable", Kind.GROUP_FAILED, g.name)
        elif state != "failed" and g.unusable_logged:
            g.unusable_logged = False
            usable = [n for n in g.nics if n.functioning]
            self._log(ERR, f"At least 1 IP interface ({usable[-1].name}) in group {g.name} is now usable",
 Kind.GROUP_USABLE, g.name, usable[-1].name)

    def _assign_targets(self) -> None:
        for g in self.groups:
            for fam in (4, 6):
                probers = [p for m in g.nics for f, p in m.probers.items() if f == fam]
                if not probers:
                    continue
                mode, addrs = targets.choose(g.cfg, fam, self.routes, self.own)
                for p in probers:
                    if mode != "multicast" or p.mode != "multicast":
                        if (p.mode, [t.addr for t in p.targets]) != (mode, addrs):
                            p.set_targets(mode, addrs)
                if mode == "multicast":
                    # a member without targets takes the hosts its peers found
                    # (in.mpathd dup_host_targets): a NIC that joins while its
                    # path is down must not count as working for want of targets
                    known = [t.addr for p in probers for t in p.targets if t.kind == "host"]
                    for p in probers:
                        if not p.targets:
                            for addr in dict.fromkeys(known):
                                p.add_host(addr, self.now)

    def _probe_start_failed(self, act: StartProbing) -> None:
        """No socket: stop, and try again a little later (the address may
        still be tentative, or the NIC on its way out)."""
        nic = self.nics.get(act.ifname)
        p = nic.probers.get(act.family) if nic else None
        if p is not None and p.running:
            p.stop()
            p.start_after = self.now + timing.PROBE_START_RETRY_S

    def _sync_probing(self, nic: Nic) -> None:
        """Probe while the NIC is present, has carrier, is not offline and
        has its test address."""
        for fam, p in nic.probers.items():
            src = nic.source(fam)
            want = (nic.present and nic.link.state != "down" and not nic.offline and src is not None
                    and (fam == 6 or (nic.name, nic.cfg.test[0]) in self.tests_present))
            if want and not p.running and p.start_after <= self.now:
                self._out.append(StartProbing(nic.name, fam, nic.index, src))   # type: ignore[arg-type]
                p.start(self.now)
            elif not want and p.running:
                self._out.append(StopProbing(nic.name, fam))
                p.stop()

    def _install_test_addresses(self) -> None:
        for nic in self.nics.values():
            if not nic.present:
                continue
            for t in nic.cfg.test:
                if (nic.name, t) not in self.tests_present:
                    self.tests_present.add((nic.name, t))
                    self._out.append(AddAddress(nic.name, t, test=True))

    # ------------------------------------------------------------ reports

    def summary(self) -> str:
        """One line for sd_notify STATUS=, e.g. '1 group ok, 1 degraded: eth1 failed'."""
        counts: dict[str | None, int] = defaultdict(int)
        bad: list[str] = []
        for g in self.groups:
            counts[g.state] += 1
            bad += [f"{n.name} {n.state()}" for n in g.nics if n.state() in ("failed", "offline")]
        items = [(counts[s], s) for s in ("ok", "degraded", "failed") if counts[s]]
        if not items:
            return "no groups"
        noun = "group" if items[0][0] == 1 else "groups"
        text = ", ".join(f"{c} {noun + ' ' if i == 0 else ''}{s}" for i, (c, s) in enumerate(items))
        return text + (": " + ", ".join(bad) if bad else "")

    def probes(self, now: float, since: int = 0) -> list[dict]:
        """The finished probes still in the NICs' histories (the last
        timing.PROBE_RECORDS per NIC and family) whose record id is above `since`, in the order they
        finished: `ipmpctl probes` follows the stream with the last id seen."""
        rows = [{"id": r.id, "time": round(r.time - now, 3), "interface": n.name, "family": fam,
                 "probe": r.seq, "target": r.target, "status": r.status, "rtt_ms": _ms(r.rtt),
                 "rtt_avg_ms": _ms(r.rtt_avg), "rtt_dev_ms": _ms(r.rtt_dev), "late": r.late}
                for g in self.groups for n in g.nics for fam, p in n.probers.items()
                for r in p.records if r.id > since]
        rows.sort(key=lambda row: row["id"])
        return rows

    def status(self, now: float) -> dict:
        groups, interfaces, addresses, target_rows = [], [], [], []
        for g in self.groups:
            groups.append({
                "name": g.name, "state": g.state, "fdt_ms": round(g.fdt * 1000),
                "interfaces": [n.name for n in g.nics],
                "active": [n.name for n in g.nics if n.active],
                "inactive": [n.name for n in g.nics if n.functioning and n.inactive],
                "unusable": [n.name for n in g.nics if not n.functioning],
                "user_fdt_ms": round(g.user_fdt * 1000), **g.counts,
                "probing": any(n.probers for n in g.nics),
            })
            for n in g.nics:
                stats: dict[str, int] = defaultdict(int)
                for p in n.probers.values():
                    for k, v in p.stats.items():
                        stats[k] += v
                interfaces.append({
                    "name": n.name, "group": g.name, "state": n.state(), "active": n.active,
                    "standby": n.standby, "inactive": n.functioning and n.inactive,
                    "link": n.link.state if n.present else "unknown", "probe": n.probe_state(),
                    "present": n.present, "offline": n.offline, "hwaddrdup": n.hwaddrdup,
                    "mac": n.mac, "probes": dict(stats), **n.counts,
                })
                if not n.probers:
                    target_rows.append({"interface": n.name, "family": None, "mode": "disabled",
                                        "testaddr": None, "targets": []})
                for fam, p in n.probers.items():
                    src = n.source(fam)
                    target_rows.append({
                        "interface": n.name, "family": fam,
                        "mode": p.mode if p.running else "disabled",
                        "testaddr": str(src) if src is not None else None,
                        "targets": [str(t.addr) for t in p.active_targets(now)] if p.running else [],
                        "rtt": {str(t.addr): {"avg_ms": _ms(t.rtt.avg), "dev_ms": _ms(t.rtt.dev)}
                                for t in p.targets if t.rtt.avg is not None}})
            for addr, home in g.home().items():
                addresses.append({"address": str(addr), "group": g.name, "home": home,
                                  "interface": self.where[addr]})
        for n in self.anon.nics:
            interfaces.append({
                "name": n.name, "group": None, "state": n.state(), "active": n.functioning,
                "standby": False, "inactive": False, "link": n.link.state, "probe": "disabled",
                "present": True, "offline": False, "mac": n.mac, "probes": {}})
            target_rows.append({"interface": n.name, "family": None, "mode": "disabled",
                                "testaddr": None, "targets": []})
        return {"groups": groups, "interfaces": interfaces, "addresses": addresses,
                "targets": target_rows, "probes": self.probes(now),
                "summary": self.summary()}
