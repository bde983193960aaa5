"""Group NICs are brought up (issue 12): a NIC found administratively down
at start or when it is re-plugged is set up by mpathd; an operator's later
`ip link set down` is a failure that mpathd leaves alone. Real daemon, real
links; every data address then reaches a host beyond the router."""

import time

from lab import FAR4, PAIR_GROUP, ROUTER4, wait_for

FDT = "FAILURE_DETECTION_TIME=1000\n"
DATA = {"192.0.2.100/24": "eth0", "192.0.2.101/24": "eth1"}


def admin_up(lab, nic):
    return "UP" in lab.ip_json("host", "link", "show", nic)[0]["flags"]


def placed(lab):
    return all(lab.holders(a) == [nic] for a, nic in DATA.items())


def reaches_beyond_the_router(lab):
    lab.sh("host", "ip", "route", "replace", "default", "via", ROUTER4)
    for addr in DATA:
        source = addr.split("/")[0]
        assert lab.sh("host", "ping", "-c", "1", "-W", "2", "-I", source, FAR4, check=False).returncode == 0, \
            f"no answer from {FAR4} beyond the router to {source}"


def test_start_with_every_member_down_brings_them_up(make_lab):
    lab = make_lab(nics=2)
    for nic in lab.nics:
        lab.sh("host", "ip", "link", "set", nic, "down")
    d = lab.start_daemon(PAIR_GROUP, defaults=FDT)
    for nic in lab.nics:
        d.wait_log(f"IP interface {nic} of group ipmp0 is administratively down; bringing it up")
    wait_for(lambda: placed(lab), timeout=15, what="the data addresses on their NICs")
    assert all(admin_up(lab, nic) for nic in lab.nics)
    wait_for(lambda: d.status()["groups"][0]["state"] == "ok", what="the group ok")
    reaches_beyond_the_router(lab)
    assert d.stop() == 0 and "Traceback" not in d.log()


def test_a_nic_replugged_down_is_brought_up_and_an_operators_down_is_honoured(make_lab):
    lab = make_lab(nics=2)
    d = lab.start_daemon(PAIR_GROUP, defaults=FDT)
    wait_for(lambda: placed(lab), what="the data addresses on their NICs")
    assert "administratively down" not in d.log()
    lab.unplug("eth1")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth0"], what="failover off the unplugged eth1")
    lab.replug("eth1", up=False)
    d.wait_log("IP interface eth1 of group ipmp0 is administratively down; bringing it up")
    wait_for(lambda: placed(lab), timeout=15, what="eth1's address back on the re-plugged eth1")
    assert admin_up(lab, "eth1")
    reaches_beyond_the_router(lab)

    # The operator sets eth1 down: a failure, and eth1 stays down.
    lab.sh("host", "ip", "link", "set", "eth1", "down")
    wait_for(lambda: lab.holders("192.0.2.101/24") == ["eth0"], what="failover off the downed eth1")
    d.wait_log("IP interface failure detected on eth1 of group ipmp0")
    time.sleep(1)                   # mpathd reacts within milliseconds: a second would show it fighting
    assert not admin_up(lab, "eth1")
    assert d.log().count("eth1 of group ipmp0 is administratively down") == 1
    # ... until the operator sets it up again
    lab.sh("host", "ip", "link", "set", "eth1", "up")
    wait_for(lambda: placed(lab), timeout=15, what="failback to eth1 set up by the operator")
    reaches_beyond_the_router(lab)
    assert d.stop() == 0 and "Traceback" not in d.log()
