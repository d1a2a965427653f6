"""fix aceuq/extrapolation: dumps of extrapolating configurations and cut-outs, halting, MPI."""
import json
import os
import subprocess
from contextlib import contextmanager
import sys

import numpy as np
import pytest
from ase.io import read

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

import aceuq  # noqa: E402
from aceuq import lammps as aceuq_lammps  # noqa: E402
from lmp_helpers import (create_system, cual_box_with_asi, driver_env, reference_gamma, save_structure,  # noqa: E402
                         set_aceuq, to_lammps_frame)
from structures import rattled_bulk  # noqa: E402

try:
    aceuq_lammps.plugin_path()
except FileNotFoundError as exc:
    pytest.skip(str(exc), allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def setup(make_pot, tmp_path_factory):
    path, pot, asi, atoms = cual_box_with_asi(make_pot, str(tmp_path_factory.mktemp("xasi")))
    gamma = reference_gamma(pot, asi, atoms)
    g = np.sort(gamma)
    lower = float(0.5 * (g[-4] + g[-5]))  # four atoms above it, none close to it
    assert gamma.max() > lower
    return path, pot, asi, atoms, gamma, lower


@contextmanager
def system(setup, active_set=True, md=False, origin=(0.0, 0.0, 0.0)):
    """A LAMMPS with the setup's box (from `origin`) and pair_style aceuq (with its active set),
    optionally NVE."""
    path, pot, asi, atoms, gamma, lower = setup
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"], origin=origin)
        set_aceuq(lmp, path, ["Al", "Cu"], asi if active_set else None)
        if md:
            lmp.commands_string("velocity all create 300 1 loop geom\nfix nve all nve\ntimestep 0.001")
        yield lmp
    finally:
        lmp.close()


def run_fix(setup, tmp_path, fix_args, steps=0, origin=(0.0, 0.0, 0.0)):
    with system(setup, md=steps > 0, origin=origin) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation {fix_args}")
        lmp.command(f"run {steps}")
        return [lmp.extract_fix("x", 0, 1, k) for k in range(4)], lmp.extract_global("ntimestep")


@pytest.mark.parametrize("origin", [(0.0, 0.0, 0.0), (-3.3, 1.7, 0.4)])
def test_dump_frame_holds_gamma_of_every_atom(setup, tmp_path, origin):
    """The frame holds every atom with its γ, positions in the written cell (from LAMMPS's boxlo,
    which need not be the origin)."""
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "frames.extxyz"
    vec, _ = run_fix(setup, tmp_path, f"1 lower {lower} upper 1e9 file {out}", origin=origin)
    assert vec[0] == pytest.approx(gamma.max(), rel=1e-8)
    assert vec[1] == np.sum(gamma > lower)
    assert vec[2] == 1 and vec[3] == 0
    frames = read(out, ":")
    assert len(frames) == 1
    f = frames[0]
    order = np.argsort(f.arrays["id"])
    np.testing.assert_allclose(f.arrays["gamma"][order], gamma, rtol=1e-8)
    assert [f.get_chemical_symbols()[i] for i in order] == atoms.get_chemical_symbols()
    frac = (f.positions[order] - atoms.positions) @ np.linalg.inv(atoms.cell.array)
    np.testing.assert_allclose(frac - np.round(frac), 0, atol=1e-7)  # same atoms, wrapped into the box
    np.testing.assert_allclose(f.cell.array, atoms.cell.array, atol=1e-6)
    assert f.info["max_gamma"] == pytest.approx(gamma.max(), rel=1e-8)
    # the frame is a valid structure: aceuq evaluates it like the original
    g = f.copy()
    g.calc = None
    assert pot.evaluate(g).energy == pytest.approx(pot.evaluate(atoms).energy, rel=1e-6)


def test_nothing_written_below_lower(setup, tmp_path):
    """The fix starts a new file, as a dump does: what an earlier run left there does not survive
    a run in which nothing extrapolates."""
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "none.extxyz"
    out.write_text("a frame of an earlier run\n")
    vec, _ = run_fix(setup, tmp_path, f"1 lower {gamma.max() * 2} upper 1e9 file {out}")
    assert vec[1] == 0 and vec[2] == 0
    assert out.read_text() == ""


def test_cutouts_around_each_extrapolating_atom(setup, tmp_path):
    from ase.geometry import get_distances

    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "cutouts.extxyz"
    radius = 3.4
    vec, _ = run_fix(setup, tmp_path, f"1 lower {lower} upper 1e9 file {out} cutout {radius}")
    centres = np.nonzero(gamma > lower)[0]
    frames = read(out, ":")
    assert len(frames) == len(centres) == vec[3]
    for c, f in zip(centres, frames):  # ordered by atom id
        assert f.info["centre_id"] == c + 1
        assert f.info["centre_gamma"] == pytest.approx(gamma[c], rel=1e-8)
        assert not f.pbc.any()
        _, d = get_distances(atoms.positions[c], atoms.positions, cell=atoms.cell, pbc=True)
        inside = np.nonzero(d[0] <= radius)[0]
        np.testing.assert_array_equal(np.sort(f.arrays["id"]), inside + 1)
        np.testing.assert_allclose(np.sort(np.linalg.norm(f.positions, axis=1)), np.sort(d[0][inside]), atol=1e-6)
        np.testing.assert_allclose(f.arrays["gamma"], gamma[f.arrays["id"] - 1], rtol=1e-8)


@pytest.mark.parametrize("boundary", ["p p p", "s p p"])
@pytest.mark.parametrize("radius", [2.9, 4.5])
def test_cutouts_in_a_large_tilted_box(setup, tmp_path, boundary, radius):
    """Cut-outs of a box many cut-out radii wide, tilted (the atoms near a centre are looked for in
    cells of the box, not among all atoms): every atom within R, by the shortest image where
    periodic, around every centre, as a search over all atoms and images finds them (R from the
    first neighbour shell to beyond the third, so that cells narrower than R would lose atoms)."""
    from ase.geometry import get_distances

    path, pot, asi, _, _, _ = setup
    atoms = rattled_bulk(["Cu", "Al"], seed=5).repeat((3, 2, 2))
    atoms.rattle(0.05, seed=6)  # no two atoms alike, so no γ ties at the threshold
    cell = atoms.cell.array.copy()
    cell[1] += 0.45 * cell[0]
    cell[2] += 0.3 * cell[0] - 0.2 * cell[1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms = to_lammps_frame(atoms)
    if boundary == "s p p":  # open along x (LAMMPS's first cell vector), atoms 4 Å from the faces
        atoms.center(vacuum=4.0, axis=0)
    graded = atoms.copy()
    graded.pbc = [b == "p" for b in boundary.split()]
    gamma = reference_gamma(pot, asi, graded)
    g = np.sort(gamma)
    lower = float(0.5 * (g[-40] + g[-41]))
    out = tmp_path / "cut.extxyz"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"])
        lmp.command(f"change_box all boundary {boundary}")
        set_aceuq(lmp, path, ["Al", "Cu"], asi)
        lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e9 file {out} cutout {radius}")
        lmp.command("run 0")
    finally:
        lmp.close()
    centres = np.nonzero(gamma > lower)[0]
    frames = read(out, ":")
    assert [f.info["centre_id"] for f in frames] == list(centres + 1) and len(centres) == 40
    for c, f in zip(centres, frames):
        _, d = get_distances(graded.positions[c], graded.positions, cell=graded.cell, pbc=graded.pbc)
        np.testing.assert_array_equal(np.sort(f.arrays["id"]), np.nonzero(d[0] <= radius)[0] + 1)


@pytest.mark.parametrize("boundary", ["p p p", "s s p"])
def test_cutouts_while_atoms_are_outside_the_box(setup, tmp_path, boundary):
    """Between two neighbour-list builds atoms move out of the box (LAMMPS wraps them only when
    it rebuilds): the cut-outs of such steps still hold every atom within R of the centre, by the
    shortest image along periodic axes, as a search over the stored coordinates finds them."""
    path, pot, asi, _, _, _ = setup
    atoms = rattled_bulk(["Cu", "Al"], seed=5).repeat((3, 2, 2))
    atoms.set_cell(np.diag(atoms.cell.lengths()), scale_atoms=True)  # orthogonal: images along axes
    atoms = to_lammps_frame(atoms)
    radius, out, dump = 3.0, tmp_path / "cut.extxyz", tmp_path / "x.dump"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, atoms, ["Al", "Cu"])
        lmp.command(f"change_box all boundary {boundary}")
        set_aceuq(lmp, path, ["Al", "Cu"], asi)
        lmp.commands_string(f"""
            neigh_modify every 20 delay 0 check no
            velocity all create 4000 3 loop geom
            fix nve all nve
            timestep 0.004
            dump d all custom 1 {dump} id x y z
            dump_modify d sort id format float %.17g
            fix x all aceuq/extrapolation 1 lower 1e-9 upper 1e9 file {out} cutout {radius}
            run 19
        """)
    finally:
        lmp.close()
    stored = {}  # step -> (box bounds [3][2], coordinates by id as LAMMPS holds them)
    lines = dump.read_text().splitlines()
    i = 0
    while i < len(lines):
        n = int(lines[i + 3])
        bounds = np.array([lines[i + 5 + k].split()[:2] for k in range(3)], float)
        stored[int(lines[i + 1])] = (bounds, np.array([ln.split()[1:] for ln in lines[i + 9:i + 9 + n]], float))
        i += 9 + n
    periodic = np.array([b == "p" for b in boundary.split()])
    outside = sum(int(((x < b[:, 0]) | (x > b[:, 1])).any(axis=1).sum()) for b, x in stored.values())
    assert outside > 100  # the case this test is about
    frames = read(out, ":")
    assert {f.info["step"] for f in frames} == set(range(20))
    for f in frames:
        bounds, x = stored[f.info["step"]]
        length = bounds[:, 1] - bounds[:, 0]
        d = x - x[f.info["centre_id"] - 1]
        d[:, periodic] -= np.round(d[:, periodic] / length[periodic]) * length[periodic]
        np.testing.assert_array_equal(np.sort(f.arrays["id"]), np.nonzero(np.linalg.norm(d, axis=1) <= radius)[0] + 1)


def test_a_group_decides_when_frames_and_cutouts_hold_every_atom(setup, tmp_path):
    """The fix's group selects the atoms whose gamma triggers (and the cut-out centres); what is
    written is the real configuration: every atom, or every atom within R of a centre."""
    from ase.geometry import get_distances

    path, pot, asi, atoms, gamma, lower = setup
    al = np.array(atoms.get_chemical_symbols()) == "Al"  # type 1
    assert (gamma[al] > lower).any() and (gamma[~al] > lower).any()
    frames_out, cut_out, radius = tmp_path / "g.extxyz", tmp_path / "gc.extxyz", 3.4
    with system(setup) as lmp:
        lmp.commands_string(f"""
            group al type 1
            fix f al aceuq/extrapolation 1 lower {lower} upper 1e9 file {frames_out}
            fix c al aceuq/extrapolation 1 lower {lower} upper 1e9 file {cut_out} cutout {radius}
            run 0
        """)
        above = lmp.extract_fix("f", 0, 1, 1)
    assert above == int((gamma[al] > lower).sum())
    (frame,) = read(frames_out, ":")
    assert len(frame) == len(atoms)
    np.testing.assert_array_equal(frame.arrays["type"], np.where(al, 1, 2)[frame.arrays["id"] - 1])
    assert frame.info["max_gamma"] == pytest.approx(gamma[al].max(), rel=1e-8)
    centres = np.nonzero(al & (gamma > lower))[0]
    cuts = read(cut_out, ":")
    assert [f.info["centre_id"] for f in cuts] == list(centres + 1)
    for c, f in zip(centres, cuts):
        _, d = get_distances(atoms.positions[c], atoms.positions, cell=atoms.cell, pbc=True)
        np.testing.assert_array_equal(np.sort(f.arrays["id"]), np.nonzero(d[0] <= radius)[0] + 1)


def test_runs_in_a_row_check_each_step_once(setup, tmp_path):
    """Run lengths that are multiples of N: the step where one run ends and the next starts is
    written once, as a dump writes it."""
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "runs.extxyz"
    with system(setup, md=True) as lmp:
        lmp.commands_string(f"""
            fix x all aceuq/extrapolation 5 lower 1e-6 upper 1e9 file {out}
            run 10
            run 10
            run 0
        """)
        written = lmp.extract_fix("x", 0, 1, 2)
    steps = [f.info["step"] for f in read(out, ":")]
    assert steps == [0, 5, 10, 15, 20] and written == 5


def test_runs_not_multiples_of_n_check_only_multiples_of_n(setup, tmp_path):
    """Runs of 7 and 8 steps with N = 5: frames at steps 0, 5, 10 and 15, the steps a dump every 5
    writes; not where a run happens to start (7), whose γ no check asked for."""
    path, pot, asi, atoms, gamma, lower = setup
    out, dump = tmp_path / "runs.extxyz", tmp_path / "d.lammpstrj"
    with system(setup, md=True) as lmp:
        lmp.commands_string(f"""
            fix x all aceuq/extrapolation 5 lower 1e-6 upper 1e9 file {out}
            dump d all atom 5 {dump}
            run 7
            run 8
        """)
    steps = [f.info["step"] for f in read(out, ":")]
    dumped = [int(lines.split()[0]) for lines in dump.read_text().split("ITEM: TIMESTEP\n")[1:]]
    assert steps == dumped == [0, 5, 10, 15]


def test_cutout_radius_limits(setup, tmp_path):
    """A cut-out radius beyond half the periodic box is refused (the sphere would hold an atom
    twice); one below the potential's cutoff is warned about (the centre atom lacks neighbours
    it has in the simulation), one at the cutoff is not; lower must be positive."""
    path, pot, asi, atoms, gamma, lower = setup
    big = to_lammps_frame(atoms.repeat((1, 2, 2)))
    half = 0.5 * min(np.diag(big.cell.array))
    assert pot.cutoff < half
    log = tmp_path / "log.lammps"
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, big, ["Al", "Cu"])
        set_aceuq(lmp, path, ["Al", "Cu"], asi)
        lmp.command(f"log {log}")
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'a.extxyz'} "
                    f"cutout {1.05 * half}")
        with pytest.raises(Exception, match="exceeds half the periodic box length"):
            lmp.command("run 0")
        lmp.command("unfix x")
        for radius in (0.9 * pot.cutoff, pot.cutoff):
            lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'b.extxyz'} "
                        f"cutout {radius}")
            lmp.command("run 0")
            lmp.command("unfix x")
        # a radius that fits is checked again when pair_coeff gives a potential of larger cutoff
        wide = tmp_path / "wide.yaml"
        text = open(path).read()
        assert text.count("rcutij: 5\n") == 4  # every pair block
        wide.write_text(text.replace("rcutij: 5\n", "rcutij: 6\n"))
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'b.extxyz'} "
                    f"cutout {pot.cutoff}")
        lmp.command("run 0")
        lmp.commands_string(f"pair_coeff * * {wide} {asi} Al Cu\nrun 0\nrun 0\nunfix x")
        with pytest.raises(Exception, match="need 0 < lower"):
            lmp.command(f"fix y all aceuq/extrapolation 1 lower 0 upper 1 file {tmp_path / 'c.extxyz'}")
    finally:
        lmp.close()
    warnings = [ln for ln in log.read_text().splitlines() if "below the potential's cutoff" in ln]
    assert len(warnings) == 2 and f"cutout radius {0.9 * pot.cutoff:g}" in warnings[0], warnings
    assert f"cutout radius {pot.cutoff:g} is below the potential's cutoff 6" in warnings[1], warnings
    # as one sub-style of a hybrid style too (whose sub-styles LAMMPS gives no cutforce)
    lmp = aceuq_lammps.make_lammps()
    try:
        create_system(lmp, big, ["Al", "Cu"])
        lmp.command(f"log {log}")
        lmp.commands_string(f"""
            pair_style hybrid/overlay aceuq zero 6.0
            pair_coeff * * aceuq {path} {asi} Al Cu
            pair_coeff * * zero
            fix x all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'd.extxyz'} cutout 3.0
            run 0
        """)
    finally:
        lmp.close()
    assert any("cutout radius 3 is below the potential's cutoff 5" in ln for ln in log.read_text().splitlines())


