"""The route ledger and policy (pure): which path every owned route takes,
and the fewest actions that get the kernel there."""

import ipaddress

import pytest

from mpathd.core.events import DropPath, InstallRoute, OwnedRoute, PathKey, RouteKey, SetPath
from mpathd.core.routes import GroupView, RouteLedger

GW = ipaddress.ip_address("192.0.2.1")
ETH0, ETH1, ETH2 = ("eth0", 2), ("eth1", 3), ("eth2", 4)


def route(dst="0.0.0.0/0", gw=GW, home="eth0", metric=0, table=254, declared=False, prefsrc=None):
    net = ipaddress.ip_network(dst)
    return OwnedRoute(RouteKey(net.version, table, net, 0, metric), gw, home,
                      None if prefsrc is None else ipaddress.ip_address(prefsrc), declared=declared)


def view(active, spreading=True, holder=lambda home, fam: None, on_link=lambda ip: None, linked=(),
         nics=("eth0", "eth1", "eth2")):
    return GroupView("ipmp0", spreading, tuple(active), holder, on_link, frozenset(linked), frozenset(nics))


def settle(ledger, *views, now=0.0):
    return ledger.reconcile(views, now)


def test_spread_route_gets_one_path_over_every_active_nic():
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    led.learn(route("198.51.100.0/24", metric=5), "ipmp0")
    out = settle(led, view([ETH0, ETH1]))
    path = PathKey("ipmp0", 4, GW, None)
    assert out[0] == SetPath(path, (ETH0, ETH1))
    assert [type(a) for a in out[1:]] == [InstallRoute, InstallRoute]
    assert settle(led, view([ETH0, ETH1])) == []          # nothing left to do


def test_failover_is_one_path_change_whatever_the_number_of_routes():
    led = RouteLedger()
    for i in range(50):
        led.learn(route(f"203.0.113.{i}/32"), "ipmp0")
    settle(led, view([ETH0, ETH1]))
    out = settle(led, view([ETH1]))
    assert out == [SetPath(PathKey("ipmp0", 4, GW, None), (ETH1,))]


def test_group_failure_moves_nothing():
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    settle(led, view([ETH0, ETH1]))
    assert settle(led, view([])) == []
    # a route learned during the failure joins the path the group still has
    led.learn(route("198.51.100.0/24"), "ipmp0")
    out = settle(led, view([]))
    assert [type(a) for a in out] == [InstallRoute]       # onto the path the group still has
    led2 = RouteLedger()
    led2.learn(route(), "ipmp0")
    assert settle(led2, view([])) == []                    # never had a path: left as it is


@pytest.mark.parametrize("active, holder, want", [
    ([ETH0, ETH1], None, ETH0),            # home active: stays home
    ([ETH1, ETH2], "eth2", ETH2),          # home failed: follows its addresses
    ([ETH1, ETH2], None, ETH1),            # addresses nowhere active: the first active NIC
])
def test_without_spreading_a_route_follows_its_home(active, holder, want):
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    out = settle(led, view(active, spreading=False, holder=lambda home, fam: holder))
    assert out[0] == SetPath(PathKey("ipmp0", 4, GW, "eth0"), (want,))


def test_device_route_moves_itself_and_failback_returns_it():
    led = RouteLedger()
    led.learn(route("203.0.113.0/24", gw=None), "ipmp0")
    out = settle(led, view([ETH0, ETH1]))
    assert out == [InstallRoute(led.routes[out[0].route.key], PathKey("ipmp0", 4, None, "eth0"), (ETH0,))]
    out = settle(led, view([ETH1]))
    assert [(type(a), a.members) for a in out] == [(InstallRoute, (ETH1,))]
    out = settle(led, view([ETH0, ETH1]))
    assert [(type(a), a.members) for a in out] == [(InstallRoute, (ETH0,))]


def test_another_nics_route_stays_on_it_at_failback():
    led = RouteLedger()
    led.learn(route(home="eth1"), "ipmp0")
    settle(led, view([ETH0, ETH1], spreading=False))
    settle(led, view([ETH0], spreading=False))
    out = settle(led, view([ETH0, ETH1], spreading=False))
    assert out == [SetPath(PathKey("ipmp0", 4, GW, "eth1"), (ETH1,))]


