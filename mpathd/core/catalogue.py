"""The event catalogue: every kind of event mpathd logs.

Each Log action carries one Kind. In the journal its value is the field
MPATHD_EVENT, and its MESSAGE_ID is derived from that value, so an ID never
changes between releases while the name stays. mpathd(8) lists them all
(tests/test_service.py checks that the list and this table agree).
"""

from __future__ import annotations

import enum
import uuid

_NAMESPACE = uuid.UUID("6d706174-6864-4970-8d70-000000000000")


class Kind(enum.StrEnum):
    doc: str

    def __new__(cls, value: str, doc: str) -> "Kind":
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.doc = doc
        return kind

    @property
    def message_id(self) -> str:
        return uuid.uuid5(_NAMESPACE, self.value).hex

    # detection
    FAILURE = "failure", "a NIC failed: carrier lost, removed, or its probes failed"
    REPAIR = "repair", "a failed NIC works again"
    LINK_DOWN = "link_down", "a NIC lost its carrier"
    LINK_UP = "link_up", "a NIC's carrier returned"
    BROUGHT_UP = "brought_up", "a group NIC found administratively down (at start, or as it appeared) is set up"
    FLAPPING = "flapping", "a NIC without probing flaps; its repair is held for a minute"
    GROUP_FAILED = "group_failed", "no NIC of a group works"
    GROUP_USABLE = "group_usable", "a NIC of a failed group works again"
    NIC_ADDED = "nic_added", "a NIC of a group, or a watched NIC, appeared"
    NIC_REMOVED = "nic_removed", "a NIC disappeared from the kernel"
    NIC_RENAMED = "nic_renamed", "a NIC got a new name: the old name leaves, the new one arrives"
    HWADDR_DUPLICATE = "hwaddr_duplicate", "a NIC has another member's MAC and is offlined"
    HWADDR_UNIQUE = "hwaddr_unique", "a NIC's MAC is unique again and it is onlined"
    # probing
    TARGET_FOUND = "target_found", "multicast discovery or the neighbour table (ARP probing) found a probe target"
    TARGET_DEAD = "target_dead", "a probe target stopped answering while others answer"
    TARGET_SLOW = "target_slow", "a probe target much slower than the others is dropped"
    TARGET_FOREIGN_MAC = ("target_foreign_mac", "an ARP reply for a probe target came from another MAC "
                          "than the one it answered from before; the probe counts as lost")
    NO_TARGETS = "no_targets", "no probe target was found: the NIC is judged on its link alone"
    ARP_FLUX = "arp_flux", "NICs outside the groups may answer ARP for the groups' addresses"
    PROBES_MISSED = "probes_missed", "mpathd was not scheduled in time to send probes"
    FDT_RAISED = "fdt_raised", "target RTTs forced a longer failure detection time"
    FDT_LOWERED = "fdt_lowered", "the failure detection time came back towards the configured one"
    # addresses
    FAILOVER = "failover", "addresses moved off a failed NIC"
    FAILBACK = "failback", "addresses returned to their repaired home NIC"
    MOVED = "moved", "addresses moved for another reason: offline, INACTIVE, balance, a NIC left"
    ADDRESS_PLACED = "address_placed", "an address that was nowhere was put on a NIC"
    MISSING_MOVED = "missing_moved", "the addresses of a missing NIC went to another member"
    MISSING_STRANDED = "missing_stranded", "the addresses of a missing NIC have nowhere to go"
    ADDRESS_REFUSED = "address_refused", "a NIC refused a data address; it stays where it is, retried with back-off"
    ADDRESS_RESTORED = "address_restored", "a managed address deleted by another program is put back"
    DUPLICATE_REMOVED = "duplicate_removed", "a second copy of a data address is removed"
    WRONG_PREFIX = "wrong_prefix", "a managed address with another prefix is replaced"
    # routes
    ROUTES_MOVED = "routes_moved", "the routes through a router, or a route, now leave by other NICs"
    ROUTE_ADOPTED = "route_adopted", "another program added a route through a group NIC; mpathd owns it"
    ROUTE_DELETED = "route_deleted", "another program deleted an owned route"
    # operator and daemon
    OFFLINE = "offline", "an operator took a NIC offline"
    ONLINE = "online", "an operator brought a NIC online"
    RELOAD = "reload", "the configuration was reloaded, with what changed"
    ACTION_FAILED = "action_failed", "the kernel refused an action; mpathd re-reads it"
    RESYNC = "resync", "the netlink event queue overflowed; mpathd re-reads the kernel's state"
    SYSCTL_SET = "sysctl_set", "mpathd changed a kernel setting a group NIC needs (the old value is logged)"
    SYSCTL_FAILED = "sysctl_failed", "a kernel setting a group NIC needs could not be written"
    NIC_UNSUITABLE = "nic_unsuitable", ("a group NIC has a setting that breaks IPMP, or cannot carry "
                                        "its group's address families")
    PROBE_ERROR = "probe_error", "a probe could not be sent (logged at most every 10 s per NIC), or its socket failed"
    REPLY_MALFORMED = "reply_malformed", "a malformed echo reply was ignored (logged at most every 10 s per NIC)"
    READY = "ready", "mpathd started and placed every address"
    STOPPED = "stopped", "mpathd stopped, leaving every address where it is"
    RELOAD_REFUSED = "reload_refused", "a new configuration was refused; the running one stays"
    REQUEST_REFUSED = "request_refused", "an operator's offline or online was refused"
    CONFIG_WARNING = "config_warning", "the configuration is valid but has something to warn about"
    NEXTHOPS_COLLECTED = "nexthops_collected", "nexthops an earlier run left unused were deleted"
    INTERNAL_ERROR = "internal_error", "a bug in a handler, logged with its traceback; mpathd goes on"