def test_a_box_that_shrinks_below_twice_the_cutout_radius_stops_the_run(setup, tmp_path):
    """The radius is checked against the box at every written step, not only at the start: a box
    that fix deform (or fix npt) shrinks below twice the radius ends the run with an error naming
    the step, instead of writing cut-outs that miss the periodic images within the radius."""
    lengths = np.diag(setup[3].cell.array)
    radius = 0.49 * lengths.min()
    axis = "xyz"[int(np.argmin(lengths))]  # the box shrinks along this one only
    out = tmp_path / "cut.extxyz"
    with system(setup) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation 5 lower 1e-9 upper 1e9 file {out} cutout {radius}")
        lmp.command(f"fix d all deform 1 {axis} scale 0.9 remap x")
        with pytest.raises(Exception, match=rf"exceeds half the periodic box length along {axis} .* at step 5: "
                                            "the box shrank"):
            lmp.command("run 10")
    assert {c.info["step"] for c in read(out, ":")} == {0}  # written while the box was large enough


def test_frames_are_appended_in_place(setup, tmp_path):
    """Each check writes only what is new, into the same file: a reader that holds the file open
    (tail -f) sees the later frames, and what was written before never changes."""
    out = tmp_path / "follow.extxyz"
    with system(setup, md=True) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e-6 upper 1e9 file {out}")
        lmp.command("run 0")
        with open(out, "rb") as reader:
            first = reader.read()
            lmp.command("run 2")
            later = reader.read()
    assert first and later
    assert out.read_bytes() == first + later
    assert [f.info["step"] for f in read(out, ":")] == [0, 1, 2]


