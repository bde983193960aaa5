"""ipmpctl: the operator's side. ipmpctl.py parses the command line and
renders the views (ipmpstat's layouts), check.py checks a configuration
against the live system, metrics.py renders the Prometheus text format.
It talks to the daemon only through the control socket.
"""
