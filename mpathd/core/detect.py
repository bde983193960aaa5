"""Failure detection: the watchers of one NIC and their one verdict.

A NIC's Health combines its watchers the way teamd_link_watch.c does: the
link watcher (carrier), one probe engine (probe.py) per probing family, and
link-flap damping. Health.works() is the verdict; the core asks for it and
never looks inside a Prober. The rules:

* failure needs every probing family that can judge (it has targets, or it
  failed and must earn its repair) to fail; repair needs one (in.mpathd);
* a lost carrier fails the NIC whatever the probes say, and makes every
  prober earn its repair again with fresh answers;
* a NIC without probing whose link comes up for the third time within a
  minute stays failed until the minute has passed (in.mpathd LINK_UP_PERMIN).

Beside them, the two rules that look at a whole group: the group-failure
test (group_failed) and the adaptive failure detection time (Fdt). None of
this decides what moves: the group policy (policy.py) acts on the verdicts.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from . import timing
from .catalogue import Kind
from .events import ProbeReply
from .probe import Prober, Target
from .states import LinkState, ProbeState


class LinkWatcher:
    """Carrier, from IFF_RUNNING in RTM_NEWLINK (the Solaris link state),
    and the link-up history that damps flapping."""

    def __init__(self) -> None:
        self.state = LinkState.UNKNOWN
        self._ups: deque[float] = deque(maxlen=timing.LINK_UP_PERMIN)

    def observe(self, running: bool) -> LinkState | None:
        """Record the carrier; return UP or DOWN if the state changed."""
        new = LinkState.UP if running else LinkState.DOWN
        if new == self.state:
            return None
        previous, self.state = self.state, new
        if previous == LinkState.UNKNOWN and new == LinkState.UP:
            return None                        # the first sighting is not a transition
        return new

    def flap_hold_until(self, now: float) -> float | None:
        """If a link-up now would be the third within the window, the time
        until which repair must wait; None if the link is stable. It looks
        at the history *before* this link-up, then records it."""
        until = None
        if len(self._ups) >= timing.LINK_UP_PERMIN and self._ups[0] + timing.LINK_FLAP_WINDOW_S > now:
            until = self._ups[0] + timing.LINK_FLAP_WINDOW_S
        self._ups.append(now)
        return until


class Health:
    """One NIC's watchers and their combined verdict."""

    def __init__(self) -> None:
        self.link = LinkWatcher()
        self.probers: dict[int, Prober] = {}          # by address family
        self.held_until: float | None = None          # link-flap damping

    @property
    def probing(self) -> bool:
        return bool(self.probers)

    def _capable(self) -> list[Prober]:
        """Probers that can judge the NIC: they have targets, or they failed
        and must earn their repair."""
        return [p for p in self.probers.values() if p.targets or p.verdict == ProbeState.FAILED]

    def probe_state(self) -> ProbeState:
        if not self.probers:
            return ProbeState.DISABLED
        capable = self._capable()
        if not capable:
            return ProbeState.UNKNOWN
        if all(p.verdict == ProbeState.FAILED for p in capable):
            return ProbeState.FAILED
        return ProbeState.OK

    def works(self) -> bool:
        """The verdict: carrier, probes and flap damping together."""
        return (self.link.state != LinkState.DOWN and self.held_until is None
                and self.probe_state() != ProbeState.FAILED)

    def reassess(self) -> bool:
        """Let every prober re-read its history; True if a verdict changed."""
        changed = False
        for p in self.probers.values():
            before = p.verdict
            if p.evaluate() != before:
                changed = True
        return changed

    def link_observed(self, running: bool, now: float, failed: bool) -> tuple[LinkState | None, bool]:
        """Record the carrier. Return the change (UP, DOWN or None) and
        whether the repair is now held for flapping."""
        change = self.link.observe(running)
        held = False
        if change == LinkState.DOWN:
            self.must_repair()                 # repair needs fresh answers after the link returns
        elif change == LinkState.UP:
            until = self.link.flap_hold_until(now)
            if not self.probing and failed and until is not None:
                self.held_until, held = until, True
        return change, held

    def tick(self, now: float) -> bool:
        """End a flap hold that is over, and let a prober whose socket could
        not be opened try again; True if anything changed."""
        changed = False
        if self.held_until is not None and now >= self.held_until:
            self.held_until, changed = None, True
        for p in self.probers.values():
            if 0 < p.start_after <= now:
                p.start_after, changed = 0.0, True     # time to try the socket again
        return changed

    def reply(self, prober: Prober, ev: ProbeReply, learn: bool) -> Target | None:
        """An echo reply to one of `prober`'s probes: the target that
        answered, or None if it answers nothing we sent."""
        if prober.reply(ev.src, ev.seq, ev.nonce, ev.rx, learn=learn) is None:
            return None
        return prober.by_seq[ev.seq].target

    def must_repair(self) -> None:
        """Every prober must earn its repair again (its link or device went,
        or its whole group failed)."""
        for p in self.probers.values():
            p.require_repair()

    def last_ack(self) -> float:
        return max((p.last_ack for p in self.probers.values() if p.last_ack is not None),
                   default=float("-inf"))

    def losses_began(self, now: float) -> float:
        """When this NIC's current run of losses began (in.mpathd's tff)."""
        return min((t for p in self._capable() if (t := p.first_loss_time()) is not None), default=now)

    def deadline(self) -> float | None:
        """The earliest moment a watcher has work: a probe to send or expire,
        a probe socket to retry, a flap hold to end."""
        times = [] if self.held_until is None else [self.held_until]
        for p in self.probers.values():
            if not p.running and p.start_after > 0:
                times.append(p.start_after)
            d = p.deadline()
            if d is not None:
                times.append(d)
        return min(times) if times else None