def test_a_failed_write_leaves_the_frames_before_it_whole(setup, tmp_path):
    """The disk fills in the middle of a frame (here: a file-size limit, which fails the write as
    ENOSPC would): the file is cut back to the frames before it and the run stops, saying why."""
    import resource

    out = tmp_path / "full.extxyz"
    with system(setup, md=True) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1e-6 upper 1e9 file {out}")
        lmp.command("run 0")
        first = out.read_bytes()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(first) * 3 // 2, hard))  # room for half a frame more
        try:
            with pytest.raises(Exception, match="writing .*full.extxyz failed: File too large .*kept, whole"):
                lmp.command("run 1")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert out.read_bytes() == first


def test_rerun_of_a_trajectory_writes_each_snapshot_once(setup, tmp_path):
    """`rerun` grades a trajectory written before (by another potential, or DFT-MD): each
    snapshot above L gives one frame, holding the γ the Python core gives that snapshot."""
    from aceuq.data import read_structures

    path, pot, asi, atoms, gamma, lower = setup
    traj = tmp_path / "traj.dump"
    with system(setup, md=True) as lmp:
        lmp.commands_string(f"dump d all custom 5 {traj} id type x y z\n"
                            "dump_modify d sort id format float %.17g\nrun 20")
    snapshots = read_structures([str(traj)], elements=["Al", "Cu"])
    # the same trajectory compressed (LAMMPS writes dump.gz): its types map through the elements too
    import gzip
    gz = tmp_path / "traj.dump.gz"
    gz.write_bytes(gzip.compress(traj.read_bytes()))
    for a, b in zip(read_structures([str(gz)], elements=["Al", "Cu"]), snapshots, strict=True):
        assert a.get_chemical_symbols() == b.get_chemical_symbols() and np.array_equal(a.positions, b.positions)
    damaged = gzip.compress(traj.read_bytes())
    gz.write_bytes(damaged[:20] + bytes(200) + damaged[220:])
    with pytest.raises(aceuq.InputError, match="traj.dump.gz"):
        read_structures([str(gz)], elements=["Al", "Cu"])
    grades = [reference_gamma(pot, asi, s) for s in snapshots]
    expected = [k for k, g in enumerate(grades) if g.max() > lower]
    assert len(snapshots) == 5 and 0 < len(expected)
    out, log = tmp_path / "rerun.extxyz", tmp_path / "rerun.log"
    upper = grades[0].max() * 0.999  # above it from the first snapshot: rerun cannot stop, so it reports
    with system(setup) as lmp:
        lmp.command(f"log {log}")
        lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper {upper} file {out}")
        lmp.command(f"rerun {traj} dump x y z")
        frames = read(out, ":")
        lmp.command("run 5")  # nothing was halted: runs go on
        assert lmp.extract_global("ntimestep") == 25
    assert [f.info["step"] for f in frames] == [5 * k for k in expected]
    for f, k in zip(frames, expected):
        order = np.argsort(f.arrays["id"])
        np.testing.assert_allclose(f.arrays["gamma"][order], grades[k], rtol=1e-8)
    reports = [line for line in log.read_text().splitlines() if "> upper" in line]
    assert len(reports) == sum(g.max() > upper for g in grades) > 0
    assert all("rerun does not stop early" in line for line in reports)


