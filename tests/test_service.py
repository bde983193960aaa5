"""The service's parts that need no lab: the unit file, the man pages, the
metrics format, ipmpstat's parsable output, journal fields."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpathd.adapters import log
from mpathd.ctl import ipmpctl as ctl
from mpathd.ctl import metrics
from fakekernel import Net
from mpathd.config import Config, parse_groups
from mpathd.core.catalogue import Kind
from mpathd.core.events import ERR, LinkChanged, LinkInfo, Log, Started
from mpathd.core.machine import Core
from mpathd.core.reports import status

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib/systemd/mpathd.service"

def real_status() -> dict:
    """The status of a real Core: group ipmp0's eth0 failed over (carrier),
    failed back, failed over again (five probes lost) and lost its carrier;
    eth9 is watched outside any group. Its second address row comes from a
    group whose NICs are all missing, the only case where a real core has a
    data address on no NIC."""
    net = Net("""
        groups:
          ipmp0:
            interfaces:
              eth0: {data: ["2001:db8:1::100/64"], test: [192.0.2.10/24]}
              eth1: {test: [192.0.2.11/24]}
        """, fdt_ms=1000, rtt=0.00025, watched=["eth9"])

    def eth0(running):
        net.feed(LinkChanged(LinkInfo("eth0", 1, None, running)))
        net.run(net.now + 3)

    net.run(3)
    eth0(False)
    eth0(True)
    net.broken["eth0"] = 1.0
    while sum("failed over" in line for _, line in net.log) < 2:
        net.run(net.now + 0.01)
    net.feed(LinkChanged(LinkInfo("eth0", 1, None, False)))
    st = status(net.core, net.now)
    empty = Core(Config(groups=parse_groups("groups: {ipmp0: {interfaces: {eth0: {}}, data: [192.0.2.5/24]}}",
                                            "t")))
    empty.handle(Started((), ()), 0.0)
    st["addresses"] += status(empty, 0.0)["addresses"]
    return json.loads(json.dumps(st))          # as ipmpctl gets it


STATUS = real_status()


def systemd_analyze(*args, **env):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.fixture
def unit(tmp_path):
    """The unit, pointing at this checkout's commands so that verify finds them."""
    path = tmp_path / "mpathd.service"
    text = UNIT.read_text()
    for command in ("/usr/sbin/mpathd", "/usr/bin/ipmpctl"):
        assert command in text
        text = text.replace(command, str(Path(sys.executable).parent / Path(command).name))
    path.write_text(text)
    return path


def test_unit_file_verifies(unit):
    p = systemd_analyze("verify", str(unit), MANPATH=str(ROOT / "man"))
    assert p.returncode == 0, p.stderr


def test_unit_exposure_is_at_most_2_5(unit):
    p = systemd_analyze("security", "--offline=yes", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 2.5
    readme = re.search(r"`systemd-analyze security --offline` rates the unit \*\*(\d+\.\d+) ",
                       (ROOT / "README.md").read_text())
    assert readme and readme.group(1) == m.group(1), "the README gives the figure this systemd prints"


@pytest.mark.parametrize("page", ["man8/mpathd.8", "man8/ipmpctl.8", "man5/mpathd.conf.5"])
def test_man_pages_render_without_warnings(page):
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man" / page)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_metrics_parse_as_prometheus_text():
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(STATUS))}
    state = {s.labels["state"]: s.value for s in families["mpathd_group_state"].samples}
    assert state == {"ok": 0, "degraded": 1, "failed": 0}
    assert families["mpathd_group_failovers"].type == "counter"
    assert families["mpathd_group_failovers"].samples[0].value == 2
    names = [line.split("{")[0].split(" ")[0] for line in metrics.render(STATUS).splitlines()
             if not line.startswith("#")]
    assert all(names[i] == names[i + 1] or names[i] not in names[i + 1:] for i in range(len(names) - 1)), \
        "the samples of a family must be contiguous"
    state = {(s.labels["interface"], s.labels["state"]): s.value for s in families["mpathd_interface_state"].samples}
    assert state[("eth0", "failed")] == 1 and state[("eth9", "ok")] == 1
    lost = families["mpathd_probes_lost"].samples[0]
    assert lost.labels == {"interface": "eth0", "group": "ipmp0"} and lost.value == 5
    rtt = families["mpathd_target_rtt_seconds"].samples[0]
    assert rtt.labels["target"] == "192.0.2.1" and rtt.value == pytest.approx(0.00025)
    assert families["mpathd_group_fdt_seconds"].samples[0].value == 1.0
    up = {s.labels["address"]: s.value for s in families["mpathd_address_up"].samples}
    assert up == {"2001:db8:1::100/64": 1, "192.0.2.5/24": 0}


