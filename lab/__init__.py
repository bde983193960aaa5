"""The namespace lab: topologies, faults and a daemon to run in them.

Tests, the demo and the benchmarks all build their networks here. Every
namespace is named `mpl<pid>-<random>-<role>`, so runs never collide and
leftovers of a run that was killed are recognised (its pid is gone) and
removed by the next one. Only documentation addresses are used, and all
traffic stays inside the namespaces.

    host  eth0..ethN-1 ──┐
                         ├─ sw (bridge br0) ── rtr eth0 192.0.2.1 ─ rtr eth1 ── far
    tgt1..tgtK eth0 ─────┘                      2001:db8:1::1        198.51.100.1/24
                                                                     2001:db8:2::1/64
The host NICs are veth pairs whose switch ends are p-eth0..; a fault on a
NIC is applied at its switch end, as a pulled cable or a broken switch port
would be.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from mpathd.adapters import control

TRAFFIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traffic.py")

SUBNET4 = "192.0.2"            # the IPMP link
SUBNET6 = "2001:db8:1:"
ROUTER4, ROUTER6 = "192.0.2.1", "2001:db8:1::1"
FAR4, FAR6 = "198.51.100.2", "2001:db8:2::2"        # a host beyond the router

# The standard group of the lab's first two NICs, as tests, demo and
# benchmarks use it: home data and test addresses on the lab's link.
PAIR_GROUP = """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24], test: [192.0.2.10/24]}
      eth1: {data: [192.0.2.101/24], test: [192.0.2.11/24]}
"""

# Two NICs and a standby, all probing: the reconfiguration and random tests.
TRIO_GROUP = """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24, "2001:db8:1::100/64"], test: [192.0.2.10/24]}
      eth1: {data: [192.0.2.101/24], test: [192.0.2.11/24]}
      eth2: {standby: true, test: [192.0.2.12/24]}
"""

# Link-based groups without test addresses: no probing, so a carrier fault
# is detected at once and a repair needs no answers.
LINK_PAIR_GROUP = """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24]}
      eth1: {data: [192.0.2.101/24]}
"""
LINK_TRIO_GROUP = LINK_PAIR_GROUP + "      eth2: {standby: true}\n"
# The link pair with an IPv6 data address on eth0 too.
LINK_V6_PAIR_GROUP = LINK_PAIR_GROUP.replace("{data: [192.0.2.100/24]}", '{data: [192.0.2.100/24, "2001:db8:1::100/64"]}')

# The pair and the trio with address-less ARP probing: no test addresses.
ARP_PAIR_GROUP = """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24], test: [arp]}
      eth1: {data: [192.0.2.101/24], test: [arp]}
"""
ARP_TRIO_GROUP = ARP_PAIR_GROUP + """      eth2: {standby: true, test: [arp]}
"""
# Lines a healthy run never writes: a failed request, an address blamed on
# another program, a copy the kernel itself re-announced, an error from a
# NIC that went down or away.
_UNTRUE = ("could not carry out", "by another program", "appeared on", "LookupError", "No such device",
           "Network is down", "internal error")

_live: list["Lab"] = []


def _run(argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def reap_stale() -> list[str]:
    """Delete the namespaces of lab runs whose process is gone."""
    removed = []
    for line in _run(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        m = re.match(r"^mpl(\d+)-[0-9a-f]+-", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def mac_of(index: int) -> str:
    return f"02:00:00:00:01:{index:02x}"


@dataclass
class Daemon:
    """A running mpathd inside the lab's host namespace."""
    lab: "Lab"
    proc: subprocess.Popen
    control: str
    log_path: str
    groups_path: str
    defaults_path: str

    def write_config(self, groups_yaml: str | None = None, defaults: str | None = None) -> None:
        for path, text in ((self.groups_path, groups_yaml), (self.defaults_path, defaults)):
            if text is not None:
                with open(path + ".new", "w") as f:
                    f.write(text)
                os.replace(path + ".new", path)

    def request(self, cmd: str = "status", **args) -> dict:
        return control.request(self.control, cmd, **args)

    def status(self) -> dict:
        return self.request("status")

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "mpathd.ctl", "--control", self.control, *args],
                           capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"ipmpctl {' '.join(args)}: {p.stderr.strip()}")
        return p

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def untrue(self) -> list[str]:
        """The log lines that said something false or blamed the wrong party
        on a NIC's own teardown, a quick flap or a refused action (issue 11)."""
        return [line for line in self.log().splitlines() if any(u in line for u in _UNTRUE)]

    def wait_log(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return self.log()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout} s; log:\n{self.log()}")

    def wait_probing(self, *nics: str, timeout: float = 10) -> None:
        """Wait until each NIC has probe targets and its probe state is ok, so
        that what follows (a repair needing ten answers, say) does not race
        target discovery."""
        def ok() -> bool:
            states = {i["name"]: i["probe"] for i in self.status()["interfaces"]}
            return all(states.get(n) == "ok" for n in nics)
        wait_for(ok, timeout=timeout, what=f"probing on {', '.join(nics)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the daemon's whole process group (it has a session of its
        own), so that a wrapper such as strace and the daemon both go."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
        return self.proc.returncode