def test_carrier_loss_of_one_member_is_one_path_update():
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    led.learn(route("203.0.113.0/24", gw=None, home="eth1"), "ipmp0")
    settle(led, view([ETH0, ETH1]))
    led.forget("eth0")        # the kernel deleted eth0's nexthop; the group kept eth1's
    assert settle(led, view([ETH1])) == []    # already what the kernel has
    led.forget("eth1")        # now the group lost its last member, and its routes with it
    out = settle(led, view([ETH0]))
    assert [type(a) for a in out] == [SetPath, InstallRoute, InstallRoute]
    assert out[0].members == (ETH0,)


def test_removed_address_puts_back_the_routes_it_was_the_source_of():
    led = RouteLedger()
    led.learn(route(prefsrc="192.0.2.100"), "ipmp0")
    led.learn(route("198.51.100.0/24"), "ipmp0")
    led.learn(route("203.0.113.0/24", gw=None), "ipmp0")
    settle(led, view([ETH0, ETH1]))
    led.address_gone("eth1", ipaddress.ip_address("192.0.2.100"))
    assert [a.route.key.dst.prefixlen for a in settle(led, view([ETH0, ETH1]))] == [0]
    led.address_gone("eth0", ipaddress.ip_address("192.0.2.10"))     # eth0's plain routes may go
    assert [str(a.route.key.dst) for a in settle(led, view([ETH0, ETH1]))] == ["203.0.113.0/24"]


def test_a_refused_route_is_retried_with_a_doubling_back_off():
    led = RouteLedger()
    r = route()
    led.learn(r, "ipmp0")
    tries = []
    now = 0.0
    while now < 40:
        out = settle(led, view([ETH0]), now=now)
        if any(isinstance(a, InstallRoute) for a in out):
            tries.append(now)
            led.refused(r.key, PathKey("ipmp0", 4, GW, None), now)   # the kernel says no, every time
        now += 0.25
    assert tries[:6] == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    assert led.next_retry() == 31.0 + 32.0


def test_learned_route_deleted_by_another_program_is_forgotten_declared_is_kept():
    led = RouteLedger()
    learned, declared = route(), route("198.51.100.0/24", declared=True)
    led.learn(learned, "ipmp0")
    led.learn(declared, "ipmp0")
    settle(led, view([ETH0]))
    led.removed(learned.key)
    led.removed(declared.key)
    assert learned.key not in led.routes
    out = settle(led, view([ETH0]))
    assert out == [InstallRoute(declared, PathKey("ipmp0", 4, GW, None), (ETH0,))]


def test_unused_path_is_dropped():
    led = RouteLedger()
    r = route()
    led.learn(r, "ipmp0")
    settle(led, view([ETH0]))
    led.drop(r.key)
    assert settle(led, view([ETH0])) == [DropPath(PathKey("ipmp0", 4, GW, None))]


def test_a_route_another_program_adds_again_is_put_back_on_its_path():
    led = RouteLedger()
    r = route()
    led.learn(r, "ipmp0")
    settle(led, view([ETH0]))
    assert not led.learn(r, "ipmp0")                    # the same route, re-added plain
    assert [type(a) for a in settle(led, view([ETH0]))] == [InstallRoute]
    changed = OwnedRoute(r.key, r.gateway, r.home, spec=(("mtu", 1400),))
    assert led.learn(changed, "ipmp0")                  # a program re-added it its own way
    assert [type(a) for a in settle(led, view([ETH0]))] == [InstallRoute]


