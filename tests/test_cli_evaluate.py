"""`aceuq evaluate` end to end: extxyz and pacemaker pickles in, extxyz with results out."""
import os

import numpy as np
import pytest
from ase.io import read, write

import aceuq
from aceuq.cli.main import main
from structures import rattled_bulk, cluster

pytest.importorskip("pyace")


def test_evaluate_extxyz_and_pickle(make_pot, tmp_path):
    import pandas as pd

    path = make_pot("CuAl_sbessel")
    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(3)] + [cluster(["Cu", "Al"])]
    xyz = tmp_path / "in.extxyz"
    write(xyz, frames[:2])
    pkl = tmp_path / "in.pkl.gzip"
    pd.DataFrame({"ase_atoms": frames[2:], "energy_corrected": [0.0, 0.0],
                  "forces": [np.zeros((len(a), 3)) for a in frames[2:]]}).to_pickle(pkl, compression="gzip")
    out = tmp_path / "out" / "evaluated.extxyz"
    assert main(["evaluate", path, str(xyz), str(pkl), "-o", str(out), "--no-progress"]) == 0
    got = read(out, ":")
    assert len(got) == 4
    pot = aceuq.Potential(path)
    inputs = read(xyz, ":") + frames[2:]  # what the CLI saw (extxyz rounds positions)
    for a, g in zip(inputs, got):
        assert g.get_chemical_symbols() == a.get_chemical_symbols()
        ref = pot.evaluate(a)
        assert g.get_potential_energy() == pytest.approx(ref.energy, rel=1e-12)
        # extxyz stores per-atom values with 8 decimals
        np.testing.assert_allclose(g.get_forces(), ref.forces, atol=1e-7)
        np.testing.assert_allclose(g.get_potential_energies(), ref.energies, atol=1e-7)
        if a.pbc.all():
            np.testing.assert_allclose(g.get_stress(), ref.stress, atol=1e-7)
    assert not [f for f in os.listdir(out.parent) if f.startswith(".aceuq-")], "temporary file left behind"
    # the pickle's labels are kept beside the predictions
    for a, g in zip(frames[2:], got[2:]):
        assert g.info["ref_energy"] == 0.0
        np.testing.assert_array_equal(g.arrays["ref_forces"], np.zeros((len(a), 3)))
    assert "ref_energy" not in got[0].info  # the extxyz input had no labels


def test_evaluate_keeps_the_input_stress(make_pot, tmp_path):
    """A labelled periodic structure: its stress (ASE Voigt order and sign) comes out as ref_stress,
    beside the predicted one."""
    from ase.calculators.singlepoint import SinglePointCalculator

    path = make_pot("CuAl_sbessel")
    atoms = rattled_bulk(["Cu", "Al"], seed=4)
    label = np.array([0.01, -0.02, 0.03, 0.004, -0.005, 0.006])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=np.zeros((len(atoms), 3)), stress=label)
    write(tmp_path / "in.extxyz", atoms)
    out = tmp_path / "out.extxyz"
    assert main(["evaluate", path, str(tmp_path / "in.extxyz"), "-o", str(out), "--no-progress"]) == 0
    got = read(out)
    np.testing.assert_allclose(got.info["ref_stress"], label, rtol=1e-12)
    np.testing.assert_allclose(got.get_stress(), aceuq.Potential(path).evaluate(atoms).stress, atol=1e-7)


