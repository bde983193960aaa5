"""mpathd: the main loop. It wires the adapters (netlink, announcements,
control socket, signals) to the core and carries out the core's actions.
It decides nothing itself.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import selectors
import signal
import sys
import time

from . import config as configmod
from .adapters import control
from .oneline import OneLineParser, load_config
from .core.machine import Core
from .core.reports import probes, status, summary
from .core.events import (ActionFailed, AddAddress, Announce, ArpGuarded, ConfigReloaded, DeleteRoute, DropPath,
                          Event, GuardArp, InstallRoute, LinkChanged, LinkRemoved, Log, NeighboursRead, Offline,
                          Online, PrepareInterface, ReadNeighbours, Refused,
                          ReleaseInterface, RemoveAddress, RestoreRoute, Resynced, SendProbe, SetLinkUp, SetPath,
                          Started, StartProbing, StateChanged, StopProbing, Tick)
from .adapters.carrier import CarrierReader
from .adapters.kernel import NoSuchInterface
from .adapters.log import emit, event, fields, log, setup
from .core import timing
from .core.catalogue import Kind
from .adapters.notify import Notifier

_TICK = Tick()                   # no fields: one instance serves every turn
_RESYNC = object()               # dispatch: re-read the kernel here
_MAX_ROUNDS = 1000               # dispatch: far above any real cascade (one per refused action)
_NIC_DOWN = (errno.ENETDOWN, errno.ENODEV, errno.ENXIO)   # errors of a NIC that is down or gone


class Daemon:
    def __init__(self, cfg: configmod.Config, control_path: str, defaults_path: str, groups_path: str):
        self.paths = (defaults_path, groups_path)
        # scapy is imported here, once, and never on an event.
        from .adapters.announce import Announcer
        from .adapters.arpsock import ArpSockets
        from .adapters.kernel import Kernel
        from .adapters.probesock import ProbeSockets
        self.kernel = Kernel()
        self.carrier = CarrierReader()
        self._carrier_due = 0.0
        self.announcer = Announcer(cfg.defaults)
        self.core = Core(cfg)
        self.sel = selectors.DefaultSelector()
        self.probes = ProbeSockets(lambda sock, cb: self.sel.register(sock, selectors.EVENT_READ, cb),
                                   self.sel.unregister, self.dispatch)
        self.arp = ArpSockets(lambda sock, cb: self.sel.register(sock, selectors.EVENT_READ, cb),
                              self.sel.unregister, self.dispatch)
        self.sel.register(self.kernel, selectors.EVENT_READ, self._netlink)
        self.control = control.ControlServer(control_path, {
            "ping": control.Command(lambda req, peer: {}, read_only=True),
            "status": control.Command(lambda req, peer: status(self.core, time.monotonic()), read_only=True),
            "probes": control.Command(self._probes, read_only=True),
            "reload": control.Command(self._reload, read_only=False),
            "offline": control.Command(self._offline_online, read_only=False),
            "online": control.Command(self._offline_online, read_only=False),
        }, self.sel)
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._signal_r, selectors.EVENT_READ, self._signals)
        self.stopping = False
        self.notifier = Notifier()
        self._refused: list[str] = []
        self.instance = os.urandom(8).hex()     # tells a restarted daemon from this one

    # ----------------------------------------------------------- the loop

    def run(self) -> int:
        signal.set_wakeup_fd(self._signal_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)      # the wakeup fd carries the number
        self.dispatch(Started(*self.kernel.snapshot(), routes=self.kernel.routes.dump()))
        stale = self.kernel.routes.collect_garbage()
        if stale:
            event(logging.INFO, Kind.NEXTHOPS_COLLECTED, f"deleted {stale} nexthops an earlier mpathd left unused")
        # Everything imported so far (scapy alone is ~60 MiB of objects) lives
        # as long as the process: keep the cyclic collector from walking it
        # again and again as probes allocate.
        gc.collect()
        gc.freeze()
        event(logging.INFO, Kind.READY, f"mpathd ready: {summary(self.core.groups)}")
        self.notifier.ready(summary(self.core.groups))
        try:
            while not self.stopping:
                # The core's deadline is read once a turn: whatever the
                # events of this turn change, the next turn reads it again.
                core_deadline = self.core.next_deadline()
                wake = core_deadline
                carrier_due = self._carrier_due if self.core.nics else None
                for d in (self.control.next_deadline(), self.notifier.next_deadline(),
                          self.announcer.next_deadline(), carrier_due):
                    if d is not None and (wake is None or d < wake):
                        wake = d
                for key, _ in self.sel.select(None if wake is None else max(0.0, wake - time.monotonic())):
                    self._guarded(key.data)
                if self.control.clients:
                    self.control.expire()
                self.notifier.tick()
                self.announcer.tick()
                if core_deadline is not None and time.monotonic() >= core_deadline:
                    self._guarded(self._tick)
                if carrier_due is not None and time.monotonic() >= carrier_due:
                    self._guarded(self._read_carrier)
        finally:
            self.notifier.stopping()
            self.probes.close_all()
            self.arp.close_all()
            self.control.close()
            self.kernel.release_all()
            self.kernel.close()
            self.carrier.close()
        event(logging.INFO, Kind.STOPPED, "mpathd stopped; data addresses left where they are")
        return 0

    @staticmethod
    def _guarded(callback) -> None:
        """A bug in one handler must not end failover protection: log it with
        its traceback and go on with the next event."""
        try:
            callback()
        except Exception:                              # noqa: BLE001
            log.exception("internal error, continuing", extra=fields(Kind.INTERNAL_ERROR))

    def _signals(self) -> None:
        for signo in os.read(self._signal_r, 64):
            if signo in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif signo == signal.SIGHUP:
                event(logging.INFO, Kind.RELOAD, "SIGHUP: reloading the configuration")
                try:
                    self.reload()
                except control.ControlError:
                    pass                              # logged; the running configuration stays

    def reload(self) -> None:
        """Re-read both files and apply the difference; a bad file changes
        nothing and is reported (ControlError for ipmpctl)."""
        self.notifier.reloading()
        try:
            cfg = configmod.load(*self.paths)
        except configmod.ConfigError as e:
            event(logging.ERROR, Kind.RELOAD_REFUSED, f"reload refused, the running configuration stays: {e}")
            self.notifier.ready(summary(self.core.groups))
            raise control.ControlError(f"reload refused: {e}") from None
        for warning in cfg.warnings:
            event(logging.WARNING, Kind.CONFIG_WARNING, warning)
        self.announcer.configure(cfg.defaults)
        self.dispatch(ConfigReloaded(cfg, *self.kernel.snapshot()))
        self.notifier.ready(summary(self.core.groups))

    def _tick(self) -> None:
        self.dispatch(_TICK)

    def _netlink(self) -> None:
        link_event = False
        for news in self.kernel.read():
            link_event = link_event or isinstance(news, (LinkChanged, LinkRemoved))
            self._from_kernel(news)
        if link_event:
            # linkwatch may be holding back another NIC's carrier event
            self._read_carrier()

    def _read_carrier(self) -> None:
        self._carrier_due = time.monotonic() + timing.CARRIER_POLL_S
        for loss in self.carrier.losses(self.core.with_carrier()):
            self._from_kernel(loss)

    def _from_kernel(self, event: Event) -> None:
        """A link or address event, from netlink or the carrier bit: a NIC
        that lost its link or is gone announces nothing more."""
        if isinstance(event, LinkRemoved) or (isinstance(event, LinkChanged) and not event.link.running):
            self.announcer.cancel(event.name if isinstance(event, LinkRemoved) else event.link.name)
        self.dispatch(event)

    # ------------------------------------------------- control requests

    def _probes(self, req: dict, peer: control.Peer) -> dict:
        since = req.get("since", 0)
        if type(since) is not int or since < 0:
            raise control.ControlError('probes: "since" must be a record id, an integer >= 0')
        return {"probes": probes(self.core, time.monotonic(), since), "instance": self.instance}

    def _reload(self, req: dict, peer: control.Peer) -> dict:
        self.reload()
        return {"summary": summary(self.core.groups)}

    def _offline_online(self, req: dict, peer: control.Peer) -> dict:
        cmd, ifname = req["cmd"], req.get("interface")
        if not isinstance(ifname, str) or not ifname:
            raise control.ControlError(f'{cmd} needs an "interface" string')
        self._refused = []
        self.dispatch(Offline(ifname, bool(req.get("force"))) if cmd == "offline" else Online(ifname))
        if self._refused:
            event(logging.ERROR, Kind.REQUEST_REFUSED, f"refused {cmd} {ifname}: {self._refused[0]}", ifname)
            raise control.ControlError(self._refused[0])
        return {"summary": summary(self.core.groups)}

    # --------------------------------------------------------- the actions

    def dispatch(self, incoming: Event) -> None:
        """Hand the event to the core and carry out its actions. What the
        core must hear of them comes back depth-first, refusals first, so
        that every refusal of an event's actions reaches the core before any
        other event (core.handle counts on it)."""
        pending: list = [incoming]
        resynced = False
        unplaced: set = set()                # (NIC, address) whose add failed
        rounds = 0
        while pending:
            rounds += 1
            if rounds > _MAX_ROUNDS:
                # a bug that keeps asking what the kernel refuses must not
                # hold the loop: drop the rest, the next event starts afresh
                event(logging.ERROR, Kind.INTERNAL_ERROR,
                      f"internal error, continuing: {rounds - 1} rounds of refusals for one event; "
                      f"dropped {len(pending)} pending")
                return
            ev = pending.pop(0)
            if ev is _RESYNC:
                ev = Resynced(*self.kernel.snapshot())
            results = []
            for action in self.core.handle(ev, time.monotonic()):
                if unplaced and _of_refused_move(action, unplaced):
                    continue
                result = self.execute(action)
                if isinstance(action, AddAddress):
                    if isinstance(result, ActionFailed):
                        unplaced.add((action.ifname, action.address))
                    else:
                        unplaced.discard((action.ifname, action.address))
                if result is not None:
                    results.append(result)
            failures = [r for r in results if isinstance(r, ActionFailed)]
            pending[:0] = failures + [r for r in results if not isinstance(r, ActionFailed)]
            if failures and not resynced:
                # the kernel is not as the core believes: re-read it once
                # everything has been carried out, and only once per event,
                # so that an action the kernel keeps refusing cannot loop
                resynced = True
                pending.append(_RESYNC)

    def execute(self, action) -> ActionFailed | ArpGuarded | NeighboursRead | None:
        """Carry out one action; return what the core must hear of it: its
        failure, or the event that answers it."""
        try:
            match action:                            # the probe path first
                case SendProbe():
                    if action.family == 4 and action.ifname in self.arp:
                        self.arp.send(action)
                    else:
                        self.probes.send(action)
                case Log():
                    emit(action)
                case Announce():
                    self.announcer.announce(action.ifname, action.address)
                case StartProbing() if action.arp:
                    self.arp.open(action.ifname, action.index)
                case StartProbing():
                    self.probes.open(action.ifname, action.family, action.index, action.source)
                case StopProbing():
                    if action.family == 4:
                        self.arp.close(action.ifname)
                    self.probes.close(action.ifname, action.family)
                case ReadNeighbours():
                    return self.kernel.neighbours()
                case AddAddress():
                    self.kernel.add_address(action)
                case RemoveAddress():
                    self.announcer.cancel(action.ifname, action.address)
                    self.kernel.remove_address(action)
                case SetPath():
                    self.kernel.routes.set_path(action.path, action.members)
                case InstallRoute():
                    self.kernel.routes.install(action.route, action.path, action.members)
                case DropPath():
                    self.kernel.routes.drop_path(action.path)
                case RestoreRoute():
                    self.kernel.routes.restore(action.route, action.index)
                case DeleteRoute():
                    self.kernel.routes.delete(action.route)
                case PrepareInterface():
                    self.kernel.prepare(action.ifname, action.index, action.neigh_retrans_ms, action.spreading,
                                        {a.version for a in action.addresses})
                    self.announcer.open(action.ifname, action.mac, action.addresses)
                    self.arp.refresh(action.ifname, action.mac)
                case ReleaseInterface():
                    self.kernel.release(action.ifname)
                    self.announcer.close(action.ifname)
                case SetLinkUp():
                    self.kernel.set_up(action)
                case StateChanged():
                    self.notifier.status(action.summary)
                case Refused():
                    self._refused.append(action.reason)
                case GuardArp():
                    return self.kernel.guard_arp(action.enable, action.members)
        except Exception as e:                       # noqa: BLE001 -- reported to the core
            log.debug("action %s failed", action, exc_info=True)
            return ActionFailed(action, f"{type(e).__name__}: {e}", self._nic_down(action, e))
        return None

    def _nic_down(self, action, e: Exception) -> bool:
        """Did the action fail because a NIC of it is down or gone? The
        error says so, or the NIC has no carrier now (the kernel says
        EINVAL for an IPv6 nexthop on a NIC that is down)."""
        if isinstance(e, NoSuchInterface) or getattr(e, "code", getattr(e, "errno", None)) in _NIC_DOWN:
            return True
        nics = [action.ifname] if hasattr(action, "ifname") else [n for n, _ in getattr(action, "members", ())]
        return any(self.kernel.down(n) for n in nics)


def _of_refused_move(action, unplaced: set) -> bool:
    """Is the action part of a move whose add the kernel refused? Then it is
    skipped: no announcement, the old copy stays, and the move's line is
    not written (the core writes it again for the addresses that moved)."""
    match action:
        case Announce():
            return (action.ifname, action.address) in unplaced
        case RemoveAddress():
            return (action.moved_to, action.address) in unplaced
        case Log():
            return not unplaced.isdisjoint(action.moved)
    return False


def _parser() -> OneLineParser:
    p = OneLineParser(prog="mpathd", description="IP network multipathing daemon")
    p.add_argument("--defaults", default=configmod.DEFAULTS_PATH, metavar="FILE",
                   help=f"tunables file (default {configmod.DEFAULTS_PATH})")
    p.add_argument("--config", default=configmod.GROUPS_PATH, metavar="FILE",
                   help=f"groups file (default {configmod.GROUPS_PATH})")
    p.add_argument("--control", default=control.DEFAULT_PATH, metavar="SOCKET",
                   help=f"control socket (default {control.DEFAULT_PATH})")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup(args.verbose)
    cfg = load_config("mpathd", args.defaults, args.config)
    if cfg is None:
        return 2
    for warning in cfg.warnings:
        event(logging.WARNING, Kind.CONFIG_WARNING, warning)
    try:
        daemon = Daemon(cfg, args.control, args.defaults, args.config)
    except OSError as e:
        print(f"mpathd: {e}", file=sys.stderr)
        return 1
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
