"""The reports for the control socket: the one-line summary (sd_notify
STATUS=), the status behind every `ipmpctl` view, and the probe stream.
They read the core's state and change nothing in it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

from .states import GroupState, LinkState, NicState, ProbeState

if TYPE_CHECKING:
    from .machine import Core, Group


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def summary(groups: Iterable[Group]) -> str:
    """One line for sd_notify STATUS=, e.g. '1 group ok, 1 degraded: eth1 failed'."""
    counts: dict[str | None, int] = defaultdict(int)
    bad: list[str] = []
    for g in groups:
        counts[g.state] += 1
        bad += [f"{n.name} {n.state()}" for n in g.nics if n.state() in (NicState.FAILED, NicState.OFFLINE)]
    items = [(counts[s], s) for s in GroupState if counts[s]]
    if not items:
        return "no groups"
    noun = "group" if items[0][0] == 1 else "groups"
    text = ", ".join(f"{c} {noun + ' ' if i == 0 else ''}{s}" for i, (c, s) in enumerate(items))
    return text + (": " + ", ".join(bad) if bad else "")

def probes(core: Core, now: float, since: int = 0) -> list[dict]:
    """The finished probes still in the NICs' histories (the last
    timing.PROBE_RECORDS per NIC and family) whose record id is above
    `since`, in the order they finished: `ipmpctl probes` follows the stream
    with the last id seen."""
    rows = [{"id": r.id, "time": round(r.time - now, 3), "interface": n.name, "family": fam,
             "method": "arp" if p.arp else "icmp", "probe": r.seq, "target": r.target, "status": r.status, "rtt_ms": _ms(r.rtt),
             "rtt_avg_ms": _ms(r.rtt_avg), "rtt_dev_ms": _ms(r.rtt_dev), "late": r.late}
            for g in core.groups for n in g.nics for fam, p in n.health.probers.items()
            for r in p.records if r.id > since]
    rows.sort(key=lambda row: row["id"])
    return rows

def _mode(p) -> str:
    """Where a prober's targets come from; ARP probing finds its hosts in
    the neighbour table where ICMP asks by multicast."""
    return "neighbours" if p.arp and p.mode == "multicast" else p.mode


def status(core: Core, now: float) -> dict:
    """The daemon's state for `ipmpctl --json` (README: a stable contract).
    It holds no probe records: those are the `probes` request's, and a
    status stays cheap however many probes the NICs keep."""
    groups, interfaces, addresses, target_rows = [], [], [], []
    for g in core.groups:
        groups.append({
            "name": g.name, "state": g.state, "fdt_ms": round(g.fdt.current * 1000),
            "interfaces": [n.name for n in g.nics],
            "active": [n.name for n in g.nics if n.active],
            "inactive": [n.name for n in g.nics if n.functioning and n.inactive],
            "unusable": [n.name for n in g.nics if not n.functioning],
            "user_fdt_ms": round(g.fdt.configured * 1000), **g.counts,
            "probing": any(n.health.probing for n in g.nics),
        })
        for n in g.nics:
            stats: dict[str, int] = defaultdict(int)
            for p in n.health.probers.values():
                for k, v in p.stats.items():
                    stats[k] += v
            interfaces.append({
                "name": n.name, "group": g.name, "state": n.state(), "active": n.active,
                "standby": n.standby, "inactive": n.functioning and n.inactive,
                "link": n.health.link.state if n.present else LinkState.UNKNOWN, "probe": n.probe_state(),
                "present": n.present, "offline": n.offline, "hwaddrdup": n.hwaddrdup,
                "mac": n.mac, "probes": dict(stats), **n.counts,
            })
            if not n.health.probers:
                target_rows.append({"interface": n.name, "family": None, "mode": "disabled",
                                    "method": None, "testaddr": None, "targets": [], "no_targets": False})
            for fam, p in n.health.probers.items():
                src = core.source(n, fam)
                target_rows.append({
                    "interface": n.name, "family": fam,
                    "mode": _mode(p) if p.running else "disabled",
                    "method": "arp" if p.arp else "icmp",
                    "testaddr": str(src) if src is not None else None,
                    "targets": [str(t.addr) for t in p.active_targets(now)] if p.running else [],
                    "no_targets": p.running and p.no_targets_reported,
                    "rtt": {str(t.addr): {"avg_ms": _ms(t.rtt.avg), "dev_ms": _ms(t.rtt.dev)}
                            for t in p.targets if t.rtt.avg is not None}})
        active = [n.name for n in g.nics if n.active]
        for addr, home in g.home().items():
            holder = core.ledger.where[addr]
            addresses.append({"address": str(addr), "group": g.name, "home": home, "interface": holder,
                              "outbound": active if g.cfg.spreading else [holder] if holder else []})
    for n in core.anon.nics:
        interfaces.append({
            "name": n.name, "group": None, "state": n.state(), "active": n.functioning,
            "standby": False, "inactive": False, "link": n.health.link.state, "probe": ProbeState.DISABLED,
            "present": True, "offline": False, "mac": n.mac, "probes": {}})
        target_rows.append({"interface": n.name, "family": None, "mode": "disabled",
                            "method": None, "testaddr": None, "targets": [], "no_targets": False})
    return {"groups": groups, "interfaces": interfaces, "addresses": addresses,
            "targets": target_rows, "routes": routes(core),
            "problems": list(core.problems), "summary": summary(core.groups)}


def routes(core: Core) -> list[dict]:
    """Every owned route and the NICs it leaves by, as mpathd installed it."""
    led = core.routes
    rows = []
    for key, r in led.routes.items():
        path = led.installed.get(key)
        rows.append({"route": r.describe(), "family": key.family, "group": led.group_of[key],
                     "table": key.table, "metric": key.priority,
                     "gateway": str(r.gateway) if r.gateway is not None else None, "home": r.home,
                     "declared": r.declared,
                     "interfaces": [n for n, _ in led.paths.get(path, ())] if path else []})
    return rows
