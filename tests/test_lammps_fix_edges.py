"""fix aceuq/extrapolation and pair_style aceuq at their edges: thresholds exceeded strictly, ties,
empty groups, cut-outs at exactly R, the pbc and cluster columns of frames, γ graded only when
asked, refused arguments, hybrid pair styles, files that are pair_coeff's, the memory reported."""
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from aceuq import lammps as aceuq_lammps
from aceuq.activeset import ActiveSet
from lmp_helpers import cual_box_with_asi, create_system, random_casi, reference_gamma, set_aceuq, to_lammps_frame
from structures import rattled_bulk


@pytest.fixture(scope="module")
def setup(make_pot, tmp_path_factory):
    return cual_box_with_asi(make_pot, str(tmp_path_factory.mktemp("xasi")))


def lammps_with(setup, atoms=None, active_set=True, elements=("Al", "Cu")):
    path, pot, asi, a = setup
    lmp = aceuq_lammps.make_lammps()
    create_system(lmp, atoms if atoms is not None else a, list(elements))
    set_aceuq(lmp, path, list(elements), asi if active_set else None)
    return lmp


def exact_gamma(setup):
    """γ per atom id exactly as the plugin computes it (fix pair)."""
    lmp = lammps_with(setup)
    try:
        lmp.commands_string("fix g all pair 1 aceuq gamma 1\nrun 0")
        return np.array(lmp.gather("f_g", 1, 1)[: len(setup[3])])
    finally:
        lmp.close()


def test_gamma_is_graded_only_on_the_checked_steps(setup, tmp_path):
    """README: 'γ is computed only on steps where a fix asks for it'. With N = 5 the steps 1-4
    are not graded: grading time does not grow, and fix pair ... gamma 0 still reads step 0's γ."""
    path, pot, asi, atoms = setup
    lmp = lammps_with(setup)
    try:
        lmp.commands_string(f"""
            velocity all create 600 1 loop geom
            fix nve all nve
            timestep 0.002
            fix g all pair 1 aceuq gamma 0
            fix x all aceuq/extrapolation 5 lower 1e9 upper 1e12 file {tmp_path / 'o.extxyz'}
            run 0""")
        g0 = lmp.extract_pair("gamma_seconds")
        lmp.command("run 4")
        assert lmp.extract_pair("gamma_seconds") == g0
        ids = np.array(lmp.numpy.extract_atom("id"))[: len(atoms)]
        got = np.array(lmp.numpy.extract_fix("g", 1, 1))[: len(atoms)]
    finally:
        lmp.close()
    np.testing.assert_allclose(got, reference_gamma(pot, asi, atoms)[ids - 1], rtol=1e-8)


def test_lower_is_exceeded_only_strictly(setup, tmp_path):
    """'configurations whose max γ exceeds lower are written': lower equal to the largest γ
    writes nothing and counts no atom; lower equal to the second largest counts one."""
    g = np.sort(exact_gamma(setup))
    for lower, above in ((g[-1], 0), (g[-2], 1)):
        out = tmp_path / "eq.extxyz"
        lmp = lammps_with(setup)
        try:
            lmp.commands_string(f"fix x all aceuq/extrapolation 1 lower {float(lower)!r} upper 1e12 file {out}\nrun 0")
            vec = [lmp.extract_fix("x", 0, 1, k) for k in range(4)]
        finally:
            lmp.close()
        assert vec[1] == above, (lower, vec)
        assert vec[2] == (1 if above else 0) and (out.read_text() == "") == (above == 0)


def test_upper_is_exceeded_only_strictly(setup, tmp_path):
    """upper equal to the largest γ does not stop the run."""
    g = exact_gamma(setup)
    lmp = lammps_with(setup)
    try:
        lmp.commands_string(f"velocity all create 10 1 loop geom\nfix nve all nve\ntimestep 0.0001\n"
                            f"fix x all aceuq/extrapolation 5 lower 1e-6 upper {float(g.max())!r} "
                            f"file {tmp_path / 'u.extxyz'}\nrun 5")
        assert lmp.extract_global("ntimestep") == 5
    finally:
        lmp.close()


