"""The Core state machine: NICs and groups, what their watchers' verdicts
mean, and where every data address goes.

Core.handle(event, now) takes one event (events.py) and the time it is
handled at, and returns the actions to carry out, in order. It never reads a
clock: every decision made for one event sees the same `now`.

A NIC's state (states.NicState) follows from its health verdict
(detect.Health.works: carrier, probes, flap damping), from the operator and
from its MAC. The transitions, all made in this file:

    from            event                                   to          where
    --------------  --------------------------------------  ----------  -----------------
    (start)         present and works                       OK/UNKNOWN  _start
    (start)         missing, or does not work               FAILED      _start
    OK, UNKNOWN     verdict: does not work (carrier lost,   FAILED      _settle: failure
                    removed, probes failed, flap held)
    FAILED          verdict: works again                    OK/UNKNOWN  _settle: repair
    OK              no probe target answers any more        UNKNOWN     (verdict, derived)
    any             ipmpctl offline, or a duplicate MAC     OFFLINE     _offline, _check_hwaddrs
    OFFLINE         ipmpctl online, or a unique MAC again   as verdict  _online, _check_hwaddrs

INACTIVE is not a state but a flag on a functioning NIC: kept out of use
(a standby, or FAILBACK=no). policy.py sets and clears it on every
transition above. A group (states.GroupState) is OK while every member
functions, DEGRADED while some do, FAILED while none does
(_refresh_group_state logs the edges into and out of FAILED once).

A failover is decided in _settle: the verdict of a NIC turns to "does not
work", policy.activate_another picks a standby, and _place moves the
addresses (policy.place) and logs the move.
"""

from __future__ import annotations

import ipaddress
import random
from collections import defaultdict
from dataclasses import replace
from typing import Iterable

from ..config import IP, Address, Config, GroupConfig, InterfaceConfig
from . import arp, detect, policy, targets, timing
from .catalogue import Kind
from .detect import Fdt, Health, LinkWatcher
from .ledger import Ledger
from .retry import Backoff
from .events import (ERR, INFO, WARNING, Action, ActionFailed, AddAddress, AddressAdded,
                     AddressRemoved, Announce, ArpGuarded, ConfigReloaded, DeleteRoute, Event,
                     GuardArp,
                     InstallRoute, LinkChanged, LinkInfo, LinkRemoved, LinkRenamed, Log, NeighboursRead, Offline,
                     Online, OwnedRoute, PrepareInterface, ProbeReply, ReadNeighbours, Refused, ReleaseInterface,
                     RemoveAddress, RestoreRoute, Resynced, RouteAdded, RouteRemoved, SendProbe,
                     SetLinkUp, SetPath, Started, StartProbing, StateChanged, StopProbing, Tick)
from .routes import GroupView, RouteLedger, declared
from .probe import KIND_ARP, KIND_DISCOVERY, Prober
from .reports import summary
from .states import GroupState, LinkState, NicState, ProbeState


class Nic:
    """One NIC of a group, as the core sees it."""

    def __init__(self, cfg: InterfaceConfig):
        self.cfg = cfg
        self.name = cfg.name
        self.standby = cfg.standby
        self.index: int | None = None
        self.mac: str | None = None
        self.health = Health()
        self.failed = False          # the verdict says it does not pass traffic
        self.admin_offline = False   # taken out of service by the operator
        self.hwaddrdup = False       # offlined: its MAC is another member's
        self.inactive = False        # functioning but kept out of use (standby, FAILBACK=no)
        self.fresh = False           # appeared since start: its first repair is its creation
        self.counts = {"failures": 0, "repairs": 0}

    @property
    def present(self) -> bool:
        return self.index is not None

    @property
    def offline(self) -> bool:
        return self.admin_offline or self.hwaddrdup

    def take_link(self, old: "Nic") -> None:
        """Carry what the kernel told us about a NIC over a reload."""
        self.index, self.mac, self.failed = old.index, old.mac, old.failed
        self.health.link, self.health.held_until = old.health.link, old.health.held_until
        self.admin_offline, self.hwaddrdup = old.admin_offline, old.hwaddrdup
        self.counts = old.counts

    @property
    def functioning(self) -> bool:
        return self.present and not self.failed and not self.offline

    @property
    def active(self) -> bool:
        return self.functioning and not self.inactive

    def works(self) -> bool:
        return self.present and self.health.works()

    def probe_state(self) -> ProbeState:
        """DISABLED offline or without probing; UNKNOWN while it is not being
        probed (missing, no carrier, no test address yet): its last verdict
        is no news."""
        if self.offline:
            return ProbeState.DISABLED
        probers = self.health.probers
        if probers and not any(p.running for p in probers.values()):
            return ProbeState.UNKNOWN
        return self.health.probe_state()

    def state(self) -> NicState:
        if self.offline:
            return NicState.OFFLINE
        if self.failed or not self.present:
            return NicState.FAILED
        return NicState.UNKNOWN if self.probe_state() == ProbeState.UNKNOWN else NicState.OK


class Group:
    def __init__(self, cfg: GroupConfig, nics: list[Nic]):
        self.cfg = cfg
        self.name = cfg.name
        self.nics = nics
        self.state: GroupState | None = None  # unknown until the first settle
        self.unusable_logged = False
        self.fdt = Fdt(0.0)
        self.counts = {"failovers": 0, "failbacks": 0}

    def home(self) -> dict[Address, str | None]:
        out: dict[Address, str | None] = {}
        for nic in self.nics:
            for a in nic.cfg.data:
                out[a] = nic.name
        for a in self.cfg.data:
            out[a] = None
        return out


