"""Every timing constant of mpathd, with where it comes from.

The probe-related values are those of Solaris in.mpathd (mpd_defs.h); they are
kept so that an FDT means the same thing on both systems.
"""

# FAILURE_DETECTION_TIME (FDT): the time within which a NIC that stops passing
# traffic is declared failed by probes. 10 s is the Solaris default; 100 ms is
# its floor, below which the probe interval (FDT/7 = 14 ms) approaches the
# scheduling jitter of a user-space process.
DEFAULT_FDT_MS = 10_000
MIN_FDT_MS = 100

# A NIC fails after NUM_PROBE_FAILS consecutive lost probes and is repaired
# after NUM_PROBE_REPAIRS consecutive answered ones.
NUM_PROBE_FAILS = 5
NUM_PROBE_REPAIRS = 10

# Why FDT/7: probes go out once per interval, each at a random point in the
# second half of its interval. When probe n leaves, probe n-2 is certainly
# overdue but probe n-1 may still be legitimately outstanding. Five losses
# plus those two probes of slack make 7 intervals per FDT, so five losses are
# always counted within the FDT.
PROBE_INTERVAL_DIVISOR = NUM_PROBE_FAILS + 2


def probe_interval(fdt: float) -> float:
    """The probe interval for an FDT, in the FDT's unit."""
    return fdt / PROBE_INTERVAL_DIVISOR


# Up to MAX_PROBE_TARGETS targets are probed in turn; a target that misses
# NUM_PROBE_FAILS of its own probes while others answer is dropped, and a
# router or configured target is tried again after DEAD_TARGET_REST_S
# (in.mpathd MIN_RECOVERY_TIME).
MAX_PROBE_TARGETS = 5
DEAD_TARGET_REST_S = 60.0

# Adaptive FDT (in.mpathd §5.3): when a target's RTT estimate exceeds the
# probe interval, the group's interval becomes twice that estimate (and the
# FDT 7 times the interval). It is halved back towards the configured value
# once every target's estimate is below a quarter of the interval and
# FDT_SETTLING_S have passed since the last raise.
FDT_RAISE_FACTOR = 2
FDT_LOWER_TRIGGER = 4
FDT_SETTLING_S = 60.0

# One slow target among fast ones does not raise the FDT (in.mpathd
# check_exception_target): with at least EXCEPTION_MIN_TARGETS active targets
# (four: enough that dropping one leaves the three a verdict needs), when
# every other one's estimate is within the interval / EXCEPTION_FACTOR, the
# slow one is dropped as a dead target would be and the FDT stays.
EXCEPTION_MIN_TARGETS = 4
EXCEPTION_FACTOR = 2

# A probe to a neighbour that is not resolved waits in the kernel's queue
# while ARP/ND retries every retrans_time_ms (1 s by default); after a silent
# failure ends, repair would wait for that retry. A group NIC re-resolves at
# the probe interval instead, never slower than the kernel default.
NEIGH_RETRANS_MAX_MS = 1000

# ...and never faster than NEIGH_RETRANS_MIN_MS. The setting is the NIC's,
# not the probes': every resolution on the NIC sends mcast_solicit (3)
# requests one retrans_time apart and then gives up, dropping what waited
# for it. At the probe interval of the shortest FDT (14 ms) that is 42 ms,
# less than many neighbours take to answer:
#   * a Linux router doing proxy ARP or proxy ND delays each reply by a
#     random time up to proxy_delay, 0.8 s by default;
#   * a router answers ARP from a rate-limited control plane, and a switch
#     doing dynamic ARP inspection allows a port 15 ARP packets/s by default
#     (Cisco) and err-disables it above that; RFC 1122 2.3.2.1 recommends at
#     most one request per second per destination.
# 100 ms keeps one resolution at 10 requests/s, under the 15/s a port may
# send, and gives a neighbour 3 x 100 = 300 ms to answer instead of 42. It
# binds only below FDT 700 ms (probe interval < 100 ms); there a repair
# after a silent failure long enough for the neighbour entry to have failed
# (seconds) may wait up to 100 ms for the next ARP retry.
NEIGH_RETRANS_MIN_MS = 100


def neigh_retrans_ms(fdt_ms: int) -> int:
    return max(NEIGH_RETRANS_MIN_MS, min(NEIGH_RETRANS_MAX_MS, int(probe_interval(fdt_ms))))