def test_tied_gamma_names_the_lowest_id(setup, tmp_path):
    """A dimer: both atoms have the same γ to the bit; the stop names the atom of lowest ID."""
    from ase import Atoms
    path, pot, asi, _ = setup
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]], pbc=False)
    log = tmp_path / "log.lammps"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, dimer, ["Cu"])
        set_aceuq(lmp, path, ["Cu"], asi)
        lmp.commands_string("fix g all pair 1 aceuq gamma 1\nrun 0")
        g = np.array(lmp.gather("f_g", 1, 1)[:2])
        assert g[0] == g[1] > 0  # an exact tie
        lmp.commands_string(f"unfix g\nreset_timestep 1\nlog {log}\n"
                            f"fix x all aceuq/extrapolation 1 lower {float(0.5 * g[0])!r} upper {float(0.9 * g[0])!r} "
                            f"file {tmp_path / 't.extxyz'}\nrun 0")
    finally:
        lmp.close()
    line = next(ln for ln in log.read_text().splitlines() if "> upper" in ln)
    assert "atom 1 has gamma" in line, line


def test_empty_group_reports_max_gamma_zero(setup, tmp_path):
    """A fix on an empty group: max γ is 0 (no atom graded), not -1."""
    lmp = lammps_with(setup)
    try:
        lmp.commands_string(f"group none empty\n"
                            f"fix x none aceuq/extrapolation 1 lower 1e-6 upper 1e9 file {tmp_path / 'e.extxyz'}\n"
                            f"run 0")
        assert lmp.extract_fix("x", 0, 1, 0) == 0.0
    finally:
        lmp.close()


def test_cutout_holds_atoms_at_exactly_r(setup, tmp_path):
    """'one open cluster of radius R': an fcc crystal of a = 4 Å and R = 4 Å, second neighbours at
    exactly R (to the bit) are in every cut-out: 1 + 12 + 6 atoms."""
    from ase.build import bulk
    atoms = bulk("Cu", "fcc", a=4.0, cubic=True).repeat((3, 3, 3))
    out = tmp_path / "c.extxyz"
    lmp = lammps_with(setup, atoms, elements=("Cu",))
    try:
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e-12 upper 1e12 file {out} cutout 4.0")
        lmp.command("run 0")
    finally:
        lmp.close()
    cuts = read(out, ":")
    assert len(cuts) == len(atoms)
    assert {len(c) for c in cuts} == {19}


def test_frame_pbc_follows_the_box(setup, tmp_path):
    """A frame of a box open along x says pbc="F T T"."""
    out = tmp_path / "p.extxyz"
    lmp = lammps_with(setup)
    try:
        lmp.commands_string(f"change_box all boundary s p p\n"
                            f"fix x all aceuq/extrapolation 1 lower 1e-6 upper 1e12 file {out}\nrun 0")
    finally:
        lmp.close()
    (f,) = read(out, ":")
    assert list(f.pbc) == [False, True, True]


def test_frames_carry_each_atom_s_cluster(setup, tmp_path):
    """With a .casi the frame's per-atom cluster is the Python grader's."""
    path, pot, _, atoms = setup
    casi = random_casi(tmp_path / "x.casi", pot, 17)
    out = tmp_path / "k.extxyz"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"])
        set_aceuq(lmp, path, ["Al", "Cu"], casi)
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e-9 upper 1e12 file {out}")
        lmp.command("run 0")
    finally:
        lmp.close()
    (f,) = read(out, ":")
    _, cluster = ActiveSet.load(casi, pot).gamma(atoms)
    assert len(set(cluster)) > 1
    np.testing.assert_array_equal(f.arrays["cluster"][np.argsort(f.arrays["id"])], cluster)


