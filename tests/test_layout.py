"""The tree says what decides: nothing in mpathd/core touches the outside
world, and the lab is not installed with mpathd."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "mpathd/core").glob("*.py"))
NO_IO = {"socket", "time", "os", "selectors", "pyroute2", "scapy"}


def imported(path: Path) -> set[str]:
    """Every module a file imports, absolute; relative ones as mpathd.X."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module)
            else:
                package = path.relative_to(ROOT).parent.parts[:len(path.relative_to(ROOT).parent.parts)
                                                               - node.level + 1]
                names.add(".".join([*package, *([node.module] if node.module else [])]))
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_opens_no_socket_and_reads_no_clock(path):
    names = imported(path)
    assert not {n for n in names if n.split(".")[0] in NO_IO}
    outside = {n for n in names if n.startswith("mpathd.") and not n.startswith("mpathd.core")}
    assert outside <= {"mpathd.config"}, "the core may use the configuration, nothing else of mpathd"


def test_the_core_is_all_checked():
    assert {p.name for p in CORE} >= {"__init__.py", "machine.py", "detect.py", "ledger.py", "probe.py"}


def test_only_mpathd_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    on_disk = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "mpathd").rglob("__init__.py"))
    assert sorted(packages) == on_disk
    assert (ROOT / "lab/__init__.py").exists() and "lab" not in packages


DAEMON = [ROOT / "mpathd/daemon.py", *sorted((ROOT / "mpathd/adapters").glob("*.py"))]


@pytest.mark.parametrize("path", DAEMON, ids=lambda p: p.name)
def test_every_event_the_daemon_logs_has_its_kind(path):
    """Above debug, the daemon and its adapters log through emit()/event()
    (MESSAGE_ID and MPATHD_* fields) or with the kind's fields as extra."""
    bare = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "log"
                and node.func.attr in ("info", "warning", "error", "exception", "critical", "log")
                and not any(k.arg == "extra" for k in node.keywords)):
            bare.append(node.lineno)
    assert not bare, f"{path.name}: log calls without a kind at lines {bare}"