class Lab:
    def __init__(self, nics: int = 2, targets: int = 1):
        self.id = f"mpl{os.getpid()}-{secrets.token_hex(2)}"
        self.nics = [f"eth{i}" for i in range(nics)]
        self.ntargets = targets
        self.dir = tempfile.mkdtemp(prefix=f"{self.id}-")
        self.daemons: list[Daemon] = []
        self.namespaces: list[str] = []
        self._children: list[subprocess.Popen] = []

    # --------------------------------------------------------- set-up

    def ns(self, role: str) -> str:
        return f"{self.id}-{role}"

    @property
    def host(self) -> str:
        return self.ns("host")

    def __enter__(self) -> "Lab":
        reap_stale()
        _live.append(self)
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def _add_ns(self, role: str) -> str:
        name = self.ns(role)
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.sh(role, "ip", "link", "set", "lo", "up")
        return name

    def _build(self) -> None:
        for role in ["sw", "host", "rtr", "far"] + [f"tgt{k}" for k in range(1, self.ntargets + 1)]:
            self._add_ns(role)
            # sysctls before links: new devices copy conf/default. No DAD in
            # the lab, so that link-local addresses are usable at once.
            if role != "sw":
                self.sysctl(role, "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
        # The switch has no addresses; with IPv6 on, br0 would answer ff02::1.
        self.sysctl("sw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        self.sh("sw", "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0",
                "forward_delay", "0", "mcast_snooping", "0")
        self.sh("sw", "ip", "link", "set", "br0", "up")
        for i, nic in enumerate(self.nics):
            self._plug(nic, i)
        self._attach("rtr", "eth0", "p-rtr")
        self.sh("rtr", "ip", "addr", "add", f"{ROUTER4}/24", "dev", "eth0")
        self.sh("rtr", "ip", "addr", "add", f"{ROUTER6}/64", "dev", "eth0", "nodad")
        self.sysctl("rtr", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.icmp_echo_ignore_broadcasts=0")
        _run(["ip", "link", "add", "eth1", "netns", self.ns("rtr"), "type", "veth",
              "peer", "name", "eth0", "netns", self.ns("far")])
        self.sh("rtr", "ip", "link", "set", "eth1", "up")
        self.sh("rtr", "ip", "addr", "add", "198.51.100.1/24", "dev", "eth1")
        self.sh("rtr", "ip", "addr", "add", "2001:db8:2::1/64", "dev", "eth1", "nodad")
        self.sh("far", "ip", "link", "set", "eth0", "up")
        self.sh("far", "ip", "addr", "add", f"{FAR4}/24", "dev", "eth0")
        self.sh("far", "ip", "addr", "add", f"{FAR6}/64", "dev", "eth0", "nodad")
        self.sh("far", "ip", "route", "add", "default", "via", "198.51.100.1")
        self.sh("far", "ip", "-6", "route", "add", "default", "via", "2001:db8:2::1")
        for k in range(1, self.ntargets + 1):
            role = f"tgt{k}"
            self.sysctl(role, "net.ipv4.icmp_echo_ignore_broadcasts=0")
            self._attach(role, "eth0", f"p-{role}")
            self.sh(role, "ip", "addr", "add", f"{self.target4(k)}/24", "dev", "eth0")
            self.sh(role, "ip", "addr", "add", f"{self.target6(k)}/64", "dev", "eth0", "nodad")

    def station(self, role: str, addr4: str) -> str:
        """Another host on the switch (for example an attacker); returns its
        namespace. Its port is p-<role>."""
        ns = self._add_ns(role)
        self._attach(role, "eth0", f"p-{role}")
        self.sh(role, "ip", "addr", "add", f"{addr4}/24", "dev", "eth0")
        return ns

    def mac(self, role: str, ifname: str) -> str:
        return self.ip_json(role, "link", "show", ifname)[0]["address"]

    def _attach(self, role: str, ifname: str, port: str, up: bool = True) -> None:
        _run(["ip", "link", "add", ifname, "netns", self.ns(role), "type", "veth",
              "peer", "name", port, "netns", self.ns("sw")])
        self.sh("sw", "ip", "link", "set", port, "master", "br0", "up")
        if up:
            self.sh(role, "ip", "link", "set", ifname, "up")

    def _plug(self, nic: str, i: int, up: bool = True) -> None:
        self._attach("host", nic, f"p-{nic}", up)
        self.sh("host", "ip", "link", "set", nic, "address", mac_of(i))

    @staticmethod
    def target4(k: int) -> str:
        return f"{SUBNET4}.{1 + k}"

    @staticmethod
    def target6(k: int) -> str:
        return f"{SUBNET6}:{1 + k:x}"

    def destroy(self) -> None:
        for d in self.daemons:
            d.stop(signal.SIGKILL)
        for p in self._children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for name in self.namespaces:
            _run(["ip", "netns", "del", name], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live:
            _live.remove(self)

    # --------------------------------------------------------- running things

    def sh(self, role: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.ns(role), *argv], check=check, timeout=timeout)

    def sysctl(self, role: str, *settings: str) -> None:
        self.sh(role, "sysctl", "-qw", *settings)

    def spawn(self, role: str, argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], **kw)
        self._children.append(p)
        return p

    def traffic(self, role: str, *args: str) -> subprocess.Popen:
        """Run one of lab/traffic.py's programs in a namespace; its first
        line of output says it is ready."""
        p = self.spawn(role, [sys.executable, TRAFFIC, *args],
                       stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        return p

    def capture(self, role: str, ifname: str, bpf: str) -> subprocess.Popen:
        """tcpdump in a namespace, one line per packet with epoch time stamps
        and link-level headers; returns once tcpdump is listening."""
        p = self.spawn(role, ["tcpdump", "-i", ifname, "-nn", "-tt", "-e", "-l", bpf],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.stderr.readline()            # "listening on ..."
        return p

    def monitor(self, role: str = "host") -> "Monitor":
        """Address and carrier changes in a namespace, time-stamped by
        `ip -ts monitor` as the kernel reports them."""
        return Monitor(self.spawn(role, ["ip", "-ts", "-o", "monitor", "address", "link"],
                                  stdout=subprocess.PIPE, text=True))

    def ip_json(self, role: str, *args: str) -> list:
        return json.loads(self.sh(role, "ip", "-j", *args).stdout or "[]")

    def addresses(self) -> dict[str, set[str]]:
        """The host's global addresses as ADDR/PREFIX, per NIC."""
        out: dict[str, set[str]] = {}
        for link in self.ip_json("host", "addr", "show"):
            out[link["ifname"]] = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                   if a.get("scope") == "global"}
        return out

    def holders(self, address: str) -> list[str]:
        """The host NICs that hold `address` (ADDR/PREFIX)."""
        return sorted(n for n, addrs in self.addresses().items() if address in addrs)

    def routes(self, family: str = "-4") -> list[dict]:
        return self.ip_json("host", family, "route", "show")

    def route_paths(self, family: str = "-4", table: str = "main") -> list[dict]:
        """The host's routes in `table` ("main", a number or "all") as
        `ip -j route show table` reports them, each with four keys more:
        "hops", its next hops (an nhid resolved through `ip -j nexthop`, a
        group to its members, to the nexthop objects as ip reports them),
        "paths" and "gateways", the NICs it can leave by and its routers,
        from the hops, and "locked", the metrics it locks (`mtu lock 1400`
        gives ["mtu"]), which ip's JSON leaves out."""
        nexthops = {n["id"]: n for n in self.ip_json("host", "nexthop", "show")}

        def leaves(nhid: int) -> list[dict]:
            n = nexthops.get(nhid, {})
            return [leaf for m in n["group"] for leaf in leaves(m["id"])] if "group" in n else [n]

        locked = self._locked_metrics(family, table)
        out = []
        for r in self.ip_json("host", family, "route", "show", "table", table):
            hops = leaves(r["nhid"]) if "nhid" in r else r.get("nexthops", [r])
            out.append({**r, "hops": hops, "paths": sorted({h["dev"] for h in hops if "dev" in h}),
                        "gateways": sorted({h["gateway"] for h in hops if "gateway" in h}),
                        "locked": locked.get(_route_key(r), [])})
        return out

    def _locked_metrics(self, family: str, table: str) -> dict[tuple, list[str]]:
        """Route key -> the metrics it locks, from ip's one-line text, the
        only output that shows `lock`."""
        out = {}
        for line in self.sh("host", "ip", "-o", family, "route", "show", "table", table).stdout.splitlines():
            words = line.split()
            if "lock" in words:
                kind, dst = (words[0], words[1]) if words[0] in _ROUTE_TYPES else ("unicast", words[0])
                after = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w in ("metric", "table")}
                key = (kind, dst, after.get("metric"), after.get("table"))
                out[key] = [words[i - 1] for i, w in enumerate(words) if w == "lock"]
        return out

    def ping_from(self, address: str, dst: str | None = None, deadline: float = 2) -> bool:
        """A ping from `address` (a data address, ADDR or ADDR/PREFIX) in the
        host namespace to `dst`, by default the far host of its family:
        True as soon as one echo comes back, False after `deadline` s."""
        src = address.split("/")[0]
        dst = dst or (FAR6 if ":" in src else FAR4)
        return self.sh("host", "ping", "-c", "1", "-w", str(deadline), "-i", "0.2", "-I", src, dst,
                       check=False, timeout=deadline + 5).returncode == 0

    def assert_reach_far(self, addresses, deadline: float = 2) -> None:
        """Every address in `addresses` reaches the far host beyond the router
        (a ping from it); else fail naming the ones that do not and showing
        where the addresses and the routes are."""
        lost = [a for a in addresses if not self.ping_from(a, deadline=deadline)]
        if lost:
            routes = {f: [(r["dst"], r["paths"]) for r in self.route_paths(f, "all")
                          if r.get("table") != "local"] for f in ("-4", "-6")}
            raise AssertionError(f"no echo from the far host to {lost}\naddresses: {self.addresses()}\n"
                                 f"routes: {routes}")

    def count_frames(self, nics, match: str, per: str = "") -> "FrameCounter":
        """Count, from now on, the frames that the host's `nics` send and that
        match `match` (an nft expression such as 'udp dport 7000'), at
        their switch ports; with `per` (an nft key such as 'udp sport'),
        count per value of that key."""
        return FrameCounter(self, list(nics), match, per)

    def neighbour(self, role: str, address: str) -> dict | None:
        entries = self.ip_json(role, "neigh", "show", address)
        return entries[0] if entries else None

    def ping(self, role: str, address: str, count: int = 1, timeout: float = 1) -> bool:
        return self.sh(role, "ping", "-c", str(count), "-W", str(timeout), "-i", "0.2", address,
                       check=False).returncode == 0

    # --------------------------------------------------------- faults

    def cut(self, nic: str) -> None:
        """Carrier loss: the switch end of the cable goes down."""
        self.sh("sw", "ip", "link", "set", f"p-{nic}", "down")

    def restore(self, nic: str) -> None:
        self.sh("sw", "ip", "link", "set", f"p-{nic}", "up")

    def drop(self, nic: str, percent: int = 100, what: str = "", direction: str = "both") -> None:
        """Silent loss at the switch port of a NIC or station (carrier stays
        up): every frame, or `percent` of them at random. `what` narrows the
        rule with an nft match such as 'ip protocol icmp'; `direction` is
        'both', 'out' (frames the NIC sends) or 'in' (frames sent to it)."""
        table = f"drop_{nic}"
        verdict = "drop" if percent >= 100 else f"numgen random mod 100 < {percent} drop"
        self.undrop(nic)
        rules = (f"add table bridge {table}\n"
                 f"add chain bridge {table} fw {{ type filter hook forward priority 0; policy accept; }}\n")
        if direction in ("both", "out"):
            rules += f"add rule bridge {table} fw iifname \"p-{nic}\" {what} {verdict}\n"
        if direction in ("both", "in"):
            rules += f"add rule bridge {table} fw oifname \"p-{nic}\" {what} {verdict}\n"
        path = os.path.join(self.dir, f"{table}.nft")
        with open(path, "w") as f:
            f.write(rules)
        self.sh("sw", "nft", "-f", path)

    def undrop(self, nic: str) -> None:
        self.sh("sw", "nft", "delete", "table", "bridge", f"drop_{nic}", check=False)

    def unplug(self, nic: str) -> None:
        """The NIC is removed from the host (RTM_DELLINK)."""
        self.sh("host", "ip", "link", "del", nic)

    def rename(self, nic: str, new: str) -> None:
        """A live rename as udev or an operator does it: Linux renames only a
        NIC that is down, so down, the new name, up. Its switch port keeps
        its name (p-<nic>): cut(nic) still breaks it."""
        for argv in (("down",), ("name", new), ("up",)):
            self.sh("host", "ip", "link", "set", nic if argv[0] != "up" else new, *argv)

    def replug(self, nic: str, up: bool = True) -> None:
        """The NIC is back under its name, a new device (RTM_NEWLINK with a
        new index); with up=False it stays administratively down, as a NIC
        that nothing brings up (no network manager) would."""
        self._plug(nic, self.nics.index(nic), up)

    # --------------------------------------------------------- the daemon

    def start_daemon(self, groups_yaml: str, defaults: str = "", wait: bool = True,
                     timeout: float = 20, env: dict | None = None, wrap: tuple[str, ...] = ()) -> Daemon:
        """Run mpathd in the host namespace, with `env` added to its
        environment and its command line prefixed by `wrap` (strace, say)."""
        n = len(self.daemons)
        paths = {k: os.path.join(self.dir, f"{k}{n}") for k in ("defaults", "groups", "log")}
        # the daemon makes its socket's directory itself, as /run/mpathd would be
        os.chmod(self.dir, 0o755)
        paths["control"] = os.path.join(self.dir, f"run{n}", "control.sock")
        with open(paths["defaults"], "w") as f:
            f.write(defaults)
        with open(paths["groups"], "w") as f:
            f.write(groups_yaml)
        log = open(paths["log"], "w")
        proc = self.spawn("host", [*wrap, sys.executable, "-m", "mpathd.daemon", "--defaults",
                                   paths["defaults"], "--config", paths["groups"], "--control", paths["control"]],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, **(env or {})})
        log.close()
        d = Daemon(self, proc, paths["control"], paths["log"], paths["groups"], paths["defaults"])
        self.daemons.append(d)
        if wait:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mpathd exited with {proc.returncode}:\n{d.log()}")
                try:
                    d.request("ping")
                    break
                except control.ControlError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mpathd not ready within {timeout} s:\n{d.log()}") from None
                    time.sleep(0.05)
        return d