def group_failed(failing: Health, others: Iterable[Health], now: float) -> bool:
    """The group-failure test (in.mpathd): when a NIC's probes fail and no
    other functioning member with carrier has heard an answer since this
    NIC's losses began, the fault is the group's, not the NIC's. The caller
    passes the other functioning members."""
    since = failing.losses_began(now)
    for h in others:
        if h.link.state == LinkState.DOWN:
            continue
        if not h._capable() or h.last_ack() > since:
            return False                      # another member still works: a NIC failure
    return True


def after_group_failure(members: Iterable[Health], failing: Health) -> None:
    """Every member but the one that saw it must earn its repair, and
    discovered host targets are rediscovered."""
    for h in members:
        if h is not failing:
            h.must_repair()
        for p in h.probers.values():
            p.flush_hosts()


class Fdt:
    """A group's failure detection time, adapted to its targets' RTTs
    (in.mpathd §5.3), in seconds. It rises above the configured value when a
    target's RTT estimate exceeds the probe interval, and comes back once
    every estimate allows and FDT_SETTLING_S have passed; one slow target
    among fast ones is dropped instead (in.mpathd's exception target)."""

    def __init__(self, configured: float):
        self.configured = self.current = configured
        self.last_raise: float | None = None

    @property
    def interval(self) -> float:
        return timing.probe_interval(self.current)

    def adapt(self, prober: Prober, target: Target, members: Iterable[Health], now: float) -> Kind | None:
        """After an answer from `target` to `prober`: return TARGET_SLOW (the
        target was dropped), FDT_RAISED, FDT_LOWERED, or None. `members` are
        the functioning members of the group."""
        crtt = target.rtt.crtt
        interval = self.interval
        if crtt is None or (crtt <= interval and self.current <= self.configured):
            return None                          # the common case, on every answer
        if crtt > interval and _exception_target(prober, target, interval, now):
            return Kind.TARGET_SLOW
        if crtt > interval:
            self.current = crtt * timing.FDT_RAISE_FACTOR * timing.PROBE_INTERVAL_DIVISOR
            self.last_raise = now
            return Kind.FDT_RAISED
        if (self.current > self.configured and self.last_raise is not None
                and now - self.last_raise > timing.FDT_SETTLING_S
                and all(t.rtt.crtt is not None and t.rtt.crtt < interval / timing.FDT_LOWER_TRIGGER
                        for h in members for q in h.probers.values() if q.running
                        for t in q.active_targets(now))):
            self.current = max(self.current / 2, self.configured)
            self.last_raise = now if self.current > self.configured else None
            return Kind.FDT_LOWERED
        return None


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
