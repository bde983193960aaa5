"""ARP flux with the real daemon: a NIC outside the groups on the same link
must not take the groups' ARP replies (issue 11, point 1). eth2 stands on
the link as a host's networking leaves such a NIC: an address on the
group's subnet and the kernel's default arp_ignore=0."""

from lab import PAIR_GROUP as PAIR, wait_for

TRIO = PAIR + "      eth2: {test: [192.0.2.12/24]}\n"
FDT = "FAILURE_DETECTION_TIME=1000\n"
TRACK_ALL = "TRACK_INTERFACES_ONLY_WITH_GROUPS=no\n"


def third_nic_on_the_link(lab):
    lab.sh("host", "ip", "addr", "add", "192.0.2.50/24", "dev", "eth2")
    lab.sysctl("host", "net.ipv4.conf.eth2.arp_ignore=0", "net.ipv4.conf.all.arp_ignore=0")


def found_targets(d, *nics, timeout=10):
    """Each NIC has found a probe target and its probe state is ok."""
    def ok():
        st = d.status()
        found = {t["interface"] for t in st["targets"] if t["family"] == 4 and t["targets"]}
        probe = {i["name"]: i["probe"] for i in st["interfaces"]}
        return all(n in found and probe[n] == "ok" for n in nics)
    wait_for(ok, timeout=timeout, what=f"targets and probe ok on {', '.join(nics)}")


def test_a_nic_already_on_the_link_joins_by_reload(make_lab):
    lab = make_lab(nics=3)
    third_nic_on_the_link(lab)
    d = lab.start_daemon(PAIR, defaults=FDT)
    found_targets(d, "eth0", "eth1")               # before it joins: it answers ARP for them
    d.write_config(TRIO)
    d.ctl("reload")
    found_targets(d, "eth0", "eth1", "eth2")
    assert "set net.ipv4.conf.all.arp_ignore=1 (was 0)" in d.log()
    assert d.status()["problems"] == []
    assert "No probe targets found" not in d.log()


def test_track_all_with_a_third_nic_on_the_link(make_lab):
    lab = make_lab(nics=3)
    third_nic_on_the_link(lab)
    d = lab.start_daemon(PAIR, defaults=FDT + TRACK_ALL)
    found_targets(d, "eth0", "eth1")
    assert d.status()["problems"] == []
    assert "No probe targets found" not in d.log()


def test_opting_out_warns_and_names_the_cause(make_lab):
    lab = make_lab(nics=3)
    third_nic_on_the_link(lab)
    d = lab.start_daemon(PAIR, defaults=FDT + TRACK_ALL + "ARP_FLUX_PROTECTION=no\n")
    d.wait_log("ARP flux protection is off (ARP_FLUX_PROTECTION=no): eth2 (outside the groups, "
               "arp_ignore=0) answer ARP for the groups' addresses")
    (problem,) = d.status()["problems"]
    assert problem["kind"] == "arp_flux" and "eth2" in problem["message"]
    assert "PROBLEM: ARP flux protection is off" in d.ctl("status").stdout
    d.wait_log("No probe targets found (inet eth0): no answer to an echo to 224.0.0.1 reached eth0, "
               "likely because of ARP flux: eth2", timeout=15)
    assert lab.sh("host", "sysctl", "-n", "net.ipv4.conf.all.arp_ignore").stdout.strip() == "0"
    # turned on by reload: the problem goes, and probing recovers
    d.write_config(defaults=FDT + TRACK_ALL)
    d.ctl("reload")
    assert d.status()["problems"] == []
