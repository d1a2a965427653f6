import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("pyace")

import ase.io  # noqa: E402
from ase.build import bulk  # noqa: E402

import aceuq  # noqa: E402
from aceuq import metrics  # noqa: E402
from aceuq._core import InputError  # noqa: E402
from aceuq.ensemble import Ensemble, EnsembleCalculator, fit_ensemble, resample  # noqa: E402
from potentials import CU_RHO_CORE, emt_training_set, labelled, make_potential  # noqa: E402
from structures import close_pair  # noqa: E402


@pytest.fixture(scope="module")
def cu_frames():
    return emt_training_set(["Cu"], n=40, seed=3)


@pytest.fixture(scope="module")
def cu_ensemble(cu_frames, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ens") / "cu")
    return fit_ensemble(cu_frames[:24], 5, out, basis="small", bootstrap=True, seed=11,
                        calibration_frames=cu_frames[24:32])


def _test_structures():
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.rattle(0.1, seed=5)
    s = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 3))
    s.center(vacuum=4.0, axis=2)  # a slab: environments the members never saw
    s.rattle(0.05, seed=6)
    cluster = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    cluster.pbc = False
    cluster.rattle(0.1, seed=7)
    return [a, s, cluster]


def test_sigma_matches_pyace_ensemble_calculator(cu_ensemble):
    from pyace.asecalc import PyACEEnsembleCalculator

    ref_calc = PyACEEnsembleCalculator(cu_ensemble.paths)
    plain = Ensemble.load(cu_ensemble.paths)  # no reference energy, no calibration
    assert plain.shared_basis and len(plain) == 5
    structures = _test_structures()
    plain_all = plain.evaluate(structures)  # a list in, a list out
    assert len(plain_all) == len(structures)
    for atoms, p in zip(structures, plain_all):
        ref = atoms.copy()
        ref.calc = ref_calc
        ref.get_potential_energy()
        r = ref_calc.results
        mine = cu_ensemble.evaluate(atoms, calibrated=False)
        assert r["energy_std"] > 1e-6
        assert mine.energy_std == pytest.approx(r["energy_std"], abs=1e-9)
        assert np.allclose(mine.energies_std, r["energies_std"], atol=1e-9, rtol=0)
        assert np.allclose(mine.forces_std, r["forces_std"], atol=1e-9, rtol=0)
        assert p.energy == pytest.approx(r["energy"], abs=1e-9)
        assert np.allclose(p.forces, r["forces"], atol=1e-9, rtol=0)
        assert np.allclose(p.energies, r["energies"], atol=1e-9, rtol=0)
        # the manifest's reference energies shift the mean, not the spread
        e0 = cu_ensemble.reference_energy["Cu"]
        assert mine.energy == pytest.approx(p.energy + e0 * len(atoms), abs=1e-8)
        np.testing.assert_allclose(mine.energies, p.energies + e0, rtol=0, atol=1e-9)  # each atom's too
        assert mine.energies.sum() == pytest.approx(mine.energy, abs=1e-8)


def test_ensemble_calculator_ase_names(cu_ensemble):
    atoms = _test_structures()[1]
    atoms.calc = EnsembleCalculator(cu_ensemble)
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    r = cu_ensemble.evaluate(atoms)
    assert e == pytest.approx(r.energy) and np.allclose(f, r.forces)
    res = atoms.calc.results
    assert res["forces_std"].shape == (len(atoms), 3) and res["energies_std"].shape == (len(atoms),)
    assert np.allclose(res["forces_std"], r.forces_std)
    # calibrated by default: the stored factor scales the raw spread, the floor adds in quadrature
    raw = cu_ensemble.evaluate(atoms, calibrated=False)
    cal = cu_ensemble.calibration
    assert cal["forces_floor"] == pytest.approx(metrics.FORCE_RESOLUTION)
    assert np.allclose(res["forces_std"], np.sqrt((cal["forces"] * raw.forces_std) ** 2 + cal["forces_floor"] ** 2))
    assert res["energy_std"] == pytest.approx(cu_ensemble.calibration["energy"] * raw.energy_std)
    assert np.allclose(res["force_uncertainty"], np.linalg.norm(res["forces_std"], axis=1))


def test_ace_calculator_on_an_ensemble_gives_pyace_sigma(cu_ensemble, tmp_path):
    # aceuq.ACECalculator takes the member files, the ensemble directory or its manifest and
    # gives pyace's PyACEEnsembleCalculator results under the same names
    from pyace.asecalc import PyACEEnsembleCalculator

    import aceuq

    atoms = _test_structures()[1]
    ref = atoms.copy()
    ref.calc = PyACEEnsembleCalculator(cu_ensemble.paths)
    ref.get_forces()
    r = ref.calc.results
    mine = atoms.copy()
    mine.calc = aceuq.ACECalculator(list(cu_ensemble.paths))
    assert mine.get_potential_energy() == pytest.approx(r["energy"], abs=1e-9)
    assert np.allclose(mine.get_forces(), r["forces"], atol=1e-9, rtol=0)
    for key in ("energy_std", "energies_std", "forces_std"):
        assert np.allclose(mine.calc.get_property(key, mine), r[key], atol=1e-9, rtol=0), key
    folder = os.path.dirname(cu_ensemble.paths[0])
    for source in (folder, os.path.join(folder, "ensemble.json")):
        calc = aceuq.ACECalculator(source, calibrated=False)
        assert calc.ensemble.paths == cu_ensemble.paths
        assert np.allclose(calc.get_property("forces_std", atoms.copy()), r["forces_std"], atol=1e-9, rtol=0)
    with pytest.raises(InputError, match="ensemble"):
        aceuq.ACECalculator(str(tmp_path))                  # a directory without a manifest


