"""What mpathd decides, sans I/O: this package opens no socket and reads no
clock (tests/test_layout.py checks its imports). Events come in with the
time they are handled at, actions go out; mpathd/adapters carry them out.

Where each decision lives:

    events.py     the inputs (events) and outputs (actions), nothing else
    machine.py    Core.handle(event, now) -> actions. The NIC and group
                  state machines, with their transition table in its header.
                  A FAILOVER IS DECIDED in Core._settle: a NIC's health
                  verdict turns to "does not work", the policy picks where
                  its addresses go, and the move is logged
    detect.py     whether a NIC works: Health combines carrier, the probe
                  engines and flap damping into one verdict; the
                  group-failure test; the adaptive failure detection time
    probe.py      one probe engine per NIC and family: when to send, when a
                  probe is lost, RTT estimates, the family's verdict
    targets.py    where probes go: configured targets, routers, or discovery
    policy.py     which NICs are active and where each data address goes
                  (Solaris IPMP's rules), pure functions of the NICs
    ledger.py     where the kernel has each managed address: one
                  classification for start, resync and others' changes
    states.py     the state names, as the JSON of `ipmpctl --json` spells them
    catalogue.py  every kind of logged event and its journal MESSAGE_ID
    reports.py    the summary, status and probe reports; decide nothing
    timing.py     every timing constant and where it comes from
"""
