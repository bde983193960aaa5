"""Back-off for what the kernel refused: a route or a path (routes.py), or
the addresses of one family on one NIC (machine.py).

A refused thing waits timing.RETRY_S, doubling up to timing.RETRY_MAX_S,
before the same is asked again, so that something the kernel keeps refusing
costs one request per back-off, not one per event; asking something else of
it (`asked`: a path's new members, say) is no retry and goes at once. Each
refusal names its cause (the kernel's error); refused() says whether the
cause is new, so that it is logged once, not on every retry. A request that
is let through is in flight until the next event: a refusal then doubles
the back-off, and accepted() (no refusal came back) forgets it.
"""

from __future__ import annotations

from typing import Hashable

from . import timing

_IN_FLIGHT = float("inf")        # let through, its outcome not yet known


class Backoff:
    def __init__(self) -> None:
        # what -> (due, back-off, what was asked, cause)
        self._due: dict[Hashable, tuple[float, float, object, str]] = {}
        self._in_flight: set[Hashable] = set()

    def refused(self, what: Hashable, now: float, cause: str, asked: object = None) -> bool:
        """The kernel refused `asked` of `what`: wait before asking it again.
        True if `cause` is not the one it was last refused for."""
        _, backoff, _, before = self._due.get(what, (0.0, timing.RETRY_S / 2, None, ""))
        backoff = min(backoff * 2, timing.RETRY_MAX_S)
        self._due[what] = (now + backoff, backoff, asked, cause)
        self._in_flight.discard(what)
        return cause != before

    def waiting(self, what: Hashable, now: float, asked: object = None) -> bool:
        """Must asking `asked` of `what` wait for the back-off? When its time
        has come, or something else is asked, it is let through (in flight)
        and this says False."""
        r = self._due.get(what)
        if r is None or r[0] == _IN_FLIGHT:
            return False
        if r[0] > now and r[2] == asked:
            return True
        self._due[what] = (_IN_FLIGHT, r[1], asked, r[3])
        self._in_flight.add(what)
        return False

    def accepted(self) -> None:
        """The requests in flight were carried out without a refusal."""
        for what in self._in_flight:
            del self._due[what]
        self._in_flight.clear()

    def forget(self, what: Hashable) -> None:
        self._due.pop(what, None)
        self._in_flight.discard(what)

    def next_retry(self) -> float | None:
        return min((r[0] for r in self._due.values() if r[0] != _IN_FLIGHT), default=None)
