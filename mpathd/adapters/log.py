"""Logging: to the journal with structured fields under systemd, to stderr
otherwise. The texts are in.mpathd's where it has one, so that operators can
grep for the messages they know.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

from ..core.events import Log

log = logging.getLogger("mpathd")

# Stable MESSAGE_IDs: one per kind of event, derived from its name so that
# they never change between releases.
_NAMESPACE = uuid.UUID("6d706174-6864-4970-8d70-000000000000")


def message_id(kind: str) -> str:
    return uuid.uuid5(_NAMESPACE, kind).hex


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


def emit(entry: Log) -> None:
    """Log one of the core's Log actions with its journal fields."""
    fields = {"MESSAGE_ID": message_id(entry.kind), "MPATHD_EVENT": entry.kind}
    if entry.group:
        fields["MPATHD_GROUP"] = entry.group
    if entry.ifname:
        fields["MPATHD_INTERFACE"] = entry.ifname
    log.log(entry.level, "%s", entry.text, extra=fields)
