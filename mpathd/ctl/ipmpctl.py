"""ipmpctl: what the daemon sees, in ipmpstat's layouts, or as JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Callable

from .. import config
from ..adapters import control
from . import metrics
from ..core.timing import PROBE_RECORDS
from ..oneline import OneLineParser, load_config

Row = dict
Field = tuple[str, int, Callable[[Row], str]]

# Five polls a second outpace the daemon's probe history (timing.PROBE_RECORDS
# explains); probes that left the history between two polls are counted.
FOLLOW_POLL_S = 0.2


def _interfaces_cell(g: Row) -> str:
    parts = list(g["active"])
    if g["inactive"]:
        parts.append("(" + " ".join(g["inactive"]) + ")")
    if g["unusable"]:
        parts.append("[" + " ".join(g["unusable"]) + "]")
    return " ".join(parts)


def _flags(i: Row) -> str:
    # ipmpstat's 7 positions: i s m b M d h. The multicast/broadcast nominee
    # letters (m b M) do not apply on Linux and stay '-'.
    return "".join([
        "i" if i["inactive"] else "-",
        "s" if i["standby"] else "-",
        "---",
        "d" if not i["present"] else "-",
        "h" if i.get("hwaddrdup") else "-",
    ])


# name, width, value: ipmpstat's fields and widths (illumos ipmpstat.c).
VIEWS: dict[str, tuple[str, list[Field]]] = {
    "groups": ("groups", [
        ("GROUP", 12, lambda g: g["name"]),
        ("STATE", 10, lambda g: g["state"]),
        ("FDT", 10, lambda g: f"{g['fdt_ms'] / 1000:.2f}s" if g["probing"] else ""),   # as ipmpstat
        ("INTERFACES", 30, _interfaces_cell),
    ]),
    "interfaces": ("interfaces", [
        ("INTERFACE", 12, lambda i: i["name"]),
        ("ACTIVE", 8, lambda i: "yes" if i["active"] else "no"),
        ("GROUP", 12, lambda i: i["group"] or ""),
        ("FLAGS", 10, _flags),
        ("LINK", 10, lambda i: i["link"]),
        ("PROBE", 10, lambda i: i["probe"]),
        ("STATE", 10, lambda i: i["state"]),
    ]),
    "addresses": ("addresses", [
        ("ADDRESS", 26, lambda a: a["address"]),
        ("STATE", 7, lambda a: "up" if a["interface"] else "down"),
        ("GROUP", 12, lambda a: a["group"]),
        ("INBOUND", 12, lambda a: a["interface"] or ""),
        ("OUTBOUND", 16, lambda a: " ".join(a["outbound"])),
        ("HOME", 12, lambda a: a["home"] or ""),
    ]),
    "targets": ("targets", [
        ("INTERFACE", 12, lambda t: t["interface"]),
        ("MODE", 10, lambda t: f"arp/{t['mode']}" if t["method"] == "arp" and t["mode"] != "disabled"
         else t["mode"]),
        ("TESTADDR", 26, lambda t: t["testaddr"] or ""),
        ("TARGETS", 38, lambda t: "(none found)" if t["no_targets"] else " ".join(t["targets"])),
    ]),
    "probes": ("probes", [
        ("TIME", 10, lambda p: f"{p['time']:.2f}s"),
        ("INTERFACE", 12, lambda p: p["interface"]),
        ("MODE", 5, lambda p: p["method"]),
        ("PROBE", 7, lambda p: str(p["probe"])),
        ("RTT", 10, lambda p: _ms(p["rtt_ms"])),
        ("RTTAVG", 10, lambda p: _ms(p["rtt_avg_ms"])),
        ("TARGET", 26, lambda p: p["target"] + (" (lost)" if p["status"] == "lost" else "")
         + (" (sent late)" if p["late"] else "")),
        ("RTTDEV", 10, lambda p: _ms(p["rtt_dev_ms"])),
    ]),
}


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}ms"


def select_fields(view: str, spec: str | None, parsable: bool) -> list[Field]:
    fields = VIEWS[view][1]
    if spec is None:
        if parsable:
            raise ValueError("output fields must be specified in parsable mode (-o)")
        return fields
    names = [s.strip().upper() for s in spec.split(",") if s.strip()]
    if names == ["ALL"]:
        if parsable:
            raise ValueError("output field 'all' invalid in parsable mode")
        return fields
    by_name = {f[0]: f for f in fields}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown output field{'s' if len(unknown) > 1 else ''} for {view}: "
                         f"{', '.join(n.lower() for n in unknown)} "
                         f"(choose from {', '.join(f[0].lower() for f in fields)})")
    return [by_name[n] for n in names]


def render(rows: list[Row], fields: list[Field], parsable: bool) -> list[str]:
    """ipmpstat's output rules: in human mode fields are padded to their
    width, the last is not, and an empty value is '--'. In parsable mode
    values are ':'-separated with ':' and '\\' escaped when there is more
    than one field."""
    lines = []
    if not parsable:
        lines.append(_human([f[0] for f in fields], fields))
    for row in rows:
        values = [f[2](row) for f in fields]
        if parsable:
            if len(values) > 1:
                values = [v.replace("\\", "\\\\").replace(":", "\\:") for v in values]
            lines.append(":".join(values))
        else:
            lines.append(_human([v or "--" for v in values], fields))
    return lines


def _human(values: list[str], fields: list[Field]) -> str:
    out, overflow = "", 0
    for i, (value, (_, width, _)) in enumerate(zip(values, fields)):
        if i == len(fields) - 1:
            out += value
        else:
            pad = max(width - overflow, 0)
            cell = value.ljust(pad) if len(value) < pad else value + " "
            overflow += len(cell) - width
            overflow = max(overflow, 0)
            out += cell
    return out


def _hosts(path: str = "/etc/hosts") -> dict[str, str]:
    """Names from /etc/hosts only: ipmpctl never waits on DNS."""
    names: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2:
                    names.setdefault(fields[0], fields[1])
    except OSError:
        pass
    return names


def _namer() -> Callable[[str], str] | None:
    """ADDR or ADDR/PREFIX with the address replaced by its /etc/hosts name."""
    names = _hosts()
    if not names:
        return None

    def name(addr: str) -> str:
        ip, slash, prefix = addr.partition("/")
        return names.get(ip, ip) + slash + prefix
    return name


def _name_addresses(report: dict) -> None:
    """Names for the addresses of a status or a probes reply, in place."""
    name = _namer()
    if name is None:
        return
    for a in report.get("addresses", ()):
        a["address"] = name(a["address"])
    for t in report.get("targets", ()):
        t["targets"] = [name(x) for x in t["targets"]]
        t["testaddr"] = t["testaddr"] and name(t["testaddr"])
    for p in report.get("probes", ()):
        p["target"] = name(p["target"])


def _follow(args, fields: list[Field], parsable: bool) -> int:
    """ipmpstat -p: print each probe as it finishes, until interrupted. TIME
    is when the probe was sent, in seconds since ipmpctl started (negative
    for a probe sent before). The daemon is asked every FOLLOW_POLL_S for
    the probes after the last one printed (record ids are consecutive, so
    a gap is probes no longer held); a daemon restarted between two polls
    (another instance id) numbers its probes afresh, and the stream goes on
    with those. A daemon that is not there ends the stream with status 1."""
    name = None if args.numeric else _namer()
    start = time.monotonic()
    instance, since = None, 0
    try:
        while True:
            reply = control.request(args.control, "probes", since=since)
            now = time.monotonic() - start
            rows = reply["probes"]
            if reply["instance"] != instance:
                # the start: print only what finishes from now on; a restarted
                # daemon: everything it has, at the next turn
                if instance is None and not parsable and not args.json:
                    print(render([], fields, False)[0], flush=True)
                since = rows[-1]["id"] if instance is None and rows else 0
                instance, rows = reply["instance"], []
            elif rows:
                missed = rows[-1]["id"] - since - len(rows)
                if missed > 0:
                    print(f"ipmpctl: {missed} probes not shown: no longer held by mpathd",
                          file=sys.stderr, flush=True)
                since = rows[-1]["id"]
            for p in rows:
                p["time"] = round(now + p["time"], 3)
                if name is not None:
                    p["target"] = name(p["target"])
            if rows:
                lines = ([json.dumps(p) for p in rows] if args.json
                         else render(rows, fields, parsable)[0 if parsable else 1:])
                print("\n".join(lines), flush=True)
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:                # | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing to flush at exit
        return 0
    except control.ControlError as e:
        print(f"ipmpctl: {e}", file=sys.stderr)
        return 1


def _parser() -> OneLineParser:
    p = OneLineParser(prog="ipmpctl", description="Show and control mpathd (IPMP for Linux)")
    p.add_argument("--control", default=control.DEFAULT_PATH, metavar="SOCKET",
                   help=f"the daemon's control socket (default {control.DEFAULT_PATH})")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    o = sub.add_parser("offline", help="move a NIC's addresses away and stop using it")
    o.add_argument("interface")
    o.add_argument("--force", action="store_true", help="even if it is the last usable NIC")
    sub.add_parser("online", help="bring an offline NIC back").add_argument("interface")
    sub.add_parser("reload", help="re-read the configuration and apply the difference")
    m = sub.add_parser("metrics", help="print metrics in the Prometheus text format")
    m.add_argument("--output", metavar="FILE",
                   help="write them to FILE atomically instead (for node_exporter's textfile collector)")
    c = sub.add_parser("check", help="check a configuration against this system")
    c.add_argument("--defaults", default=config.DEFAULTS_PATH, metavar="FILE")
    c.add_argument("--config", default=config.GROUPS_PATH, metavar="FILE")
    for name, text in (("status", "every view"), ("groups", "groups (ipmpstat -g)"),
                       ("interfaces", "interfaces (ipmpstat -i)"),
                       ("addresses", "data addresses (ipmpstat -a)"),
                       ("targets", "probe targets (ipmpstat -t)"),
                       ("probes", "each probe as it finishes, until interrupted (ipmpstat -p)")):
        s = sub.add_parser(name, help=f"show {text}")
        s.add_argument("--json", action="store_true", help="print JSON")
        s.add_argument("-n", dest="numeric", action="store_true",
                       help="numeric addresses (default: names from /etc/hosts where known)")
        if name != "status":
            s.add_argument("-o", dest="fields", metavar="FIELD[,FIELD...]", help="fields to show")
            s.add_argument("-P", dest="parsable", action="store_true",
                           help="parsable output (needs -o)")
        if name == "probes":
            s.add_argument("--once", action="store_true",
                           help=f"print the recent probes (the last {PROBE_RECORDS} per NIC and family) and exit")
    return p


def _check(args) -> int:
    from .check import problems
    cfg = load_config("ipmpctl", args.defaults, args.config)
    if cfg is None:
        return 2
    found = [*cfg.warnings, *problems(cfg)]
    for p in found:
        print(p)
    if not found:
        nics = sum(len(g.interfaces) for g in cfg.groups)
        print(f"configuration OK: {len(cfg.groups)} groups, {nics} interfaces")
    return 1 if found else 0


def _write_atomically(path: str, text: str) -> int:
    """Write `text` to `path` through a temporary file in the same directory
    and a rename, so that a reader (node_exporter) never sees half a file.
    The temporary name does not end in .prom: the collector ignores it."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    except OSError as e:
        print(f"ipmpctl: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)
        print(f"ipmpctl: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


def _command(args) -> int:
    extra = {"interface": args.interface} if hasattr(args, "interface") else {}
    if getattr(args, "force", False):
        extra["force"] = True
    try:
        result = control.request(args.control, args.cmd, **extra)
    except control.ControlError as e:
        print(f"ipmpctl: {e}", file=sys.stderr)
        return 1
    print(result.get("summary", "ok"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cmd == "check":
        return _check(args)
    if args.cmd in ("offline", "online", "reload"):
        return _command(args)
    if args.cmd == "metrics":
        try:
            text = metrics.render(control.request(args.control, "status"))
        except control.ControlError as e:
            print(f"ipmpctl: {e}", file=sys.stderr)
            return 1
        if args.output is None:
            sys.stdout.write(text)
            return 0
        return _write_atomically(args.output, text)
    fields_spec, parsable = getattr(args, "fields", None), getattr(args, "parsable", False)
    views = [v for v in VIEWS if v != "probes"] if args.cmd == "status" else [args.cmd]
    try:
        chosen = {v: select_fields(v, fields_spec, parsable) for v in views}
    except ValueError as e:
        parser.error(str(e))
    if args.cmd == "probes" and not args.once:
        return _follow(args, chosen["probes"], parsable)
    try:
        # the probe records have a request of their own: a status carries none
        status = control.request(args.control, "probes" if args.cmd == "probes" else "status")
    except control.ControlError as e:
        print(f"ipmpctl: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status if args.cmd == "status" else status[VIEWS[args.cmd][0]], indent=2))
        return 0
    if not args.numeric:
        _name_addresses(status)
    blocks = ["\n".join(render(status[VIEWS[v][0]], chosen[v], parsable)) for v in views]
    if args.cmd == "status" and status.get("problems"):
        blocks.append("\n".join(f"PROBLEM: {p['message']}" for p in status["problems"]))
    print("\n\n".join(blocks))
    return 0

