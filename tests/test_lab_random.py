"""Random events against the real daemon, checking the project's rule after
each one settles: every configured data address is on exactly one NIC of its
group, and on a usable one whenever the group has one.

The seed is printed and shown on failure; MPATHD_SEED=N replays a run and
MPATHD_RANDOM_EVENTS=N changes its length."""

import ipaddress
import os
import random
import signal
import time

from lab import ROUTER4, TRIO_GROUP

NICS = ["eth0", "eth1", "eth2"]
DEFAULTS = "FAILURE_DETECTION_TIME=300\n"          # probes every ~43 ms, repair in ~0.5 s

CONFIGS = [
    TRIO_GROUP + "    data: [192.0.2.200/24]\n",
    """
groups:
  ipmp0:
    interfaces:
      eth0: {data: [192.0.2.100/24], test: [192.0.2.10/24]}
      eth1: {data: [192.0.2.101/24, 192.0.2.102/24], test: [192.0.2.11/24]}
      eth2: {data: [192.0.2.103/24], test: [192.0.2.12/24]}
    data: [192.0.2.200/24, 192.0.2.201/24]
""",
    """
groups:
  ipmp0:
    interfaces:
      eth1: {data: [192.0.2.101/24, "2001:db8:1::101/64"], test: [192.0.2.11/24]}
      eth2: {test: [192.0.2.12/24]}
    data: [192.0.2.200/24]
""",
]


def data_addresses(yaml: str) -> dict[str, list[str]]:
    """address -> the NICs of its group, from a config text."""
    from mpathd.config import parse_groups
    out = {}
    for g in parse_groups(yaml, "random"):
        nics = [i.name for i in g.interfaces]
        for a in [*g.data, *(a for i in g.interfaces for a in i.data)]:
            out[str(a)] = nics
    return out


ALL = sorted({a for c in CONFIGS for a in data_addresses(c)})


def test_random_events_keep_every_address_on_exactly_one_usable_nic(make_lab):
    seed = int(os.environ.get("MPATHD_SEED", random.randrange(1 << 31)))
    events = int(os.environ.get("MPATHD_RANDOM_EVENTS", "200"))
    print(f"random lab test: MPATHD_SEED={seed}")
    rng = random.Random(seed)
    lab = make_lab(nics=3)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    config = CONFIGS[0]
    d = lab.start_daemon(config, defaults=DEFAULTS)
    cut, dropped, unplugged, offline = set(), set(), set(), set()
    history: list[str] = []

    def usable(nic):
        return not ({nic} & (cut | dropped | unplugged | offline))

    def violation():
        kernel = lab.addresses()
        wanted = data_addresses(config)
        for addr, members in wanted.items():
            holders = [n for n, addrs in kernel.items() if addr in addrs]
            if not any(n in kernel for n in members):
                # every member is unplugged: nowhere to go, so at most the
                # copy it had stays where it was
                if len(holders) > 1:
                    return f"{addr} is on {holders}"
                continue
            if len(holders) != 1 or holders[0] not in members:
                return f"{addr} is on {holders or 'no NIC'}, expected one of {members}"
            if any(usable(n) for n in members if n in kernel) and not usable(holders[0]):
                return f"{addr} is on unusable {holders[0]} while a usable NIC exists"
        for addr in ALL:
            if addr not in wanted and any(addr in s for s in kernel.values()):
                return f"{addr} is no longer configured but is still present"
        return None

    def status():
        if d.proc.poll() is not None:
            return "daemon dead"
        st = d.status()
        return {k: st[k] for k in ("groups", "interfaces", "addresses", "targets")}

    def settle(what):
        deadline = time.monotonic() + 15
        while (problem := violation()) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"MPATHD_SEED={seed}: after event {len(history)} ({what}): {problem}\n"
                    f"events: {history[-12:]}\ncut {cut} dropped {dropped} unplugged {unplugged} "
                    f"offline {offline}\nstatus: {status()}\n"
                    f"log tail:\n{d.log()[-3000:]}")
            time.sleep(0.05)

    settle("start")
    for _ in range(events):
        nic = rng.choice(NICS)
        kind = rng.choices(["carrier", "drop", "plug", "offline", "reload", "kill", "delete"],
                           weights=[5, 4, 2, 2, 2, 1, 2])[0]
        if kind == "carrier" and nic not in unplugged:
            (lab.restore if nic in cut else lab.cut)(nic)
            cut ^= {nic}
        elif kind == "drop":
            (lab.undrop if nic in dropped else lab.drop)(nic)
            dropped ^= {nic}
        elif kind == "plug":
            if nic in unplugged:
                lab.replug(nic)
                unplugged.discard(nic)
                cut.discard(nic)                       # a new cable
            else:
                lab.unplug(nic)
                unplugged.add(nic)
        elif kind == "offline":
            if nic in offline:
                if d.ctl("online", nic, check=False).returncode == 0:
                    offline.discard(nic)
            elif d.ctl("offline", nic, check=False).returncode == 0:
                offline.add(nic)
        elif kind == "reload":
            config = rng.choice(CONFIGS)
            d.write_config(config)
            d.proc.send_signal(signal.SIGHUP)
            # offline state survives a reload for the NICs that stay in the group
            offline &= {i for members in data_addresses(config).values() for i in members}
            time.sleep(0.2)
        elif kind == "kill":
            d.stop(signal.SIGKILL)
            d = lab.start_daemon(config, defaults=DEFAULTS)
            offline.clear()                            # a new daemon starts with every NIC online
        elif kind == "delete":
            kernel = lab.addresses()
            present = [(n, a) for n, addrs in kernel.items() for a in addrs if a in data_addresses(config)]
            if present:
                n, a = rng.choice(present)
                family = "-6" if ipaddress.ip_interface(a).version == 6 else "-4"
                lab.sh("host", "ip", family, "addr", "del", a, "dev", n, check=False)
        else:
            continue
        history.append(f"{kind} {nic}")
        settle(history[-1])
    assert d.proc.poll() is None, d.log()[-3000:]
    assert "Traceback" not in d.log()
