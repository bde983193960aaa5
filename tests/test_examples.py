"""Every example configuration in the repository and in the README passes
`ipmpctl check` on a host that has the NICs it names (a lab host with
eth0, eth1 and eth2)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "etc/mpathd/groups.yaml"
DEFAULTS = ROOT / "etc/default/mpathd"


def uncommented(text: str) -> str:
    """The shipped file's example, made live: from the line `#groups:` on,
    each line loses its first character (the `#`)."""
    start = text.index("\n#groups:\n") + 1
    lines = text[start:].splitlines()
    assert all(line.startswith("#") for line in lines), "every example line is commented out"
    return "".join(line[1:] + "\n" for line in lines)


def readme_examples() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)


def demo_example() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return demo.GROUPS


def test_the_readme_shows_the_shipped_example():
    assert uncommented(SHIPPED.read_text()) in readme_examples()


EXAMPLES = {
    "etc/mpathd/groups.yaml as shipped": lambda: SHIPPED.read_text(),
    "etc/mpathd/groups.yaml uncommented": lambda: uncommented(SHIPPED.read_text()),
    "scripts/demo.py": demo_example,
    **{f"README.md yaml block {i + 1}": (lambda i=i: readme_examples()[i]) for i in range(len(readme_examples()))},
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_passes_ipmpctl_check(make_lab, tmp_path, name):
    lab = make_lab(nics=3)
    path = tmp_path / "groups.yaml"
    text = EXAMPLES[name]()
    path.write_text(text)
    p = lab.sh("host", sys.executable, "-m", "mpathd.ctl", "check", "--defaults", str(DEFAULTS),
               "--config", str(path), check=False)
    groups = len(re.findall(r"^  \S+:", text, re.M))
    assert p.returncode == 0 and f"configuration OK: {groups} groups" in p.stdout, p.stdout + p.stderr
