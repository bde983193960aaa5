"""The states the core reports, as enums whose values are the JSON text of
`ipmpctl --json` (a stable contract, README "The two commands"). Where each
state changes: the NIC and group table in machine.py's header, the link and
probe states in detect.py.
"""

from __future__ import annotations

import enum


class NicState(enum.StrEnum):
    OK = "ok"                  # works (its probes say so, or it has no probing)
    FAILED = "failed"          # does not pass traffic, or is missing
    OFFLINE = "offline"        # taken out of service: by the operator, or for a duplicate MAC
    UNKNOWN = "unknown"        # works as far as its link says; no probe target answers yet


class GroupState(enum.StrEnum):
    OK = "ok"                  # every member functions
    DEGRADED = "degraded"      # some do
    FAILED = "failed"          # none does: nothing moves


class LinkState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"        # not seen yet, or the NIC is missing


class ProbeState(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"          # every probing family that can judge has failed
    DISABLED = "disabled"      # no test address, or offline
    UNKNOWN = "unknown"        # probing, but no target to judge by