def test_parsable_output_follows_ipmpstat_escaping():
    fields = ctl.select_fields("addresses", "address,inbound", parsable=True)
    assert ctl.render(STATUS["addresses"], fields, parsable=True) == [
        "2001\\:db8\\:1\\:\\:100/64:eth1", "192.0.2.5/24:"]
    one = ctl.select_fields("addresses", "address", parsable=True)
    assert ctl.render(STATUS["addresses"], one, parsable=True) == ["2001:db8:1::100/64", "192.0.2.5/24"]
    with pytest.raises(ValueError, match="parsable mode"):
        ctl.select_fields("addresses", None, parsable=True)
    with pytest.raises(ValueError, match="'all' invalid in parsable mode"):
        ctl.select_fields("addresses", "all", parsable=True)
    with pytest.raises(ValueError, match="unknown output field"):
        ctl.select_fields("addresses", "address,bogus", parsable=False)


def test_human_output_pads_fields_and_marks_empty_values():
    lines = ctl.render(STATUS["groups"], ctl.select_fields("groups", None, False), parsable=False)
    assert lines[0] == "GROUP       STATE     FDT       INTERFACES"
    assert lines[1] == "ipmp0       degraded  1.00s     eth1 [eth0]"
    quiet = [{**STATUS["groups"][0], "probing": False}]
    assert ctl.render(quiet, ctl.select_fields("groups", None, False), False)[1] == \
        "ipmp0       degraded  --        eth1 [eth0]"
    lines = ctl.render(STATUS["interfaces"], ctl.select_fields("interfaces", "interface,group", False), False)
    assert lines[-1] == "eth9        --"           # the NIC in no group, listed last


def test_journal_entries_carry_structured_fields():
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Capture()
    log.log.addHandler(handler)
    try:
        log.emit(Log(ERR, "IP interface failure detected on eth0 of group ipmp0", Kind.FAILURE, "ipmp0", "eth0"))
    finally:
        log.log.removeHandler(handler)
    (r,) = records
    assert r.getMessage() == "IP interface failure detected on eth0 of group ipmp0"
    assert (r.MPATHD_GROUP, r.MPATHD_INTERFACE, r.MPATHD_EVENT) == ("ipmp0", "eth0", "failure")
    assert r.MESSAGE_ID == Kind.FAILURE.message_id and len(r.MESSAGE_ID) == 32
    assert Kind.FAILURE.message_id != Kind.REPAIR.message_id


def test_man_page_lists_the_event_catalogue():
    """mpathd(8) names every MPATHD_EVENT kind with its MESSAGE_ID, and
    nothing else: the IDs operators filter on cannot drift from the code."""
    page = (ROOT / "man/man8/mpathd.8").read_text()
    listed = re.findall(r'^\.BI (\S+) " ([0-9a-f]{32})"$', page, re.M)
    assert listed == [(k.value, k.message_id) for k in Kind]


def test_outbound_lists_the_active_nics_as_ipmpstat_does():
    """With spreading, outbound traffic from an address leaves by every
    active NIC of its group; without, by the NIC that holds it."""
    fields = ctl.select_fields("addresses", "address,inbound,outbound", parsable=True)
    assert ctl.render(STATUS["addresses"], fields, parsable=True)[0] == "2001\\:db8\\:1\\:\\:100/64:eth1:eth1"
    net = Net("""
        groups:
          ipmp0:
            interfaces:
              eth0: {data: [192.0.2.100/24]}
              eth1: {data: [192.0.2.101/24]}
              eth2: {standby: true}
        """)
    rows = ctl.render(status(net.core, net.now)["addresses"], fields, parsable=True)
    assert rows == ["192.0.2.100/24:eth0:eth0 eth1", "192.0.2.101/24:eth1:eth0 eth1"]
    net = Net("""
        groups:
          ipmp0:
            spreading: false
            interfaces:
              eth0: {data: [192.0.2.100/24]}
              eth1: {data: [192.0.2.101/24]}
        """)
    rows = ctl.render(status(net.core, net.now)["addresses"], fields, parsable=True)
    assert rows == ["192.0.2.100/24:eth0:eth0", "192.0.2.101/24:eth1:eth1"]
