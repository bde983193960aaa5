"""The Debian package: scripts/package builds it, its contents and
maintainer scripts are checked, lintian passes, and the daemon runs from
the unpacked package's own files (Debian's python3, the private pyroute2
and scapy) through a failover, the unit's reload command and the metrics
timer's command, taken from the unit files as systemd would run them."""

import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpathd.adapters import control

from lab import FAR4, FAR6, PAIR_GROUP, ROUTER4, ROUTER6, Daemon, wait_for

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
FDT = "FAILURE_DETECTION_TIME=1000\n"
# the lab's pair, with an IPv6 data address too
GROUP = PAIR_GROUP.replace("data: [192.0.2.100/24]", 'data: [192.0.2.100/24, "2001:db8:1::100/64"]')


def need(*tools):
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    need("dpkg-deb")
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run([sys.executable, str(ROOT / "scripts/package.py"), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    deb = Path(p.stdout.strip())
    assert deb == out / f"mpathd_{VERSION}_all.deb" and deb.exists()
    return deb


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def unit_text(unpacked, name):
    return (unpacked / "usr/lib/systemd/system" / name).read_text()


def directive(text, key):
    """The values of `key=` in a unit file, in order."""
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_control_fields_and_contents(deb, unpacked):
    info = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^(\S+): (.*)$", info, re.M))
    assert (fields["Package"], fields["Version"], fields["Architecture"]) == ("mpathd", VERSION, "all")
    assert fields["Depends"] == "python3 (>= 3.11), python3-yaml (>= 6.0), python3-systemd (>= 235)"
    assert fields["Recommends"] == "bash-completion"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[-1].removeprefix("."): line.split()[0] for line in listing.splitlines()}
    for path, mode in {"/usr/sbin/mpathd": "-rwxr-xr-x", "/usr/bin/ipmpctl": "-rwxr-xr-x",
                       "/usr/lib/systemd/system/mpathd.service": "-rw-r--r--",
                       "/usr/lib/systemd/system/mpathd-metrics.service": "-rw-r--r--",
                       "/usr/lib/systemd/system/mpathd-metrics.timer": "-rw-r--r--",
                       "/etc/default/mpathd": "-rw-r--r--", "/etc/mpathd/groups.yaml": "-rw-r--r--",
                       "/usr/share/man/man8/mpathd.8.gz": "-rw-r--r--",
                       "/usr/share/man/man8/ipmpctl.8.gz": "-rw-r--r--",
                       "/usr/share/man/man5/mpathd.conf.5.gz": "-rw-r--r--",
                       "/usr/share/bash-completion/completions/ipmpctl": "-rw-r--r--",
                       "/usr/share/doc/mpathd/copyright": "-rw-r--r--",
                       "/usr/lib/mpathd/mpathd/daemon.py": "-rw-r--r--",
                       "/usr/lib/mpathd/mpathd/core/machine.py": "-rw-r--r--",
                       "/usr/lib/mpathd/mpathd/adapters/kernel.py": "-rw-r--r--",
                       "/usr/lib/mpathd/mpathd/ctl/ipmpctl.py": "-rw-r--r--"}.items():
        assert entries.get(path) == mode, path
    assert all(" root/root " in line for line in listing.splitlines())
    assert not [p for p in entries if "__pycache__" in p or p.endswith(".pyc")]
    # the namespace lab (lab/ in the checkout) is for tests, demo and benchmarks, not for a host
    assert not [p for p in entries if re.search(r"/lab(/|\.py$|traffic\.py$)", p)], "the lab is not shipped"
    assert (unpacked / "etc/mpathd/groups.yaml").read_bytes() == (ROOT / "etc/mpathd/groups.yaml").read_bytes()
    # the private libraries are the versions the test suite runs with
    for name in ("pyroute2", "scapy"):
        assert (unpacked / f"usr/lib/mpathd/{name}-{importlib.metadata.version(name)}.dist-info").is_dir()
    for wrapper in ("usr/sbin/mpathd", "usr/bin/ipmpctl"):
        assert (unpacked / wrapper).read_text().startswith("#!/usr/bin/python3 -I\n")
    assert directive(unit_text(unpacked, "mpathd.service"), "ExecStart") == ["/usr/sbin/mpathd"]
    assert directive(unit_text(unpacked, "mpathd.service"), "ConditionPathExists") == ["/etc/mpathd/groups.yaml"]


def test_conffiles(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "DEBIAN")], check=True)
    assert (tmp_path / "DEBIAN/conffiles").read_text().split() == ["/etc/default/mpathd", "/etc/mpathd/groups.yaml"]