def test_shared_projection_path_equals_member_by_member(cu_ensemble):
    """All members in one pass equal each member evaluated alone, with its coefficients set."""
    g = cu_ensemble.groups[0]
    atoms = _test_structures()[0]
    fast = g.potential.evaluate_ensemble(atoms, g.members)
    own = g.potential.coefficients("Cu").copy()
    for m, member in enumerate(g.members):
        g.potential.set_coefficients("Cu", member["Cu"])
        alone = g.potential.evaluate(atoms)
        assert np.isclose(fast["energy"][m], alone.energy, atol=1e-10, rtol=0)
        assert np.allclose(fast["energies"][m], alone.energies, atol=1e-10, rtol=0)
        assert np.allclose(fast["forces"][m], alone.forces, atol=1e-10, rtol=0)
    g.potential.set_coefficients("Cu", own)


def test_members_of_a_structure_without_atoms(cu_ensemble):
    """No atoms: every member's energy is 0 and its per-atom arrays are empty (the binding copied
    0 bytes from an empty vector's null data(), which memcpy does not allow)."""
    from ase import Atoms

    g = cu_ensemble.groups[0]
    r = g.potential.evaluate_ensemble(Atoms(), g.members)
    assert r["energy"].tolist() == [0.0] * len(g.members)
    assert r["energies"].shape == (len(g.members), 0) and r["forces"].shape == (len(g.members), 0, 3)
    assert not r["virial"].any()


def test_members_differing_only_in_the_core_density_cut_are_not_evaluated_as_one(potential_dir, tmp_path):
    """Members that share a basis are evaluated together with one potential's embedding; two that
    differ only in rho_core_cut must not share it: each member's energy in the ensemble equals
    pyace's for that member alone (close_pair's atoms lie inside CU_RHO_CORE's cut window)."""
    from pyace import PyACECalculator

    path = make_potential(CU_RHO_CORE, potential_dir)
    with open(path) as fh:
        text = fh.read()
    assert text.count("rho_core_cut: 0.006") == 1
    wide = str(tmp_path / "wide.yaml")
    with open(wide, "w") as fh:
        fh.write(text.replace("rho_core_cut: 0.006", "rho_core_cut: 100000"))
    drho = re.search(r"drho_core_cut: (\S+)", text).group(1)
    soft = str(tmp_path / "soft.yaml")  # the window's width only
    with open(soft, "w") as fh:
        fh.write(text.replace(f"drho_core_cut: {drho}", f"drho_core_cut: {0.5 * float(drho)!r}"))
    atoms = close_pair(["Cu"])
    ref = []
    for p in (path, wide, soft):
        a = atoms.copy()
        a.calc = PyACECalculator(p)
        ref.append(a.get_potential_energy())
    assert min(abs(ref[0] - ref[1]), abs(ref[0] - ref[2])) > 1e-3  # each cut changes the energy
    energies = Ensemble.load([path, wide, soft]).members_evaluate(atoms, forces=False)["energy"]
    np.testing.assert_allclose(energies, ref, rtol=1e-10, atol=0)


def test_mixed_bases_match_pyace(cu_frames, cu_ensemble, tmp_path):
    from pyace.asecalc import PyACEEnsembleCalculator

    other = fit_ensemble(cu_frames[:24], 2, str(tmp_path / "med"), basis="medium", seed=2)
    paths = cu_ensemble.paths[:2] + other.paths
    ens = Ensemble.load(paths)
    assert not ens.shared_basis and len(ens.groups) == 2
    atoms = _test_structures()[0]
    ref = atoms.copy()
    ref.calc = PyACEEnsembleCalculator(paths)
    ref.get_potential_energy()
    r = ens.evaluate(atoms)
    assert np.allclose(r.forces_std, ref.calc.results["forces_std"], atol=1e-9, rtol=0)
    assert r.energy_std == pytest.approx(ref.calc.results["energy_std"], abs=1e-9)


def test_bootstrap_reproducible(cu_frames, tmp_path):
    a = fit_ensemble(cu_frames[:16], 3, str(tmp_path / "a"), bootstrap=True, seed=5)
    b = fit_ensemble(cu_frames[:16], 3, str(tmp_path / "b"), bootstrap=True, seed=5)
    c = fit_ensemble(cu_frames[:16], 3, str(tmp_path / "c"), bootstrap=True, seed=6)
    for ga, gb in zip(a.groups[0].members, b.groups[0].members):
        assert np.array_equal(ga["Cu"], gb["Cu"])
    assert not np.array_equal(a.groups[0].members[0]["Cu"], c.groups[0].members[0]["Cu"])
    assert a.manifest["fit"]["member_structures"] == b.manifest["fit"]["member_structures"]
    # bootstrap draws with replacement; subsampling without
    s = resample(50, 4, True, 0)
    assert all(len(x) == 50 and len(np.unique(x)) < 50 for x in s)
    s = resample(50, 4, False, 0, 0.8)
    assert all(len(x) == 40 and len(np.unique(x)) == 40 for x in s)


