"""Routes as state mpathd owns: which routes leave by a group, and by which NICs.

A route *belongs to a group* when it leaves by one of the group's NICs: learned
from the kernel (at start, and whenever another program adds one later) or
declared under the group's `routes:` in groups.yaml. The kernel's prefix,
local-table and router-advertisement routes are the kernel's, never owned.

Every owned route points at a *path*:

* a route through a router, with outbound load spreading on (the default),
  uses the group's path for that family and router: one kernel nexthop per
  active NIC, gathered in one resilient nexthop group. Flows are hashed over
  the members; when a member leaves, only its own flows move.
* with spreading off, or for a route without a router (`dev` only), the path
  has one member: the route's home NIC while it is active, otherwise the
  active NIC that holds the home NIC's data addresses of that family,
  otherwise the first active NIC.

A failover or repair is then one change of a path's members, whatever the
number of routes. In a group failure (no active NIC) nothing moves: every
path keeps the members it had.

The ledger here keeps what mpathd believes the kernel has (`paths`,
`installed`) next to what it wants, and `reconcile()` returns the actions
that close the gap. When the kernel may have flushed something on its own
(a NIC set down or removed, its last address gone), `forget()` drops the
belief for the NIC and the next reconcile re-asserts every path and route
through it: a bounded number of requests, proportional to the group's own
routes and never to the size of the routing table.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

from ..config import IP, RouteConfig
from .events import (DropPath, InstallRoute, OwnedRoute, PathKey, RouteAction, RouteKey, SetPath)
from .retry import Backoff

Members = tuple[tuple[str, int], ...]


class GroupView(NamedTuple):
    """What the route policy needs to know of a group, in config order."""
    name: str
    spreading: bool
    active: Members                              # active NICs (name, ifindex)
    holder: Callable[[str, int], str | None]     # (home NIC, family) -> NIC holding its addresses
    on_link: Callable[[IP], str | None]          # router -> NIC holding a data address on its prefix
    linked: frozenset[str] = frozenset()         # NICs with carrier (in a group failure, routes stay there)
    nics: frozenset[str] = frozenset()           # every member


def spreads(route: OwnedRoute, group: GroupView) -> bool:
    """Through a router, with spreading on. An IPv6 router by a global
    address is the exception: the kernel accepts such a nexthop only on a
    NIC that has the router's prefix (ip6_route_check_nh), so the route goes
    where the group's address on that prefix is; a link-local router (what
    router advertisements give) is on every member's link."""
    gw = route.gateway
    return group.spreading and gw is not None and (gw.version == 4 or gw.is_link_local)


def path_of(route: OwnedRoute, group: GroupView) -> PathKey:
    """Spread routes share their router's path (home None); any other goes
    by one NIC, chosen from its home ("" for a declared route without `dev`:
    the first that fits)."""
    if spreads(route, group):
        return PathKey(group.name, route.family, route.gateway, None)
    return PathKey(group.name, route.family, route.gateway, route.home or "")


def members_of(path: PathKey, group: GroupView) -> Members | None:
    """The members the path should have; None in a group failure (keep what
    it has). A one-NIC path takes, of the active NICs: the one with the
    router's prefix (IPv6 global router), its home NIC, the NIC that holds
    its home NIC's addresses, or else the first."""
    if not group.active:
        return None
    if path.home is None:
        return group.active
    by_name = dict(group.active)
    gw = path.gateway
    first = group.on_link(gw) if gw is not None and gw.version == 6 and not gw.is_link_local else None
    for name in (first, path.home, group.holder(path.home, path.family)):
        if name in by_name:
            return ((name, by_name[name]),)
    return group.active[:1]


def declared(cfg: RouteConfig, home: str | None) -> OwnedRoute:
    """The owned route of a `routes:` entry of groups.yaml."""
    key = RouteKey(cfg.dst.version, cfg.table, cfg.dst, 0, cfg.metric)
    return OwnedRoute(key, cfg.via, cfg.dev or home, cfg.src, cfg, declared=True)