# The route types `ip route` writes before the destination.
_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "anycast", "unreachable", "prohibit",
                "blackhole", "throw", "nat"}


def _route_key(r: dict) -> tuple:
    """What tells a route apart in ip's text, from its `ip -j route` form."""
    metric = r.get("metric")
    return (r.get("type", "unicast"), r["dst"], None if metric is None else str(metric), r.get("table"))


class FrameCounter:
    """nft counters in the switch namespace on the ports of some host NICs
    (see Lab.count_frames). The prerouting hook sees every frame a NIC
    sends, also those a `Lab.drop` rule then drops."""

    def __init__(self, lab: Lab, nics: list[str], match: str, per: str):
        self.lab, self.nics, self.per = lab, nics, per
        self.table = "count"
        rules = [f"add table bridge {self.table}",
                 f"add chain bridge {self.table} pre {{ type filter hook prerouting priority -300; "
                 f"policy accept; }}"]
        for nic in nics:
            if per:
                rules.append(f"add set bridge {self.table} {nic} {{ typeof {per}; flags dynamic; counter; }}")
                rules.append(f'add rule bridge {self.table} pre iifname "p-{nic}" {match} update @{nic} {{ {per} }}')
            else:
                rules.append(f'add rule bridge {self.table} pre iifname "p-{nic}" {match} counter comment "{nic}"')
        self.path = os.path.join(lab.dir, f"{self.table}.nft")
        with open(self.path, "w") as f:
            f.write("\n".join(rules) + "\n")
        self.restart()

    def restart(self) -> None:
        """Start again from zero."""
        self.close()
        self.lab.sh("sw", "nft", "-f", self.path)

    def read(self) -> dict:
        """NIC -> frames so far; with `per`, NIC -> {value: frames}."""
        listing = json.loads(self.lab.sh("sw", "nft", "-j", "list", "table", "bridge", self.table).stdout)
        out: dict = {nic: {} if self.per else 0 for nic in self.nics}
        for item in listing["nftables"]:
            if self.per and "set" in item:
                out[item["set"]["name"]] = {e["elem"]["val"]: e["elem"]["counter"]["packets"]
                                            for e in item["set"].get("elem", [])}
            elif not self.per and "rule" in item:
                counter = next(x["counter"] for x in item["rule"]["expr"] if "counter" in x)
                out[item["rule"]["comment"]] = counter["packets"]
        return out

    def close(self) -> None:
        self.lab.sh("sw", "nft", "delete", "table", "bridge", self.table, check=False)


