"""The daemon as a service, in the lab: sd_notify, the control socket's
rules, hostile clients, metrics, and the unit's system call filter."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpathd.adapters.control import ControlError
from lab import PAIR_GROUP as GROUP
from lab import ROUTER4, wait_for

ROOT = Path(__file__).resolve().parent.parent
FDT = "FAILURE_DETECTION_TIME=1000\n"


def probes_sent(d):
    return sum(i["probes"].get("sent", 0) for i in d.status()["interfaces"])


def test_sd_notify_ready_watchdog_status_reloading_stopping(make_lab, tmp_path):
    lab = make_lab(nics=2)
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    messages: list[str] = []

    def until(text):
        while not any(text in m for m in messages):
            messages.append(sock.recv(4096).decode())
        return next(m for m in messages if text in m)

    d = lab.start_daemon(GROUP, defaults=FDT, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    ready = until("READY=1")
    assert "STATUS=1 group ok" in ready
    for _ in range(3):
        messages.clear()
        until("WATCHDOG=1")
    messages.clear()
    lab.cut("eth0")
    assert "STATUS=1 group degraded: eth0 failed" in until("STATUS=1 group degraded")
    messages.clear()
    d.proc.send_signal(signal.SIGHUP)
    until("RELOADING=1")
    assert re.search(r"MONOTONIC_USEC=\d+", until("RELOADING=1"))
    until("READY=1")
    messages.clear()
    d.proc.send_signal(signal.SIGTERM)
    until("STOPPING=1")
    assert d.proc.wait(10) == 0


NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all",
          "--bounding-set=-all", "/usr/bin/python3"]


@pytest.fixture
def nobody_python():
    """Python as `nobody`, with mpathd importable wherever the checkout lies:
    the checkout (and its .venv) may be in a 0700 home directory, so the
    mpathd package is copied to a world-readable directory under /tmp and run
    by Debian's python3 with its python3-yaml, as the Debian package runs it.
    Yields the argv prefix and the Popen keywords."""
    base = Path(tempfile.mkdtemp(prefix="mpathd-nobody-"))
    shutil.copytree(ROOT / "mpathd", base / "mpathd", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (base, *base.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield NOBODY, {"cwd": base, "env": {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(base)}}
    shutil.rmtree(base)


@pytest.fixture
def nobody_ctl(nobody_python):
    """ipmpctl as `nobody` (see nobody_python)."""
    argv, kw = nobody_python

    def run(*args):
        return subprocess.run([*argv, "-m", "mpathd.ctl", *args], capture_output=True, text=True,
                              timeout=30, **kw)
    return run


def test_any_user_may_look_and_only_root_may_change(make_lab, nobody_ctl):
    lab = make_lab(nics=2)
    d = lab.start_daemon(GROUP, defaults=FDT)
    mode = os.stat(d.control).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
    assert stat.S_IMODE(os.stat(os.path.dirname(d.control)).st_mode) & 0o755 == 0o755
    p = nobody_ctl("--control", d.control, "status", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["groups"][0]["name"] == "ipmp0"
    p = nobody_ctl("--control", d.control, "probes", "--once", "--json")
    assert p.returncode == 0 and isinstance(json.loads(p.stdout), list), p.stderr
    for command in (["offline", "eth0"], ["online", "eth0"], ["reload"]):
        p = nobody_ctl("--control", d.control, *command)
        assert p.returncode == 1 and f"'{command[0]}' needs root (you are uid 65534)" in p.stderr, p.stderr
    assert lab.holders("192.0.2.100/24") == ["eth0"]
    # and the clear errors when the daemon is not there
    p = subprocess.run([sys.executable, "-m", "mpathd.ctl", "--control", "/nonexistent/sock", "status"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "cannot contact mpathd at /nonexistent/sock -- is it running?" in p.stderr
    os.chmod(os.path.dirname(d.control), 0o700)
    p = nobody_ctl("--control", d.control, "status")
    assert p.returncode == 1 and f"permission denied on {d.control}" in p.stderr


def test_malformed_huge_and_slow_requests_never_stall_probing(make_lab):
    lab = make_lab(nics=2)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: probes_sent(d) > 5, what="probing")

    def ask(payload: bytes, read=True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.control)                    # blocking: waits if the backlog is full
        s.settimeout(5)
        s.sendall(payload)
        return json.loads(s.recv(1 << 16)) if read else s

    assert ask(b"this is not json\n") == {"ok": False, "error": "request is not valid JSON"}
    assert ask(b'["status"]\n')["error"] == 'a request is a JSON object with a "cmd" string'
    assert ask(b'{"cmd": "frobnicate"}\n')["error"] == "unknown command 'frobnicate'"
    assert ask(b'{"cmd": "offline"}\n')["error"] == 'offline needs an "interface" string'
    assert ask(b'{"cmd": "probes", "since": "7"}\n')["error"] == \
        'probes: "since" must be a record id, an integer >= 0'
    assert "longer than 65536 bytes" in ask(b"x" * 200_000)["error"]
    assert ask(b"[" * 60_000 + b"\n")["error"] == "request is not valid JSON"     # nested too deep
    # more connections than it serves at once: the extra ones are closed, it lives on
    crowd = [ask(b"", read=False) for _ in range(200)]

    def served():
        try:
            return d.status()["groups"][0]["state"] == "ok"
        except ControlError:                     # still full of this uid's idle clients
            return False

    wait_for(served, timeout=10, what="status served after the crowd")
    assert d.proc.poll() is None
    for s in crowd:
        s.close()
    # slow clients: one that sends nothing, one that dribbles
    idle = [ask(b"", read=False) for _ in range(20)]
    dribbler = ask(b'{"cmd"', read=False)
    before, t0 = probes_sent(d), time.monotonic()
    time.sleep(1.0)
    t = time.monotonic()
    assert d.status()["groups"][0]["state"] == "ok"          # served at once despite them
    assert time.monotonic() - t < 0.5
    assert probes_sent(d) - before >= 0.5 * (time.monotonic() - t0) / (1.0 / 7)
    for s in idle + [dribbler]:                               # each is cut off after 2 s
        s.settimeout(5)
        assert s.recv(10) == b""
    assert d.proc.poll() is None and "Traceback" not in d.log()


# One unprivileged client: status requests as fast as it gets answers, each
# 10 ms after the last, for a given time; prints how many were served and
# how many refused by the rate limit.
POLLER = """
import json, sys, time
from mpathd.adapters.control import ControlError, request
served = limited = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        request(sys.argv[1], "status")
        served += 1
    except ControlError as e:
        assert "too many requests from unprivileged users" in str(e), e
        limited += 1
    time.sleep(0.01)