def test_evaluate_reports_bad_input(make_pot, tmp_path, capsys):
    path = make_pot("CuAl_sbessel")
    assert main(["evaluate", path, str(tmp_path / "missing.extxyz"), "-o", str(tmp_path / "o.extxyz")]) == 1
    assert "missing.extxyz" in capsys.readouterr().err
    bad = tmp_path / "garbage.extxyz"
    bad.write_text("3\nnot a header\nCu 0 0\n")
    assert main(["evaluate", path, str(bad), "-o", str(tmp_path / "o.extxyz")]) == 1
    assert "garbage.extxyz" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.yaml"), str(bad), "-o", str(tmp_path / "o.extxyz")]) == 1
    assert "nope.yaml" in capsys.readouterr().err
    # pacemaker DataFrames with a broken row: the file and row named, no traceback
    import pandas as pd

    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(2)]
    n = len(frames[1])
    for column, value, message in (("ase_atoms", None, "row 1: 'ase_atoms' is not an ASE Atoms object"),
                                   ("energy_corrected", "x", "row 1: 'energy_corrected' is not numeric"),
                                   ("forces", "x", "row 1: 'forces' is not numeric"),
                                   ("forces", np.zeros((n - 1, 3)), f"row 1: 'forces' has shape ({n - 1}, 3)")):
        data = {"ase_atoms": list(frames), "energy_corrected": [0.0, 0.0], "forces": [np.zeros((len(a), 3)) for a in frames]}
        data[column][1] = value
        pkl = tmp_path / "bad.pkl.gzip"
        pd.DataFrame(data).to_pickle(pkl, compression="gzip")
        assert main(["evaluate", path, str(pkl), "-o", str(tmp_path / "o.extxyz"), "--no-progress"]) == 1
        assert f"'{pkl}', {message}" in capsys.readouterr().err
    assert not (tmp_path / "o.extxyz").exists()


def test_unwritable_output_is_refused_before_the_work(make_pot, tmp_path, capsys):
    from ase.build import bulk

    path = make_pot("CuAl_sbessel")
    write(tmp_path / "s.extxyz", bulk("Cu", "fcc", a=3.6))
    (tmp_path / "folder").mkdir()
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "folder")]) == 1
    assert "is a folder (give a file name)" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "file" / "o.extxyz")]) == 1
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Traceback" not in err
    # a run that fails after the check leaves none of the folders the check made
    assert main(["evaluate", path, str(tmp_path / "none.extxyz"), "-o", str(tmp_path / "new" / "sub" / "o.extxyz")]) == 1
    assert "none.extxyz" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "new" / "o.extxyz")]) == 0
    assert (tmp_path / "new" / "o.extxyz").exists()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["o.extxyz"]  # no temporary left behind


def test_an_output_that_names_an_input_is_refused(make_pot, tmp_path, capsys):
    """-o naming a file the verb reads (the structures, the potential, the active set; also
    through a link) would replace it: refused before any work, the input left as it was."""
    import shutil

    path = shutil.copy(make_pot("CuAl_sbessel"), tmp_path / "pot.yaml")
    xyz = tmp_path / "s.extxyz"
    write(xyz, [rattled_bulk(["Cu", "Al"], seed=s) for s in range(10)])
    asi = tmp_path / "set.asi"
    assert main(["activeset", str(path), str(xyz), "-o", str(asi), "--no-progress"]) == 0
    os.symlink(xyz, tmp_path / "link.extxyz")
    runs = [["evaluate", str(path), str(xyz), "-o", str(tmp_path / "link.extxyz")],
            ["evaluate", str(path), str(xyz), "-o", str(path)],
            ["gamma", str(path), str(asi), str(xyz), "-o", str(asi)],
            ["select", str(path), str(xyz), "--active-set", str(asi), "-n", "1", "-o", str(xyz)],
            ["activeset", str(path), str(xyz), "-o", str(xyz)]]
    before = {f: f.read_bytes() for f in (path, xyz, asi)}
    for argv in runs:
        assert main(argv + ["--no-progress"]) == 1, argv
        err = capsys.readouterr().err
        assert "is the input" in err and "which writing it would replace" in err and "Traceback" not in err, err
    assert {f: f.read_bytes() for f in before} == before
    # an empty name (an unset shell variable in -o "$OUT") is refused before the work too
    assert main(["activeset", str(path), str(xyz), "-o", "", "--no-progress"]) == 1
    assert "output: the name is empty" in capsys.readouterr().err


def test_output_is_replaced_whole_or_not_at_all(tmp_path):
    """atomic_output: what the block writes replaces the file only when the block ends without
    error; an error midway leaves the earlier file as it was, and no temporary beside it."""
    from aceuq.data import atomic_output

    out = tmp_path / "o.txt"
    out.write_text("earlier\n")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as fh:
            fh.write("half a new file")
            fh.flush()
            assert out.read_text() == "earlier\n"  # readers still see the earlier file
            raise RuntimeError("fails midway")
    assert out.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]
    with atomic_output(out) as fh:
        fh.write("new\n")
    assert out.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["o.txt"]


