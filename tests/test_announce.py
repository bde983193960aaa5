"""The repetition of announcements in the adapter (adapters/announce.py),
with a fake clock and sockets that record what they would send; the frames
at the router are counted by tests/test_lab_link.py."""

import ipaddress

from mpathd.adapters.announce import Announcer
from mpathd.config import Defaults


class Sent:
    def __init__(self, log, ifname):
        self.log, self.ifname = log, ifname

    def send(self, frame):
        self.log.append((self.ifname, frame))


def announcer(count=5, interval_ms=200):
    clock = [100.0]
    a = Announcer(Defaults(announce_count=count, announce_interval_ms=interval_ms), lambda: clock[0])
    log = []
    addr = ipaddress.ip_interface("192.0.2.100/24")
    for ifname in ("eth0", "eth1"):
        a._socks[ifname] = Sent(log, ifname)
        a._frames[(ifname, addr)] = ifname.encode()
    return a, clock, log, addr


def run(a, clock, until):
    while (d := a.next_deadline()) is not None and d <= until:
        clock[0] = d
        a.tick()


def test_count_frames_at_the_interval_then_nothing():
    a, clock, log, addr = announcer()
    a.announce("eth0", addr)
    run(a, clock, 110)
    assert len(log) == 5 and a.next_deadline() is None
    assert abs(clock[0] - 100.8) < 1e-9             # 5 frames over 0.8 s


def test_a_newer_announcement_or_a_down_nic_ends_the_repeats():
    a, clock, log, addr = announcer()
    a.announce("eth0", addr)
    run(a, clock, 100.2)
    a.announce("eth1", addr)                      # the address moved again
    run(a, clock, 110)
    assert [i for i, _ in log] == ["eth0", "eth0"] + ["eth1"] * 5
    log.clear()
    a.announce("eth1", addr)
    a.cancel("eth1")                              # its carrier went
    run(a, clock, 120)
    assert len(log) == 1 and a.next_deadline() is None