def _inst(family: int, nic: Nic) -> str:
    """in.mpathd's name of one NIC's probing in one family: (inet eth0);
    (arp eth0) for ARP probing."""
    if family == 4 and nic.cfg.test_arp:
        return f"(arp {nic.name})"
    return f"(inet{'' if family == 4 else '6'} {nic.name})"


_UNSPECIFIED4 = ipaddress.IPv4Address("0.0.0.0")


def _family(addr: Address) -> str:
    return "IPv4" if addr.version == 4 else "IPv6"


class Core:
    def __init__(self, config: Config, rng: random.Random | None = None):
        self.now = 0.0                      # the time of the event being handled
        self.rng = rng or random.Random()
        self.routes = RouteLedger()
        self._dirty = True
        self.config = config
        self.groups: list[Group] = []
        self.nics: dict[str, Nic] = {}
        self._out: list[Action] = []
        self._retire: list[RemoveAddress] = []        # second halves of this settle's moves
        self._flushed_at: float | None = None          # routes the kernel dropped: put back then
        self._moves: dict[tuple[str, Address], str | None] = {}   # adds of the last event -> old holder
        self._move_lines: list[tuple[Group, str | None, str, list[Address], str | None]] = []
        self.refusing = Backoff()                     # (NIC, family) that refused an address
        self.ledger = Ledger(self._emit)
        self._summary = ""
        self.started = False
        # TRACK_INTERFACES_ONLY_WITH_GROUPS=no: every other NIC joins the
        # anonymous group, which only detects and reports (in.mpathd's "").
        self.track_all = not config.defaults.track_only_groups
        self.anon = Group(GroupConfig("", ()), [])
        # what stands in the way of correct operation, for the status (reports.status)
        self.problems: list[dict] = []
        self.arp_exposed: tuple[str, ...] = ()   # NICs outside the groups with arp_ignore=0
        self.arp_pins = arp.Pins()
        self._neighbours_next = float("-inf")   # when the neighbour table may be read again
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
            g.fdt = Fdt(config.defaults.fdt_ms / 1000)
            if og is not None:
                g.state, g.unusable_logged, g.counts = og.state, og.unusable_logged, og.counts
                if og.fdt.configured == g.fdt.configured:
                    g.fdt = og.fdt
            self.groups.append(g)
            for icfg in gcfg.interfaces:
                old = old_nics.get(icfg.name)
                old_test = (old.cfg.test, old.cfg.test_arp) if old is not None else ()
                if old is not None and old.cfg.group == icfg.group:
                    nic = old
                    nic.cfg, nic.standby = icfg, icfg.standby
                else:
                    nic = Nic(icfg)
                    if old is not None:
                        nic.take_link(old)
                g.nics.append(nic)
                self.nics[nic.name] = nic
                families = ([4] if icfg.test or icfg.test_arp else []) + ([6] if icfg.test_link_local else [])
                probers = nic.health.probers
                kept = {f: p for f, p in probers.items()
                        if f in families and (f == 6 or old_test == (icfg.test, icfg.test_arp))}
                for f, p in probers.items():
                    if f not in kept and p.running:
                        self._out.append(StopProbing(nic.name, f))
                nic.health.probers = {f: kept.get(f) or Prober(f, g.fdt.interval, self.rng,
                                                               arp=f == 4 and icfg.test_arp)
                                      for f in families}
            self._set_interval(g)
        self._group_by_nic = {n.name: g for g in self.groups for n in g.nics}
        self.ledger.rebuild(self.groups, self.nics)
        self._stranded: set[Address] = set()
        decl = {}
        for g in self.groups:
            home = g.nics[0].name if len(g.nics) == 1 else None
            for rc in g.cfg.routes:
                r = declared(rc, home)
                decl[r.key] = (r, g.name)
        for r in self.routes.declare(decl):
            self._out.append(DeleteRoute(r))

    def _emit(self, action: Action) -> None:
        """Every action goes out here; removing an address may make the
        kernel drop routes, which the route ledger then puts back."""
        if isinstance(action, RemoveAddress):
            self.routes.address_gone(action.ifname, action.address.ip)
        self._out.append(action)

    def _log(self, level: int, text: str, kind: Kind, group: str | None = None,
             ifname: str | None = None, moved: tuple[tuple[str, Address], ...] = ()) -> None:
        self._out.append(Log(level, text, kind, group, ifname, moved))

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

    def next_deadline(self) -> float | None:
        """The earliest moment a Tick has work: a probe to send or expire, a
        probe socket to retry, a flap hold to end. Read on every turn of the
        daemon's loop, so one pass."""
        times = [d for n in [*self.nics.values(), *self.anon.nics] if (d := n.health.deadline()) is not None]
        for retry in (self.routes.next_retry(), self.refusing.next_retry(), self._flushed_at):
            if retry is not None:
                times.append(retry)
        return min(times) if times else None

    def with_carrier(self) -> list[tuple[str, int, str | None]]:
        """The group NICs whose link the core believes is up, as (name,
        ifindex, MAC): those whose carrier the daemon also reads directly."""
        return [(n.name, n.index, n.mac) for n in self.nics.values()         # type: ignore[misc]
                if n.present and n.health.link.state == LinkState.UP]

    # ------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> list[Action]:
        self.now = now
        self._out = []
        self._dirty = not isinstance(event, (ProbeReply, Tick))
        if not isinstance(event, ActionFailed):
            # the daemon hands back every refusal of an event's actions before
            # the next event: what was not refused was carried out
            self._moves.clear()
            self._move_lines.clear()
            self.refusing.accepted()
            self.routes.retry.accepted()
        match event:                                 # the probe path first
            case ProbeReply():
                self._probe_reply(event)
            case Tick():
                self._tick()
            case Started():
                self._start(event)
            case Resynced():
                self._resync(event.links, event.addresses, event.routes)
            case LinkChanged():
                self._link_changed(event.link)
            case LinkRemoved():
                self._link_removed(event.name, event.index)
            case LinkRenamed():
                self._link_renamed(event.old, event.link)
            case AddressAdded():
                self.ledger.added(event.ifname, event.address)
            case AddressRemoved():
                nic = self.nics.get(event.ifname)
                self.routes.address_gone(event.ifname, event.address.ip)
                self.ledger.removed(event.ifname, event.address, self.group_of(nic).name if nic else "",
                                    teardown=nic is not None and nic.health.link.state == LinkState.DOWN)
            case RouteAdded():
                self._route_added(event.route)
            case RouteRemoved():
                self._route_removed(event.key, event.by_kernel)
            case NeighboursRead():
                self._neighbours(event)
            case ActionFailed():
                self._action_failed(event.action, event.error, event.nic_down)
            case ConfigReloaded():
                self._reload(event)
            case Offline():
                self._offline(event.ifname, event.force)
            case Online():
                self._online(event.ifname)
            case ArpGuarded():
                self._arp_guarded(event)
        if self._dirty:
            self._settle()
        out, self._out = self._out, []
        return out

    def _action_failed(self, action: Action, error: str, nic_down: bool) -> None:
        """The kernel refused an action. A refused data address stays where
        the kernel has it, and its family is not put on that NIC again until
        the back-off has passed; a refused route or path waits likewise. Each
        is logged once per cause, not on every retry, and not at all when
        its NIC was down or gone (the event that says so follows)."""
        match action:
            case AddAddress(test=False):
                self._add_refused(action, error, nic_down)
                return
            case SetPath(path=path, members=members):
                new = self.routes.refused(path, members, self.now, error)
            case InstallRoute(route=route, path=path):
                new = self.routes.refused(route.key, path, self.now, error)
            case RestoreRoute(route=route):
                new = self.routes.refused(route.key, None, self.now, error)
            case _:
                new = True
                if isinstance(action, StartProbing):
                    self._probe_start_failed(action)
        if new and not nic_down:
            self._log(ERR, f"could not carry out {action}: {error}", Kind.ACTION_FAILED)

    def _add_refused(self, act: AddAddress, error: str, nic_down: bool) -> None:
        """The daemon dropped the line of the move (Log.moved): it is written
        again for the addresses that did move."""
        addr, dst, fam = act.address, act.ifname, act.address.version
        src = self._moves.pop((dst, addr), None)
        for line in self._move_lines:
            g, src_, dst_, addrs, counter = line
            if dst_ == dst and addr in addrs:
                self._move_lines.remove(line)
                if counter:
                    g.counts[counter] -= 1
                rest = [a for a in addrs if a != addr]
                if rest:
                    self._log_move(g, src_, dst, rest)
                break
        where = self.ledger.where
        if where.get(addr) == dst:
            where[addr] = src                      # the old copy stays: the daemon did not remove it
        if self.refusing.refused((dst, fam), self.now, error) and not nic_down:
            g = self.ledger.group_of.get(addr)
            self._log(ERR, f"{dst} refused data address {addr} ({error}); it stays "
                           f"{'on ' + src if src else 'unplaced'}, and no IPv{fam} address goes to {dst} "
                           f"until a retry succeeds", Kind.ADDRESS_REFUSED, g.name if g else None, dst)

    # ------------------------------------------------------------ reload

    def _reload(self, ev: ConfigReloaded) -> None:
        """Apply only what differs between the running and the new config."""
        new = ev.config
        ledger = self.ledger
        old_cfg, old_where, old_tests = self.config, dict(ledger.where), set(ledger.tests_present)
        old_nics = {**{n.name: n for n in self.anon.nics}, **self.nics}
        old_cfgs = {name: nic.cfg for name, nic in old_nics.items()}
        old_groups = {g.name: g for g in self.groups}
        old_homes = {g.name: set(g.home()) for g in self.groups}
        changes: list[str] = []
        self.config = new
        self.track_all = not new.defaults.track_only_groups
        self.anon.nics = []             # rebuilt from the kernel's links by the Resynced that follows
        self._build(new, old_nics, old_groups)
        self._regroup_routes(old_nics)
        self._out.append(self._guard_arp())
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
                for f, p in old.health.probers.items():
                    if p.running:
                        self._out.append(StopProbing(name, f))
                if old.present:
                    self._out.append(ReleaseInterface(name))
        for addr, holder in old_where.items():
            if addr in ledger.where:
                ledger.where[addr] = holder
            else:
                changes.append(f"data address {addr} removed")
                if holder is not None:
                    self._out.append(RemoveAddress(holder, addr))
        changes += [f"data address {a} added" for a in ledger.where if a not in old_where]
        ledger.tests_present = set()
        for ifname, t in old_tests:
            nic = self.nics.get(ifname)
            if nic is not None and t in nic.cfg.test:
                ledger.tests_present.add((ifname, t))
            else:
                self._out.append(RemoveAddress(ifname, ipaddress.ip_interface(f"{t.ip}/{t.max_prefixlen}")))
        for g in self.groups:
            og = old_groups.get(g.name)
            # spreading turned on needs the L4 hash policy PrepareInterface sets
            spreads = og is not None and g.cfg.spreading != og.cfg.spreading
            if spreads:
                changes.append(f"group {g.name} spreading {'on' if g.cfg.spreading else 'off'}")
            grew = (set(g.home()) != old_homes.get(g.name, set()) or spreads
                    or old_cfg.defaults.fdt_ms != new.defaults.fdt_ms)
            for nic in g.nics:
                joined = nic.name not in old_nics or old_nics[nic.name].cfg.group != g.name
                if nic.present and (joined or grew):
                    self._out.append(self._prepare(nic, g))
        for key in ("fdt_ms", "failback", "track_only_groups", "arp_flux_protection"):
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

    def _guard_arp(self) -> GuardArp:
        return GuardArp(self.config.defaults.arp_flux_protection, tuple(self.nics))

    def _arp_guarded(self, ev: ArpGuarded) -> None:
        """ARP flux: a NIC outside the groups with arp_ignore=0 answers ARP
        for every address of the host with its own MAC, so neighbours send the
        groups' traffic and probe replies to it. Warn (once per change) and
        show a problem while the protection is off or could not be applied."""
        self.arp_exposed = ev.exposed
        problems = [p for p in self.problems if p["kind"] != Kind.ARP_FLUX]
        if ev.problem is not None:
            exposed = (f"{', '.join(ev.exposed)} (outside the groups, arp_ignore=0) answer"
                       if ev.exposed else "a NIC outside the groups with arp_ignore=0 would answer")
            text = (f"{ev.problem}: {exposed} ARP for the groups' addresses, so neighbours can send "
                    f"their traffic and probe replies there; set net.ipv4.conf.all.arp_ignore=1")
            if not any(p["message"] == text for p in self.problems):
                self._log(WARNING, text, Kind.ARP_FLUX)
            problems.append({"kind": Kind.ARP_FLUX, "message": text})
        self.problems = problems

    def _start(self, ev: Started) -> None:
        self.started = True
        self._out.append(self._guard_arp())
        for link in ev.links:
            nic = self.nics.get(link.name) or self._watch_anonymous(link)
            if nic is not None:
                self._attach(nic, link)
        observed = self.ledger.learn(ev.addresses)
        self._learn_routes(ev.routes)
        for nic in [*self.nics.values(), *self.anon.nics]:
            # Not working at start: failed before any activation is decided.
            # A missing NIC is reported when its addresses are placed.
            if nic.present and not nic.works():
                g = self.group_of(nic)
                self._log(ERR, f"The link has gone down on {nic.name}", Kind.LINK_DOWN, g.name or None, nic.name)
                self._log(ERR, f"IP interface failure detected on {nic.name}{self._of(g)}",
                          Kind.FAILURE, g.name or None, nic.name)
            nic.failed = not nic.works()
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

    def _resync(self, links: Iterable[LinkInfo], addresses: Iterable[tuple[str, Address]],
                routes: Iterable[OwnedRoute] | None = None) -> None:
        by_name = {link.name: link for link in links}
        for nic in [*self.nics.values(), *self.anon.nics]:
            if nic.name not in by_name and nic.present:
                self._link_removed(nic.name, nic.index)  # type: ignore[arg-type]
        for link in by_name.values():
            self._link_changed(link)
        self.ledger.learn(addresses)
        if routes is not None:
            self._learn_routes(routes)

    # ------------------------------------------------------------ routes

    def _learn_routes(self, routes: Iterable[OwnedRoute]) -> None:
        """The kernel's routes, read whole (at start, after an overflow):
        keep those of the groups and believe nothing of their form, so that
        the next settle puts every one on its path (a route already there is
        replaced by itself)."""
        self.routes.paths.clear()
        self.routes.installed.clear()
        for route in routes:
            g = self._group_by_nic.get(route.home)     # type: ignore[arg-type]
            if g is not None:
                self.routes.learn(route, g.name)

    def _route_added(self, route: OwnedRoute) -> None:
        g = self._group_by_nic.get(route.home)         # type: ignore[arg-type]
        if g is not None and self.routes.learn(route, g.name):
            self._log(INFO, f"route {route.describe()} added on {route.home}; leaving by "
                            f"the active interfaces of group {g.name}", Kind.ROUTE_ADOPTED, g.name, route.home)

    def _route_removed(self, key, by_kernel: bool) -> None:
        if key not in self.routes.routes:
            return                                    # not one of ours (a prefix route, say)
        if by_kernel:
            # The kernel dropped it as the effect of something it tells
            # next (a NIC's carrier, within microseconds): put it back once
            # that news is in, so as not to re-make it on a NIC going down.
            self.routes.flushed(key)
            self._dirty = False
            self._flushed_at = self._flushed_at or self.now + timing.KERNEL_NEWS_S
            return
        route = self.routes.removed(key)
        if route is not None:
            group = self.routes.group_of.get(key)
            self._log(WARNING, f"route {route.describe()} was deleted by another program; "
                      + ("putting it back (it is in the configuration)" if route.declared
                         else "forgetting it"), Kind.ROUTE_DELETED, group, route.home)

    def _route_views(self) -> list[GroupView]:
        where = self.ledger.where

        def holder(home: str, family: int) -> str | None:
            nic = self.nics.get(home)
            return next((where[a] for a in nic.cfg.data if a.version == family and where[a]), None) if nic else None

        def on_link(g: Group):
            return lambda ip: next((where[a] for a in g.home() if a.version == ip.version
                                    and ip in a.network and where[a]), None)

        return [GroupView(g.name, g.cfg.spreading,
                          tuple((n.name, n.index) for n in g.nics if n.active and n.present),  # type: ignore[misc]
                          holder, on_link(g),
                          frozenset(n.name for n in g.nics if n.present and n.health.link.state == LinkState.UP),
                          frozenset(n.name for n in g.nics))
                for g in self.groups]

    def _forget_routes(self, ifname: str) -> None:
        """The NIC went down or away, and the kernel deleted its nexthops:
        the routes through its router already leave by the other members."""
        for path, members in self.routes.forget(ifname):
            self._log_path(path, members)

    def _log_path(self, path, members) -> None:
        self._log(INFO, f"routes via {path.gateway} of group {path.group} leave by "
                        f"{', '.join(n for n, _ in members)}", Kind.ROUTES_MOVED, path.group, members[0][0])

    def _reconcile_routes(self, views: list[GroupView]) -> None:
        """The route actions that follow the placement, each path change
        logged once: `routes via 192.0.2.1 of group ipmp0 leave by eth1`."""
        for action in self.routes.reconcile(views, self.now):
            self._out.append(action)
            match action:
                case SetPath(path=p, members=m):
                    self._log_path(p, m)
                case InstallRoute(route=r, path=p, members=m) if p.gateway is None:
                    self._log(INFO, f"route {r.describe()} of group {p.group} leaves by {m[0][0]}",
                              Kind.ROUTES_MOVED, p.group, m[0][0])

    def _regroup_routes(self, old_nics: dict[str, Nic]) -> None:
        """After a reload: a learned route whose NIC left every group is given
        back to that NIC as a plain route; one whose NIC changed group
        follows it."""
        for key, route in list(self.routes.routes.items()):
            if route.declared:
                continue
            g = self._group_by_nic.get(route.home)        # type: ignore[arg-type]
            if g is not None:
                self.routes.group_of[key] = g.name
                continue
            self.routes.drop(key)
            old = old_nics.get(route.home)                 # type: ignore[arg-type]
            if old is not None and old.present:
                self._out.append(RestoreRoute(route, old.name, old.index))  # type: ignore[arg-type]

    def _attach(self, nic: Nic, link: LinkInfo) -> tuple[LinkState | None, bool]:
        """Record a NIC's link; return the change of its carrier (UP, DOWN or
        None) and whether its repair is now held for flapping. A group NIC
        is brought up when its device is first seen administratively down
        (at start, or when it appears); a known device set down later was
        set down by an operator: a failure that mpathd leaves alone."""
        if nic.index != link.index:
            if nic.present:                    # re-plugged under the same name: a new device
                self._detach(nic)
            nic.index, nic.mac = link.index, link.mac
            if nic.cfg.group:                  # NICs in no group are watched, never touched
                self._out.append(self._prepare(nic, self.group_of(nic)))
                if not link.up:
                    self._log(INFO, f"IP interface {nic.name} of group {nic.cfg.group} is administratively "
                                    f"down; bringing it up", Kind.BROUGHT_UP, nic.cfg.group, nic.name)
                    self._out.append(SetLinkUp(nic.name, link.index))
        elif nic.mac != link.mac:
            nic.mac = link.mac
            if nic.cfg.group:                  # its announcements must carry the new MAC,
                self._out.append(self._prepare(nic, self.group_of(nic)))
                for addr, holder in self.ledger.where.items():   # and the neighbours learn it
                    if holder == nic.name and link.running:       # (nothing goes out of a NIC that is down)
                        self._out.append(Announce(nic.name, addr))
        return nic.health.link_observed(link.running, self.now, nic.failed)

    def _prepare(self, nic: Nic, g: Group) -> PrepareInterface:
        return PrepareInterface(nic.name, nic.index, nic.mac, tuple(g.home()),  # type: ignore[arg-type]
                                timing.neigh_retrans_ms(round(g.fdt.configured * 1000)),
                                spreading=g.cfg.spreading)

    def _detach(self, nic: Nic) -> None:
        """The device is gone and took its addresses with it."""
        nic.index = None
        for fam in (4, 6):
            self.refusing.forget((nic.name, fam))  # a device that comes back is a new one
        nic.health.link = LinkWatcher()
        nic.health.must_repair()
        self.ledger.gone(nic.name)
        self._forget_routes(nic.name)
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
        change, held = self._attach(nic, link)
        if change == LinkState.DOWN:
            self._forget_routes(nic.name)
            self._log(ERR, f"The link has gone down on {nic.name}", Kind.LINK_DOWN, group, nic.name)
        elif change == LinkState.UP:
            self._log(INFO, f"The link has come up on {nic.name}", Kind.LINK_UP, group, nic.name)
            if held:
                self._log(ERR, f"The link has come up on {nic.name} more than "
                               f"{timing.LINK_UP_PERMIN} times in the last minute; disabling repair "
                               f"until it stabilizes", Kind.FLAPPING, group, nic.name)

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

    def _link_renamed(self, old: str, link: LinkInfo) -> None:
        """A NIC got a new name (the kernel knows it by its index): the old
        name is removed and the new one arrives, under the usual rules. What
        it holds stays on it: the data addresses are now on the new name (the
        placement moves them if that name is not the right NIC), and the test
        addresses of the old name are taken off unless the new name has them."""
        nic = self._find(old)
        if nic is not None and nic.index == link.index:
            g = self.group_of(nic)
            self._log(INFO, f"IP interface {old}{self._of(g)} was renamed {link.name} (index {link.index})",
                      Kind.NIC_RENAMED, g.name or None, old)
            if g is self.anon:
                self.anon.nics.remove(nic)
            else:
                tests = self.ledger.renamed(old, link.name)
                self._detach(nic)
                new = self.nics.get(link.name)
                for t in tests:
                    if new is None or t not in new.cfg.test:
                        self._emit(RemoveAddress(link.name, ipaddress.ip_interface(f"{t.ip}/{t.max_prefixlen}")))
                    else:
                        self.ledger.tests_present.add((link.name, t))
        self._link_changed(link)

    def _tick(self) -> None:
        now = self.now
        for nic in [*self.nics.values(), *self.anon.nics]:
            if nic.health.tick(now):
                self._dirty = True
        for retry in (self.routes.next_retry(), self.refusing.next_retry()):
            if retry is not None and retry <= now:
                self._dirty = True
        if self._flushed_at and self._flushed_at <= now:
            self._flushed_at = None
            self._dirty = True
        for g in self.groups:
            for nic in g.nics:
                due = False
                for fam, p in nic.health.probers.items():
                    deadline = p.deadline()
                    if deadline is not None and deadline <= now:
                        self._run_prober(g, nic, fam, p, now)
                        due = True
                if due:
                    self._judge(g, nic)

    def _run_prober(self, g: Group, nic: Nic, fam: int, p: Prober, now: float) -> None:
        for t in p.expire(now):
            p.drop_target(t, now)
            self._log(INFO, f"probe target {t.addr} {_inst(fam, nic)} stopped answering while others "
                            f"answer; probing the others", Kind.TARGET_DEAD, g.name, nic.name)
        probes, missed = p.due(now)
        if missed:
            self._log(INFO, f"missed sending {missed} probes {_inst(fam, nic)}: mpathd was not scheduled "
                            f"in time", Kind.PROBES_MISSED, g.name, nic.name)
        for pr in probes:
            if p.arp and pr.kind == KIND_DISCOVERY:
                self._read_neighbours()
            else:
                self._out.append(SendProbe(nic.name, fam, pr.dst, pr.seq, pr.nonce, pr.kind))
        if p.nothing_found():
            if p.arp:
                why = ("no target is configured, no route on the data subnet has a router, and the neighbour "
                       "table holds no host on it")
            elif fam == 4 and self.arp_exposed:
                why = (f"no answer to an echo to 224.0.0.1 reached {nic.name}, likely because of ARP flux: "
                       f"{', '.join(self.arp_exposed)} (outside the groups, arp_ignore=0) answer ARP for "
                       f"its test address, so the replies go there (set net.ipv4.conf.all.arp_ignore=1)")
            else:
                why = f"nothing answered an echo to {'224.0.0.1' if fam == 4 else 'ff02::1'}"
            self._log(ERR, f"No probe targets found {_inst(fam, nic)}: {why}; probe-based failure detection "
                           f"is not possible on {nic.name} until a target is configured or answers",
                      Kind.NO_TARGETS, g.name, nic.name)

    def _read_neighbours(self) -> None:
        """ARP probing has no multicast echo to find hosts: it asks for the
        neighbour table, at most once every NEIGH_READ_S for the daemon."""
        if self.now >= self._neighbours_next:
            self._neighbours_next = self.now + timing.NEIGH_READ_S
            self._out.append(ReadNeighbours())

    def _neighbours(self, ev: NeighboursRead) -> None:
        """Hosts of the neighbour table on a group's subnet become host
        targets of its ARP probers that have no configured or router target."""
        for g in self.groups:
            hosts = targets.neighbour_hosts(g.cfg, ev.addresses, self.ledger.own)
            for m in g.nics:
                p = m.health.probers.get(4)
                if p is None or not p.arp or p.mode != "multicast" or not hosts:
                    continue
                p.found()
                for addr in hosts:
                    if p.add_host(addr, self.now):
                        self._log(INFO, f"probe target {addr} found in the neighbour table for {m.name}",
                                  Kind.TARGET_FOUND, g.name, m.name)

    def _probe_reply(self, ev: ProbeReply) -> None:
        nic = self.nics.get(ev.ifname)
        p = nic.health.probers.get(ev.family) if nic else None
        if p is None or not p.running:
            return
        g = self.group_of(nic)
        if (ev.kind == KIND_ARP) != p.arp:
            return                                 # from the socket of a prober a reload replaced
        if ev.kind == KIND_ARP:
            matched, foreign = self.arp_pins.match(g.name, p, ev, self.now)
            if foreign is not None:
                self._log(ERR, f"{foreign} {_inst(ev.family, nic)}", Kind.TARGET_FOREIGN_MAC, g.name, nic.name)
            if matched is None:
                return
            ev = matched
        if ev.kind == KIND_DISCOVERY:
            if (ev.src not in self.ledger.own and p.discovery(ev.nonce)
                    and targets.on_probe_subnet(g.cfg, ev.family, ev.src)):
                for m in g.nics:                   # discovery is shared by the group
                    q = m.health.probers.get(ev.family)
                    if q is not None and q.add_host(ev.src, self.now):
                        self._log(INFO, f"probe target {ev.src} found by multicast for {m.name}",
                                  Kind.TARGET_FOUND, g.name, m.name)
        else:
            target = nic.health.reply(p, ev, learn=nic.functioning and g.state != GroupState.FAILED)
            if target is not None:
                self._adapt_fdt(g, nic, p, target)
        self._judge(g, nic)

    def _adapt_fdt(self, g: Group, nic: Nic, p: Prober, target) -> None:
        """Let the group's FDT follow the RTT of an answer (detect.Fdt), and
        log what it did."""
        fdt = g.fdt
        crtt = target.rtt.crtt
        inst = _inst(p.family, nic)
        match fdt.adapt(p, target, [m.health for m in g.nics if m.functioning], self.now):
            case None:
                return
            case Kind.TARGET_SLOW:
                self._log(INFO, f"probe target {target.addr} {inst} is much slower than the other targets "
                                f"({round(crtt * 1000)} ms); probing the others and keeping the failure "
                                f"detection time", Kind.TARGET_SLOW, g.name, nic.name)
                return
            case Kind.FDT_RAISED:
                self._log(INFO, f"Cannot meet requested failure detection time of "
                                f"{round(fdt.configured * 1000)} ms on {inst} new failure detection time "
                                f"for group \"{g.name}\" is {round(fdt.current * 1000)} ms",
                          Kind.FDT_RAISED, g.name, nic.name)
            case Kind.FDT_LOWERED:
                self._log(INFO, f"Improved failure detection time {round(fdt.current * 1000)} ms on {inst} "
                                f"for group \"{g.name}\"", Kind.FDT_LOWERED, g.name, nic.name)
        self._set_interval(g)
        self._dirty = True

    def _set_interval(self, g: Group) -> None:
        for m in g.nics:
            for p in m.health.probers.values():
                p.interval = g.fdt.interval

    def _judge(self, g: Group, nic: Nic) -> None:
        """Ask a NIC's health for its verdict after its probes moved on; a
        change settles the group. A failure that is the group's (see
        detect.group_failed) fails every member, moves nothing, and
        rediscovers host targets."""
        if not nic.health.reassess():
            return
        self._dirty = True
        if nic.probe_state() != ProbeState.FAILED or not nic.functioning:
            return
        if detect.group_failed(nic.health, [m.health for m in g.nics if m is not nic and m.functioning],
                               self.now):
            detect.after_group_failure([m.health for m in g.nics], nic.health)
            self.arp_pins.forget(g.name)

    # --------------------------------------------------- verdicts and policy

    def _settle(self) -> None:
        """Apply verdict changes, then place addresses, then report."""
        failback = self.config.defaults.failback
        for g in [*self.groups, self.anon]:
            for nic in g.nics:
                works = nic.works()
                if works and nic.failed:
                    nic.failed = False
                    if not nic.fresh:
                        nic.counts["repairs"] += 1
                        self._log(INFO, f"IP interface repair detected on {nic.name}{self._of(g)}",
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
        # Announce first, then the routes, then the old copies go (whose
        # removal may make the kernel drop routes the second pass restores).
        views = self._route_views()
        self._reconcile_routes(views)
        # The old copies go; a failed NIC's neighbour queue is flushed once per
        # family, with its last address of that family (one dump, not one
        # per address).
        last = {(r.ifname, r.address.version): i for i, r in enumerate(self._retire)}
        for i, action in enumerate(self._retire):
            flush = action.flush_neighbours and last[(action.ifname, action.address.version)] == i
            self._emit(action if flush == action.flush_neighbours else replace(action, flush_neighbours=flush))
        if self._retire:
            self._retire = []
            self._reconcile_routes(views)
        self._install_test_addresses()
        self._assign_targets()
        for nic in self.nics.values():
            self._sync_probing(nic)
        line = summary(self.groups)
        if line != self._summary:
            self._summary = line
            self._out.append(StateChanged(line))

    def _place(self, g: Group) -> None:
        home, where = g.home(), self.ledger.where
        barred = {(n.name, f) for n in g.nics for f in (4, 6) if self.refusing.waiting((n.name, f), self.now)}
        desired = policy.place(g.nics, home, where, barred)
        moves: dict[tuple[str | None, str], list[Address]] = defaultdict(list)
        stranded: list[Address] = []
        for addr in home:
            cur, want = where[addr], desired.get(addr)
            if want is None:
                if cur is None:
                    stranded.append(addr)
                continue
            if cur == want:
                continue
            self._out.append(AddAddress(want, addr))
            self._out.append(Announce(want, addr))
            if cur is not None:
                self._retire.append(RemoveAddress(cur, addr, moved_to=want, flush_neighbours=self._broken(cur)))
            where[addr] = want
            self._moves[(want, addr)] = cur
            moves[(cur, want)].append(addr)
        for (src, dst), addrs in moves.items():
            self._log_move(g, src, dst, addrs)
        newly = [a for a in stranded if a not in self._stranded]
        self._stranded = (self._stranded - set(home)) | set(stranded)
        self._log_missing(g, [(a, f"{home[a] or g.name} (couldn't move; no alternative interface)")
                              for a in newly], Kind.MISSING_STRANDED, None)

    def _log_move(self, g: Group, src: str | None, dst: str, addrs: list[Address]) -> None:
        """The line of a move, after its adds: the daemon writes it only if
        the kernel took every address (Log.moved), and a refusal writes it
        again for the others (_add_refused). A failback is routine: INFO
        (in.mpathd logs it at LOG_ERR)."""
        home, moved = g.home(), tuple((dst, a) for a in addrs)
        listing = ", ".join(str(a) for a in addrs)
        counter = None
        if src is None:
            self._log_restored(g, dst, addrs, moved)
        elif all(home[a] == dst for a in addrs) and not self._broken(src):
            counter = "failbacks"
            self._log(INFO, f"Successfully failed back to NIC {dst} ({listing})", Kind.FAILBACK,
                      g.name, dst, moved)
        elif self._broken(src):
            counter = "failovers"
            self._log(ERR, f"Successfully failed over from NIC {src} to NIC {dst} ({listing})",
                      Kind.FAILOVER, g.name, src, moved)
        else:
            self._log(INFO, f"moved {listing} from NIC {src} to NIC {dst}: "
                            f"{self._why_leaving(src, g)}", Kind.MOVED, g.name, dst, moved)
        if counter:
            g.counts[counter] += 1
        self._move_lines.append((g, src, dst, addrs, counter))

    def _log_missing(self, g: Group, entries: list[tuple[Address, str]], kind: Kind,
                     ifname: str | None, moved: tuple[tuple[str, Address], ...] = ()) -> None:
        """Solaris' boot message for the addresses of missing NICs, one line
        per address family: `moving addresses from missing IPv4 interfaces:
        eth0 (moved to eth1)`."""
        by_family: dict[str, list[str]] = defaultdict(list)
        for a, entry in entries:
            if entry not in by_family[_family(a)]:
                by_family[_family(a)].append(entry)
        for fam, listed in by_family.items():
            self._log(ERR, f"moving addresses from missing {fam} interfaces: {', '.join(listed)}",
                      kind, g.name, ifname, moved)

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

    def _log_restored(self, g: Group, dst: str, addrs: list[Address],
                      moved: tuple[tuple[str, Address], ...]) -> None:
        """Addresses that were nowhere: their NIC is missing, or someone
        deleted them. Missing NICs get the Solaris boot message."""
        home = g.home()
        missing = [a for a in addrs if home[a] is not None and not self.nics[home[a]].present]
        plain = [a for a in addrs if a not in missing]
        self._log_missing(g, [(a, f"{home[a]} (moved to {dst})") for a in missing], Kind.MISSING_MOVED, dst,
                          moved)
        if plain:
            self._log(INFO, f"data address {', '.join(str(a) for a in plain)} placed on NIC {dst}",
                      Kind.ADDRESS_PLACED, g.name, dst, moved)

    def _refresh_group_state(self, g: Group) -> None:
        state = policy.group_state(g.nics)
        if state == g.state:
            return
        g.state = state
        if state == GroupState.FAILED and not g.unusable_logged:
            g.unusable_logged = True
            self._log(ERR, f"All IP interfaces in group {g.name} are now unusable", Kind.GROUP_FAILED, g.name)
        elif state != GroupState.FAILED and g.unusable_logged:
            g.unusable_logged = False
            usable = [n for n in g.nics if n.functioning]
            self._log(INFO, f"At least 1 IP interface ({usable[-1].name}) in group {g.name} is now usable",
                      Kind.GROUP_USABLE, g.name, usable[-1].name)

    def _assign_targets(self) -> None:
        for g in self.groups:
            for fam in (4, 6):
                probers = [p for m in g.nics for f, p in m.health.probers.items() if f == fam]
                if not probers:
                    continue
                mode, addrs = targets.choose(g.cfg, fam, self.routes.of_group(g.name), self.ledger.own)
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
        p = nic.health.probers.get(act.family) if nic else None
        if p is not None and p.running:
            p.stop()
            p.start_after = self.now + timing.PROBE_START_RETRY_S

    def _sync_probing(self, nic: Nic) -> None:
        """Probe while the NIC is present, has carrier, is not offline and
        has its test address."""
        for fam, p in nic.health.probers.items():
            src = self.source(nic, fam)
            want = (nic.present and nic.health.link.state != LinkState.DOWN and not nic.offline
                    and src is not None
                    and (fam == 6 or p.arp or (nic.name, nic.cfg.test[0]) in self.ledger.tests_present))
            if want and not p.running and p.start_after <= self.now:
                self._out.append(StartProbing(nic.name, fam, nic.index, src, p.arp))   # type: ignore[arg-type]
                p.start(self.now)
            elif not want and p.running:
                self._out.append(StopProbing(nic.name, fam))
                p.stop()

    def _install_test_addresses(self) -> None:
        """On every present NIC whose link is not down (the kernel may be
        tearing a NIC that is down away: its addresses go back once it is up)."""
        for nic in self.nics.values():
            if not nic.present or nic.health.link.state == LinkState.DOWN:
                continue
            for t in nic.cfg.test:
                if (nic.name, t) not in self.ledger.tests_present:
                    self.ledger.tests_present.add((nic.name, t))
                    self._out.append(AddAddress(nic.name, t, test=True))

    def source(self, nic: Nic, family: int) -> IP | None:
        """The source of a NIC's probes in one family (0.0.0.0 for ARP probes)."""
        if family == 4:
            return _UNSPECIFIED4 if nic.cfg.test_arp else nic.cfg.test[0].ip
        return self.ledger.link_local.get(nic.name)
