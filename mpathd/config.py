"""The two configuration files and their validation.

/etc/default/mpathd holds the Solaris tunables (KEY=VALUE lines);
/etc/mpathd/groups.yaml describes the groups. Both are parsed into frozen
dataclasses, and every problem is raised as one ConfigError naming the file
and line, so that a caller can print one line and exit 2 with nothing applied.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import yaml

from .core import timing

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULTS_PATH = "/etc/default/mpathd"
GROUPS_PATH = "/etc/mpathd/groups.yaml"
LINK_LOCAL = "link-local"
ARP = "arp"

_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_GROUPNAME = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")


class ConfigError(Exception):
    """A configuration problem; str() is the one line shown to the user."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Defaults:
    fdt_ms: int = timing.DEFAULT_FDT_MS
    failback: bool = True
    track_only_groups: bool = True
    announce_count: int = timing.DEFAULT_ANNOUNCE_COUNT
    announce_interval_ms: int = timing.DEFAULT_ANNOUNCE_INTERVAL_MS
    arp_flux_protection: bool = True


@dataclass(frozen=True)
class InterfaceConfig:
    name: str
    group: str
    data: tuple[Address, ...] = ()
    test: tuple[Address, ...] = ()        # IPv4 test addresses (at most one)
    test_link_local: bool = False          # probe IPv6 from the NIC's fe80:: address
    test_arp: bool = False                 # probe IPv4 with ARP requests from 0.0.0.0 (no test address)
    standby: bool = False


@dataclass(frozen=True)
class RouteConfig:
    """A route declared under a group's `routes:`; `attrs` are the
    ip-route options given, as (name, value) pairs."""
    dst: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: IP | None = None
    dev: str | None = None
    table: int = 254
    metric: int = 0
    src: IP | None = None
    attrs: tuple[tuple[str, object], ...] = ()
    line: int = 0


