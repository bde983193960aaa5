"""The benchmarks are not part of the test run (scripts/bench), but they must
not rot: run every section once with the smallest counts and check the
report that comes out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.lab                  # scripts/bench.py builds its own namespace labs
def test_benchmarks_run_and_report(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the benchmarks need root")
    out = tmp_path / "BENCHMARKS.md"
    p = subprocess.run([sys.executable, str(ROOT / "scripts/bench.py"), "--smoke", "--check", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    text = out.read_text()
    for heading in ("## 1. Link-failure outage", "## 2. Silent path failure", "## 3. False failovers",
                    "## 4. Cost", "## 6. Failover with a large routing table", "## 7. Detection under route churn",
                    "## 8. Outbound load spreading", "## Budgets"):
        assert heading in text
    assert "| outage at failover | 2 |" in text
    assert "| ICMP | 0.1 s | 2 |" in text
    assert "| ARP | 0.1 s | 1 |" in text and "| ARP | 1 s | 1 |" in text
    assert "| ARP |" in text.split("## 4. Cost")[1]
    assert "| carrier loss → last of 100 moved | 1 |" in text
    assert "| route churn: detection ≤ FDT (1 s), every trial |" in text
    assert "| eth2 | standby | 0 / 0 / 0 | 0.0 % |" in text