def test_ipv6_route_via_a_global_router_goes_where_the_routers_prefix_is():
    led = RouteLedger()
    gw6 = ipaddress.ip_address("2001:db8:1::1")
    net = ipaddress.ip_network("::/0")
    r = OwnedRoute(RouteKey(6, 254, net, 0, 1024), gw6, "eth0")
    ll = OwnedRoute(RouteKey(6, 254, ipaddress.ip_network("2001:db8:9::/48"), 0, 0),
                    ipaddress.ip_address("fe80::1"), "eth0")
    led.learn(r, "ipmp0")
    led.learn(ll, "ipmp0")
    out = settle(led, view([ETH0, ETH1], on_link=lambda ip: "eth1"))
    paths = {a.path: a.members for a in out if isinstance(a, SetPath)}
    assert paths == {PathKey("ipmp0", 6, gw6, "eth0"): (ETH1,),
                     PathKey("ipmp0", 6, ipaddress.ip_address("fe80::1"), None): (ETH0, ETH1)}


def test_a_route_the_kernel_flushed_with_its_group_is_remade_not_repointed():
    """IPv6 tells of the routes deleted with an emptied group before the link
    event comes: the group must be made again before the route."""
    led = RouteLedger()
    r, other = route(), route("198.51.100.0/24")
    led.learn(r, "ipmp0")
    led.learn(other, "ipmp0")
    settle(led, view([ETH0], spreading=False))
    led.flushed(r.key)
    out = settle(led, view([ETH0], spreading=False))
    assert [type(a) for a in out] == [SetPath, InstallRoute, InstallRoute]


def test_a_refused_path_is_asked_again_at_once_with_other_members():
    """Refused on a NIC that is going down (its link event not yet read):
    once it has failed, the path on the other NIC is no retry and does not
    wait for the back-off."""
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    (set_path, _) = settle(led, view([ETH0]))
    led.refused(set_path.path, set_path.members, 0.0)
    assert settle(led, view([ETH0]), now=0.1) == []           # the same again: after the back-off
    out = settle(led, view([ETH1]), now=0.1)
    assert [type(a) for a in out] == [SetPath] and out[0].members == (ETH1,)


def test_in_a_group_failure_what_the_kernel_flushed_goes_back_on_a_linked_nic():
    """Every member lost its carrier (the kernel deleted the group and its
    routes), then the links came back but the NICs are still failed (flap
    damping, or waiting for probe answers): nothing moves, but the routes
    come back where they were, on the NICs that have carrier."""
    led = RouteLedger()
    led.learn(route(), "ipmp0")
    settle(led, view([ETH0, ETH1]))
    led.forget("eth0")
    led.forget("eth1")
    assert settle(led, view([])) == []                           # no carrier anywhere: nothing to do
    out = settle(led, view([], linked=["eth1"]))
    assert [type(a) for a in out] == [SetPath, InstallRoute] and out[0].members == (ETH1,)
    out = settle(led, view([ETH0, ETH1]))                          # repaired: spread again
    assert out == [SetPath(PathKey("ipmp0", 4, GW, None), (ETH0, ETH1))]


def test_in_a_group_failure_a_nic_that_left_the_group_keeps_none_of_its_routes():
    """A reload takes eth0, the path's only member, out of a failed group:
    the path is dropped (the kernel deletes its routes with it), and the
    routes are made again when a member works (random lab test, seed
    1402305163: the route stayed believed installed and never came back)."""
    led = RouteLedger()
    r = route()
    led.learn(r, "ipmp0")
    settle(led, view([ETH0]))
    assert settle(led, view([], nics=("eth1", "eth2"))) == [DropPath(PathKey("ipmp0", 4, GW, None))]
    out = settle(led, view([ETH2], nics=("eth1", "eth2")))
    assert [type(a) for a in out] == [SetPath, InstallRoute] and out[0].members == (ETH2,)


def test_a_declared_route_without_dev_that_does_not_spread_goes_by_one_nic():
    led = RouteLedger()
    led.learn(route(home=None, declared=True), "ipmp0")
    gw6 = ipaddress.ip_address("2001:db8:1::1")
    led.learn(OwnedRoute(RouteKey(6, 254, ipaddress.ip_network("::/0"), 0, 0), gw6, None, declared=True),
              "ipmp0")
    out = settle(led, view([ETH0, ETH1], spreading=False, on_link=lambda ip: "eth1"))
    assert {a.path.family: a.members for a in out if isinstance(a, SetPath)} == {4: (ETH0,), 6: (ETH1,)}
