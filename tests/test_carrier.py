"""The carrier bit read from sysfs (adapters/carrier.py), with a temporary
directory standing in for /sys/class/net, fed to a real Core."""

from fakekernel import FakeKernel
from mpathd.adapters.carrier import CarrierReader
from mpathd.core.events import AddAddress, LinkChanged, LinkInfo, Log

TWO = """
groups:
  g:
    interfaces:
      eth0: {data: [192.0.2.100/24]}
      eth1: {data: [192.0.2.101/24]}
"""


def fake_sysfs(root, kern):
    for name, index in kern.index.items():
        (root / name).mkdir()
        (root / name / "ifindex").write_text(f"{index}\n")
        (root / name / "carrier").write_text("1\n")


def test_a_carrier_loss_read_from_sysfs_is_the_netlink_event(tmp_path):
    kern = FakeKernel(TWO)
    fake_sysfs(tmp_path, kern)
    reader = CarrierReader(str(tmp_path))
    assert reader.losses(kern.core.with_carrier()) == []
    (tmp_path / "eth0" / "carrier").write_text("0\n")      # in place: the open file sees it
    (event,) = reader.losses(kern.core.with_carrier())
    assert event == LinkChanged(LinkInfo("eth0", kern.index["eth0"], kern.core.nics["eth0"].mac, False))
    out = kern.do(event)
    assert [(a.ifname, str(a.address)) for a in out if isinstance(a, AddAddress)] == [("eth1", "192.0.2.100/24")]
    assert kern.holder("192.0.2.100/24") == "eth1"
    assert "The link has gone down on eth0" in [a.text for a in out if isinstance(a, Log)]
    # the core now knows: eth0 is no longer read, and netlink's late event changes nothing
    assert [n for n, _, _ in kern.core.with_carrier()] == ["eth1"]
    assert reader.losses(kern.core.with_carrier()) == []
    kern.running["eth0"] = False
    assert not [a for a in kern.do(LinkChanged(kern.info("eth0"))) if isinstance(a, (AddAddress, Log))]


def test_a_replaced_or_vanished_nic_is_left_to_netlink(tmp_path):
    kern = FakeKernel(TWO)
    fake_sysfs(tmp_path, kern)
    nics = kern.core.with_carrier()
    for nic in ("eth0", "eth1"):
        (tmp_path / nic / "carrier").write_text("0\n")
    (tmp_path / "eth0" / "ifindex").write_text("99\n")       # another device took the name
    for f in (tmp_path / "eth1").iterdir():                  # eth1 is gone
        f.unlink()
    (tmp_path / "eth1").rmdir()
    reader = CarrierReader(str(tmp_path))
    assert reader.losses(nics) == []
    assert reader.files == {}
