import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
DATA = os.environ.get("ACEUQ_DATA", DATA)


@pytest.fixture(scope="session")
def potential_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("potentials"))


@pytest.fixture(scope="session")
def make_pot(potential_dir):
    """make_pot(name) -> path of the reference potential `name` (see potentials.SPECS)."""
    pytest.importorskip("pyace")
    import potentials

    def make(name):
        return potentials.make_potential(potentials.SPECS[name], potential_dir)

    return make


@pytest.fixture(scope="session")
def data_dir():
    if not os.path.isdir(DATA):
        pytest.skip(f"shared DFT data not found at {DATA}")
    return DATA


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
