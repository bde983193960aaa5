"""What touches the kernel and decides nothing: netlink (kernel.py), the
announcements after a move (announce.py), the probe sockets (probesock.py),
the control socket (control.py), sd_notify (notify.py) and the journal
(log.py). Each turns kernel notifications into core events, or carries out
the core's actions; none of them judges what it sees.
"""
