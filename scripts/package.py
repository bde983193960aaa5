"""The half of scripts/package that builds dist/mpathd_VERSION_all.deb with
dpkg-deb, from this checkout and the .venv that the tests run in.

What goes in, and why (README, "The Debian package"): Architecture all,
Debian's python3, python3-yaml and python3-systemd, and private copies of
the pure-Python pyroute2 and scapy in /usr/lib/mpathd, at exactly the
versions installed in .venv, which the test suite ran with. Debian 12's and
13's pyroute2 (0.7.2, 0.7.7) and Debian 12's scapy (2.5.0) are older than
mpathd needs."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEB = ROOT / "packaging/debian"
VENDORED = ("pyroute2", "scapy")
LIB = "usr/lib/mpathd"
# /usr/lib, not /lib: Debian 13 has /lib only as an alias of /usr/lib, and dpkg
# warns on purge about directories it reaches through the alias.
UNITS = "usr/lib/systemd/system"
# The daemon is for root (sbin); any user may look with ipmpctl (bin).
COMMAND_DIRS = {"mpathd": "usr/sbin", "ipmpctl": "usr/bin"}


def put(root: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 9, mtime=0)


def build(out_dir: Path) -> Path:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = project["version"]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True).stdout.strip()
        or time.time())
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in VENDORED]
    with tempfile.TemporaryDirectory(prefix="mpathd-package-") as tmp:
        root, source = Path(tmp) / "root", Path(tmp) / "source"
        lib = root / LIB
        # built from a clean copy: a build/ left in the checkout could carry stale modules
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                        "--only-binary", ",".join(VENDORED), "--target", str(lib), str(source), *pins],
                       check=True)
        # pip's scripts and data files, its record of the build folder
        for extra in ("bin", "share", f"mpathd-{version}.dist-info/direct_url.json"):
            path = lib / extra
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        wrapper = (DEB / "wrapper.in").read_text()
        for name, entry in project["scripts"].items():
            module, function = entry.split(":")
            text = wrapper.replace("@NAME@", name).replace("@MODULE@", module).replace("@FUNCTION@", function)
            put(root, f"{COMMAND_DIRS[name]}/{name}", text.encode(), 0o755)
        for unit in sorted((ROOT / "contrib/systemd").iterdir()):
            put(root, f"{UNITS}/{unit.name}", unit.read_bytes())
        put(root, "etc/default/mpathd", (ROOT / "etc/default/mpathd").read_bytes())
        put(root, "etc/mpathd/groups.yaml", (ROOT / "etc/mpathd/groups.yaml").read_bytes())
        for page in sorted((ROOT / "man").glob("man*/*")):
            put(root, f"usr/share/man/{page.parent.name}/{page.name}.gz", gz(page.read_bytes()))
        put(root, "usr/share/bash-completion/completions/ipmpctl",
            (ROOT / "contrib/bash-completion/ipmpctl").read_bytes())
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
        changelog = (DEB / "changelog").read_text().replace("@VERSION@", version).replace("@DATE@", date)
        put(root, "usr/share/doc/mpathd/changelog.gz", gz(changelog.encode()))
        put(root, "usr/share/doc/mpathd/copyright", (DEB / "copyright").read_bytes())
        put(root, "usr/share/lintian/overrides/mpathd", (DEB / "lintian-overrides").read_bytes())
        put(root, "usr/share/doc/mpathd/README.md.gz", gz((ROOT / "README.md").read_bytes()))

        files = sorted(p for p in root.rglob("*") if p.is_file())
        for d in (p for p in root.rglob("*") if p.is_dir()):
            d.chmod(0o755)
        size_kib = sum((p.stat().st_size + 1023) // 1024 for p in files)
        control = (DEB / "control.in").read_text().replace("@VERSION@", version).replace("@SIZE@", str(size_kib))
        put(root, "DEBIAN/control", control.encode())
        put(root, "DEBIAN/conffiles", (DEB / "conffiles").read_bytes())
        for script in ("postinst", "prerm", "postrm"):
            put(root, f"DEBIAN/{script}", (DEB / script).read_bytes(), 0o755)
        md5 = "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"
                      for p in files if not str(p.relative_to(root)).startswith("etc/"))
        put(root, "DEBIAN/md5sums", md5.encode())

        out_dir.mkdir(parents=True, exist_ok=True)
        deb = out_dir / f"mpathd_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
                       check=True, stdout=subprocess.DEVNULL, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})
    return deb


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"
    print(build(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