print(json.dumps({"served": served, "limited": limited}))
"""


def test_eight_unprivileged_pollers_do_not_hold_up_probing(make_lab, nobody_python):
    nics = 8
    lab = make_lab(nics=nics)
    group = "groups:\n  ipmp0:\n    targets: [192.0.2.1]\n    interfaces:\n" + "".join(
        f"      eth{i}: {{data: [192.0.2.{100 + i}/24], test: [192.0.2.{10 + i}/24]}}\n" for i in range(nics))
    d = lab.start_daemon(group, defaults="FAILURE_DETECTION_TIME=300\n")
    d.wait_probing(*lab.nics)
    time.sleep(1.5)                                   # a full probe history on every NIC
    before = {i["name"]: dict(i["probes"]) for i in d.status()["interfaces"]}
    argv, kw = nobody_python
    pollers = [subprocess.Popen([*argv, "-c", POLLER, d.control, "5"], stdout=subprocess.PIPE, text=True, **kw)
               for _ in range(8)]
    results = [json.loads(p.communicate(timeout=30)[0]) for p in pollers]
    after = {i["name"]: i["probes"] for i in d.status()["interfaces"]}
    for nic in lab.nics:
        late, missed = (after[nic][k] - before[nic][k] for k in ("late", "missed"))
        sent = after[nic]["sent"] - before[nic]["sent"]
        assert (late, missed) == (0, 0), (nic, before[nic], after[nic])
        assert sent >= 5 / (0.3 / 7) * 0.8, (nic, sent)          # on schedule: one per interval
    served = sum(r["served"] for r in results)
    assert served >= 5 * 20 * 0.8 and all(r["served"] for r in results), results   # the limit's rate
    assert served <= 5 * 20 + 10 + 5, results
    assert all(i["state"] == "ok" for i in d.status()["interfaces"])


def test_metrics_from_a_live_daemon_parse(make_lab):
    lab = make_lab(nics=2)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: all(t["rtt"] for t in d.status()["targets"]), what="RTT estimates")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    text = d.ctl("metrics").stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    fo = {s.labels["group"]: s.value for s in families["mpathd_group_failovers"].samples}
    assert fo == {"ipmp0": 1}
    sent = {s.labels["interface"]: s.value for s in families["mpathd_probes_sent"].samples}
    assert sent["eth1"] > 0
    assert any(s.labels["target"] == ROUTER4 for s in families["mpathd_target_rtt_seconds"].samples)


def _expand(name: str, seen: set) -> set:
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         timeout=30).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                seen.add(item)
                calls |= _expand(item, seen)
        else:
            calls.add(item)
    return calls


def test_every_system_call_is_allowed_by_the_unit(make_lab, tmp_path):
    """Run the daemon under strace through start-up, probing, a failover, a
    reload and a stop; every system call it made must pass the unit's
    SystemCallFilter (which would otherwise answer EPERM)."""
    if not (os.path.exists("/usr/bin/strace") and os.path.exists("/usr/bin/systemd-analyze")):
        pytest.skip("strace or systemd-analyze is not installed")
    unit = (ROOT / "contrib/systemd/mpathd.service").read_text()
    allow, deny = set(), set()
    for line in unit.splitlines():
        if line.startswith("SystemCallFilter="):
            spec = line.split("=", 1)[1]
            target = deny if spec.startswith("~") else allow
            for name in spec.lstrip("~").split():
                target |= _expand(name, set()) if name.startswith("@") else {name}
    allowed = allow - deny
    lab = make_lab(nics=2)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    trace = tmp_path / "trace"
    d = lab.start_daemon(GROUP, defaults=FDT, wrap=("strace", "-f", "-qq", "-o", str(trace), "-e", "trace=all"))
    wait_for(lambda: all(i["probe"] == "ok" for i in d.status()["interfaces"]), timeout=20, what="probing")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    d.ctl("reload")
    d.ctl("metrics")
    d.stop()
    used = set()
    for line in trace.read_text().splitlines():
        m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
    assert {"socket", "sendto", "setsockopt"} <= used
    assert used - allowed == set(), f"not allowed by the unit: {sorted(used - allowed)}"


def test_probes_stream_as_they_finish_until_interrupted(make_lab):
    lab = make_lab(nics=2)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    d = lab.start_daemon(GROUP, defaults=FDT)
    wait_for(lambda: probes_sent(d) > 4, what="probing")
    history = json.loads(d.ctl("probes", "--once", "--json").stdout)
    seen_before = {i: max(p["probe"] for p in history if p["interface"] == i) for i in ("eth0", "eth1")}
    follow = lab.spawn("host", [sys.executable, "-m", "mpathd.ctl", "--control", d.control, "probes",
                                "-P", "-o", "interface,probe,target"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)                                   # ~20 probes per NIC at FDT 1 s
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=10)
    assert follow.returncode == 0 and err == "", err
    # rows come in the order probes finish; a late answer would add a second
    # row for its probe, "(lost)" first, so no two rows are the same
    rows = [tuple(line.split(":")) for line in out.splitlines()]
    assert len(rows) == len(set(rows)), out
    for nic in ("eth0", "eth1"):
        seqs = [int(seq) for name, seq, target in rows if name == nic]
        assert len(set(seqs)) >= 5, out
        assert min(seqs) > seen_before[nic], out    # only what finished after it started
    assert all(target.startswith(ROUTER4) for _, _, target in rows), out
    # the stream ends with a clear line when the daemon goes away
    follow = lab.spawn("host", [sys.executable, "-m", "mpathd.ctl", "--control", d.control, "probes"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert d.stop() == 0
    out, err = follow.communicate(timeout=10)
    assert out.startswith("TIME      INTERFACE   MODE PROBE")
    assert follow.returncode == 1 and "is it running?" in err, err


def test_probe_stream_says_how_many_probes_it_could_not_show(make_lab):
    lab = make_lab(nics=2)
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    d = lab.start_daemon(GROUP, defaults="FAILURE_DETECTION_TIME=100\n")   # 70 probes/s per NIC
    wait_for(lambda: probes_sent(d) > 20, what="probing")
    follow = lab.spawn("host", [sys.executable, "-m", "mpathd.ctl", "--control", d.control, "probes",
                                "-P", "-o", "interface,probe"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    follow.send_signal(signal.SIGSTOP)              # a stalled reader: the history (64) overflows
    time.sleep(2)
    follow.send_signal(signal.SIGCONT)
    time.sleep(1)
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=10)
    assert follow.returncode == 0, err
    lines = [x for x in err.splitlines() if "probes not shown: no longer held by mpathd" in x]
    assert lines and sum(int(x.split()[1]) for x in lines) > 50, err
    assert len(out.splitlines()) > 100
