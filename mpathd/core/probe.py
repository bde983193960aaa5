"""The probe engine: in.mpathd's probe-based failure detection, sans-I/O.

One Prober runs per NIC and address family that has a test address (or,
for IPv4, probes with address-less ARP requests: `arp`, which uses the same
timing and verdicts; core/arp.py matches its replies). It
decides when to send, to whom, when a probe is lost, and what the probes
say about the NIC (its verdict). It sends nothing itself: send() returns
the probes to transmit, and replies come in through reply().

Timing, as in.mpathd (timing.py has the derivations):
* probe k goes out at a random point in the second half of the k-th probe
  interval, so two probes are 0.5 to 1.5 intervals apart;
* a probe is lost when it is unanswered past its target's RTT estimate
  (Jacobson/Karels), but never sooner than half an interval, or past a whole
  interval while there is no estimate. Unlike in.mpathd, which only looks at
  losses when the next probe goes out, every probe has its own deadline, so
  five losses are always counted within the FDT;
* a late reply still turns a lost probe into an answered one;
* five losses in a row fail the NIC, ten answers in a row repair it;
* a probe the daemon itself sent late (its process was not scheduled in
  time) counts neither way: it is recorded as late and skipped.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..config import IP
from . import timing
from .states import ProbeState

UNACKED, ACKED, LOST = "unacked", "acked", "lost"
KIND_UNICAST, KIND_DISCOVERY = 1, 2
KIND_ARP = 3                        # an ARP reply: it carries no sequence number and no nonce


class RttEstimator:
    """Jacobson/Karels smoothed RTT and mean deviation (in.mpathd
    compute_crtt), in seconds. crtt = average + 4 x mean deviation."""

    def __init__(self) -> None:
        self.avg: float | None = None
        self.dev = 0.0
        self.deferred: float | None = None

    def crtt_with(self, m: float) -> float:
        if self.avg is None:
            return 3 * m                # avg m, deviation m/2
        err = m - self.avg
        return self.avg + err / 8 + 4 * (self.dev + (abs(err) - self.dev) / 4)

    def update(self, m: float) -> None:
        if self.avg is None:
            self.avg, self.dev = m, m / 2
            return
        err = m - self.avg
        self.avg = max(0.0, self.avg + err / 8)
        self.dev += (abs(err) - self.dev) / 4

    @property
    def crtt(self) -> float | None:
        return None if self.avg is None else self.avg + 4 * self.dev

    def reset(self) -> None:
        self.avg, self.dev, self.deferred = None, 0.0, None


@dataclass
class Target:
    addr: IP
    kind: str                       # static | route | host
    rtt: RttEstimator = field(default_factory=RttEstimator)
    losses: int = 0                 # consecutive losses of its own probes
    dead_until: float | None = None
    text: str = ""                  # str(addr), made once: the probe history names it per probe
    gone: bool = False              # left the list: answers to its probes count for nothing

    def __post_init__(self) -> None:
        self.text = str(self.addr)


@dataclass(slots=True)
class Slot:
    seq: int
    target: Target
    nonce: int
    sent: float
    deadline: float
    late: bool = False
    status: str = UNACKED
    rtt: float | None = None
    void: bool = False              # answered from a MAC other than its target's: lost, whatever comes


class Probe(NamedTuple):
    """One echo request to send: to a target, or to all hosts (discovery)."""
    dst: IP
    seq: int
    nonce: int
    kind: int


_RECORD_IDS = itertools.count(1)    # one sequence for the daemon: the cursor of the probe stream


class Record(NamedTuple):
    """A finished probe, for the probe view (ipmpstat -p)."""
    id: int
    time: float
    seq: int
    target: str
    status: str
    rtt: float | None
    rtt_avg: float | None
    rtt_dev: float | None
    late: bool


class Prober:
    HISTORY = timing.NUM_PROBE_REPAIRS * timing.MAX_PROBE_TARGETS + 2   # in.mpathd's 52 slots

    def __init__(self, family: int, interval: float, rng: random.Random, arp: bool = False):
        self.family = family
        self.arp = arp                      # IPv4 by address-less ARP requests instead of ICMP echo
        self.interval = interval            # seconds; the group's FDT / 7
        self.rng = rng
        self.targets: list[Target] = []
        self.mode = "multicast"             # static | routes | multicast
        self.slots: deque[Slot] = deque(maxlen=self.HISTORY)
        self.by_seq: dict[int, Slot] = {}
        self.outstanding: list[Slot] = []       # UNACKED slots: the only ones with a deadline
        self.seq = 0
        self.turn = 0
        self.base: float | None = None
        self.next_send: float | None = None
        self.discovery_nonces: deque[int] = deque(maxlen=4)
        self.rediscover = False             # a host target was dropped: look for another
        self.resting_hosts: dict[IP, float] = {}    # dropped hosts -> until when discovery skips them
        self.discoveries_unanswered = 0
        self.no_targets_reported = False
        self.verdict = ProbeState.UNKNOWN   # OK, FAILED, or UNKNOWN (no targets)
        self.last_ack: float | None = None
        self.proven_at: float | None = None     # first answer since (re)start
        self.start_after = 0.0                  # when a failed start may be tried again
        self.records: deque[Record] = deque(maxlen=timing.PROBE_RECORDS)
        self.stats = {"sent": 0, "acked": 0, "lost": 0, "late": 0, "missed": 0, "discovery": 0}

    # ------------------------------------------------------------ schedule

    def start(self, now: float) -> None:
        """Begin probing: the first probe within one interval (in.mpathd's
        start_timer)."""
        self.proven_at = None
        self.base = now + self.rng.uniform(0, self.interval)
        self.next_send = self.base

    def stop(self) -> None:
        self.base = self.next_send = None

    @property
    def running(self) -> bool:
        return self.next_send is not None

    def deadline(self) -> float | None:
        d = self.next_send
        for s in self.outstanding:
            if d is None or s.deadline < d:
                d = s.deadline
        return d

    def active_targets(self, now: float) -> list[Target]:
        for t in self.targets:
            if t.dead_until is not None:
                break
        else:
            return self.targets[:timing.MAX_PROBE_TARGETS]
        live = [t for t in self.targets if t.dead_until is None or t.dead_until <= now]
        for t in live:
            t.dead_until = None
        return live[:timing.MAX_PROBE_TARGETS]

    def due(self, now: float) -> tuple[list[Probe], int]:
        """Send what is due at `now`; return the probes and how many
        scheduled sends were missed entirely because the daemon ran late."""
        out: list[Probe] = []
        missed = 0
        if self.next_send is None or now < self.next_send:
            return out, missed
        late = now - self.next_send > self.interval / 2
        # in.mpathd phyint_inst_timer: the next send falls in the second half
        # of the next interval; whole intervals that went by unsent are skipped.
        nxt = self.base + (0.5 + 0.5 * self.rng.random()) * self.interval
        if now > nxt:
            missed = int((now - nxt) // self.interval) + 1
            self.base += missed * self.interval
            nxt += missed * self.interval
            self.stats["missed"] += missed
        self.base += self.interval
        self.next_send = nxt
        targets = self.active_targets(now)
        if targets:
            target = targets[self.turn % len(targets)]
            self.turn += 1
            self.seq = (self.seq + 1) & 0xFFFF
            nonce = self.rng.getrandbits(64)
            crtt = target.rtt.crtt
            wait = self.interval if crtt is None else max(crtt, self.interval / 2)
            slot = Slot(self.seq, target, nonce, now, now + wait, late=late)
            if len(self.slots) == self.slots.maxlen:
                self.by_seq.pop(self.slots[0].seq, None)
            self.slots.append(slot)
            self.by_seq[slot.seq] = slot
            self.outstanding.append(slot)
            self.stats["sent"] += 1
            if late:
                self.stats["late"] += 1
            out.append(Probe(target.addr, slot.seq, nonce, KIND_UNICAST))
        if not targets or (len(targets) == 1 and targets[0].kind == "host") or self.rediscover:
            self.rediscover = False
            nonce = self.rng.getrandbits(64)
            self.discovery_nonces.append(nonce)
            self.discoveries_unanswered += 1
            self.stats["discovery"] += 1
            out.append(Probe(_all_hosts(self.family), 0, nonce, KIND_DISCOVERY))
        return out, missed

    def expire(self, now: float) -> list[Target]:
        """Mark overdue probes lost; return targets that died meanwhile (their
        own five losses in a row while the NIC as a whole was still fine)."""
        dead: list[Target] = []
        overdue = [s for s in self.outstanding if s.deadline <= now]
        if overdue:
            self.outstanding = [s for s in self.outstanding if s.deadline > now]
        for s in overdue:
            if s.status == UNACKED:
                s.status = LOST
                self.stats["lost"] += 1
                self._record(s)
                if s.late:
                    continue
                s.target.losses += 1
                if (s.target.losses >= timing.NUM_PROBE_FAILS and len(self.active_targets(now)) > 1
                        and self.consecutive(LOST) < timing.NUM_PROBE_FAILS):
                    dead.append(s.target)
        return dead

    # ------------------------------------------------------------ replies

    def discovery(self, nonce: int) -> bool:
        """Is this the answer to one of our recent discovery probes?"""
        if nonce not in self.discovery_nonces:
            return False
        self.found()
        return True

    def found(self) -> None:
        """Discovery was answered (an echo, or a host in the neighbour table
        for ARP probing): the next silence is counted afresh."""
        self.discoveries_unanswered = 0
        self.no_targets_reported = False

    def nothing_found(self) -> bool:
        """True once when discovery has gone unanswered NUM_PROBE_FAILS times
        and there is no target: time to say so."""
        if (self.targets or self.discoveries_unanswered < timing.NUM_PROBE_FAILS
                or self.no_targets_reported):
            return False
        self.no_targets_reported = True
        return True

    def add_host(self, addr: IP, now: float) -> bool:
        """Take a host found by discovery as a target, if there is room, no
        router or configured target is in use, and it was not dropped (dead
        or slow) less than DEAD_TARGET_REST_S ago."""
        if (len(self.targets) >= timing.MAX_PROBE_TARGETS or any(t.addr == addr for t in self.targets)
                or any(t.kind != "host" for t in self.targets) or self.resting_hosts.get(addr, now) > now):
            return False
        self.resting_hosts.pop(addr, None)
        self.targets.append(Target(addr, "host"))
        self.mode = "multicast"
        return True

    def outstanding_to(self, addr: IP) -> Slot | None:
        """The oldest probe to `addr` still within its deadline and not
        voided: what an ARP reply from `addr` answers (it carries nothing
        else to match)."""
        for s in self.outstanding:
            if s.target.addr == addr and not s.void:
                return s
        return None

    def void(self, slot: Slot, now: float) -> None:
        """A forged or foreign answer to `slot`: it counts as lost at the next
        expiry (`now`), as if unanswered, and nothing acknowledges it."""
        slot.void = True
        slot.deadline = now

    def reply(self, src: IP, seq: int, nonce: int, rx: float, sent: float | None = None,
              learn: bool = True) -> str | None:
        """Match an echo reply; return 'ack', 'late-ack' (it turned a loss
        into an answer) or None if it answers nothing we sent: spoofed, stray
        or duplicate. Source, sequence number and nonce must all match.

        The RTT runs from `sent`, when the probe really went to the kernel,
        not from when it was scheduled: a daemon held up between the two
        (a stalled host) must not take its own delay for the path's. A
        `sent` outside [scheduled, rx] cannot be true (the target mangled
        the payload) and the scheduled time stands.

        The RTT feeds the estimator only if `learn` (in.mpathd: the NIC works
        and its group has not failed), the sample is below HISTORY intervals,
        the target is not resting (dropped as dead or slow: answers still on
        their way must not raise the FDT it was dropped to keep), and the
        probe left after the path was proven by a first answer: the first
        probes on a fresh path wait for neighbour resolution, and their
        seconds-long RTTs would raise the FDT for nothing. An answer from a
        target no longer in the list counts for nothing: its probe was
        written off when the target went."""
        slot = self.by_seq.get(seq)
        if slot is None or slot.nonce != nonce or slot.target.addr != src or slot.status == ACKED:
            return None
        if slot.target.gone:
            return None                     # a forgotten target: its probe was written off
        was_lost = slot.status == LOST
        if was_lost:
            self.stats["lost"] -= 1
        else:
            self.outstanding.remove(slot)
        slot.status = ACKED
        if sent is not None and slot.sent <= sent <= rx:
            slot.sent = sent
        slot.rtt = max(0.0, rx - slot.sent)
        self.stats["acked"] += 1
        self.last_ack = rx if self.last_ack is None else max(self.last_ack, rx)
        slot.target.losses = 0
        if (learn and self.proven_at is not None and slot.sent >= self.proven_at
                and slot.target.dead_until is None and slot.rtt <= self.HISTORY * self.interval):
            self._sample(slot.target, slot.rtt)
        if self.proven_at is None:
            self.proven_at = rx
        self._record(slot)
        return "late-ack" if was_lost else "ack"

    def _sample(self, target: Target, m: float) -> None:
        """Feed the estimator, ignoring a single spike above the probe
        interval but believing two in a row (in.mpathd MAXDEFERREDRTT)."""
        est = target.rtt
        if est.crtt_with(m) > self.interval:
            if est.deferred is None:
                est.deferred = m
                return
            est.update(est.deferred)
        est.deferred = None
        est.update(m)

    def _record(self, s: Slot) -> None:
        est = s.target.rtt
        self.records.append(Record(next(_RECORD_IDS), s.sent, s.seq, s.target.text, s.status, s.rtt, est.avg,
                                   est.dev if est.avg is not None else None, s.late))

    # ------------------------------------------------------------ verdict

    def consecutive(self, status: str) -> int:
        """How many of the newest finished probes have `status` in a row;
        outstanding and late-sent probes are skipped."""
        n = 0
        for s in reversed(self.slots):
            if s.status == UNACKED or s.late:
                continue
            if s.status != status:
                break
            n += 1
        return n

    def first_loss_time(self) -> float | None:
        """When the current run of losses began (in.mpathd's tff)."""
        t = None
        for s in reversed(self.slots):
            if s.status == UNACKED or s.late:
                continue
            if s.status != LOST:
                break
            t = s.sent
        return t

    def evaluate(self) -> ProbeState:
        """Update and return the verdict: failed after five losses in a row,
        ok again after ten answers in a row, unknown without targets (but a
        failed prober stays failed until it has targets that answer)."""
        if not self.targets:
            if self.verdict != ProbeState.FAILED:
                self.verdict = ProbeState.UNKNOWN
        elif self.verdict != ProbeState.FAILED and self.consecutive(LOST) >= timing.NUM_PROBE_FAILS:
            self.verdict = ProbeState.FAILED
        elif self.verdict == ProbeState.FAILED and self.consecutive(ACKED) >= timing.NUM_PROBE_REPAIRS:
            self.verdict = ProbeState.OK
        elif self.verdict == ProbeState.UNKNOWN:
            self.verdict = ProbeState.OK
        return self.verdict

    def require_repair(self) -> None:
        """Forget the history: the NIC must earn ten answers again (after a
        link failure, or when its whole group failed)."""
        self.slots.clear()
        self.by_seq.clear()
        self.outstanding.clear()
        for t in self.targets:
            t.rtt.reset()
            t.losses = 0
        self.verdict = ProbeState.FAILED if self.targets else ProbeState.UNKNOWN

    # ------------------------------------------------------------ targets

    def set_targets(self, mode: str, addrs: list[IP]) -> None:
        """Replace the configured or route-derived targets, keeping the
        history of those that stay."""
        keep = {t.addr: t for t in self.targets}
        kind = "static" if mode == "static" else "route"
        self.targets = [keep.get(a) or Target(a, kind) for a in addrs]
        for t in self.targets:
            t.kind = kind                  # a host found by discovery may now be a router
        self.mode = mode
        self._forget_missing_targets()

    def drop_target(self, target: Target, now: float) -> None:
        """A dead or slow target: a host is forgotten for a minute and
        discovery looks for another; a router or static target rests for a
        minute."""
        if target.kind == "host":
            self.targets = [t for t in self.targets if t is not target]
            self._forget_missing_targets()
            self.resting_hosts = {a: u for a, u in self.resting_hosts.items() if u > now}
            self.resting_hosts[target.addr] = now + timing.DEAD_TARGET_REST_S
            self.rediscover = True
        else:
            target.dead_until = now + timing.DEAD_TARGET_REST_S
            target.losses = 0
            target.rtt.reset()

    def flush_hosts(self) -> None:
        self.targets = [t for t in self.targets if t.kind != "host"]
        self._forget_missing_targets()

    def _forget_missing_targets(self) -> None:
        live = {id(t) for t in self.targets}
        for s in self.slots:                 # a Target object never comes back once it has left
            if id(s.target) not in live:
                s.target.gone = True
        for s in self.outstanding:
            if id(s.target) not in live:
                s.status = LOST
                s.late = True                # not the NIC's fault: never counted
        self.outstanding = [s for s in self.outstanding if s.status == UNACKED]


def _all_hosts(family: int) -> IP:
    return ipaddress.ip_address("224.0.0.1" if family == 4 else "ff02::1")