def test_rerun_grades_a_snapshot_at_the_step_checked_last(setup, tmp_path):
    """Structures graded one by one, each dumped at step 0 and read by its own rerun (here after
    a `run 0` of the first): every snapshot is a new configuration and is checked, written when
    above L, though its timestep is the step the fix checked last."""
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "one_by_one.extxyz"
    with system(setup) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e9 file {out}")
        lmp.command("run 0")  # checks step 0
        maxima = []
        for k in range(2):
            if k:
                lmp.command("displace_atoms all random 0.1 0.1 0.1 31 units box")
            dump = tmp_path / f"s{k}.dump"
            lmp.command(f"write_dump all custom {dump} id type x y z modify format float %.17g")
            lmp.command(f"rerun {dump} dump x y z")
            maxima.append(lmp.extract_fix("x", 0, 1, 0))
        moved = atoms.copy()
        moved.positions = np.array(lmp.gather("x", 1, 3)[: 3 * len(atoms)]).reshape(-1, 3)  # by ID
    frames = read(out, ":")
    assert [f.info["step"] for f in frames] == [0, 0, 0]  # run 0, then each rerun's snapshot
    expected = [gamma, gamma, reference_gamma(pot, asi, moved)]
    for f, g in zip(frames, expected, strict=True):
        np.testing.assert_allclose(f.arrays["gamma"][np.argsort(f.arrays["id"])], g, rtol=1e-8)
    assert maxima == pytest.approx([gamma.max(), expected[2].max()], rel=1e-8)
    assert abs(expected[2].max() - gamma.max()) > 1e-3 * gamma.max()