def test_output_through_a_link_or_into_a_fifo(make_pot, tmp_path):
    """-o through a symbolic link writes the file it names and keeps the link; -o a FIFO (as a
    device such as /dev/null) writes into it instead of renaming a regular file over it."""
    import stat
    import threading

    from ase.build import bulk

    path = make_pot("CuAl_sbessel")
    write(tmp_path / "s.extxyz", bulk("Cu", "fcc", a=3.6))
    (tmp_path / "results").mkdir()
    link = tmp_path / "link.extxyz"
    link.symlink_to(tmp_path / "results" / "o.extxyz")
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "-o", str(link), "--no-progress"]) == 0
    assert link.is_symlink() and len(read(tmp_path / "results" / "o.extxyz", ":")) == 1

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "-o", str(fifo), "--no-progress"]) == 0
        reader.join(timeout=30)
    finally:
        if reader.is_alive():  # nothing opened the FIFO for writing: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=5)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert received and "Lattice=" in received[0]

    # -o /dev/stdout into a pipe and into a file (the shell's redirection): what reaches stdout is
    # the frames alone, a file ASE reads back; the closing line goes to stderr
    import io
    import subprocess
    import sys

    import ase.io

    cmd = [sys.executable, "-m", "aceuq", "evaluate", path, str(tmp_path / "s.extxyz"), "-o", "/dev/stdout",
           "--no-progress"]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "aceuq evaluate: 1 structures" in piped.stderr and "aceuq evaluate" not in piped.stdout
    assert len(ase.io.read(io.StringIO(piped.stdout), ":", format="extxyz")) == 1
    with open(tmp_path / "redirected.extxyz", "w") as fh:
        assert subprocess.run(cmd, stdout=fh, stderr=subprocess.DEVNULL, timeout=120).returncode == 0
    assert len(ase.io.read(tmp_path / "redirected.extxyz", ":")) == 1
    # a reader that goes away early (`| head -c 1`): a quiet stop, no traceback
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "aceuq", "evaluate", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: aceuq evaluate" in proc.stdout


def test_pacemaker_pickle_prefers_energy_corrected(tmp_path):
    """read_structures' docstring (pacemaker's rule): a DataFrame's ``energy_corrected`` is the label
    when it has one, ``energy`` otherwise; ``forces`` come with it."""
    import pandas as pd

    from aceuq.data import read_structures

    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(2)]
    forces = [np.full((len(a), 3), 0.25 * (k + 1)) for k, a in enumerate(frames)]
    both = tmp_path / "both.pkl.gzip"
    pd.DataFrame({"ase_atoms": frames, "energy": [1.0, 2.0], "energy_corrected": [-3.5, -4.5],
                  "forces": forces}).to_pickle(both, compression="gzip")
    got = read_structures(str(both))
    assert [a.get_potential_energy() for a in got] == [-3.5, -4.5]
    for a, f in zip(got, forces):
        np.testing.assert_array_equal(a.get_forces(), f)
    plain = tmp_path / "plain.pkl.gzip"
    pd.DataFrame({"ase_atoms": frames, "energy": [1.0, 2.0]}).to_pickle(plain, compression="gzip")
    assert [a.get_potential_energy() for a in read_structures(str(plain))] == [1.0, 2.0]