@dataclass(frozen=True)
class GroupConfig:
    name: str
    interfaces: tuple[InterfaceConfig, ...]
    data: tuple[Address, ...] = ()
    targets: tuple[IP, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    spreading: bool = True                 # outbound load spreading over the active NICs


@dataclass(frozen=True)
class Config:
    defaults: Defaults = Defaults()
    groups: tuple[GroupConfig, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)


# --------------------------------------------------------------------------
# /etc/default/mpathd

_YESNO = {"yes": True, "no": False}
_KEYS = ("FAILURE_DETECTION_TIME", "FAILBACK", "TRACK_INTERFACES_ONLY_WITH_GROUPS", "ANNOUNCE_COUNT",
         "ANNOUNCE_INTERVAL", "ARP_FLUX_PROTECTION")


def parse_defaults(text: str, path: str) -> tuple[Defaults, list[str]]:
    """Parse KEY=VALUE lines. Unlike libc defread(), spaces around '=' and
    quotes around the value are accepted, and anything unknown is an error
    instead of being silently ignored."""
    values: dict[str, tuple[str, int]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(path, n, f"expected KEY=VALUE, got {line!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        key = key.upper()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key not in _KEYS:
            raise ConfigError(path, n, f"unknown key {key!r} (expected {', '.join(_KEYS[:-1])} "
                                       f"or {_KEYS[-1]})")
        if key in values:
            raise ConfigError(path, n, f"{key} set twice (first on line {values[key][1]})")
        values[key] = (value, n)

    warnings: list[str] = []
    fdt = timing.DEFAULT_FDT_MS
    if "FAILURE_DETECTION_TIME" in values:
        value, n = values["FAILURE_DETECTION_TIME"]
        if not re.fullmatch(r"\d+", value) or int(value) == 0:
            raise ConfigError(path, n, f"FAILURE_DETECTION_TIME must be a whole number of "
                                       f"milliseconds >= {timing.MIN_FDT_MS}, got {value!r}")
        fdt = int(value)
        if fdt < timing.MIN_FDT_MS:
            warnings.append(f"{path}:{n}: Too small failure detection time of {value}, "
                            f"assuming minimum of {timing.MIN_FDT_MS} ms")
            fdt = timing.MIN_FDT_MS

    def yesno(key: str) -> bool:
        value, n = values[key]
        if value.lower() not in _YESNO:
            raise ConfigError(path, n, f"Invalid value for {key} {value!r} (expected yes or no)")
        return _YESNO[value.lower()]

    def number(key: str, low: int, high: int, unit: str, default: int) -> int:
        if key not in values:
            return default
        value, n = values[key]
        if not re.fullmatch(r"\d+", value) or not low <= int(value) <= high:
            raise ConfigError(path, n, f"{key} must be a whole number{unit} from {low} to {high}, "
                                       f"got {value!r}")
        return int(value)

    failback = yesno("FAILBACK") if "FAILBACK" in values else True
    track = (yesno("TRACK_INTERFACES_ONLY_WITH_GROUPS")
             if "TRACK_INTERFACES_ONLY_WITH_GROUPS" in values else True)
    arp = yesno("ARP_FLUX_PROTECTION") if "ARP_FLUX_PROTECTION" in values else True
    count = number("ANNOUNCE_COUNT", 1, timing.MAX_ANNOUNCE_COUNT, "", timing.DEFAULT_ANNOUNCE_COUNT)
    interval = number("ANNOUNCE_INTERVAL", timing.MIN_ANNOUNCE_INTERVAL_MS, timing.MAX_ANNOUNCE_INTERVAL_MS,
                      " of milliseconds", timing.DEFAULT_ANNOUNCE_INTERVAL_MS)
    return Defaults(fdt_ms=fdt, failback=failback, track_only_groups=track, announce_count=count,
                    announce_interval_ms=interval, arp_flux_protection=arp), warnings


# --------------------------------------------------------------------------
# groups.yaml, validated from the node tree so that every error has a line


class _Doc:
    def __init__(self, path: str):
        self.path = path

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        return ConfigError(self.path, node.start_mark.line + 1 if node is not None else None, message)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise self.fail(k, f"{what}: keys must be plain names")
            key = str(k.value)
            if allowed and key not in allowed:
                raise self.fail(k, f"unknown key {key!r} in {what} (expected {', '.join(allowed)})")
            if key in out:
                raise self.fail(k, f"{key!r} given twice in {what}")
            out[key] = (k, v)
        return out

    def scalars(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list, e.g. [192.0.2.10/24]")
        out = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or item.tag.endswith(":null"):
                raise self.fail(item, f"{what}: each entry must be an address")
            out.append((str(item.value), item))
        return out

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return bool(yaml.safe_load(node.value))
        raise self.fail(node, f"{what} must be true or false")

    def address(self, text: str, node: yaml.Node, what: str) -> Address:
        if "/" not in text:
            raise self.fail(node, f"{what}: {text!r} needs a prefix length, e.g. {text}/24")
        try:
            addr = ipaddress.ip_interface(text)
        except ValueError:
            raise self.fail(node, f"{what}: {text!r} is not a valid ADDR/PREFIX") from None
        ip = addr.ip
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
            raise self.fail(node, f"{what}: {text!r} is not a usable unicast address")
        if addr.version == 4 and addr.network.prefixlen <= 30 and ip in (
                addr.network.network_address, addr.network.broadcast_address):
            raise self.fail(node, f"{what}: {text!r} is the network or broadcast address of {addr.network}")
        return addr


def parse_groups(text: str, path: str) -> tuple[GroupConfig, ...]:
    doc = _Doc(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(path, mark.line + 1 if mark else None, f"YAML syntax error: {e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"YAML error: {e}") from None
    if root is None:
        return ()
    top = doc.mapping(root, "the top level", ("groups",))
    if "groups" not in top:
        return ()
    groups: list[GroupConfig] = []
    owner: dict[str, tuple[str, int]] = {}        # ifname -> (group, line)
    seen_ip: dict[IP, int] = {}                  # address -> line
    subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, int]] = []

    def unique(addr: Address, node: yaml.Node) -> None:
        line = node.start_mark.line + 1
        if addr.ip in seen_ip:
            raise doc.fail(node, f"address {addr.ip} is configured twice (also on line {seen_ip[addr.ip]})")
        seen_ip[addr.ip] = line

    def claim_subnet(addr: Address, group: str, node: yaml.Node) -> None:
        for net, other, line in subnets:
            if other != group and addr.network.overlaps(net):
                raise doc.fail(node, f"subnet {addr.network} of group {group!r} is also used by group "
                                     f"{other!r} (line {line}); a subnet belongs to one group")
        subnets.append((addr.network, group, node.start_mark.line + 1))

    def data_addresses(fields: dict, what: str, group: str) -> list[Address]:
        out = []
        for text_, node in doc.scalars(fields["data"][1], what) if "data" in fields else []:
            a = doc.address(text_, node, what)
            unique(a, node)
            claim_subnet(a, group, node)
            out.append(a)
        return out

    for gname, (gkey, gnode) in doc.mapping(top["groups"][1], "groups", ()).items():
        if not _GROUPNAME.match(gname):
            raise doc.fail(gkey, f"invalid group name {gname!r} (letters, digits, '_', '.', '-'; at most 31)")
        where = f"group {gname}"
        g = doc.mapping(gnode, where, ("interfaces", "data", "targets", "routes", "spreading"))
        if "interfaces" not in g:
            raise doc.fail(gkey, f"{where} has no interfaces")
        ifaces: list[InterfaceConfig] = []
        test_net: dict[int, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = {}
        for ifname, (ikey, inode) in doc.mapping(g["interfaces"][1], f"{where} interfaces", ()).items():
            if not _IFNAME.match(ifname):
                raise doc.fail(ikey, f"invalid interface name {ifname!r}")
            if ifname in owner:
                other, line = owner[ifname]
                raise doc.fail(ikey, f"interface {ifname} is in group {other!r} (line {line}) and in "
                                     f"group {gname!r}; a NIC belongs to one group")
            owner[ifname] = (gname, ikey.start_mark.line + 1)
            iwhere = f"interface {ifname}"
            f = doc.mapping(inode, iwhere, ("data", "test", "standby"))
            standby = doc.boolean(f["standby"][1], f"{iwhere} standby") if "standby" in f else False
            data = data_addresses(f, f"{iwhere} data", gname)
            if standby and data:
                raise doc.fail(f["data"][0], f"{iwhere} is a standby NIC and cannot have data addresses "
                                             "(give them to an active NIC or to the group)")
            tests, link_local, arp = [], False, None
            for text_, node in doc.scalars(f["test"][1], f"{iwhere} test") if "test" in f else []:
                if text_ == LINK_LOCAL:
                    if link_local:
                        raise doc.fail(node, f"{iwhere}: 'link-local' given twice")
                    link_local = True
                    continue
                if text_ == ARP:
                    if arp is not None:
                        raise doc.fail(node, f"{iwhere}: 'arp' given twice")
                    if tests:
                        raise doc.fail(node, f"{iwhere} test: 'arp' probes IPv4 without a test address; "
                                             f"give either 'arp' or an IPv4 test address, not both")
                    arp = node
                    continue
                a = doc.address(text_, node, f"{iwhere} test")
                if a.version == 6:
                    raise doc.fail(node, f"{iwhere} test: IPv6 probes use the NIC's link-local address; "
                                         f"write 'link-local' instead of {text_!r}")
                if tests:
                    raise doc.fail(node, f"{iwhere} test: only one IPv4 test address per NIC")
                if arp is not None:
                    raise doc.fail(node, f"{iwhere} test: 'arp' probes IPv4 without a test address; "
                                         f"give either 'arp' or an IPv4 test address, not both")
                unique(a, node)
                claim_subnet(a, gname, node)
                if 4 in test_net and test_net[4][0] != a.network:
                    raise doc.fail(node, f"{iwhere} test address {a} is not in subnet {test_net[4][0]} of "
                                         f"the group's other test addresses (line {test_net[4][1]})")
                test_net.setdefault(4, (a.network, node.start_mark.line + 1))
                tests.append(a)
            ifaces.append(InterfaceConfig(ifname, gname, tuple(data), tuple(tests), link_local,
                                          arp is not None, standby))
        if not ifaces:
            raise doc.fail(gkey, f"{where} has no interfaces")
        gdata = data_addresses(g, f"{where} data", gname)
        arp_nics = [i.name for i in ifaces if i.test_arp]
        if arp_nics and not any(a.version == 4 for a in gdata + [a for i in ifaces for a in i.data]):
            raise doc.fail(gkey, f"{where}: {', '.join(arp_nics)} probe with 'arp', which finds its targets "
                                 f"on the group's IPv4 data subnet, but the group has no IPv4 data address")
        targets = []
        for text_, node in doc.scalars(g["targets"][1], f"{where} targets") if "targets" in g else []:
            try:
                t = ipaddress.ip_address(text_)
            except ValueError:
                raise doc.fail(node, f"{where} targets: {text_!r} is not an IP address (no prefix)") from None
            if t.is_multicast or t.is_unspecified or t.is_loopback:
                raise doc.fail(node, f"{where} targets: {text_!r} is not a unicast address")
            if t in targets:
                raise doc.fail(node, f"{where} targets: {text_!r} listed twice")
            targets.append(t)
        spreading = doc.boolean(g["spreading"][1], f"{where} spreading") if "spreading" in g else True
        data = [*gdata, *(a for i in ifaces for a in i.data)]
        nets = {a.network for a in data} | {t.network for i in ifaces for t in i.test}
        routes = (_routes(doc, g["routes"][1], where, {i.name for i in ifaces}, {a.ip for a in data}, nets)
                  if "routes" in g else ())
        groups.append(GroupConfig(gname, tuple(ifaces), tuple(gdata), tuple(targets), routes, spreading))
    return tuple(groups)


# The ip-route options a declared route may carry: name -> (kind, bounds).
_ROUTE_METRICS = {"mtu": (68, 65535), "advmss": (1, 65535), "initcwnd": (1, 1024),
                  "initrwnd": (1, 1024), "hoplimit": (1, 255)}
_ROUTE_KEYS = ("to", "via", "dev", "table", "metric", "src", "onlink", "mtu_lock", "pref",
               *_ROUTE_METRICS)


def _routes(doc: _Doc, node: yaml.Node, where: str, ifnames: set[str],
            data_ips: set[IP], nets: set) -> tuple[RouteConfig, ...]:
    """`routes:` of a group: a list of mappings in ip-route's words, e.g.
    {to: default, via: 192.0.2.1, metric: 100, mtu: 1400}."""
    if not isinstance(node, yaml.SequenceNode):
        raise doc.fail(node, f"{where} routes must be a list, e.g. [{{to: default, via: 192.0.2.1}}]")
    out: list[RouteConfig] = []
    seen: dict[tuple, int] = {}
    for item in node.value:
        what = f"{where} route"
        f = doc.mapping(item, what, _ROUTE_KEYS)
        line = item.start_mark.line + 1

        def scalar(key: str) -> tuple[str, yaml.Node]:
            n = f[key][1]
            if not isinstance(n, yaml.ScalarNode) or n.tag.endswith(":null"):
                raise doc.fail(n, f"{what}: {key} must be a single value")
            return str(n.value), n

        def ip(key: str) -> IP:
            text, n = scalar(key)
            try:
                return ipaddress.ip_address(text)
            except ValueError:
                raise doc.fail(n, f"{what}: {key} {text!r} is not an IP address") from None

        def number(key: str, lo: int, hi: int) -> int:
            text, n = scalar(key)
            if not re.fullmatch(r"\d+", text) or not lo <= int(text) <= hi:
                raise doc.fail(n, f"{what}: {key} must be a whole number from {lo} to {hi}, got {text!r}")
            return int(text)

        if "to" not in f:
            raise doc.fail(item, f"{what} needs 'to' (a prefix, or default)")
        via = ip("via") if "via" in f else None
        to, to_node = scalar("to")
        if to == "default":
            if via is None:
                raise doc.fail(to_node, f"{what}: 'to: default' needs 'via' (or write 0.0.0.0/0 or ::/0)")
            dst = ipaddress.ip_network("0.0.0.0/0" if via.version == 4 else "::/0")
        else:
            try:
                dst = ipaddress.ip_network(to)
            except ValueError:
                raise doc.fail(to_node, f"{what}: to {to!r} is not a prefix (ADDR/LEN with no host "
                                        f"bits) or default") from None
        if via is not None and via.version != dst.version:
            raise doc.fail(f["via"][1], f"{what}: via {via} is not of the family of {dst}")
        if via is not None and (via.is_multicast or via.is_unspecified or via.is_loopback):
            raise doc.fail(f["via"][1], f"{what}: via {via} is not a unicast address")
        dev = None
        if "dev" in f:
            dev, n = scalar("dev")
            if dev not in ifnames:
                raise doc.fail(n, f"{what}: dev {dev} is not an interface of {where}")
        src = ip("src") if "src" in f else None
        if src is not None and src not in data_ips:
            raise doc.fail(f["src"][1], f"{what}: src {src} is not a data address of {where}")
        if src is not None and src.version != dst.version:
            raise doc.fail(f["src"][1], f"{what}: src {src} is not of the family of {dst}")
        table = 254
        if "table" in f:
            text, n = scalar("table")
            table = 254 if text == "main" else number("table", 1, 2**32 - 1)
            if table in (0, 253, 255):
                raise doc.fail(n, f"{what}: table {table} is reserved by the kernel")
        metric = number("metric", 0, 2**32 - 1) if "metric" in f else 0
        attrs: list[tuple[str, object]] = []
        for key, (lo, hi) in _ROUTE_METRICS.items():
            if key in f:
                attrs.append((key, number(key, lo, hi)))
        for key in ("onlink", "mtu_lock"):
            if key in f and doc.boolean(f[key][1], f"{what} {key}"):
                attrs.append((key, True))
        if "mtu_lock" in f and "mtu" not in f:
            raise doc.fail(f["mtu_lock"][1], f"{what}: mtu_lock needs mtu")
        if (via is not None and not via.is_link_local and not any(via in net for net in nets)
                and dict(attrs).get("onlink") is not True):
            raise doc.fail(f["via"][1], f"{what}: via {via} is on none of the group's subnets; "
                                        f"give onlink: true if the router is on the link all the same")
        if "pref" in f:
            text, n = scalar("pref")
            if dst.version != 6 or text not in ("low", "medium", "high"):
                raise doc.fail(n, f"{what}: pref is low, medium or high, for IPv6 routes only")
            attrs.append(("pref", text))
        ident = (dst.version, table, dst, metric)
        if ident in seen:
            raise doc.fail(item, f"{what} to {dst} (table {table}, metric {metric}) is declared twice "
                                 f"(also on line {seen[ident]})")
        seen[ident] = line
        out.append(RouteConfig(dst, via, dev, table, metric, src, tuple(attrs), line))
    return tuple(out)


def _read(path: str, missing_ok: bool) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read: {getattr(e, 'strerror', None) or e}") from None


def load(defaults_path: str = DEFAULTS_PATH, groups_path: str = GROUPS_PATH,
         defaults_optional: bool | None = None) -> Config:
    """Read and validate both files; raise ConfigError on the first problem.
    The tunables file may be missing only at its default path, unless
    `defaults_optional` says otherwise."""
    if defaults_optional is None:
        defaults_optional = defaults_path == DEFAULTS_PATH
    text = _read(defaults_path, missing_ok=defaults_optional)
    defaults, warnings = parse_defaults(text, defaults_path) if text is not None else (Defaults(), [])
    groups = parse_groups(_read(groups_path, missing_ok=False) or "", groups_path)
    return Config(defaults=defaults, groups=groups, warnings=tuple(warnings))
