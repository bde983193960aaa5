"""What an ARP reply answers, and which MAC may answer for a target.

An ARP reply carries no sequence number and no nonce: it is matched to the
oldest probe to its sender's IP that is still within its deadline
(Prober.outstanding_to), and a reply that matches none counts for nothing.
The probe socket's kernel filter has already checked that it is a reply
addressed to the probing NIC's MAC.

The first MAC that answers for a target IP in a group is pinned. A reply
for that IP from another MAC afterwards (an ARP spoofer on the link, or a
failover on the router's side) makes the probe it would answer a loss, and
is logged once per MAC. A router that really changed its MAC fails every
member at once: that is a group failure, which moves nothing and forgets
the group's pins (forget), so the new MAC is learnt from the next answers.
"""

from __future__ import annotations

from ..config import IP
from .events import ProbeReply
from .probe import Prober


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class Pins:
    def __init__(self) -> None:
        self.macs: dict[tuple[str, IP], bytes] = {}          # (group, target) -> its MAC
        self.reported: set[tuple[str, IP, bytes]] = set()   # foreign MACs already logged

    def match(self, group: str, prober: Prober, ev: ProbeReply, now: float) -> tuple[ProbeReply | None, str | None]:
        """The reply as the probe it answers (its sequence number and
        nonce filled in), or None; and a sentence to log when a foreign MAC
        answered for a pinned target for the first time."""
        slot = prober.outstanding_to(ev.src)
        if slot is None or ev.mac is None:
            return None, None                     # nothing outstanding: stray, late or forged
        key = (group, ev.src)
        pinned = self.macs.setdefault(key, ev.mac)
        if pinned == ev.mac:
            return ev._replace(seq=slot.seq, nonce=slot.nonce), None
        prober.void(slot, now)
        if (group, ev.src, ev.mac) in self.reported:
            return None, None
        self.reported.add((group, ev.src, ev.mac))
        return None, (f"probe target {ev.src} answered ARP from {mac_text(ev.mac)}, not from its known "
                      f"{mac_text(pinned)}: counted as a lost probe (an ARP spoofer on the link, or a "
                      f"failover on the router's side)")

    def forget(self, group: str) -> None:
        """The group failed: learn its targets' MACs afresh."""
        self.macs = {k: v for k, v in self.macs.items() if k[0] != group}
        self.reported = {k for k in self.reported if k[0] != group}
