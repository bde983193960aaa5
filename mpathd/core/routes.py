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

import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from ..config import IP

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TABLE_MAIN = 254


class RouteKey(NamedTuple):
    """How the kernel tells one route from another: two routes with the same
    key are one route, replaced in place."""
    family: int
    table: int
    dst: Network
    tos: int
    priority: int


@dataclass(frozen=True)
class OwnedRoute:
    key: RouteKey
    gateway: IP | None          # the router; None for a route straight onto the link
    home: str | None            # the NIC it was learned on or declared for; None: any
    prefsrc: IP | None = None   # kept only if the kernel or the operator had one
    attrs: tuple = ()           # every other attribute, (name, value) pairs, kept exactly
    declared: bool = False      # from groups.yaml: put back if another program deletes it

    @property
    def family(self) -> int:
        return self.key.family

    def describe(self) -> str:
        k = self.key
        dst = "default" if k.dst.prefixlen == 0 else str(k.dst)
        via = f" via {self.gateway}" if self.gateway is not None else ""
        table = "" if k.table == TABLE_MAIN else f" table {k.table}"
        metric = f" metric {k.priority}" if k.priority else ""
        return f"{dst}{via}{table}{metric}"


class PathKey(NamedTuple):
    """One kernel nexthop group, or for a route without a router one NIC."""
    group: str
    family: int
    gateway: IP | None
    home: str | None            # None: spread over the active NICs


@dataclass(frozen=True)
class SetPath:
    """Make the path's kernel nexthop group hold exactly these members
    (NIC name, ifindex), creating the per-NIC nexthops it needs."""
    path: PathKey
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class DropPath:
    """No owned route uses the path any more: delete its nexthop group."""
    path: PathKey


@dataclass(frozen=True)
class InstallRoute:
    """Replace the route in the kernel so that it leaves by the path (for a
    path without a router: straight out of its one member)."""
    route: OwnedRoute
    path: PathKey
    members: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RestoreRoute:
    """Give the route back as a plain route through one NIC: the route left
    mpathd's care (its NIC or group left the configuration)."""
    route: OwnedRoute
    ifname: str
    index: int


@dataclass(frozen=True)
class DeleteRoute:
    """A declared route removed from the configuration."""
    route: OwnedRoute


RouteAction = SetPath | DropPath | InstallRoute | RestoreRoute | DeleteRoute


class GroupView(NamedTuple):
    """What the route policy needs to know of a group, in config order."""
    name: str
    spreading: bool
    active: tuple[tuple[str, int], ...]          # active NICs (name, ifindex)
    holder: Callable[[str, int], str | None]     # (home NIC, family) -> NIC holding its addresses


def path_of(route: OwnedRoute, group: GroupView) -> PathKey:
    spread = group.spreading and route.gateway is not None
    return PathKey(group.name, route.family, route.gateway, None if spread else route.home)


def members_of(path: PathKey, group: GroupView) -> tuple[tuple[str, int], ...] | None:
    """The members the path should have; None in a group failure (keep what
    it has)."""
    if not group.active:
        return None
    if path.home is None:
        return group.active
    by_name = dict(group.active)
    for name in (path.home, group.holder(path.home, path.family)):
        if name in by_name:
            return ((name, by_name[name]),)
    return group.active[:1]


class RouteLedger:
    """The routes of every group, and what mpathd believes the kernel has."""

    def __init__(self) -> None:
        self.routes: dict[RouteKey, OwnedRoute] = {}
        self.group_of: dict[RouteKey, str] = {}
        self.paths: dict[PathKey, tuple[tuple[str, int], ...]] = {}   # believed members
        self.installed: dict[RouteKey, PathKey] = {}                  # believed route -> path

    def of_group(self, group: str) -> list[OwnedRoute]:
        return [r for k, r in self.routes.items() if self.group_of[k] == group]

    def learn(self, route: OwnedRoute, group: str, ours: PathKey | None = None) -> bool:
        """Take a route the kernel has (or the configuration declares); return
        True if it is new or changed. `ours`: the kernel already has it on
        this path of mpathd's (adopted after a restart)."""
        old = self.routes.get(route.key)
        if old is not None and old.declared and not route.declared:
            route = OwnedRoute(route.key, old.gateway, old.home, old.prefsrc, old.attrs, True)
        changed = old != route or self.group_of.get(route.key) != group
        self.routes[route.key] = route
        self.group_of[route.key] = group
        if ours is not None:
            self.installed[route.key] = ours
        elif changed or old is None:
            self.installed.pop(route.key, None)      # the kernel has it in another form
        return changed

    def removed(self, key: RouteKey) -> OwnedRoute | None:
        """Another program deleted the route. A learned route is forgotten
        (the operator meant it); a declared one is kept, to be put back."""
        route = self.routes.get(key)
        if route is None:
            return None
        self.installed.pop(key, None)
        if not route.declared:
            del self.routes[key]
            del self.group_of[key]
        return route

    def drop(self, key: RouteKey) -> OwnedRoute | None:
        self.installed.pop(key, None)
        self.group_of.pop(key, None)
        return self.routes.pop(key, None)

    def forget(self, ifname: str | None = None, path: PathKey | None = None) -> None:
        """The kernel may have flushed what goes through `ifname` (or the
        path itself): believe nothing of it, so that reconcile re-asserts."""
        lost = {p for p, members in self.paths.items()
                if p == path or (ifname is not None and any(n == ifname for n, _ in members))}
        for p in lost:
            del self.paths[p]
        for k, p in list(self.installed.items()):
            if p in lost:
                del self.installed[k]

    def forget_route(self, key: RouteKey) -> None:
        self.installed.pop(key, None)

    def reconcile(self, groups: Iterable[GroupView]) -> list[RouteAction]:
        """Actions that make the kernel's paths and routes what the policy
        wants: first the paths (one request each, whatever the number of
        routes on them), then the routes not yet on their path, then the
        paths no route uses any more."""
        out: list[RouteAction] = []
        wanted: dict[PathKey, tuple[tuple[str, int], ...]] = {}
        routes: list[tuple[OwnedRoute, PathKey]] = []
        for g in groups:
            for route in self.of_group(g.name):
                path = path_of(route, g)
                if path not in wanted:
                    want = members_of(path, g)
                    if want is None:
                        want = self.paths.get(path)      # group failure: nothing moves
                    if want is None:
                        continue
                    wanted[path] = want
                routes.append((route, path))
        for path, want in wanted.items():
            if self.paths.get(path) == want:
                continue
            self.paths[path] = want
            if path.gateway is not None:
                out.append(SetPath(path, want))
            else:                                 # no nexthop object: each route moves itself
                for k, p in list(self.installed.items()):
                    if p == path:
                        del self.installed[k]
        for route, path in routes:
            if self.installed.get(route.key) != path:
                self.installed[route.key] = path
                out.append(InstallRoute(route, path, wanted[path]))
        for path in [p for p in self.paths if p not in wanted]:
            del self.paths[path]
            if path.gateway is not None:
                out.append(DropPath(path))
        return out