def test_minimization_writes_the_iterations_a_dump_writes(setup, tmp_path):
    """Under minimize the fix checks every N-th iteration's accepted configuration (the line
    search also tries others): its frames are the dumped configurations above L, with the γ the
    Python core gives them. Above U the minimizer stops."""
    from aceuq.data import read_structures

    path, pot, asi, atoms, gamma, lower = setup

    def minimize(fix=""):
        traj = tmp_path / "min.dump"
        with system(setup) as lmp:
            lmp.commands_string(f"""
                displace_atoms all random 0.15 0.15 0.15 7 units box
                dump d all custom 2 {traj} id type x y z
                dump_modify d sort id format float %.17g
                {fix}
                minimize 0 0 12 1000
            """)
            final = lmp.extract_global("ntimestep")
        snaps = [s for s in read_structures([str(traj)], elements=["Al", "Cu"]) if s.info["timestep"] % 2 == 0]
        return final, {s.info["timestep"]: reference_gamma(pot, asi, s) for s in snaps}

    final, grades = minimize()
    assert final == 12 and sorted(grades) == list(range(0, 13, 2))
    peaks = np.sort([g.max() for g in grades.values()])
    lower = 0.5 * (peaks[2] + peaks[3])  # four of the seven checked configurations above it
    out = tmp_path / "min.extxyz"
    final, grades = minimize(f"fix x all aceuq/extrapolation 2 lower {lower} upper 1e9 file {out}")
    frames = read(out, ":")
    assert final == 12
    assert [f.info["step"] for f in frames] == [t for t, g in grades.items() if g.max() > lower] and len(frames) == 4
    for f in frames:
        order = np.argsort(f.arrays["id"])
        np.testing.assert_allclose(f.arrays["gamma"][order], grades[f.info["step"]], rtol=1e-8)
    # a stop: the starting configuration above U stops the minimizer before its first iteration, a
    # later one after the iteration that follows it
    upper = 0.5 * (peaks[-2] + peaks[-1])
    first_above = min(t for t, g in grades.items() if g.max() > upper)
    log = tmp_path / "stop.log"
    final, _ = minimize(f"log {log}\nfix x all aceuq/extrapolation 2 lower {lower} upper {upper} file {out}")
    assert final == (0 if first_above == 0 else first_above + 1)
    assert sum("> upper" in line for line in log.read_text().splitlines()) == 1
    # the starting configuration above U: one frame and one message, though the stopped
    # minimizer evaluates that configuration once more
    start = grades[0].max()
    log = tmp_path / "stop0.log"
    final, _ = minimize(f"log {log}\nfix x all aceuq/extrapolation 2 lower {0.5 * start} upper {0.9 * start} "
                        f"file {out}")
    assert final == 0
    assert [f.info["step"] for f in read(out, ":")] == [0]
    assert sum("> upper" in line for line in log.read_text().splitlines()) == 1


@pytest.mark.parametrize("hybrid", [None, "pair_modify compute no", "pair_modify pair aceuq compute no"])
def test_pair_modify_compute_no_is_refused(setup, tmp_path, hybrid):
    """pair_modify compute no: the pair style is not called, so no γ is computed; the fix would
    report (and write with the new positions) the γ of the last step that was. Refused, for the
    style, for a hybrid style as a whole and for its aceuq sub-style alone."""
    path, pot, asi, atoms, gamma, lower = setup
    with system(setup, md=True) as lmp:
        if hybrid:
            lmp.commands_string(f"pair_style hybrid/overlay aceuq zero 6.0\n"
                                f"pair_coeff * * aceuq {path} {asi} Al Cu\npair_coeff * * zero")
        lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e9 file {tmp_path / 'x.extxyz'}")
        lmp.command("run 0")
        lmp.command(hybrid or "pair_modify compute no")
        with pytest.raises(Exception, match="pair_modify compute no: pair_style aceuq computes no gamma"):
            lmp.command("run 5")


def test_minimization_stop_is_reported_once(setup, tmp_path):
    """Minimized with an added force on it, one atom moves into extrapolation: the fix on that
    atom's group sees its γ cross U at a later iteration and stops after the next one, which is checked too and also above U: both
    are written, and the stop is reported once."""
    path, pot, asi, atoms, gamma, lower = setup

    def minimize(upper, out, log):
        with system(setup) as lmp:
            lmp.commands_string(f"""
                log {log}
                group one id 1
                fix push one addforce 8.0 0.0 0.0
                fix_modify push energy yes
                fix x one aceuq/extrapolation 1 lower 1e-9 upper {upper} file {out}
                minimize 0 0 30 1000
            """)
            return lmp.extract_global("ntimestep")

    out, log = tmp_path / "all.extxyz", tmp_path / "all.log"
    assert minimize(1e9, out, log) == 30
    peak = {f.info["step"]: f.arrays["gamma"][f.arrays["id"] == 1][0] for f in read(out, ":")}
    assert sorted(peak) == list(range(31))
    # the first iteration after the starting ones whose γ exceeds every earlier one, and the next
    t = next(t for t in range(5, 30) if peak[t] > max(peak[s] for s in range(t)) and peak[t + 1] > peak[t])
    upper = 0.5 * (max(peak[s] for s in range(t)) + peak[t])
    out, log = tmp_path / "stop.extxyz", tmp_path / "stop.log"
    assert minimize(upper, out, log) == t + 1
    assert [f.info["step"] for f in read(out, ":")] == list(range(t + 2))
    assert sum("> upper" in line for line in log.read_text().splitlines()) == 1


