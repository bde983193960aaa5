import os

import pytest

from lab import Lab


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
