"""explore config: the defaults and value checks (README 'Exploration over MPI ranks':
'Defaults of the others: seeds: [1], timestep: 0.002, every: 20, cutout: null, select: 0,
select_rule: greedy, assign: null, mode: replicas, elements: null')."""
import pytest

from aceuq import InputError, explore

BASE = """\
potential: pot.yaml
active_set: pot.casi
structures: [start.extxyz]
temperatures: [300, 800]
steps: 100
lower: 3.0
upper: 25.0
"""


@pytest.fixture
def folder(tmp_path):
    for name in ("pot.yaml", "pot.casi", "start.extxyz"):
        (tmp_path / name).write_text("")
    return tmp_path


def test_defaults_are_the_readmes(folder):
    (folder / "c.yaml").write_text(BASE)
    cfg = explore.load_config(str(folder / "c.yaml"))
    assert {k: cfg[k] for k in ("seeds", "timestep", "every", "cutout", "select", "select_rule", "assign", "mode",
                                "elements")} == {
        "seeds": [1], "timestep": 0.002, "every": 20, "cutout": None, "select": 0, "select_rule": "greedy",
        "assign": None, "mode": "replicas", "elements": None}


@pytest.mark.parametrize("extra, message", [
    ("timestep: 0", "'timestep' must be > 0"),          # fix nvt's damping 100*dt would be 0
    ("cutout: -2.0", "'cutout' must be > 0"),
    ("select: -1", "'select' must be >= 0"),
    ("mode: domains", "'mode' must be replicas or domain"),
    ("assign: max", "'assign' must be nearest or min"),
    ("seeds: [0]", "seeds must be integers from 1"),    # LAMMPS velocity seeds are positive
    ("seeds: [-3]", "seeds must be integers from 1"),
])
def test_bad_values_are_refused_naming_the_file(folder, extra, message):
    path = folder / "bad.yaml"
    path.write_text(BASE + extra + "\n")
    with pytest.raises(InputError) as err:
        explore.load_config(str(path))
    assert str(path) in str(err.value) and message in str(err.value)