def test_run_style_respa_grades_the_checked_steps(setup, tmp_path):
    """Under run_style respa the pair style computes at one of several levels: the fix still gets
    the γ of the checked steps (the Python core's, on the same positions), not stale zeros."""
    from aceuq.data import read_structures

    path, pot, asi, atoms, gamma, lower = setup
    traj, out = tmp_path / "respa.dump", tmp_path / "respa.extxyz"
    with system(setup, md=True) as lmp:
        lmp.commands_string(f"""
            run_style respa 2 2
            dump d all custom 5 {traj} id type x y z
            dump_modify d sort id format float %.17g
            fix x all aceuq/extrapolation 5 lower 1e-6 upper 1e9 file {out}
            run 15
        """)
    snapshots = read_structures([str(traj)], elements=["Al", "Cu"])
    frames = read(out, ":")
    assert [f.info["step"] for f in frames] == [s.info["timestep"] for s in snapshots] == [0, 5, 10, 15]
    for f, s in zip(frames, snapshots):
        order = np.argsort(f.arrays["id"])
        np.testing.assert_allclose(f.arrays["gamma"][order], reference_gamma(pot, asi, s), rtol=1e-8)


def test_append_yes_continues_the_file_of_an_earlier_job(setup, tmp_path):
    """A job continued in a new LAMMPS (read_restart) keeps the frames of the first with
    `append yes`, as `dump_modify append yes` does; without it the file starts anew, as a dump's."""
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "jobs.extxyz"
    for extra, expected in (("", [0]), (" append yes", [0, 0]), (" append no", [0])):
        with system(setup) as lmp:
            lmp.command(f"fix x all aceuq/extrapolation 1 lower {lower} upper 1e9 file {out}{extra}")
            lmp.command("run 0")
        assert [f.info["step"] for f in read(out, ":")] == expected, extra
    with system(setup) as lmp:
        with pytest.raises(Exception, match="[Ee]xpected boolean"):
            lmp.command(f"fix x all aceuq/extrapolation 1 lower 1 upper 2 file {out} append maybe")


def test_after_a_halt_runs_are_skipped_until_the_fix_is_removed(setup, tmp_path):
    lower = setup[-1]
    with system(setup, md=True) as lmp:
        lmp.command(f"fix x all aceuq/extrapolation 5 lower {lower} upper {lower} file {tmp_path / 'h.extxyz'}")
        lmp.command("run 20")
        assert lmp.extract_global("ntimestep") == 0  # stopped at the first check
        lmp.command("run 20")
        assert lmp.extract_global("ntimestep") == 0  # skipped, as after fix halt ... error soft
        lmp.commands_string("unfix x\nrun 20")
        assert lmp.extract_global("ntimestep") == 20


def test_runs_stay_skipped_while_any_halted_fix_is_defined(setup, tmp_path):
    """Two fixes that both halted: removing one leaves the runs skipped; removing both lets them
    go on. Each stop is reported, also a second one after the timer was reset by hand."""
    lower = setup[-1]
    log = tmp_path / "halts.log"
    with system(setup, md=True) as lmp:
        lmp.command(f"log {log}")
        for name in "ab":
            lmp.command(f"fix {name} all aceuq/extrapolation 5 lower {lower} upper {lower} "
                        f"file {tmp_path / (name + '.extxyz')}")
        lmp.command("run 20")
        assert lmp.extract_global("ntimestep") == 0
        # the timer reset by hand: both check again and halt again (each is counted once)
        lmp.commands_string("timer timeout off\nrun 20")
        assert lmp.extract_global("ntimestep") == 5  # the next check
        lmp.commands_string("unfix a\nrun 20")
        assert lmp.extract_global("ntimestep") == 5
        lmp.commands_string("unfix b\nrun 20")
        assert lmp.extract_global("ntimestep") == 25
    reports = [line for line in log.read_text().splitlines() if "> upper" in line]
    assert [line.split()[3] for line in reports] == ["0", "0", "5", "5"]


