"""The kernel side of the route model (mpathd.adapters.routes): nexthop
messages, nexthops and resilient groups in a real kernel, and the route codec
that moves a route onto a group and back without losing an attribute."""

import socket
import struct

import pytest
from pyroute2 import IPRoute, NetlinkError

from mpathd.adapters.routes import (RTA_NH_ID, RTM_NEWNEXTHOP, RTPROT_MPATHD, KernelRoute, KernelRoutes,
                                    Resilient, nhmsg)
from lab import ROUTER4, ROUTER6


def test_nhmsg_round_trip():
    msg = nhmsg()
    msg['family'], msg['protocol'] = socket.AF_UNSPEC, RTPROT_MPATHD
    msg['attrs'] = [('NHA_ID', 10), ('NHA_GROUP', ((1, 1), (2, 300))), ('NHA_GROUP_TYPE', 1),
                    ('NHA_RES_GROUP', {'attrs': [('NHA_RES_GROUP_BUCKETS', 64),
                                                 ('NHA_RES_GROUP_IDLE_TIMER', 150)]})]
    msg['header']['type'] = RTM_NEWNEXTHOP
    msg.encode()
    # struct nexthop_grp: weight 300 is stored as 299 = 0x012b, low byte then weight_high
    assert struct.pack('=IBBH', 2, 0x2B, 0x01, 0) in msg.data
    back = nhmsg(bytes(msg.data))
    back.decode()
    assert back.get_attr('NHA_GROUP') == ((1, 1), (2, 300))
    assert back.get_attr('NHA_RES_GROUP').get_attr('NHA_RES_GROUP_BUCKETS') == 64
    assert back['protocol'] == RTPROT_MPATHD


def _rtm(attrs, family=socket.AF_INET, dst_len=0, flags=0):
    body = struct.pack('=BBBBBBBBI', family, dst_len, 0, 0, 254, 4, 0, 1, flags)
    for kind, payload in attrs:
        nla = struct.pack('=HH', 4 + len(payload), kind) + payload
        body += nla + b'\0' * (-len(nla) % 4)
    return struct.pack('=IHHII', 16 + len(body), 24, 0, 0, 0) + body


def test_route_codec_keeps_every_attribute():
    metrics = (struct.pack('=HHI', 8, 2, 1400) + struct.pack('=HHI', 8, 1, 1 << 2)
               + struct.pack('=HH', 10, 16) + b'cubic\0\0\0')       # mtu, lock mtu, congctl
    raw = _rtm([(15, struct.pack('=I', 254)), (6, struct.pack('=I', 100)), (8, metrics),
                (4, struct.pack('=I', 2)), (5, socket.inet_aton('192.0.2.1')),
                (11, struct.pack('=I', 7)), (12, b'\0' * 32)])          # RTA_FLOW kept, CACHEINFO dropped
    r = KernelRoute.from_bytes(raw)
    assert (r.gateway, r.oif, r.priority, r.metric('mtu'), r.metric('congctl')) == ('192.0.2.1', 2, 100, 1400, 'cubic')
    assert r.other == ((11, struct.pack('=I', 7)),)
    assert hash(r) == hash(KernelRoute.from_bytes(raw))
    assert r.key.priority == 100 and r.key.dst is None
    nh = r.via_nexthop(10)
    nh.encode()
    moved = KernelRoute.from_bytes(bytes(nh.data))
    assert moved.nhid == 10 and moved.gateway is None and moved.oif is None
    assert (moved.metrics, moved.other, moved.priority, moved.table) == (r.metrics, r.other, r.priority, r.table)
    back = moved.via_gateway('192.0.2.1', 2)
    back.encode()
    assert KernelRoute.from_bytes(bytes(back.data)) == r
    # a route read with RTA_NH_ID: the kernel's compat copy of the path is not the route's
    compat = KernelRoute.from_bytes(_rtm([(RTA_NH_ID, struct.pack('=I', 10)), (4, struct.pack('=I', 2))], flags=4))
    assert compat.oif is None and not compat.onlink


