"""Ensembles give stress (the members' mean) and its spread, as pyace's PyACEEnsembleCalculator,
so NPT runs with an ensemble calculator."""
import numpy as np
import pytest

pytest.importorskip("pyace")

from ase.build import bulk  # noqa: E402

from aceuq import ACECalculator  # noqa: E402
from aceuq.cli.main import main  # noqa: E402
from aceuq.ensemble import fit_ensemble  # noqa: E402
from potentials import emt_training_set  # noqa: E402


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    frames = emt_training_set(["Cu", "Al"], n=20, seed=4)
    out = str(tmp_path_factory.mktemp("ens_stress") / "ens")
    ens = fit_ensemble(frames, 3, out, basis="small", bootstrap=True, seed=2)
    ens.folder = out
    return ens


def strained():
    a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    a.symbols[[1, 6, 11]] = "Al"
    a.set_cell(a.cell.array @ np.array([[1.02, 0.01, 0], [0, 0.99, 0.02], [0, 0, 1.01]]), scale_atoms=True)
    a.rattle(0.05, seed=3)
    return a


def test_stress_and_spread_match_pyace(ensemble):
    from pyace.asecalc import PyACEEnsembleCalculator

    atoms = strained()
    ref = atoms.copy()
    ref.calc = PyACEEnsembleCalculator(ensemble.paths)
    ref.get_potential_energy()
    mine = atoms.copy()
    mine.calc = ACECalculator(ensemble.paths)
    stress = mine.get_stress()
    assert np.abs(ref.calc.results["stress"]).max() > 1e-3  # a strained cell: a real test
    np.testing.assert_allclose(stress, ref.calc.results["stress"], rtol=1e-9, atol=1e-12)
    assert np.abs(ref.calc.results["stress_std"]).max() > 1e-6
    np.testing.assert_allclose(mine.calc.results["stress_std"], ref.calc.results["stress_std"], rtol=1e-7,
                               atol=1e-12)
    # an open cluster in a box: the virial over the box's volume, as pyace; without a cell, none
    cluster = atoms.copy()
    cluster.pbc = False
    cluster.calc = PyACEEnsembleCalculator(ensemble.paths)
    cluster.get_potential_energy()
    got = ensemble.evaluate(cluster)
    np.testing.assert_allclose(got.stress, cluster.calc.results["stress"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.stress_std, cluster.calc.results["stress_std"], rtol=1e-7, atol=1e-12)
    cluster.cell = np.zeros((3, 3))
    assert ensemble.evaluate(cluster).stress is None
    cluster.cell = [[9.0, 0, 0], [0, 9.0, 0], [9.0, 9.0, 0]]  # three vectors, no volume
    assert ensemble.evaluate(cluster).stress is None


def test_evaluate_cli_writes_ensemble_stress(ensemble, tmp_path):
    from ase.io import read, write

    write(tmp_path / "s.extxyz", strained())
    out = tmp_path / "o.extxyz"
    assert main(["evaluate", "--ensemble", ensemble.folder, str(tmp_path / "s.extxyz"), "-o", str(out),
                 "--no-progress"]) == 0
    # (extended XYZ keeps about 8 significant digits)
    np.testing.assert_allclose(read(out).get_stress(), ensemble.evaluate(strained()).stress, rtol=1e-6)
