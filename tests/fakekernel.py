"""An in-memory kernel for the unit tests of the core (the real one, in
namespaces, is the lab package): links and addresses in dicts, time passed
by hand."""

import heapq
import ipaddress
import random
import textwrap

from mpathd.config import Config, Defaults, parse_groups
from mpathd.core.events import (ActionFailed, AddAddress, Announce, LinkChanged, LinkInfo, Log, NeighboursRead,
                                OwnedRoute, ProbeReply, ReadNeighbours, RemoveAddress, RouteKey, SendProbe, SetLinkUp,
                                Started, Tick)
from mpathd.core.machine import Core
from mpathd.core.probe import KIND_ARP, KIND_DISCOVERY

A = ipaddress.ip_interface


class FakeKernel:
    """The core plus a kernel made of dicts: it applies the core's actions
    the way the netlink adapter would, and checks after every event that
    each data address is on exactly one NIC of its group. A (NIC, family)
    in `refuse` refuses data addresses of that family (disable_ipv6=1), and
    the refusals go back to the core as the daemon hands them back."""

    def __init__(self, yaml: str, failback: bool = True, present=None, down=(), admin_down=(), kernel=None):
        self.now = 0.0
        cfg = Config(defaults=Defaults(failback=failback), groups=parse_groups(textwrap.dedent(yaml), "t"))
        self.core = Core(cfg)
        names = [i.name for g in cfg.groups for i in g.interfaces]
        present = names if present is None else present
        self.index = {n: i + 1 for i, n in enumerate(dict.fromkeys([*names, *present]))}
        self.up = {n: n not in admin_down for n in present}          # IFF_UP
        self.running = {n: n not in down and self.up[n] for n in present}
        self.kernel: dict[str, set] = {n: set() for n in present}
        for ifname, addr in (kernel or {}).items():
            for a in addr:
                self.kernel[ifname].add(A(a))
        self.actions: list = []
        self.refuse: set[tuple[str, int]] = set()
        self.refused: list[tuple[float, AddAddress]] = []     # (when, the add refused)
        self.do(Started(tuple(self.info(n) for n in present),
                        tuple((n, a) for n, s in self.kernel.items() for a in s)))

    def info(self, name):
        return LinkInfo(name, self.index[name], f"02:00:00:00:00:{self.index[name]:02x}", self.running[name],
                        up=self.up.get(name, True))

    def do(self, event):
        """Handle one event and what the kernel refused of its actions; the
        actions carried out are returned (a refused add's announcement and
        removal are not, as the daemon skips them)."""
        pending, done, failed = [event], [], set()
        while pending:
            assert len(self.refused) < 1000, "the core keeps asking what the kernel refuses"
            for a in self.core.handle(pending.pop(0), self.now):
                match a:
                    case AddAddress() if not a.test and (a.ifname, a.address.version) in self.refuse:
                        failed.add((a.ifname, a.address))
                        self.refused.append((self.now, a))
                        pending.append(ActionFailed(a, "NetlinkError: (13, 'Permission denied')"))
                        continue
                    case Announce() if (a.ifname, a.address) in failed:
                        continue
                    case RemoveAddress() if (a.moved_to, a.address) in failed:
                        continue
                    case Log() if failed & set(a.moved):
                        continue
                    case AddAddress():
                        self.kernel[a.ifname].add(a.address)
                    case RemoveAddress():
                        if a.moved_to is not None:           # make-before-break: the new copy is there
                            assert a.address in self.kernel[a.moved_to], a
                        self.kernel[a.ifname].discard(a.address)
                    case SetLinkUp():
                        assert a.index == self.index[a.ifname], a
                        self.up[a.ifname] = True     # its carrier is the test's to report, with link()
                done.append(a)
        self.actions += done
        self.check_invariant()
        return done

    def link(self, name, running, up=True):
        self.running[name], self.up[name] = running, up
        return self.do(LinkChanged(self.info(name)))

    def holder(self, addr):
        (h,) = [n for n, s in self.kernel.items() if A(addr) in s]
        return h

    def logs(self, actions=None):
        return [a.text for a in (self.actions if actions is None else actions) if isinstance(a, Log)]

    def check_invariant(self):
        """Every data address is on exactly one NIC of its group, and on an
        active one whenever the group has one that takes its family; and the
        core believes it is where it is."""
        for g in self.core.groups:
            for addr in g.home():
                holders = [n for n, s in self.kernel.items() if addr in s]
                assert len(holders) <= 1, (addr, holders)
                present = [n for n in g.nics if n.present]
                if any((n.name, addr.version) not in self.refuse for n in present):
                    assert len(holders) == 1, (addr, self.kernel)
                if any(n.active and (n.name, addr.version) not in self.refuse for n in g.nics):
                    assert self.core.nics[holders[0]].active, (addr, holders)
                if present:
                    assert self.core.ledger.where[addr] == (holders or [None])[0], (addr, holders)