@pytest.mark.lab
def test_nexthops_groups_and_routes(make_lab):
    lab = make_lab(targets=0)
    lab.sh("host", "ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
    lab.sh("host", "ip", "addr", "add", "192.0.2.11/24", "dev", "eth1")
    lab.sh("host", "ip", "addr", "add", "2001:db8:1::10/64", "dev", "eth0", "nodad")
    with IPRoute(netns=lab.host) as ipr:
        k = KernelRoutes(ipr)
        eth0, eth1 = (lab.ip_json("host", "link", "show", n)[0]["ifindex"] for n in ("eth0", "eth1"))
        k.set_nexthop(1, socket.AF_INET, eth0, ROUTER4)
        k.set_nexthop(2, socket.AF_INET, eth1, ROUTER4)
        k.set_nexthop(3, socket.AF_INET6, eth0, ROUTER6)
        k.set_group(10, [(1, 1), (2, 1)], Resilient(buckets=32, idle_timer=5, unbalanced_timer=0))
        shown = {n["id"]: n for n in lab.ip_json("host", "-d", "nexthop", "show")}
        assert shown[10]["group"] == [{"id": 1}, {"id": 2}] and shown[10]["type"] == "resilient"
        assert shown[10]["resilient_args"]["buckets"] == 32 and shown[10]["resilient_args"]["idle_timer"] == 5
        assert shown[1]["gateway"] == ROUTER4 and shown[1]["dev"] == "eth0" and shown[1]["protocol"] == "117"

        lab.sh("host", "ip", "route", "add", "default", "via", ROUTER4, "dev", "eth0", "proto", "static",
               "metric", "50", "table", "100", "mtu", "lock", "1400", "initcwnd", "20")
        [plain] = k.routes(socket.AF_INET, table=100)
        k.install(plain.via_nexthop(10))
        [grouped] = lab.ip_json("host", "route", "show", "table", "100")
        assert grouped["nhid"] == 10 and "gateway" not in grouped
        assert (grouped["metric"], grouped["protocol"], grouped["metrics"]) == (
            50, "static", [{"mtu": 1400, "initcwnd": 20}])
        assert "mtu lock 1400 initcwnd 20" in lab.sh("host", "ip", "route", "show", "table", "100").stdout

        k.set_group(10, [(2, 1)], Resilient(buckets=32, idle_timer=5))          # eth0 fails
        buckets = lab.ip_json("host", "nexthop", "bucket", "show", "id", "10")
        assert {b["bucket"]["nhid"] for b in buckets} == {2}
        k.set_group(10, [(1, 1), (2, 1)], Resilient(buckets=32, idle_timer=5))  # repaired

        [moved] = k.routes(socket.AF_INET, table=100)
        assert moved.nhid == 10
        k.install(moved.via_gateway(ROUTER4, eth0))
        [again] = k.routes(socket.AF_INET, table=100)
        assert again == plain
        assert lab.ip_json("host", "route", "show", "table", "100") == [
            {"dst": "default", "gateway": ROUTER4, "dev": "eth0", "protocol": "static", "metric": 50,
             "flags": [], "metrics": [{"mtu": 1400, "initcwnd": 20}]}]
        assert "mtu lock 1400 initcwnd 20" in lab.sh("host", "ip", "route", "show", "table", "100").stdout

        lab.sh("host", "ip", "nexthop", "add", "id", "99", "via", ROUTER4, "dev", "eth1")   # someone else's
        assert sorted(nh.id for nh in k.nexthops()) == [1, 2, 3, 10]
        assert 99 in {nh.id for nh in k.nexthops(protocol=None)}

        with pytest.raises(NetlinkError) as e:
            k.set_group(10, [(1, 1), (2, 1)], Resilient(buckets=64))      # buckets cannot change
        assert e.value.code == 22
        with pytest.raises(NetlinkError) as e:
            k.set_group(11, [(1, 1), (404, 1)])                           # no such member
        assert e.value.code == 22
        with pytest.raises(NetlinkError) as e:
            k.delete_nexthop(404)
        assert e.value.code == 2

        k.delete_route(again.key)
        assert k.routes(socket.AF_INET, table=100) == []
        with pytest.raises(NetlinkError) as e:
            k.delete_route(again.key)
        assert e.value.code == 3
        for nhid in (10, 1, 2, 3):
            k.delete_nexthop(nhid)
        assert k.nexthops() == []