def test_lintian_finds_nothing(deb):
    need("lintian")
    p = subprocess.run(["lintian", "--pedantic", "--fail-on", "error,warning", str(deb)],
                       capture_output=True, text=True, timeout=300)
    tags = [line for line in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert p.returncode == 0 and tags == [], p.stdout + p.stderr


STUBS = ("deb-systemd-helper", "deb-systemd-invoke", "systemctl", "python3")


def run_script(deb, tmp_path, script, *args):
    """A maintainer script with the helpers it calls replaced by stubs that
    record their arguments (and deb-systemd-helper's was-enabled answering
    'never enabled', as on a first install)."""
    ctl = tmp_path / "ctl"
    if not ctl.exists():
        subprocess.run(["dpkg-deb", "-e", str(deb), str(ctl)], check=True)
    bin_dir, calls = tmp_path / "stubs", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    for stub in STUBS:
        path = bin_dir / stub
        path.write_text(f'#!/bin/sh\necho "{stub} $*" >> {calls}\n'
                        + ('[ "$2" = was-enabled ] && exit 0\n' if stub == "deb-systemd-helper" else "")
                        + "exit 0\n")
        path.chmod(0o755)
    calls.write_text("")
    p = subprocess.run(["sh", "-e", str(ctl / script), *args], capture_output=True, text=True,
                       env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30)
    assert p.returncode == 0, p.stderr
    return calls.read_text().splitlines()


def test_maintainer_scripts(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "ctl")], check=True)
    for script in ("postinst", "prerm", "postrm"):
        assert subprocess.run(["sh", "-n", str(tmp_path / "ctl" / script)]).returncode == 0, script
    calls = run_script(deb, tmp_path, "postinst", "configure", "")
    assert "python3 -m compileall -q /usr/lib/mpathd" in calls
    assert "deb-systemd-helper enable mpathd.service" in calls
    assert not any("enable mpathd-metrics.timer" in c for c in calls), "the timer is not enabled"
    calls = run_script(deb, tmp_path, "postrm", "purge")
    assert "deb-systemd-helper purge mpathd.service mpathd-metrics.timer" in calls


def packaged(unpacked, command):
    return str(unpacked / ("usr/sbin" if command == "mpathd" else "usr/bin") / command)


def start_packaged(lab, unpacked, groups_yaml, defaults=FDT) -> Daemon:
    """mpathd from the unpacked package, run by its wrapper (Debian's
    python3, the package's private libraries), in the lab's host."""
    paths = {k: os.path.join(lab.dir, f"pkg-{k}") for k in ("defaults", "groups", "log")}
    os.chmod(lab.dir, 0o755)
    paths["control"] = os.path.join(lab.dir, "pkg-run", "control.sock")
    Path(paths["defaults"]).write_text(defaults)
    Path(paths["groups"]).write_text(groups_yaml)
    with open(paths["log"], "w") as log:
        proc = lab.spawn("host", [packaged(unpacked, "mpathd"), "--defaults", paths["defaults"],
                                  "--config", paths["groups"], "--control", paths["control"]],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    d = Daemon(lab, proc, paths["control"], paths["log"], paths["groups"], paths["defaults"])
    lab.daemons.append(d)

    def ready():
        assert proc.poll() is None, d.log()
        try:
            return d.request("ping") == {}
        except control.ControlError:
            return False
    wait_for(ready, timeout=20, what="the packaged mpathd ready")
    return d


def unit_command(line: str, unpacked, d: Daemon, env: dict | None = None) -> list[str]:
    """An Exec line as systemd runs it: prefixes (@-:+!) off, specifiers and
    variables expanded (systemd_expand), the program taken from the unpacked
    package, and the lab daemon's control socket given first."""
    argv = systemd_expand(line.lstrip("@-:+!"), env or {})
    assert argv[0] in ("/usr/bin/ipmpctl", "/usr/sbin/mpathd"), argv
    return [packaged(unpacked, os.path.basename(argv[0])), "--control", d.control, *argv[1:]]


def systemd_expand(text: str, env: dict) -> list[str]:
    """systemd's rules for a command line (systemd.service(5), "Command
    lines"): the line is split into words with quoting; `%%` is `%` (no
    other specifier is used in these units); `$$` is `$`; `${VAR}` is
    replaced by VAR's value within its word; a word that is only `$VAR` is
    replaced by VAR's value split at white space."""
    assert not re.search(r"%[^%]", text.replace("%%", "")), f"a specifier to expand: {text}"
    words = []
    for word in shlex.split(text.replace("%%", "%")):
        if m := re.fullmatch(r"\$(\w+)", word):
            words += env.get(m.group(1), "").split()
        else:
            words.append(re.sub(r"\$\$|\$\{(\w+)\}", lambda m: "$" if m.group(0) == "$$" else
                                env.get(m.group(1), ""), word))
    return words


def unit_environment(text: str) -> dict:
    return dict(assignment.split("=", 1) for value in directive(text, "Environment")
                for assignment in shlex.split(value))


def test_the_old_metrics_line_shows_the_dollar_trap():
    """The expansion rules above reproduce what systemd did to the unit that
    used a shell: `$$` reached sh as `$`, hence 'mpathd.prom.$'."""
    old = ("/bin/sh -c 'd=/var/lib/node_exporter/textfile_collector; /usr/local/bin/ipmpctl metrics > "
           "\"$d/mpathd.prom.$$\" && mv \"$d/mpathd.prom.$$\" \"$d/mpathd.prom\"'")
    assert '"$d/mpathd.prom.$"' in systemd_expand(old, {})[2]


def test_units_verify(unpacked, tmp_path):
    need("systemd-analyze")
    units = tmp_path / "units"
    units.mkdir()
    for name in ("mpathd.service", "mpathd-metrics.service", "mpathd-metrics.timer"):
        text = unit_text(unpacked, name)
        for command in ("/usr/sbin/mpathd", "/usr/bin/ipmpctl"):     # not installed on this host
            text = text.replace(command, packaged(unpacked, os.path.basename(command)))
        (units / name).write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(units.iterdir()))],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPATH": str(unpacked / "usr/share/man")})
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_packaged_daemon_fails_over(make_lab, unpacked):
    lab = make_lab(nics=2)
    # Debian's python3 has no pyroute2 of its own: the daemon can only be using the package's
    assert subprocess.run(["/usr/bin/python3", "-I", "-c", "import pyroute2"], capture_output=True).returncode != 0
    lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "onlink")
    lab.sh("host", "ip", "-6", "route", "add", "default", "via", ROUTER6, "dev", "eth0", "onlink")
    d = start_packaged(lab, unpacked, GROUP)
    exe = os.path.realpath(f"/proc/{d.proc.pid}/exe")
    assert exe.startswith("/usr/bin/python3"), exe
    ctl = [packaged(unpacked, "ipmpctl"), "--control", d.control]
    d.wait_probing("eth0", "eth1")
    lab.cut("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth1"], what="failover")
    status = subprocess.run([*ctl, "interfaces", "-P", "-o", "interface,state"], capture_output=True,
                            text=True, check=True).stdout.split()
    assert status == ["eth0:failed", "eth1:ok"]
    d.wait_log("Successfully failed over from NIC eth0 to NIC eth1")
    for source, far in (("192.0.2.100", FAR4), ("192.0.2.101", FAR4), ("2001:db8:1::100", FAR6)):
        assert lab.sh("host", "ping", "-c", "1", "-W", "2", "-I", source, far, check=False).returncode == 0, \
            f"no answer from {far} beyond the router to {source}"
    lab.restore("eth0")
    wait_for(lambda: lab.holders("192.0.2.100/24") == ["eth0"], timeout=10, what="failback")
    assert d.stop() == 0 and "Traceback" not in d.log()