def test_calibration_on_held_out_emt(cu_frames, cu_ensemble):
    cal = cu_ensemble.calibration
    assert cal["fitted"] and cal["forces"] > 0 and cal["energy"] > 0
    test = cu_frames[32:]
    raw = cu_ensemble.errors_and_sigma(test, calibrated=False)
    calibrated = cu_ensemble.errors_and_sigma(test, calibrated=True)
    z_raw = metrics.z_rms(raw["force_error"], raw["force_sigma"] / np.sqrt(3), dof=3)
    z = metrics.z_rms(calibrated["force_error"], calibrated["force_sigma"] / np.sqrt(3), dof=3)
    z_e = metrics.z_rms(calibrated["energy_error"], calibrated["energy_sigma"])
    print(f"held-out force error/σ: raw {z_raw:.3f}, calibrated {z:.3f}; energy {z_e:.3f}; factors {cal}")
    assert abs(z - 1) < 0.25
    assert abs(z_raw - 1) > abs(z - 1)
    assert abs(z_e - 1) < 0.6  # 8 structures only: the energy factor is a rough estimate
    # the manifest holds the factors
    man = json.load(open(os.path.join(os.path.dirname(cu_ensemble.paths[0]), "ensemble.json")))
    assert man["calibration"]["forces"] == pytest.approx(cal["forces"])
    assert Ensemble.load(os.path.dirname(cu_ensemble.paths[0])).calibration["forces"] == pytest.approx(cal["forces"])


def test_cli_ensemble(cu_frames, tmp_path):
    from aceuq.cli.main import main

    data = tmp_path / "train.extxyz"
    ase.io.write(data, labelled(cu_frames[:20]), format="extxyz")
    out = tmp_path / "ens"
    rc = main(["ensemble", str(data), "-n", "3", "--bootstrap", "--basis", "small", "-o", str(out),
               "--holdout", "0.25", "--no-progress", "--seed", "3"])
    assert rc == 0
    man = json.load(open(out / "ensemble.json"))
    assert man["format"] == "aceuq-ensemble" and len(man["members"]) == 3
    assert man["fit"]["n_structures"] == 15 and man["calibration"]["fitted"]
    assert man["calibration"]["n_structures"] == 5
    assert all((out / m).exists() for m in man["members"])
    assert not [f for f in os.listdir(out) if f.startswith(".aceuq-")]
    ens = Ensemble.load(str(out))
    assert ens.evaluate(cu_frames[30]).forces_std.shape == (len(cu_frames[30]), 3)