def moves(actions):
    """The moves among actions: the removals that are a move's second half."""
    return [a for a in actions if isinstance(a, RemoveAddress) and a.moved_to is not None]


IP = ipaddress.ip_address
ROUTER = IP("192.0.2.1")


def route(dst, gateway=None, dev="eth0", metric=0):
    """A route the kernel has, as the netlink adapter reports it."""
    net = ipaddress.ip_network(dst)
    return OwnedRoute(RouteKey(net.version, 254, net, 0, metric),
                      None if gateway is None else IP(gateway), dev)


DEFAULT_ROUTE = (route("0.0.0.0/0", "192.0.2.1"),)

GROUP = """
groups:
  g:
    interfaces:
      eth0: {data: [192.0.2.100/24], test: [192.0.2.10/24]}
      eth1: {data: [192.0.2.101/24], test: [192.0.2.11/24]}
"""


def mac_of(ip) -> bytes:
    """A target's MAC in the simulated link."""
    return b"\x02\x00" + ip.packed


class Net:
    """The core, a clock, and a link that answers probes."""

    def __init__(self, yaml=GROUP, fdt_ms=1000, seed=0, routes=DEFAULT_ROUTE,
                 rtt=0.0002, hosts=(), watched=()):
        self.now = 0.0
        self.rng = random.Random(seed)
        cfg = Config(defaults=Defaults(fdt_ms=fdt_ms, track_only_groups=not watched),
                     groups=parse_groups(textwrap.dedent(yaml), "t"))
        self.core = Core(cfg, rng=random.Random(seed))
        self.names = [i.name for g in cfg.groups for i in g.interfaces] + list(watched)   # watched: in no group
        self.rtt = rtt
        self.hosts = [IP(h) for h in hosts]     # answer multicast discovery
        self.broken: dict[str, float] = {}     # ifname -> loss probability
        self.dead_targets: set = set()
        self.slow: dict = {}                   # target -> its own RTT
        self.neighbours: tuple = ()            # the host's neighbour table (ARP probing's hosts)
        self.forger: bytes | None = None       # answers every ARP probe first, from this MAC
        self.actions: list = []
        self.replies: list = []                # heap of (time, n, ProbeReply)
        self.n = 0
        self.kernel = {n: set() for n in self.names}
        self.log: list[str] = []
        lls = tuple((n, ipaddress.ip_interface(f"fe80::a{i}/64")) for i, n in enumerate(self.names))
        self.feed(Started(tuple(LinkInfo(n, i + 1, None, True) for i, n in enumerate(self.names)), lls,
                          tuple(routes)))

    def feed(self, event):
        for a in self.core.handle(event, self.now):
            self.actions.append(a)
            if isinstance(a, ReadNeighbours):
                self.feed(NeighboursRead(tuple(IP(h) for h in self.neighbours)))
            elif isinstance(a, Log):
                self.log.append((self.now, a.text))
            elif isinstance(a, AddAddress):
                self.kernel[a.ifname].add(a.address)
            elif isinstance(a, RemoveAddress):
                self.kernel[a.ifname].discard(a.address)
            elif isinstance(a, SendProbe):
                self.send(a)

    def send(self, a: SendProbe):
        if self.rng.random() < self.broken.get(a.ifname, 0.0):
            return
        arp = a.family == 4 and self.core.nics[a.ifname].cfg.test_arp
        if arp and self.forger is not None:
            self.n += 1
            heapq.heappush(self.replies, (self.now + self.rtt / 2, self.n, ProbeReply(
                a.ifname, 4, a.dst, 0, 0, KIND_ARP, self.now + self.rtt / 2, mac=self.forger)))
        responders = self.hosts if a.kind == KIND_DISCOVERY else [a.dst]
        for r in responders:
            if r in self.dead_targets:
                continue
            self.n += 1
            rtt = self.slow.get(r, self.rtt)
            reply = (ProbeReply(a.ifname, 4, r, 0, 0, KIND_ARP, self.now + rtt, mac=mac_of(r)) if arp else
                     ProbeReply(a.ifname, a.family, r, a.seq, a.nonce, a.kind, self.now + rtt))
            heapq.heappush(self.replies, (self.now + rtt, self.n, reply))

    def run(self, until: float):
        while True:
            deadline = self.core.next_deadline()
            t_reply = self.replies[0][0] if self.replies else None
            t = min(x for x in (deadline, t_reply, until) if x is not None)
            if t >= until:
                self.now = until
                return
            self.now = max(self.now, t)
            if t_reply is not None and t_reply <= t:
                self.feed(heapq.heappop(self.replies)[2])
            else:
                self.feed(Tick())

    def holder(self, addr):
        (h,) = [n for n, s in self.kernel.items() if ipaddress.ip_interface(addr) in s]
        return h

    def when(self, text):
        return next((t for t, line in self.log if text in line), None)

    def nic(self, name):
        return self.core.nics[name]