def test_pacemaker_pickles_as_pace_collect_and_pace_select_leave_them(make_pot, tmp_path, capsys):
    """Missing labels (NaN, from pd.concat of labelled and unlabelled frames) are no labels; a
    'stress' column is kept as the reference stress; labels the Atoms carry in info or arrays are
    kept as references and do not clash with the predictions; an empty DataFrame is refused."""
    import pandas as pd

    from aceuq.data import read_structures

    path = make_pot("CuAl_sbessel")
    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(3)]
    stress = np.array([0.01, -0.02, 0.03, 0.004, -0.005, 0.006])
    labelled = pd.DataFrame({"ase_atoms": frames[:1], "energy_corrected": [-2.0],
                             "forces": [np.ones((len(frames[0]), 3))], "stress": [stress]})
    mixed = tmp_path / "mixed.pkl.gzip"
    pd.concat([labelled, pd.DataFrame({"ase_atoms": frames[1:2]})], ignore_index=True).to_pickle(
        mixed, compression="gzip")
    got = read_structures(str(mixed))
    assert got[0].get_potential_energy() == -2.0 and got[1].calc is None
    np.testing.assert_array_equal(got[0].get_stress(), stress)
    # labels in the Atoms themselves, no label columns
    carried = frames[2].copy()
    carried.info["energy"] = -7.0
    carried.arrays["forces"] = np.full((len(carried), 3), 0.5)
    own = tmp_path / "own.pkl.gzip"
    pd.DataFrame({"ase_atoms": [carried]}).to_pickle(own, compression="gzip")
    out = tmp_path / "o.extxyz"
    for pkl in (mixed, own):
        assert main(["evaluate", path, str(pkl), "-o", str(out), "--no-progress"]) == 0
    a = read(out)
    assert a.info["ref_energy"] == -7.0 and np.all(a.arrays["ref_forces"] == 0.5)
    assert a.get_potential_energy() == pytest.approx(aceuq.Potential(path).evaluate(carried).energy, rel=1e-12)
    assert main(["evaluate", path, str(mixed), "-o", str(out), "--no-progress"]) == 0
    first = read(out, 0)
    np.testing.assert_allclose(first.info["ref_stress"], stress, rtol=1e-12)
    bad_stress = tmp_path / "bad_stress.pkl.gzip"
    pd.DataFrame({"ase_atoms": frames[:1], "stress": [np.zeros(4)]}).to_pickle(bad_stress, compression="gzip")
    with pytest.raises(aceuq.InputError, match=r"row 0: 'stress' has shape \(4,\) \(needs 6 Voigt components"):
        read_structures(str(bad_stress))
    empty = tmp_path / "empty.pkl.gzip"
    pd.DataFrame({"ase_atoms": []}).to_pickle(empty, compression="gzip")
    capsys.readouterr()
    assert main(["evaluate", path, str(empty), "-o", str(out), "--no-progress"]) == 1
    assert f"'{empty}': the DataFrame holds no structures" in capsys.readouterr().err


def test_outputs_keep_the_mode_of_what_they_replace_and_name_files(tmp_path, capsys):
    """A replaced output keeps its permissions (a private 0600 file stays private); a name ending
    in '/' is a folder to be, refused before any work rather than written as a file."""
    import stat

    from ase.build import bulk

    from aceuq.data import write_extxyz_atomic

    out = tmp_path / "private.extxyz"
    out.write_text("")
    os.chmod(out, 0o600)
    write_extxyz_atomic(out, [bulk("Cu", "fcc", a=3.6)])
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and len(read(out, ":")) == 1
    write(tmp_path / "s.extxyz", bulk("Cu", "fcc", a=3.6))
    assert main(["evaluate", "unused.yaml", str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "new") + "/"]) == 1
    assert "ends in '/', a folder (give a file name)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_while_writing_leaves_the_earlier_output(make_pot, tmp_path, name):
    """SIGTERM (timeout, a batch system's limit) ends the CLI as an exception does, and Ctrl-C
    (SIGINT) with one line, "interrupted", and exit code 130 (as shells report it), not a
    traceback: the output being written is removed, the earlier one kept, and no temporary file
    is left beside it."""
    import signal
    import subprocess
    import sys
    import time

    sig = getattr(signal, name)
    code, message = {"SIGTERM": (128 + signal.SIGTERM, ""), "SIGINT": (130, "aceuq evaluate: interrupted\n")}[name]
    path = make_pot("CuAl_sbessel")
    write(tmp_path / "in.extxyz", [rattled_bulk(["Cu", "Al"], seed=s).repeat(2) for s in range(300)])
    out = tmp_path / "o" / "out.extxyz"
    out.parent.mkdir()
    # The signal can come too late for an attempt (the write finished between the check and the
    # signal, or before the check): the output is then the whole new file, and the run is repeated
    # until a signal lands while the file is written.
    for _ in range(5):
        out.write_text("earlier\n")
        proc = subprocess.Popen([sys.executable, "-m", "aceuq", "evaluate", path, str(tmp_path / "in.extxyz"),
                                 "-o", str(out), "--no-progress"], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                                # a test run started with SIGINT ignored (a background job, nohup)
                                # would pass that on, and Ctrl-C would never reach the verb
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.name.endswith(".tmp") for p in out.parent.iterdir()):
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert sorted(p.name for p in out.parent.iterdir()) == ["out.extxyz"]  # never a temporary left
        if out.read_text() == "earlier\n":  # ended while writing
            assert (proc.returncode, err) == (code, message)
            return
        assert len(read(out, ":")) == 300  # after the write: the new output, whole
    pytest.fail("no signal reached a run while it was writing")