def test_bad_ensembles(cu_ensemble, tmp_path, make_pot):
    with pytest.raises(InputError, match="no ensemble.json"):
        Ensemble.load(str(tmp_path))
    (tmp_path / "ensemble.json").write_text("{broken")
    with pytest.raises(InputError, match="not JSON"):
        Ensemble.load(str(tmp_path))
    (tmp_path / "ensemble.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="not an aceuq ensemble"):
        Ensemble.load(str(tmp_path))
    with pytest.raises(InputError, match="at least 2"):
        Ensemble.load(cu_ensemble.paths[:1])
    with pytest.raises(InputError, match="elements"):
        Ensemble.load([cu_ensemble.paths[0], make_pot("CuAl_sbessel")])
    with pytest.raises(InputError, match="neither a preset"):
        fit_ensemble(emt_training_set(["Cu"], n=3), 2, str(tmp_path / "x"), basis="huge")


def test_cli_ensemble_bad_training_data(cu_frames, tmp_path, capsys):
    """One clear line each: an element given that no training structure has (its functions would
    stay unfitted), and a structure without labels, named by file and frame."""
    from aceuq.cli.main import main

    data = tmp_path / "train.extxyz"
    frames = labelled(cu_frames[:4])
    ase.io.write(data, frames, format="extxyz")
    out = str(tmp_path / "ens")
    for given in (["--elements", "Cu", "Ni"], ["-e", "Cu Ni"]):  # as listed, or quoted as -e elsewhere
        assert main(["ensemble", str(data), "-n", "2", *given, "-o", out, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "element(s) Ni given but in no training structure" in err and "Traceback" not in err
    mixed = tmp_path / "mixed.extxyz"  # Cu and Al, fitted as Cu only: the training frame is named
    ase.io.write(mixed, labelled(emt_training_set(["Cu", "Al"], n=12, seed=1)), format="extxyz")
    assert main(["ensemble", str(mixed), "-n", "2", "-e", "Cu", "-o", out, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"structure file '{mixed}', frame 0: a training structure has Al, not among the elements given (Cu)" in err
    del frames[2].info["energy"]
    ase.io.write(data, frames, format="extxyz")
    assert main(["ensemble", str(data), "-n", "2", "-o", out, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"structure file '{data}', frame 2: a training structure has no energy" in err
    frames[2].info["energy"] = float("nan")
    frames[1].arrays["forces_ref"] = frames[1].arrays["forces"] = frames[1].arrays["forces"].copy()
    frames[1].arrays["forces"][3, 1] = np.inf
    for bad, message in ((frames[:2] + frames[3:], "frame 1: atom 3's force must be finite"),
                         (frames[2:], "frame 0: the energy must be a finite number of eV, got nan")):
        ase.io.write(data, bad, format="extxyz")
        assert main(["ensemble", str(data), "-n", "2", "-o", out, "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert f"structure file '{data}', {message}" in err and "Traceback" not in err
    assert not os.path.exists(out)  # a failed run leaves no (empty) output folder behind
    (tmp_path / "afile").write_text("")
    assert main(["ensemble", str(data), "-n", "2", "-o", str(tmp_path / "afile"), "--no-progress"]) == 1
    assert "afile': exists and is not a folder" in capsys.readouterr().err


def test_preset_members_repel_atoms_pushed_together(cu_ensemble):
    """Below the inner cutoff (0.5 Å) the B functions vanish; the presets' core repulsion (as
    pacemaker's input templates) must take over, or two atoms pushed onto each other would cost
    nothing: the energy rises by far more than any bond, and the force pushes them apart."""
    pot = aceuq.Potential(cu_ensemble.paths[0])
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    e_eq = pot.evaluate(atoms).energy
    for d in (0.4, 0.2):
        a = atoms.copy()
        a.positions[1] = a.positions[0] + d * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
        r = pot.evaluate(a)
        assert r.energy - e_eq > 1e3, d
        assert np.dot(r.forces[1], a.positions[1] - a.positions[0]) > 0, d


def test_failed_calibration_and_refits_leave_one_whole_ensemble(cu_frames, tmp_path):
    """The ensemble is written and calibrated beside its folder and moved in whole: calibration
    structures without force errors (perfect crystals: zero forces, which every member gets right)
    are refused and leave the folder's earlier ensemble as it was; a refit with fewer members
    leaves none of the earlier members behind."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    out = str(tmp_path / "ens")
    first = fit_ensemble(cu_frames[:12], 4, out, basis="small", bootstrap=True, seed=1)
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
    perfect = []
    for a0 in (3.58, 3.61, 3.64):
        atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat(2)
        atoms.calc = EMT()
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
        perfect.append(atoms)
    with pytest.raises(InputError, match=r"calibration structures: their force errors \(RMS .* eV/Å\) are within the resolution"):
        fit_ensemble(cu_frames[:12], 3, out, basis="small", bootstrap=True, seed=2, calibration_frames=perfect)
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before
    assert len(first) == 4
    again = fit_ensemble(cu_frames[:12], 2, out, basis="small", bootstrap=True, seed=3)
    assert sorted(os.listdir(out)) == ["ensemble.json", "member_000.yaml", "member_001.yaml"]
    assert len(again) == 2
    # an output folder that is a link onto another file system (/dev/shm where there is one): the
    # ensemble is staged inside it, so moving it in never crosses file systems
    import tempfile
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        link = tmp_path / "link"
        link.symlink_to(elsewhere)
        assert len(fit_ensemble(cu_frames[:12], 2, str(link), basis="small", bootstrap=True, seed=3)) == 2
        assert sorted(os.listdir(elsewhere)) == ["ensemble.json", "member_000.yaml", "member_001.yaml"]


def test_slab_design_matrix_and_fit(tmp_path):
    """Partly periodic cells (slabs) reach pyace as equivalent fully periodic ones."""
    from ase.build import fcc111
    from ase.calculators.emt import EMT

    from aceuq.ensemble import _fully_periodic, design_matrix, make_basis
    from aceuq.potential import Potential

    slabs = []
    for k in range(6):
        s = fcc111("Cu", size=(2, 2, 3), vacuum=2.0, a=3.61)  # gap 4 Å < cutoff: the open axis must be extended
        s.rattle(0.05, seed=k)
        s.calc = EMT()
        s.info["energy"] = s.get_potential_energy()
        s.arrays["forces_ref"] = s.get_forces()
        slabs.append(s)
    assert list(slabs[0].pbc) == [True, True, False]
    ens = fit_ensemble(emt_training_set(["Cu"], n=8) + slabs[:4], 2, str(tmp_path / "e"), seed=1)
    pot = Potential(ens.paths[0])
    for s in slabs[4:]:
        a, b = pot.evaluate(s), pot.evaluate(_fully_periodic(s, pot.cutoff))
        assert a.energy == pytest.approx(b.energy, abs=1e-10)
        assert np.allclose(a.forces, b.forces, atol=1e-10)
        r = ens.evaluate(s)
        assert np.sqrt(np.mean((r.forces - s.arrays["forces_ref"]) ** 2)) < 0.1
    bb = make_basis("small", ["Cu"], 5.0)
    dm = design_matrix(bb, slabs, {}, workers=2)
    assert np.all(np.abs(dm.X[: len(slabs)]).sum(axis=1) > 0)  # every structure's energy row was computed
    with pytest.raises(InputError, match="outside the basis"):
        design_matrix(bb, [bulk("Al", "fcc", a=4.05)], {})


def test_cli_evaluate_with_ensemble(cu_frames, cu_ensemble, tmp_path):
    from aceuq.cli.main import main

    data = tmp_path / "in.extxyz"
    ase.io.write(data, _test_structures()[:2], format="extxyz")
    out = tmp_path / "out.extxyz"
    folder = os.path.dirname(cu_ensemble.paths[0])
    assert main(["evaluate", "--ensemble", folder, str(data), "-o", str(out), "--no-progress"]) == 0
    got = ase.io.read(out, ":")
    ens = Ensemble.load(folder)
    for a, g in zip(ase.io.read(data, ":"), got):
        r = ens.evaluate(a)
        assert g.info["energy_std"] == pytest.approx(r.energy_std, rel=1e-12)
        np.testing.assert_allclose(g.arrays["forces_std"], r.forces_std, atol=1e-7)
        np.testing.assert_allclose(g.arrays["force_uncertainty"], r.force_uncertainty, atol=1e-7)
        np.testing.assert_allclose(g.get_forces(), r.forces, atol=1e-7)
        assert r.stress_std is not None and np.abs(r.stress_std).max() > 0
        np.testing.assert_allclose(g.info["stress_std"], r.stress_std, rtol=1e-7, atol=1e-12)


def _pyace_linear_fit(basis_path, frames, e0, out):
    """pyace's own linear fit (LinearACEDataset + LinearACEFit, its default Ridge) of the basis of
    ``basis_path`` to frames with per-element reference energies e0 subtracted; saved to out."""
    import pandas as pd
    from pyace import ACEBBasisSet
    from pyace.linearacefit import LinearACEDataset, LinearACEFit

    shift = [sum(e0[s] for s in a.get_chemical_symbols()) for a in frames]
    df = pd.DataFrame({"ase_atoms": frames,
                       "energy_corrected": [a.info["energy"] - s for a, s in zip(frames, shift)],
                       "forces": [a.arrays["forces_ref"] for a in frames]})
    fit = LinearACEFit(train_dataset=LinearACEDataset(ACEBBasisSet(basis_path), df))
    fit.fit()
    fit.get_bbasis().save(out)
    return out


def test_member_without_resampling_is_pyace_linear_fit(cu_frames, tmp_path):
    """A member fitted on all training structures (no bootstrap, subsample 1) is pyace's linear fit
    of the same basis to the same data (same design matrix, same ridge model: alpha 1e-5, no
    intercept), so on held-out frames the two predict the same energies and forces up to the
    rounding of two identical ridge solves (seen: ~1e-12 eV/atom and eV/Å; 1e-9 leaves room for
    another BLAS, and is far below what another ridge alpha changes: 1e-2 moves them by ~1e-2)."""
    from pyace.asecalc import PyACECalculator

    train, held = cu_frames[:16], cu_frames[32:38]
    ens = fit_ensemble(train, 2, str(tmp_path / "plain"), basis="small", bootstrap=False, subsample=1.0, seed=0)
    assert ens.manifest["fit"]["member_structures"] == [list(range(16))] * 2
    # E0 by its definition: least squares of E over the atom counts (one element: mean energy per atom)
    e0 = {"Cu": sum(a.info["energy"] for a in train) / sum(len(a) for a in train)}
    assert ens.reference_energy["Cu"] == pytest.approx(e0["Cu"], rel=1e-12)
    ref_path = _pyace_linear_fit(ens.paths[0], train, e0, str(tmp_path / "pyace.yaml"))
    calc = PyACECalculator(ref_path)
    e_ours, e_ref, f_ours, f_ref, f_dft = [], [], [], [], []
    for atoms in held:
        r = ens.evaluate(atoms)
        a = atoms.copy()
        a.calc = calc
        e_ref.append((a.get_potential_energy() + e0["Cu"] * len(a)) / len(a))
        f_ref.append(a.get_forces())
        e_ours.append(r.energy / len(a))
        f_ours.append(r.forces)
        f_dft.append(atoms.arrays["forces_ref"])
        assert r.forces_std.max() < 1e-9  # identical members
    np.testing.assert_allclose(e_ours, e_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(f_ours), np.concatenate(f_ref), rtol=0, atol=1e-9)
    # and the fit is a fit: held-out force RMSE well below the force scale
    f_rmse = np.sqrt(np.mean((np.concatenate(f_ours) - np.concatenate(f_dft)) ** 2))
    assert f_rmse < 0.3 * np.sqrt(np.mean(np.concatenate(f_dft) ** 2))


def test_calibration_holds_exactly_on_the_calibration_frames(cu_frames, cu_ensemble):
    """The definition of the fitted calibration (module doc, README "Ensembles"), recomputed in numpy
    from the members' raw predictions on the calibration frames themselves: energies, one factor s
    with mean((ΔE/N)² / (s·σ_E/N)²) = 1; forces, per component σ_cal = sqrt((a·σ)² + b²), b = 1e-4
    eV/Å, with the per-atom isotropic σ_i = u_i/√3 (u_i the norm of the per-component member
    spreads): mean(|ΔF_i|² / ((a·u_i/√3)² + b²)) = 3 (three components per atom)."""
    cal = cu_ensemble.calibration
    frames = cu_frames[24:32]
    assert cal["fitted"] and cal["n_structures"] == len(frames)
    a, b, s = cal["forces"], cal["forces_floor"], cal["energy"]
    assert b == 1e-4
    ratio_f, ratio_e = [], []
    for atoms in frames:
        m = cu_ensemble.members_evaluate(atoms)  # reference energies added
        n = len(atoms)
        de = (m["energy"].mean() - atoms.info["energy"]) / n
        ratio_e.append(de ** 2 / (s * m["energy"].std() / n) ** 2)
        df = m["forces"].mean(axis=0) - atoms.arrays["forces_ref"]
        u = np.sqrt((m["forces"].std(axis=0) ** 2).sum(axis=1))
        ratio_f.append((df ** 2).sum(axis=1) / ((a * u / np.sqrt(3)) ** 2 + b ** 2))
        # the calibrated results are those σ
        r = cu_ensemble.evaluate(atoms)
        np.testing.assert_allclose(r.energy_std, s * m["energy"].std(), rtol=1e-12)
        np.testing.assert_allclose(r.forces_std, np.sqrt((a * m["forces"].std(axis=0)) ** 2 + b ** 2), rtol=1e-12)
        assert r.energy == pytest.approx(m["energy"].mean(), abs=1e-9)
    assert np.mean(ratio_e) == pytest.approx(1.0, rel=1e-8)
    assert np.mean(np.concatenate(ratio_f)) == pytest.approx(3.0, rel=1e-8)


def test_reference_energy_shift_per_element_is_absorbed_by_e0(tmp_path):
    """Adding a constant per atom of each element to the reference energies (Cu -3.5 eV, Al -2.0 eV)
    is a change of energy zero: E0 must shift by exactly those constants, element by element, and
    nothing else may change (coefficients, forces, energies minus Σ E0)."""
    shift = {"Cu": -3.5, "Al": -2.0}
    frames = emt_training_set(["Cu", "Al"], n=10, seed=5)
    counts = np.array([[a.get_chemical_symbols().count(el) for el in ("Cu", "Al")] for a in frames])
    assert len({tuple(c) for c in counts}) > 2          # compositions vary: E0 of each element is defined
    shifted = []
    for a in frames:
        b = a.copy()
        b.info["energy"] = a.info["energy"] + sum(shift[s] for s in a.get_chemical_symbols())
        b.arrays["forces_ref"] = a.arrays["forces_ref"]
        shifted.append(b)
    kw = dict(basis="small", bootstrap=True, seed=4, cutoff=5.0)
    ens = fit_ensemble(frames, 2, str(tmp_path / "plain"), **kw)
    ens_s = fit_ensemble(shifted, 2, str(tmp_path / "shifted"), **kw)
    for el in ("Cu", "Al"):
        assert ens_s.reference_energy[el] - ens.reference_energy[el] == pytest.approx(shift[el], abs=1e-8), el
    # E0 by its definition (least squares over the atom counts)
    e = np.array([a.info["energy"] for a in frames])
    lsq = np.linalg.lstsq(counts.astype(float), e, rcond=None)[0]
    assert [ens.reference_energy["Cu"], ens.reference_energy["Al"]] == pytest.approx(lsq, rel=1e-10)
    for ma, mb in zip(ens.groups[0].members, ens_s.groups[0].members):
        for el in ("Cu", "Al"):
            np.testing.assert_allclose(ma[el], mb[el], rtol=1e-7, atol=1e-9 * np.abs(ma[el]).max())
    held = emt_training_set(["Cu", "Al"], n=2, seed=77)
    for atoms in held:
        r, rs = ens.evaluate(atoms), ens_s.evaluate(atoms)
        np.testing.assert_allclose(rs.forces, r.forces, atol=1e-8)
        assert rs.energy - r.energy == pytest.approx(sum(shift[s] for s in atoms.get_chemical_symbols()), abs=1e-6)


def test_reported_rmse_equal_direct_evaluation(cu_frames, cu_ensemble):
    """The RMSEs `aceuq ensemble` prints (training: from the design matrix; held out: from the
    calibration pass) equal the errors of the members' mean evaluated by the C++ core."""
    def rmse(frames):
        e, f = [], []
        for a in frames:
            r = cu_ensemble.evaluate(a)
            e.append((r.energy - a.get_potential_energy()) / len(a))
            f.append((r.forces - a.get_forces()).ravel())
        return np.sqrt(np.mean(np.square(e))), np.sqrt(np.mean(np.square(np.concatenate(f))))

    train = cu_ensemble.manifest["fit"]["train_rmse"]
    e, f = rmse(cu_frames[:24])
    assert e > 1e-5 and f > 1e-4  # a real fit, not a perfect one
    assert train["energy_per_atom"] == pytest.approx(e, rel=1e-6)
    assert train["forces"] == pytest.approx(f, rel=1e-6)
    cal = cu_ensemble.calibration
    e, f = rmse(cu_frames[24:32])
    assert cal["rmse_energy_per_atom"] == pytest.approx(e, rel=1e-9)
    assert cal["rmse_forces"] == pytest.approx(f, rel=1e-9)


def test_bootstrap_draws_every_structure_uniformly():
    """A bootstrap sample draws n of n with replacement, each structure with probability 1/n:
    over 200 members of 5 structures every index (the last one too) appears, and the pooled
    counts pass a chi-square test against the uniform multinomial expectation."""
    from scipy import stats

    n, members = 5, 200
    s = resample(n, members, True, seed=0)
    assert all(len(x) == n and x.min() >= 0 and x.max() < n for x in s)
    counts = np.bincount(np.concatenate(s), minlength=n)
    assert counts.size == n and np.all(counts > 0)
    assert stats.chisquare(counts, np.full(n, n * members / n)).pvalue > 1e-3


def test_energy_weight_scales_the_energy_rows_only():
    """rows(): the energy rows (one per chosen structure, repeats kept) are multiplied by
    energy_weight, the force rows (3 per atom) are not; fit_members then solves the ridge
    problem min w²|X_e c - y_e|² + |X_f c - y_f|² + α|c|², checked against its normal equations."""
    from aceuq.ensemble import DesignMatrix, fit_members

    rng = np.random.default_rng(3)
    n_atoms = np.array([2, 1, 3])
    n_func = 4
    n_rows = len(n_atoms) + 3 * n_atoms.sum()
    X, y = rng.normal(size=(n_rows, n_func)), rng.normal(size=n_rows)
    dm = DesignMatrix(X, y, n_atoms, n_atoms[:, None].copy(), ["Cu"])
    structures = np.array([0, 2, 2])
    w = 3.0
    # hand-built stack: energy rows are rows 0..2; the force rows of structure s start after
    # them at 3 * (atoms of the structures before s)
    first = len(n_atoms) + 3 * np.r_[0, np.cumsum(n_atoms)[:-1]]
    f_rows = np.concatenate([np.arange(first[s], first[s] + 3 * n_atoms[s]) for s in structures])
    Xe, ye, Xf, yf = X[structures], y[structures], X[f_rows], y[f_rows]
    Xr, yr = dm.rows(structures, energy_weight=w)
    assert np.array_equal(Xr, np.vstack([w * Xe, Xf]))
    assert np.array_equal(yr, np.concatenate([w * ye, yf]))
    alpha = 0.1
    A = w ** 2 * Xe.T @ Xe + Xf.T @ Xf + alpha * np.eye(n_func)
    c = np.linalg.solve(A, w ** 2 * Xe.T @ ye + Xf.T @ yf)
    (coef,) = fit_members(dm, [structures], alpha=alpha, energy_weight=w)
    assert np.allclose(coef, c, rtol=1e-8, atol=1e-10)


def test_wire_design_matrix_equals_the_wire_in_a_large_periodic_box():
    """A wire (periodic along z only, zero x and y cell vectors) reaches pyace as a fully periodic
    cell whose open vectors keep every image beyond the cutoff: its design-matrix rows equal those
    of the same wire in a box 40 Å wide."""
    from ase import Atoms

    from aceuq.ensemble import _fully_periodic, design_matrix, make_basis

    rng = np.random.default_rng(3)
    pos = np.array([[0, 0, 0], [1.3, 0.4, 1.8], [0.2, 1.2, 3.6], [1.1, 1.0, 5.4]]) + rng.normal(0, 0.05, (4, 3))
    wire = Atoms("Cu4", positions=pos, cell=[[0, 0, 0], [0, 0, 0], [0, 0, 7.2]], pbc=[False, False, True])
    wire.info["energy"] = -1.0
    wire.arrays["forces"] = np.zeros((4, 3))
    full = _fully_periodic(wire, 5.0)
    assert np.all(np.isfinite(full.cell.array)) and full.pbc.all()
    boxed = wire.copy()
    boxed.set_cell([40, 40, 7.2], scale_atoms=False)
    boxed.pbc = True
    bb = make_basis("small", ["Cu"], 5.0)
    a, b = design_matrix(bb, [wire], {}, workers=1), design_matrix(bb, [boxed], {}, workers=1)
    assert np.abs(a.X).sum() > 0
    np.testing.assert_allclose(a.X, b.X, rtol=1e-12, atol=1e-12)


def test_training_structures_the_design_matrix_cannot_take_are_named(cu_frames, tmp_path):
    """A frame without atoms, or with two atoms at one place, is refused with its name, before
    pyace sees it (in-process, --workers 1, pyace's own error escaped as a traceback)."""
    from ase import Atoms

    from aceuq.ensemble import design_matrix, make_basis

    bb = make_basis("small", ["Cu"], 5.0)
    twice = cu_frames[0].copy()
    twice.positions[1] = twice.positions[0]
    empty = Atoms(cell=[10, 10, 10], pbc=True)
    with pytest.raises(InputError, match=r"structure 1: atoms 0 and 1 are 0 Å apart \(on top of each other\)"):
        design_matrix(bb, [cu_frames[1], twice], {}, workers=1)
    with pytest.raises(InputError, match="structure 1: a training structure without atoms"):
        design_matrix(bb, [cu_frames[1], empty], {}, workers=1)


def test_default_cutoff_is_the_datas_not_the_orders():
    """2.2x the median nearest-neighbour distance over all atoms, within [4, 7] A: the same for
    the structures in any order (a first-50 sample gave 4.7 to 5.6 A for one dataset), and as
    ASE's neighbour list measures it."""
    from ase.neighborlist import neighbor_list

    from aceuq.ensemble import default_cutoff

    rng = np.random.default_rng(0)
    dense = [bulk("Cu", "fcc", a=3.3, cubic=True).repeat(2) for _ in range(60)]
    loose = [bulk("Cu", "fcc", a=4.0, cubic=True).repeat(2) for _ in range(60)]
    for a in dense + loose:
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
    frames = dense + loose
    nearest = []
    for a in frames:
        i, d = neighbor_list("id", a, 4.0)
        m = np.full(len(a), np.inf)
        np.minimum.at(m, i, d)
        nearest.append(m)
    expected = float(np.clip(round(2.2 * float(np.median(np.concatenate(nearest))), 1), 4.0, 7.0))
    assert default_cutoff(frames) == default_cutoff(loose + dense) == default_cutoff(frames[::-1]) == expected
    assert default_cutoff(dense) < expected < default_cutoff(loose)


def test_basis_configs_the_fit_cannot_use_are_refused(cu_frames, tmp_path):
    """A basis config whose elements have different function sets (pyace's design matrix lays out
    their force rows wrongly), or that names elements other than the fit's, is refused before
    any fitting."""
    bonds = ("bonds:\n  ALL: {radbase: ChebExpCos, radparameters: [5.25], rcut: 5.0, dcut: 0.01, r_in: 1.0, "
             "delta_in: 0.5, inner_cutoff_type: distance, core-repulsion: [500.0, 3.0]}\n")
    per_element = tmp_path / "per_element.yaml"
    per_element.write_text(bonds + "functions:\n  ALL: {nradmax_by_orders: [5, 3, 2], lmax_by_orders: [0, 2, 1]}\n"
                           "  Cu: {nradmax_by_orders: [6, 3, 2, 1], lmax_by_orders: [0, 2, 2, 1]}\n")
    cual = emt_training_set(["Cu", "Al"], n=4, seed=5)
    with pytest.raises(InputError, match=r"different numbers of functions \(Al \d+, Cu \d+\)"):
        fit_ensemble(cual, 2, str(tmp_path / "a"), basis=str(per_element))
    named = tmp_path / "named.yaml"
    named.write_text("elements: [Cu, Al]\n" + bonds
                     + "functions:\n  ALL: {nradmax_by_orders: [5, 3, 2], lmax_by_orders: [0, 2, 1]}\n")
    with pytest.raises(InputError, match=r"its elements \(\['Cu', 'Al'\]\) are not those of the fit \(Cu"):
        fit_ensemble(cu_frames[:6], 2, str(tmp_path / "b"), basis=str(named))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_sigterm_while_calibrating_leaves_no_staging_folder(cu_frames, tmp_path, monkeypatch):
    """SIGTERM (a batch system's time limit) during the calibration ends the fit as an exception
    does: the staging folder goes, and so does the output folder the fit made."""
    import signal

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Ensemble, "calibrate", terminated)
    out = tmp_path / "ens"
    with pytest.raises(SystemExit):
        fit_ensemble(cu_frames[:12], 2, str(out), seed=1, calibration_frames=cu_frames[12:16])
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_rows_with_reference_energies_equal_a_matrix_built_with_them(cu_frames):
    """DesignMatrix.rows(reference_energy=e0), as the study fits every member, subtracts each
    structure's reference energy per atom from its energy row: the same targets as pyace's design
    matrix built with e0; the force rows are unchanged."""
    from aceuq.ensemble import design_matrix, make_basis, reference_energies

    frames = emt_training_set(["Cu", "Al"], n=6, seed=5)
    bb = make_basis("small", ["Al", "Cu"], 5.0)
    e0 = reference_energies(frames, list(bb.elements_name))
    assert len(set(e0.values())) == 2 and all(e0.values())
    plain, shifted = design_matrix(bb, frames, {}, workers=1), design_matrix(bb, frames, e0, workers=1)
    picks = np.array([0, 2, 2, 5])
    X, y = plain.rows(picks, reference_energy=e0)
    X_ref, y_ref = shifted.rows(picks)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(X, X_ref)


def test_ill_conditioned_member_fits_give_one_warning(cu_frames):
    """scikit-learn warns once per ill-conditioned ridge fit (a study fits dozens): one warning
    counts them, and the coefficients are those of the plain fit."""
    import warnings

    from sklearn.linear_model import Ridge

    from aceuq.ensemble import design_matrix, fit_members, make_basis, reference_energies, resample

    frames = cu_frames[:12]
    e0 = reference_energies(frames, ["Cu"])
    dm = design_matrix(make_basis("small", ["Cu"], 5.0), frames, e0, workers=1)
    samples = resample(len(frames), 3, True, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coefs = fit_members(dm, samples, alpha=1e-12)
    assert [str(w.message)[:80] for w in caught] == [
        "ridge fit: the normal equations of 3 of 3 members were ill-conditioned (scikit-l"]
    X, y = dm.rows(samples[1], 1.0, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(coefs[1], Ridge(alpha=1e-12, fit_intercept=False).fit(X, y).coef_)