class RouteLedger:
    """The routes of every group, and what mpathd believes the kernel has.

    `paths` and `installed` are beliefs: what the last actions made the
    kernel hold. When the kernel may have dropped something on its own,
    the belief is dropped (forget, address_gone) and the next reconcile puts
    it back. An action the kernel refused is tried again after a back-off
    (retry.py), so that a route the kernel keeps refusing costs one request
    per back-off, not one per event.
    """

    def __init__(self) -> None:
        self.routes: dict[RouteKey, OwnedRoute] = {}
        self.group_of: dict[RouteKey, str] = {}
        self.paths: dict[PathKey, Members] = {}          # believed members
        self.last: dict[PathKey, Members] = {}           # the members each path was last given
        self.installed: dict[RouteKey, PathKey] = {}     # believed route -> path
        self.retry = Backoff()                           # of refused routes and paths

    def of_group(self, group: str) -> list[OwnedRoute]:
        return [r for k, r in self.routes.items() if self.group_of[k] == group]

    # ------------------------------------------------ what the kernel says

    def learn(self, route: OwnedRoute, group: str) -> bool:
        """Take a route another program added (or the kernel had at start);
        return True if it is new or changed. A declared route keeps its
        declaration: the kernel's copy only tells it is there."""
        old = self.routes.get(route.key)
        if old is not None and old.declared:
            self.installed.pop(route.key, None)         # someone replaced ours: put ours back
            return True
        changed = old != route or self.group_of.get(route.key) != group
        self.routes[route.key] = route
        self.group_of[route.key] = group
        self.installed.pop(route.key, None)             # the kernel has it in its own form
        return changed

    def declare(self, routes: dict[RouteKey, tuple[OwnedRoute, str]]) -> list[OwnedRoute]:
        """Take the declared routes of a (new) configuration; return the
        declared routes that are no longer declared."""
        gone = [r for k, r in self.routes.items() if r.declared and k not in routes]
        for r in gone:
            self.drop(r.key)
        for key, (route, group) in routes.items():
            if self.routes.get(key) != route or self.group_of.get(key) != group:
                self.routes[key], self.group_of[key] = route, group
                self.installed.pop(key, None)
        return gone

    def removed(self, key: RouteKey) -> OwnedRoute | None:
        """Another program deleted the route. A learned route is forgotten
        (the operator meant it); a declared one is put back."""
        route = self.routes.get(key)
        if route is None:
            return None
        self.installed.pop(key, None)
        if not route.declared:
            self.drop(key)
        return route

    def drop(self, key: RouteKey) -> OwnedRoute | None:
        self.installed.pop(key, None)
        self.group_of.pop(key, None)
        self.retry.forget(key)
        return self.routes.pop(key, None)

    def forget(self, ifname: str) -> list[tuple[PathKey, Members]]:
        """The NIC lost its carrier, was set down or removed: the kernel
        deleted its nexthops, so every path lost it as a member; a path that
        had no other member was deleted with the routes on it, and the plain
        routes through the NIC may be gone. Returns the paths the kernel
        itself moved to their other members."""
        moved = []
        for path, members in list(self.paths.items()):
            if not any(n == ifname for n, _ in members):
                continue
            rest = tuple(m for m in members if m[0] != ifname)
            if rest and path.gateway is not None:
                self.paths[path] = rest
                moved.append((path, rest))
                continue
            del self.paths[path]
            for k, p in list(self.installed.items()):
                if p == path:
                    del self.installed[k]
        return moved

    def flushed(self, key: RouteKey) -> None:
        """The kernel deleted the route on its own. A route on a nexthop
        group goes when the group loses its last member (a carrier loss
        tells this before the link event does): believe the group gone too,
        with every route on it, so that they are re-made, not re-pointed at
        nothing."""
        path = self.installed.pop(key, None)
        if path is None or path.gateway is None:
            return
        self.paths.pop(path, None)
        for k, p in list(self.installed.items()):
            if p == path:
                del self.installed[k]

    def address_gone(self, ifname: str, ip: IP) -> None:
        """An address left `ifname`. The kernel deletes the routes whose
        source it was when it is no longer local, and an IPv4 NIC's plain
        routes with its last address: put them back (replacing a route that
        is still there changes nothing)."""
        for k, p in list(self.installed.items()):
            route = self.routes[k]
            if route.prefsrc == ip or (p.gateway is None and ip.version == 4
                                       and any(n == ifname for n, _ in self.paths.get(p, ()))):
                del self.installed[k]

    def refused(self, what: RouteKey | PathKey, asked: object, now: float, cause: str = "") -> bool:
        """The kernel refused the action for a route or a path (`asked`: the
        members, or the path, it was asked for): believe it is not there,
        and ask the same again only after the back-off. Asking something
        else (the NIC it was refused on has failed since) is no retry.
        True if the cause is new (log it)."""
        if isinstance(what, PathKey):
            self.paths.pop(what, None)
        else:
            self.installed.pop(what, None)
        return self.retry.refused(what, now, cause, asked)

    def next_retry(self) -> float | None:
        return self.retry.next_retry()

    # ------------------------------------------------ what mpathd wants

    def reconcile(self, groups: Iterable[GroupView], now: float) -> list[RouteAction]:
        """Actions that make the kernel's paths and routes what the policy
        wants: first the paths (one request each, whatever the number of
        routes on them), then the routes not yet on their path, then the
        paths no route uses any more. What waits for a retry is left out."""
        out: list[RouteAction] = []
        wanted: dict[PathKey, Members] = {}
        routes: list[tuple[OwnedRoute, PathKey]] = []
        for g in groups:
            for route in self.of_group(g.name):
                path = path_of(route, g)
                if path not in wanted:
                    want = members_of(path, g)
                    if want is None:
                        # a group failure: nothing moves, but a NIC that left the group
                        # carries none of its routes, and what the kernel flushed goes
                        # back on the members with carrier
                        want = (tuple(m for m in self.paths.get(path, ()) if m[0] in g.nics)
                                or tuple(m for m in self.last.get(path, ()) if m[0] in g.linked) or None)
                    if want is None:
                        continue
                    wanted[path] = want
                routes.append((route, path))
        for path, want in wanted.items():
            if self.paths.get(path) == want or self.retry.waiting(path, now, want):
                continue
            self.paths[path] = self.last[path] = want
            if path.gateway is not None:
                out.append(SetPath(path, want))
            else:                                 # no nexthop object: each route moves itself
                for k, p in list(self.installed.items()):
                    if p == path:
                        del self.installed[k]
        for route, path in routes:
            if (self.installed.get(route.key) != path and path in self.paths
                    and not self.retry.waiting(route.key, now, path)):
                self.installed[route.key] = path
                out.append(InstallRoute(route, path, self.paths[path]))
        for path in [p for p in self.paths if p not in wanted]:
            del self.paths[path]
            self.last.pop(path, None)
            for k in [k for k, p in self.installed.items() if p == path]:
                del self.installed[k]          # the kernel deletes the routes with the group
            if path.gateway is not None:
                out.append(DropPath(path))
        return out