def test_elements_must_be_element_symbols():
    from aceuq.data import parse_elements

    assert parse_elements("Ni Nb") == parse_elements("Ni,Nb") == parse_elements(["Ni", "Nb"]) == ["Ni", "Nb"]
    for bad in ("X", "Cu X", ["Cu", "X"], "Qq", ""):
        with pytest.raises(aceuq.InputError):
            parse_elements(bad)
    with pytest.raises(aceuq.InputError, match="not element symbols: X"):
        parse_elements("Cu X")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_the_usual_permissions(tmp_path, umask):
    """atomic_path's docstring: the file gets the usual permissions (0666 less the umask), not
    mkstemp's private 0600, for atomic_output and write_extxyz_atomic alike."""
    import stat

    from ase.build import bulk

    from aceuq.data import atomic_output, write_extxyz_atomic

    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "a.txt") as fh:
            fh.write("x\n")
        write_extxyz_atomic(tmp_path / "b.extxyz", [bulk("Cu", "fcc", a=3.6)])
    finally:
        os.umask(old)
    for name in ("a.txt", "b.extxyz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name
    assert len(read(tmp_path / "b.extxyz", ":")) == 1


@pytest.fixture(scope="module")
def small_ensemble(tmp_path_factory):
    """A tiny calibrated ensemble (basis 'small', 2 members) fitted on EMT Cu frames."""
    from potentials import emt_training_set

    from aceuq.ensemble import fit_ensemble

    frames = emt_training_set(["Cu"], n=8, seed=5)
    out = str(tmp_path_factory.mktemp("ens_eval") / "cu")
    ens = fit_ensemble(frames[:6], 2, out, basis="small", seed=2, calibration_frames=frames[6:], workers=1)
    assert ens.calibration.get("fitted")
    return out


@pytest.mark.parametrize("uncalibrated", [True, False])
def test_evaluate_ensemble_writes_the_members_spread(small_ensemble, tmp_path, uncalibrated):
    """`aceuq evaluate --ensemble DIR [--uncalibrated]`: per atom, energies_std, forces_std and
    force_uncertainty are Ensemble.evaluate's (raw member spread with --uncalibrated, calibrated
    otherwise), energy_std per structure."""
    from ase.build import bulk

    from aceuq.ensemble import Ensemble

    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.rattle(0.15, seed=8)
    s = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    s.center(vacuum=4.0, axis=2)
    s.rattle(0.05, seed=9)
    data = tmp_path / "in.extxyz"
    write(data, [a, s], format="extxyz")
    out = tmp_path / "out.extxyz"
    argv = ["evaluate", "--ensemble", small_ensemble, str(data), "-o", str(out), "--no-progress"]
    assert main(argv + (["--uncalibrated"] if uncalibrated else [])) == 0
    ens = Ensemble.load(small_ensemble)
    for x, g in zip(read(data, ":"), read(out, ":")):
        r = ens.evaluate(x, calibrated=not uncalibrated)
        other = ens.evaluate(x, calibrated=uncalibrated)
        # the case discriminates: calibration changes each spread well beyond extxyz's 8 decimals
        for name in ("energies_std", "forces_std", "force_uncertainty"):
            assert np.abs(getattr(r, name) - getattr(other, name)).max() > 1e-5, name
        assert abs(r.energy_std - other.energy_std) > 1e-5
        assert r.energies_std.shape == (len(x),) and r.forces_std.shape == (len(x), 3)
        np.testing.assert_allclose(g.arrays["energies_std"], r.energies_std, rtol=0, atol=1e-7)
        np.testing.assert_allclose(g.arrays["forces_std"], r.forces_std, rtol=0, atol=1e-7)
        np.testing.assert_allclose(g.arrays["force_uncertainty"], r.force_uncertainty, rtol=0, atol=1e-7)
        assert g.info["energy_std"] == pytest.approx(r.energy_std, rel=1e-10)
        assert g.get_potential_energy() == pytest.approx(r.energy, rel=1e-12)


def test_evaluate_takes_options_between_the_files(make_pot, tmp_path, capsys):
    """Options may stand between the potential and the structure files (-e before a dump), as in
    the other verbs; a potential given with --ensemble is refused with one clear line."""
    from ase.build import bulk

    path = make_pot("CuAl_sbessel")
    write(tmp_path / "a.extxyz", bulk("Cu", "fcc", a=3.6))
    write(tmp_path / "b.extxyz", bulk("Al", "fcc", a=4.05))
    out = tmp_path / "o.extxyz"
    assert main(["evaluate", path, str(tmp_path / "a.extxyz"), "--no-progress", str(tmp_path / "b.extxyz"),
                 "-o", str(out)]) == 0
    assert [a.get_chemical_formula() for a in read(out, ":")] == ["Cu", "Al"]
    capsys.readouterr()
    assert main(["evaluate", path, "--ensemble", str(tmp_path), str(tmp_path / "a.extxyz"), "-o", str(out)]) == 2
    assert "or --ensemble, not both" in capsys.readouterr().err


def test_verbs_writing_to_stdout_leave_it_a_readable_file(make_pot, tmp_path):
    """`activeset`, `gamma` and `select` with -o /dev/stdout redirected to a file: the file is the
    active set (loadable) or the frames (ASE reads them back); the summary lines go to stderr."""
    import subprocess
    import sys

    from aceuq.activeset import ActiveSet

    path = make_pot("CuAl_sbessel")
    write(tmp_path / "train.extxyz", [rattled_bulk(["Cu", "Al"], seed=s) for s in range(12)])
    write(tmp_path / "cand.extxyz", [rattled_bulk(["Cu", "Al"], seed=100 + s).repeat(2) for s in range(3)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def to_file(args, name):
        with open(tmp_path / name, "wb") as fh:
            proc = subprocess.run([sys.executable, "-m", "aceuq", *args, "-o", "/dev/stdout", "--no-progress"],
                                  stdout=fh, stderr=subprocess.PIPE, text=False, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        assert f"aceuq {args[0]}" in proc.stderr.decode()
        return tmp_path / name

    asi = to_file(["activeset", path, str(tmp_path / "train.extxyz")], "a.asi")
    aset = ActiveSet.load(str(asi), aceuq.Potential(path))
    graded = read(to_file(["gamma", path, str(asi), str(tmp_path / "cand.extxyz")], "g.extxyz"), ":")
    assert len(graded) == 3
    np.testing.assert_allclose(graded[0].arrays["gamma"], aset.gamma(read(tmp_path / "cand.extxyz", 0))[0],
                               rtol=1e-7)  # (extxyz's 8 digits)
    chosen = read(to_file(["select", path, str(tmp_path / "cand.extxyz"), "--active-set", str(asi), "-n", "2"],
                          "s.extxyz"), ":")
    assert 1 <= len(chosen) <= 2 and "candidate_index" in chosen[0].info


@pytest.mark.parametrize("where", ["/dev/full", "file size limit", "stdout to /dev/full"])
def test_an_output_without_room_is_one_clear_error(make_pot, tmp_path, where):
    """A write that fails for want of room (a full disk: /dev/full, named or behind a shell
    redirection of `-o /dev/stdout`; a file-size limit, which the temporary file beside the
    output runs into) ends in one line naming the output, exit code 1, and leaves the earlier
    output as it was."""
    import resource
    import subprocess
    import sys

    path = make_pot("CuAl_sbessel")
    write(tmp_path / "in.extxyz", [rattled_bulk(["Cu", "Al"], seed=s).repeat(2) for s in range(3)])
    out = tmp_path / "out.extxyz"
    out.write_text("earlier\n")
    target = {"/dev/full": "/dev/full", "stdout to /dev/full": "/dev/stdout"}.get(where, str(out))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def limit():  # the output is larger than this; the imports read, and write nothing
        if where == "file size limit":
            resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))

    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "aceuq", "evaluate", path, str(tmp_path / "in.extxyz"), "-o",
                               target, "--no-progress"], stdout=full if target == "/dev/stdout" else subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"aceuq evaluate: error: output '{target}': cannot be written "
        f"({'File too large' if where == 'file size limit' else 'No space left on device'})"]
    assert out.read_text() == "earlier\n"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".aceuq-")]