def test_cutout_header_max_gamma_is_the_step_s(setup, tmp_path):
    """Each cut-out's max_gamma is the step's largest γ (as in frames), its centre_gamma the
    centre's."""
    path, pot, asi, atoms = setup
    gamma = reference_gamma(pot, asi, atoms)
    lower = float(0.5 * (np.sort(gamma)[-4] + np.sort(gamma)[-5]))
    out = tmp_path / "h.extxyz"
    lmp = lammps_with(setup)
    try:
        lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e12 file {out} cutout 3.4")
        lmp.command("run 0")
    finally:
        lmp.close()
    cuts = read(out, ":")
    assert len(cuts) == 4
    for c in cuts:
        assert c.info["max_gamma"] == pytest.approx(gamma.max(), rel=1e-8)


def _fix_error(setup, tmp_path, args):
    """The fix command in a fresh process (a crash must not end the test session): its error text, '' if none."""
    path, pot, asi, atoms = setup
    from lmp_helpers import save_structure
    save_structure(tmp_path / "s.npz", atoms)
    code = f"""
import sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__import__('lmp_helpers').__file__))!r})
from aceuq.lammps import make_lammps
from lmp_helpers import create_system, load_structure, set_aceuq
lmp = make_lammps()
create_system(lmp, load_structure({str(tmp_path / 's.npz')!r}), ["Al", "Cu"])
set_aceuq(lmp, {path!r}, ["Al", "Cu"], {asi!r})
try:
    lmp.command("fix x all aceuq/extrapolation {args} file {tmp_path / 'f.extxyz'}")
    lmp.command("run 2")
    print("NO ERROR")
except Exception as e:
    print("ERROR", e)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


def test_nonpositive_n_and_cutout_are_refused(setup, tmp_path):
    """fix ... N <= 0 and cutout <= 0 are errors naming the rule."""
    rc, text = _fix_error(setup, tmp_path, "0 lower 1 upper 2")
    assert rc == 0 and "N must be > 0" in text, (rc, text)
    rc, text = _fix_error(setup, tmp_path, "1 lower 1 upper 2 cutout -1")
    assert rc == 0 and "cutout radius must be > 0" in text, (rc, text)


def test_cutout_below_cutoff_warned_with_one_atom_type(setup, tmp_path):
    """The cut-out radius is checked against the cutoff also when one atom type is mapped."""
    big = to_lammps_frame(rattled_bulk(["Cu"], seed=2).repeat((2, 2, 2)))
    log = tmp_path / "w.log"
    lmp = lammps_with(setup, big, elements=("Cu",))
    try:
        lmp.command(f"log {log}")
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e9 upper 1e12 file {tmp_path / 'w.extxyz'} cutout 3.0")
        lmp.command("run 0")
    finally:
        lmp.close()
    assert "cutout radius 3 is below the potential's cutoff" in log.read_text()


def test_plain_hybrid_keeps_the_other_style_s_type_pairs(setup, tmp_path):
    """pair_style hybrid (not overlay): pair_coeff * * aceuq ... Cu NULL claims only the pairs of
    mapped types, so the type pairs given to lj/cut before stay lj/cut's: the energy does not
    depend on the order of the two pair_coeff lines."""
    path, pot, asi, _ = setup
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21))
    energies = []
    for order in ("lj_first", "aceuq_first"):
        lmp = aceuq_lammps.make_lammps()
        try:
            create_system(lmp, atoms, ["Cu", "Al"])
            lmp.command("pair_style hybrid aceuq lj/cut 5.0")
            lines = [f"pair_coeff * * aceuq {path} Cu NULL", "pair_coeff * 2 lj/cut 0.1 2.3"]
            for line in (lines[::-1] if order == "lj_first" else lines):
                lmp.command(line)
            lmp.command("run 0")
            energies.append(lmp.get_thermo("pe"))
        finally:
            lmp.close()
    assert energies[0] == pytest.approx(energies[1], rel=1e-12), energies


def test_a_stopped_minimization_leaves_no_gamma_request_behind(setup, tmp_path):
    """A minimization stopped at its start (γ above U) evaluates that configuration once more;
    that evaluation is not graded, and no request is left standing: once the fix is removed, a
    run grades nothing."""
    g = exact_gamma(setup)
    lmp = lammps_with(setup)
    try:
        lmp.commands_string(f"fix x all aceuq/extrapolation 1 lower {float(0.5 * g.max())!r} "
                            f"upper {float(0.9 * g.max())!r} file {tmp_path / 'm.extxyz'}\nminimize 0 0 10 100")
        assert lmp.extract_global("ntimestep") == 0
        g0 = lmp.extract_pair("gamma_seconds")
        lmp.commands_string("unfix x\nrun 3")
        assert lmp.extract_pair("gamma_seconds") == g0
    finally:
        lmp.close()


def test_frames_file_naming_an_input_of_pair_coeff_is_refused(setup, tmp_path):
    """`file` naming the active set (or the potential) pair_coeff read would replace it with
    frames: error->all, the file left as it was."""
    import shutil

    path, pot, asi, atoms = setup
    mine = shutil.copy(asi, tmp_path / "mine.asi")
    before = open(mine, "rb").read()
    for target, what in ((mine, "active set"), (path, "potential")):
        lmp = aceuq_lammps.make_lammps()
        try:
            create_system(lmp, atoms, ["Al", "Cu"])
            set_aceuq(lmp, path, ["Al", "Cu"], str(mine))
            lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e-9 upper 1e12 file {target}")
            with pytest.raises(Exception, match=f"is the {what} pair_coeff read"):
                lmp.command("run 0")
        finally:
            lmp.close()
    assert open(mine, "rb").read() == before
    # relative names, then `shell cd`: pair_coeff's files are compared where they are, not by name
    (tmp_path / "sub").mkdir()
    here = os.getcwd()
    os.chdir(tmp_path)
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"])
        set_aceuq(lmp, path, ["Al", "Cu"], "mine.asi")
        lmp.commands_string("fix x all aceuq/extrapolation 1 lower 1e-9 upper 1e12 file mine.asi\nshell cd sub")
        with pytest.raises(Exception, match="is the active set pair_coeff read"):
            lmp.command("run 0")
    finally:
        lmp.close()
        os.chdir(here)
    assert open(mine, "rb").read() == before


def test_memory_reported_includes_the_projections_kept_for_grading(setup, tmp_path):
    """LAMMPS's 'Per MPI rank memory allocation' counts the projections pair_style aceuq keeps
    once γ has been asked for (n_projections doubles per graded atom)."""
    path, pot, asi, _ = setup
    atoms = to_lammps_frame(rattled_bulk(["Cu", "Al"], seed=21).repeat((4, 4, 2)))
    log = tmp_path / "m.log"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"])
        set_aceuq(lmp, path, ["Al", "Cu"], asi)
        lmp.commands_string(f"log {log}\nrun 0\nfix g all pair 1 aceuq gamma 1\nrun 0\nrun 0")
    finally:
        lmp.close()
    mbytes = [float(line.split("=")[1].split("|")[0]) for line in log.read_text().splitlines()
              if line.startswith("Per MPI rank memory allocation")]
    symbols = np.array(atoms.get_chemical_symbols())
    kept = sum(np.sum(symbols == el) * pot.n_projections(el) * 8 for el in ("Al", "Cu")) / 2**20
    # (and the per-atom γ and cluster arrays, ghosts included, allocated at the same time)
    assert kept <= mbytes[2] - mbytes[0] <= 1.5 * kept


def test_a_box_changing_fix_defined_first_is_warned_about(setup, tmp_path):
    """fix deform (or press/berendsen) before the fix moves box and atoms at the end of the step,
    before frames are written: warned about, naming it; defined after, nothing to warn."""
    for first in (True, False):
        log = tmp_path / f"d{first}.log"
        lmp = lammps_with(setup)
        try:
            deform = "fix d all deform 1 x erate 0.01 remap x"
            ours = f"fix x all aceuq/extrapolation 5 lower 1e9 upper 1e12 file {tmp_path / 'd.extxyz'}"
            lmp.commands_string(f"log {log}\n" + "\n".join([deform, ours] if first else [ours, deform]) + "\nrun 0")
        finally:
            lmp.close()
        warned = "fix d (deform) is defined before it and changes the box" in log.read_text()
        assert warned == first