class Monitor:
    """Collects `ip -ts -o monitor address link` lines in a thread: address
    events as (wall-clock time, added?, ifname, ADDR/PREFIX) and carrier
    losses as (wall-clock time, ifname)."""

    _LINE = re.compile(r"^\[([0-9T:.-]+)\] (Deleted )?\d+: (\S+)\s+inet6? (\S+)")
    _LINK = re.compile(r"^\[([0-9T:.-]+)\] \d+: ([^:@]+)[^:]*: <([^>]*)>")

    def __init__(self, proc: subprocess.Popen):
        import threading
        from datetime import datetime
        self.proc = proc
        self.events: list[tuple[float, bool, str, str]] = []
        self.carrier_losses: list[tuple[float, str]] = []

        def read() -> None:
            for line in proc.stdout:
                if m := self._LINE.match(line):
                    when = datetime.fromisoformat(m.group(1)).timestamp()
                    self.events.append((when, m.group(2) is None, m.group(3), m.group(4)))
                elif (m := self._LINK.match(line)) and "NO-CARRIER" in m.group(3).split(","):
                    self.carrier_losses.append((datetime.fromisoformat(m.group(1)).timestamp(), m.group(2)))
        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()
        time.sleep(0.1)                    # let ip subscribe before anything happens

    def added(self, address: str, ifname: str, after: float, timeout: float = 30) -> float | None:
        """When `address` next appeared on `ifname` after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, added, dev, addr in list(self.events):
                if added and dev == ifname and addr == address and when >= after:
                    return when
            time.sleep(0.005)
        return None

    def carrier_lost(self, ifname: str, after: float, timeout: float = 5) -> float | None:
        """When `ifname` next reported losing its carrier after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, dev in list(self.carrier_losses):
                if dev == ifname and when >= after:
                    return when
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# Only the process that built the labs tears them down: a process forked
# from it (pyroute2's IPRoute(netns=...) runs one, and ends it with SIGTERM)
# inherits these handlers and must leave the namespaces alone.
_OWNER = os.getpid()


def _cleanup_all() -> None:
    if os.getpid() != _OWNER:
        return
    for lab in list(_live):
        lab.destroy()


def _terminated(signo: int, _frame) -> None:
    if os.getpid() != _OWNER:
        os._exit(128 + signo)
    sys.exit(128 + signo)


atexit.register(_cleanup_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) in (signal.SIG_DFL, None):
        signal.signal(_sig, _terminated)


def wait_for(predicate, timeout: float = 10, interval: float = 0.02, what: str = "condition"):
    """Poll until predicate() is truthy; return its value or raise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)