def test_a_relative_file_stays_where_it_was_given_after_shell_cd(setup, tmp_path, monkeypatch):
    """The file is named relative to the directory of the fix command: after `shell cd` the
    later frames go on into the same file (as a dump's), not into a new one elsewhere."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with system(setup, md=True) as lmp:
        lmp.command("fix x all aceuq/extrapolation 5 lower 1e-9 upper 1e9 file frames.extxyz")
        lmp.command("run 10")
        lmp.command(f"shell cd {tmp_path / 'elsewhere'}")
        lmp.command("run 10")
    assert not (tmp_path / "elsewhere" / "frames.extxyz").exists()
    assert [a.info["step"] for a in read(tmp_path / "frames.extxyz", ":")] == [0, 5, 10, 15, 20]


def test_upper_threshold_stops_the_run(setup, tmp_path):
    path, pot, asi, atoms, gamma, lower = setup
    out = tmp_path / "halt.extxyz"
    vec, step = run_fix(setup, tmp_path, f"5 lower {lower} upper {lower} file {out}", steps=50)
    assert step < 50, "the run should have stopped at the first check"
    assert vec[0] > lower


def test_the_stop_message_names_the_atom_its_gamma_and_upper(setup, tmp_path):
    """The message that stops the run names the atom of largest γ (by ID), its γ and upper."""
    path, pot, asi, atoms, gamma, lower = setup
    log = tmp_path / "log.lammps"
    with system(setup, md=True) as lmp:
        lmp.command(f"log {log}")
        lmp.command(f"fix x all aceuq/extrapolation 5 lower {lower} upper {lower} file {tmp_path / 'h.extxyz'}")
        lmp.command("run 20")
    line = next(ln for ln in log.read_text().splitlines() if "stopping the run" in ln)
    top = int(np.argmax(gamma))
    assert f"step 0 atom {top + 1} has gamma {gamma[top]:.4g} > upper {lower:g}" in line, line


def test_bad_fix_input(setup, tmp_path, make_pot):
    with system(setup, active_set=False) as lmp:
        with pytest.raises(Exception, match="no active set"):
            lmp.commands_string(f"fix x all aceuq/extrapolation 1 lower 2 upper 5 file {tmp_path / 'o.extxyz'}\nrun 0")
    with system(setup) as lmp:
        with pytest.raises(Exception, match="lower <= upper"):
            lmp.command(f"fix x all aceuq/extrapolation 1 lower 5 upper 2 file {tmp_path / 'o.extxyz'}")
        with pytest.raises(Exception, match="unknown keyword"):
            lmp.command("fix y all aceuq/extrapolation 1 lower 1 upper 2 file o.extxyz colour red")
        # an output that cannot be written is found when the run starts, not at the first frame
        missing = tmp_path / "no_such_folder" / "o.extxyz"
        lmp.command(f"fix z all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {missing}")
        with pytest.raises(Exception, match="cannot write .*no_such_folder"):
            lmp.command("run 0")
        lmp.command("unfix z")
        (tmp_path / "a_folder").mkdir()
        lmp.command(f"fix z all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'a_folder'}")
        with pytest.raises(Exception, match="cannot write .*a_folder: Is a directory"):
            lmp.command("run 0")


def test_element_names_the_types_pair_coeff_maps_to_null(setup, tmp_path):
    """A hybrid style with a type aceuq does not handle: the fix writes X for its atoms, or the
    element its `element` keyword names (as dump_modify element); left out, those atoms leave a
    frame `aceuq gamma` grades as LAMMPS did; a name that contradicts pair_coeff is refused."""
    path, pot, asi, atoms, gamma, lower = setup

    def frame(element_args, name):
        out = tmp_path / name
        lmp = aceuq_lammps.make_lammps()
        try:
            create_system(lmp, atoms, ["Al", "Cu"], type_elements=["Al", "Cu", "Ni"])
            lmp.commands_string(f"""
                set atom 1 type 3
                pair_style hybrid/overlay aceuq zero 6.0
                pair_coeff * * aceuq {path} {asi} Al Cu NULL
                pair_coeff * * zero
                fix x all aceuq/extrapolation 1 lower 1e-6 upper 1e9 file {out} {element_args}
                run 0""")
        finally:
            lmp.close()
        return read(out)

    symbols = atoms.get_chemical_symbols()
    unnamed = frame("", "x.extxyz")
    assert unnamed.get_chemical_symbols() == ["X"] + symbols[1:]
    with pytest.raises(aceuq.InputError, match="X is what fix aceuq/extrapolation writes .* leave them out to grade"):
        pot.types_of(unnamed)
    named = frame("element Al Cu Ni", "ni.extxyz")
    assert named.get_chemical_symbols() == ["Ni"] + symbols[1:]
    # the other style's atoms left out, the frame grades as in LAMMPS (which leaves them out of the
    # environments)
    ace = named[[s != "Ni" for s in named.get_chemical_symbols()]]
    np.testing.assert_allclose(ace.arrays["gamma"], reference_gamma(pot, asi, ace), rtol=1e-7)
    with pytest.raises(Exception, match="element names type 2 Al, but pair_coeff maps it to Cu"):
        frame("element Al Al Ni", "bad.extxyz")
    with pytest.raises(Exception, match="element needs 3 names"):
        frame("element Al Cu", "short.extxyz")
    with pytest.raises(Exception, match="'NI' is not an element symbol"):
        frame("element Al Cu NI", "case.extxyz")
    with pytest.raises(Exception, match="element given twice"):
        frame("element Al Cu Ni element Al Cu Fe", "twice.extxyz")
    with pytest.raises(Exception, match="element takes 3 names, one per atom type; 'Fe' is one more"):
        frame("element Al Cu Ni Fe", "long.extxyz")


def test_fix_without_atom_ids_is_refused(setup, tmp_path):
    """Frames are ordered, and cut-outs centred, by atom ID: without IDs (atom_modify id no) every
    atom was ID 0 and the cut-outs ran together."""
    path, pot, asi, atoms, gamma, lower = setup
    lmp = aceuq_lammps.make_lammps()
    try:
        lmp.commands_string("""
            units metal
            atom_style atomic
            atom_modify id no
            lattice fcc 3.7
            region b block 0 3 0 3 0 3
            create_box 2 b
            create_atoms 1 box
            mass * 30.0
        """)
        set_aceuq(lmp, path, ["Al", "Cu"], asi)
        lmp.command(f"fix x all aceuq/extrapolation 1 lower 1 upper 2 file {tmp_path / 'o.extxyz'} cutout 4")
        with pytest.raises(Exception, match="requires atom IDs"):
            lmp.command("run 0")
    finally:
        lmp.close()
    with system(setup) as lmp:  # a keyword without its value is named
        with pytest.raises(Exception, match="keyword file needs a value"):
            lmp.command("fix y all aceuq/extrapolation 1 lower 1 upper 2 file")


def test_fix_pair_gamma_without_trigger_reads_the_fix_s_gamma(setup, tmp_path):
    """fix pair ... gamma 0 does not ask for gamma itself: it reads what the pair style last
    graded, here on the steps where fix aceuq/extrapolation asks."""
    path, pot, asi, atoms, gamma, lower = setup
    with system(setup) as lmp:
        lmp.commands_string(f"""
            fix g all pair 1 aceuq gamma 0
            fix x all aceuq/extrapolation 1 lower 1e9 upper 1e9 file {tmp_path / 'o.extxyz'}
            run 0
        """)
        got = np.array(lmp.numpy.extract_fix("g", 1, 1))[: len(atoms)]
        ids = np.array(lmp.numpy.extract_atom("id"))[: len(atoms)]
    np.testing.assert_allclose(got, gamma[ids - 1], rtol=1e-8)


def test_two_ranks_write_the_same_frames(setup, tmp_path):
    mpiexec = aceuq_lammps.mpiexec_path()
    if not mpiexec:
        pytest.skip("mpiexec not found (pip install mpich)")
    path, pot, asi, atoms, gamma, lower = setup
    save_structure(tmp_path / "s.npz", atoms)
    env = driver_env()
    texts, vectors = {}, {}
    for extra in ([], ["3.4"]):
        for n in (1, 2):
            out = tmp_path / f"o{n}{len(extra)}.extxyz"
            cmd = [mpiexec, "-n", str(n), sys.executable, os.path.join(HERE, "lammps_extrapolation_driver.py"),
                   path, asi, str(tmp_path / "s.npz"), str(out), str(lower)] + extra
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            texts[n] = read(out, ":")
            vectors[n] = json.loads(proc.stdout.split("VECTOR", 1)[1].splitlines()[0])
            assert "SAME True" in proc.stdout  # frames and cut-outs written are counted on every rank
        # the fix's global values are over all ranks: max γ and the count above lower of the whole box
        for n in (1, 2):
            assert vectors[n][0] == pytest.approx(gamma.max(), rel=1e-10)
            assert vectors[n][1] == np.sum(gamma > lower) == 4
        assert vectors[1] == pytest.approx(vectors[2], rel=1e-12)
        assert len(texts[1]) == len(texts[2]) > 0
        for a, b in zip(texts[1], texts[2]):
            np.testing.assert_array_equal(a.arrays["id"], b.arrays["id"])
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-9)
            np.testing.assert_allclose(a.arrays["gamma"], b.arrays["gamma"], rtol=1e-10)


def test_a_refusal_on_two_ranks_says_why_on_each(setup, tmp_path):
    """A frames file that is pair_coeff's active set is refused on every rank with the reason
    (rank 0 decides; the others' exceptions, through the library interface, say it too), and the
    active set is left as it was."""
    import shutil

    mpiexec = aceuq_lammps.mpiexec_path()
    path, pot, asi, atoms, gamma, lower = setup
    mine = shutil.copy(asi, tmp_path / "mine.asi")
    before = open(mine, "rb").read()
    save_structure(tmp_path / "s.npz", atoms)
    cmd = [mpiexec, "-n", "2", sys.executable, os.path.join(HERE, "lammps_extrapolation_driver.py"),
           path, str(mine), str(tmp_path / "s.npz"), str(mine), str(lower)]
    proc = subprocess.run(cmd, env=driver_env(), capture_output=True, text=True, timeout=120)
    for rank in (0, 1):
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(f"ERROR rank {rank}:")), "")
        assert "is the active set pair_coeff read" in line, proc.stdout + proc.stderr
    assert open(mine, "rb").read() == before


def test_a_timestep_is_graded_once_as_lammps_fix_pair_does(setup, tmp_path):
    """Both fix pair and the fix handle a timestep once (so `run 0` then `run N` does not write
    step 0 twice): a configuration changed at the same step (displace_atoms, then run 0) keeps the
    step's γ, as the README says; once the timestep moves on (reset_timestep), it is graded."""
    path, pot, asi, atoms, gamma, lower = setup
    with system(setup) as lmp:
        lmp.command("fix g all pair 1 aceuq gamma 1")
        lmp.command(f"fix uq all aceuq/extrapolation 1 lower 1e9 upper 1e12 file {tmp_path / 'o.extxyz'}")
        lmp.command("run 0")
        first = lmp.extract_fix("uq", 0, 1, 0)
        assert first == pytest.approx(gamma.max(), rel=1e-8)
        lmp.command("displace_atoms all random 0.2 0.2 0.2 7 units box")
        lmp.command("run 0")
        moved = atoms.copy()
        moved.positions = np.array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3)
        fresh = reference_gamma(pot, asi, moved)
        assert abs(fresh.max() - first) > 1e-3 * first  # the displacement changes γ
        assert lmp.extract_fix("uq", 0, 1, 0) == first
        np.testing.assert_allclose(np.array(lmp.gather("f_g", 1, 1)[: len(atoms)]), gamma, rtol=1e-8)
        lmp.command("reset_timestep 1")
        lmp.command("run 0")
        assert lmp.extract_fix("uq", 0, 1, 0) == pytest.approx(fresh.max(), rel=1e-8)
        np.testing.assert_allclose(np.array(lmp.gather("f_g", 1, 1)[: len(atoms)]), fresh, rtol=1e-8)
