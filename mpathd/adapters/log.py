"""Logging: to the journal with structured fields under systemd, to stderr
otherwise. The texts are in.mpathd's where it has one, so that operators can
grep for the messages they know.
"""

from __future__ import annotations

import logging
import os
import sys

from ..core.catalogue import Kind
from ..core.events import Log

log = logging.getLogger("mpathd")


def setup(verbose: bool = False) -> None:
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    log.handlers.clear()
    if os.environ.get("JOURNAL_STREAM") and not sys.stderr.isatty():
        try:
            from systemd.journal import JournalHandler
            log.addHandler(JournalHandler(SYSLOG_IDENTIFIER="mpathd"))
            return
        except ImportError:
            pass
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d mpathd: %(message)s",
                                           datefmt="%H:%M:%S"))
    log.addHandler(handler)


def event(level: int, kind: Kind, text: str, ifname: str | None = None) -> None:
    """An event the daemon or an adapter logs itself, with the same fields
    as the core's (its kind is in the catalogue)."""
    emit(Log(level, text, kind, None, ifname))


def fields(kind: Kind) -> dict[str, str]:
    return {"MESSAGE_ID": kind.message_id, "MPATHD_EVENT": kind.value}


def emit(entry: Log) -> None:
    """Log one of the core's Log actions with its journal fields."""
    extra = fields(entry.kind)
    if entry.group:
        extra["MPATHD_GROUP"] = entry.group
    if entry.ifname:
        extra["MPATHD_INTERFACE"] = entry.ifname
    log.log(entry.level, "%s", entry.text, extra=extra)