def test_an_output_named_as_a_pickle_or_compressed_file_is_refused(make_pot, tmp_path, capsys):
    """evaluate, gamma and select write extended XYZ text: under pace_select's selected.pkl.gz, or
    a .gz, readers (aceuq's own) would take it for a pickle or gzip and fail. Refused before any
    work, naming the output; an .extxyz beside it is written (and read back)."""
    from aceuq.data import read_structures

    path = make_pot("CuAl_sbessel")
    data = tmp_path / "in.extxyz"
    write(data, [rattled_bulk(["Cu", "Al"], seed=s) for s in range(12)])
    asi = tmp_path / "g.asi"
    assert main(["activeset", path, str(data), "-o", str(asi), "--no-progress"]) == 0
    verbs = {"evaluate": [path, str(data)], "gamma": [path, str(asi), str(data)],
             "select": [path, str(data), "--active-set", str(asi), "-n", "1"]}
    for verb, args in verbs.items():
        for name, what in (("selected.pkl.gz", "a pacemaker DataFrame pickle"), ("o.extxyz.gz", "a compressed file")):
            capsys.readouterr()
            assert main([verb, *args, "-o", str(tmp_path / name), "--no-progress"]) == 1
            err = capsys.readouterr().err
            assert f"output '{tmp_path / name}': aceuq writes extended XYZ text, but the name says {what}" in err, err
            assert not (tmp_path / name).exists()
        assert main([verb, *args, "-o", str(tmp_path / f"{verb}.extxyz"), "--no-progress"]) == 0
        if verb != "select":  # (which selects none of the active set's own structures)
            assert len(read_structures([str(tmp_path / f"{verb}.extxyz")])) == 12


