"""The carrier bit, read straight from sysfs beside the netlink events.

The kernel's linkwatch delays a NIC's carrier event (RTM_NEWLINK without
IFF_RUNNING) to a second after the previous one on any NIC, except for
devices that skip it such as veth: on virtio NICs a carrier loss reached
netlink 0.4-0.8 s late (issue 11). /sys/class/net/NIC/carrier is the driver's
bit (netif_carrier_ok) at the moment of the read, as bonding's miimon reads
it. The daemon reads it for every group NIC the core believes has carrier,
on every link event of any NIC and every timing.CARRIER_POLL_S, and hands a
loss to the core as the LinkChanged netlink would have made. A returning
carrier is left to netlink (linkwatch always sends its event).

Each NIC's file is opened once and re-read with pread(): one system call per
NIC and read. The open file stays bound to the device it was opened for, so
a NIC replaced under the same name (a new ifindex) is opened again.
"""

from __future__ import annotations

import errno
import os
from typing import Iterable

from ..core.events import LinkChanged, LinkInfo

SYSFS_NET = "/sys/class/net"


class CarrierReader:
    def __init__(self, root: str = SYSFS_NET):
        self.root = root
        self.files: dict[str, tuple[int, int]] = {}      # name -> (ifindex, fd)

    def losses(self, nics: Iterable[tuple[str, int, str | None]]) -> list[LinkChanged]:
        """Of these NICs (name, ifindex, MAC), believed to have carrier, the
        ones whose carrier bit reads 0, or that are down (the kernel refuses
        to read the bit of a NIC that is not up), as LinkChanged events."""
        out = []
        for name, index, mac in nics:
            try:
                bit = os.pread(self._fd(name, index), 1, 0)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    self.forget(name)      # gone or replaced: netlink tells the core
                    continue
                bit = b"0"
            if bit == b"0":
                out.append(LinkChanged(LinkInfo(name, index, mac, running=False)))
        return out

    def _fd(self, name: str, index: int) -> int:
        have = self.files.get(name)
        if have is not None and have[0] == index:
            return have[1]
        self.forget(name)
        with open(os.path.join(self.root, name, "ifindex")) as f:
            if int(f.read()) != index:
                raise OSError(errno.ENODEV, f"{name} is not ifindex {index}")
        fd = os.open(os.path.join(self.root, name, "carrier"), os.O_RDONLY | os.O_CLOEXEC)
        self.files[name] = (index, fd)
        return fd

    def forget(self, name: str) -> None:
        have = self.files.pop(name, None)
        if have is not None:
            os.close(have[1])

    def close(self) -> None:
        for name in list(self.files):
            self.forget(name)
