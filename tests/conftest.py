import os

import pytest

from lab import Lab


def pytest_collection_modifyitems(items):
    """Every test that builds a namespace lab is marked `lab`, so that
    `pytest -m "not lab"` runs the unit tests alone."""
    for item in items:
        if "make_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def make_lab():
    """Build namespace labs for one test; all of them are torn down when it
    ends, whether it passed, failed or was interrupted."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root")
    labs = []

    def make(**kw) -> Lab:
        lab = Lab(**kw).__enter__()
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.destroy()
