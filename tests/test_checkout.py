"""The checkout may lie anywhere: a 0700 home directory included (Debian
makes /root and every home directory 0700)."""

import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_permission_test_passes_from_a_0700_checkout():
    """A copy of the tree in a fresh 0700 directory, with a .venv of its own
    there (as scripts/setup makes it; its packages come from this .venv),
    runs the test that calls ipmpctl as nobody. Before that test stopped
    depending on the checkout's place, nobody could not read the copy's
    pyvenv.cfg and it failed with `No module named 'mpathd'`."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    home = Path(tempfile.mkdtemp(prefix="mpathd-home-"))
    try:
        assert os.stat(home).st_mode & 0o777 == 0o700
        tree = home / "mpathd"
        shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "dist", "build"))
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tree / ".venv")], check=True)
        inner_site = next((tree / ".venv/lib").glob("python3*/site-packages"))
        # the copy first, then this .venv's packages (its editable mpathd is shadowed)
        (inner_site / "checkout.pth").write_text(f"{tree}\n{site.getsitepackages()[0]}\n")
        p = subprocess.run([str(tree / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/test_lab_service.py::test_any_user_may_look_and_only_root_may_change"],
                           cwd=tree, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr
    finally:
        shutil.rmtree(home)