def test_unit_reload_command_is_synchronous_and_fails_on_a_bad_file(make_lab, unpacked):
    (reload_line,) = directive(unit_text(unpacked, "mpathd.service"), "ExecReload")
    assert reload_line.startswith("+"), "ipmpctl reload needs root, not the unit's dynamic user"
    lab = make_lab(nics=2)
    d = start_packaged(lab, unpacked, GROUP)
    argv = unit_command(reload_line, unpacked, d)
    d.write_config(GROUP + "      eth0: {bogus: 1}\n")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "reload refused" in p.stderr, p.stdout + p.stderr
    d.write_config(GROUP.replace("data: [192.0.2.101/24]", "data: [192.0.2.101/24, 192.0.2.150/24]"))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert lab.holders("192.0.2.150/24") == ["eth1"], "applied before the reload command returned"


def test_metrics_timer_command_writes_the_file_atomically(make_lab, unpacked, tmp_path):
    text = unit_text(unpacked, "mpathd-metrics.service")
    (line,) = directive(text, "ExecStart")
    env = unit_environment(text)
    # Debian's prometheus-node-exporter reads this directory
    assert env["METRICS_FILE"] == "/var/lib/prometheus/node-exporter/mpathd.prom"
    assert systemd_expand(line, env)[-1] == env["METRICS_FILE"]
    timer = unit_text(unpacked, "mpathd-metrics.timer")
    assert directive(timer, "OnUnitActiveSec") == ["15s"]
    lab = make_lab(nics=2)
    d = start_packaged(lab, unpacked, GROUP)
    # the README's drop-in for another layout
    out = tmp_path / "textfile_collector" / "mpathd.prom"
    out.parent.mkdir()
    argv = unit_command(line, unpacked, d, {**env, "METRICS_FILE": str(out)})
    for _ in range(2):                                      # the second run replaces the first's file
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and p.stdout == "", p.stderr
    assert [f.name for f in out.parent.iterdir()] == ["mpathd.prom"]     # no temporary left
    assert os.stat(out).st_mode & 0o777 == 0o644
    families = {f.name for f in text_string_to_metric_families(out.read_text())}
    assert {"mpathd_group_state", "mpathd_probes_sent"} <= families
    p = subprocess.run(unit_command(line, unpacked, d, {"METRICS_FILE": str(tmp_path / "no/such/dir/f.prom")}),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stderr.startswith(f"ipmpctl: cannot write {tmp_path}/no/such/dir/f.prom: "), \
        p.stderr