def test_structure_files_may_follow_options(make_pot, tmp_path, capsys):
    """evaluate, gamma, select and activeset take structure files before and after options
    (`-o OUT` between two files): every file is read."""
    path = make_pot("CuAl_sbessel")
    a, b = tmp_path / "a.extxyz", tmp_path / "b.extxyz"
    write(a, [rattled_bulk(["Cu", "Al"], seed=s) for s in range(6)])
    write(b, [rattled_bulk(["Cu", "Al"], seed=10 + s) for s in range(6)])
    asi = tmp_path / "g.asi"
    assert main(["activeset", path, str(a), "-o", str(asi), str(b), "--no-progress"]) == 0
    assert "12 structures" in capsys.readouterr().out
    for verb, extra in (("evaluate", []), ("gamma", [str(asi)])):
        out = tmp_path / f"{verb}.extxyz"
        assert main([verb, path, *extra, str(a), "-o", str(out), str(b), "--no-progress"]) == 0
        assert len(read(out, ":")) == 12
    out = tmp_path / "sel.extxyz"
    assert main(["select", path, str(a), "--active-set", str(asi), "-n", "1", "-o", str(out), str(b),
                 "--no-progress"]) == 0
    assert "12 candidate" in capsys.readouterr().out


def test_reading_a_pickle_shows_progress_as_other_files_do(tmp_path, monkeypatch):
    """The README: long loops show bars, reading the structure files included; a pacemaker
    pickle is read row by row, with a bar that knows the row count."""
    import pandas as pd

    from aceuq import data

    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(3)]
    pkl = tmp_path / "d.pkl.gzip"
    pd.DataFrame({"ase_atoms": frames, "energy": [0.0] * 3}).to_pickle(pkl, compression="gzip")
    write(tmp_path / "d.extxyz", frames)
    bars = []
    real = data.show_progress

    def spy(items, enabled, desc, unit=None, total=None):
        bars.append((desc, enabled, total))
        return real(items, enabled, desc, unit, total)

    monkeypatch.setattr(data, "show_progress", spy)
    for name in ("d.pkl.gzip", "d.extxyz"):
        assert len(data.read_structures(str(tmp_path / name), progress=True)) == 3
    assert ("reading d.pkl.gzip", True, 3) in bars and ("reading d.extxyz", True, None) in bars