# A moved address is announced (gratuitous ARP, unsolicited NA) ANNOUNCE_COUNT
# times, ANNOUNCE_INTERVAL_MS apart, the first at once. A single frame is lost
# to a switch port that is not forwarding yet or a busy neighbour, and the
# neighbour then keeps the old MAC until its entry expires. keepalived sends 5
# at a transition (vrrp_garp_master_repeat); bonding repeats its
# num_grat_arp/num_unsol_na every peer_notif_delay, which defaults to miimon
# (100-200 ms in common setups). Five frames 200 ms apart cover the first
# 0.8 s, longer than a port takes to start forwarding after a link event,
# and cost 5 frames per address per move. bonding's range of counts (1-255,
# 0 is not offered: a move must be announced) bounds the key.
DEFAULT_ANNOUNCE_COUNT = 5
DEFAULT_ANNOUNCE_INTERVAL_MS = 200
MAX_ANNOUNCE_COUNT = 255
MIN_ANNOUNCE_INTERVAL_MS = 10           # below the loop's scheduling jitter it means nothing
MAX_ANNOUNCE_INTERVAL_MS = 10_000

# The kernel queues the notification of an address change before the request
# that made it returns, so the daemon reads the echo of its own change on its
# next loop turn: milliseconds, tens of them on a loaded host (the loaded
# benchmark's worst turn). An expected echo that has not come within
# OWN_ECHO_EXPIRY_S never will (the change did not happen as asked), and is
# forgotten, so that a later change of the same kind, NIC and address by
# another program is not taken for ours.
OWN_ECHO_EXPIRY_S = 5.0

# The carrier bit of every group NIC is also read directly (adapters/carrier.py)
# because the kernel's linkwatch can deliver a carrier loss up to a second
# late. bonding's miimon reads the same bit; its documentation calls 100 ms
# "a good starting point", and it failed over in 60-100 ms where netlink
# was 0.4-0.8 s late. At CARRIER_POLL_S a loss is acted on within 100 ms
# however the kernel batches its events, at a cost that fits the 1 % idle
# budget: one pread() per group NIC (2.4 us for four) and a turn of the loop
# (about 150 us), +0.15 % of a core with two groups of two NICs at rest
# (BENCHMARKS.md "Carrier poll"). Ten times as often would cost 1.5 %.
CARRIER_POLL_S = 0.1

# The probe view (ipmpstat -p) shows the last PROBE_RECORDS finished probes
# per NIC and family: at the shortest FDT (100 ms, a probe every 14 ms) that
# is 0.9 s, so `ipmpctl probes` polls five times a second (FOLLOW_POLL_S).
PROBE_RECORDS = 64

# A probe socket that could not be opened (its address still tentative, its
# NIC going away) is tried again after this long.
PROBE_START_RETRY_S = 1.0

# Link-flap damping for NICs without probing (in.mpathd LINK_UP_PERMIN): the
# third link-up within LINK_FLAP_WINDOW_S keeps the NIC failed until the
# window has passed, so a bouncing cable does not drag addresses back and
# forth.
LINK_UP_PERMIN = 2
LINK_FLAP_WINDOW_S = 60.0

# A request the kernel refused (a route or nexthop whose address is not yet
# local or whose NIC is on its way out; an address on a NIC that refuses its
# family, disable_ipv6=1 say) is tried again after RETRY_S, doubling up to
# RETRY_MAX_S (retry.py): soon enough to follow a state that settles within a
# second, and at most one request a minute for one the kernel keeps refusing.
RETRY_S = 1.0
RETRY_MAX_S = 60.0

# A route the kernel deleted on its own is the effect of news that follows
# within microseconds (a NIC's carrier: the kernel tells of the routes it
# drops with the NIC's nexthops first). It is put back KERNEL_NEWS_S later,
# once that news has been read, so that it is not re-made on the NIC going
# down; 20 ms is far above that gap and far below what a peer notices.
KERNEL_NEWS_S = 0.02

# ARP probing finds host targets in the host's neighbour table (there is no
# multicast echo to ask). While a group needs hosts, the table is read at
# most once every NEIGH_READ_S: one netlink dump costs about a millisecond,
# so this is below 0.1% of a core, and a host that enters the table is a
# target within a second.
NEIGH_READ_S = 1.0
