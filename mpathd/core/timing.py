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


def neigh_retrans_ms(fdt_ms: int) -> int:
    return max(10, min(NEIGH_RETRANS_MAX_MS, int(probe_interval(fdt_ms))))


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

# ARP probing finds host targets in the host's neighbour table (there is no
# multicast echo to ask). While a group needs hosts, the table is read at
# most once every NEIGH_READ_S: one netlink dump costs about a millisecond,
# so this is below 0.1% of a core, and a host that enters the table is a
# target within a second.
NEIGH_READ_S = 1.0
