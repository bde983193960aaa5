"""Failure detection: watchers that turn observations into verdicts.

A watcher says whether a NIC works; it never decides what moves. The group
policy (policy.py) acts on the verdicts. This mirrors teamd's split of link
watchers and runners.
"""

from __future__ import annotations

from collections import deque

from . import timing


class LinkWatcher:
    """Carrier, from IFF_RUNNING in RTM_NEWLINK (the Solaris link state).

    It also keeps the link-up history that damps flapping links: in.mpathd
    holds the repair of a NIC without probing at the third link-up within
    a minute (LINK_UP_PERMIN).
    """

    def __init__(self) -> None:
        self.state = "unknown"                 # up | down | unknown
        self._ups: deque[float] = deque(maxlen=timing.LINK_UP_PERMIN)

    # observe() takes no time; record_up() does: the flap check must look at
    # the history *before* the link-up being judged is added to it.

    def observe(self, running: bool) -> str | None:
        """Record the carrier; return 'up' or 'down' if the state changed."""
        new = "up" if running else "down"
        if new == self.state:
            return None
        previous, self.state = self.state, new
        if previous == "unknown" and new == "up":
            return None                        # the first sighting is not a transition
        return new

    def record_up(self, now: float) -> None:
        self._ups.append(now)

    def flap_hold_until(self, now: float) -> float | None:
        """If a link-up now would be the third within the window, the time
        until which repair must wait; None if the link is stable."""
        if len(self._ups) < timing.LINK_UP_PERMIN:
            return None
        until = self._ups[0] + timing.LINK_FLAP_WINDOW_S
        return until if until > now else None
