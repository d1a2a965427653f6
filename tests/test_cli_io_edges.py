"""The I/O and CLI layer at its edges: plain pickles, outputs appended by the shell or replaced
under open readers, descriptors of other processes, usage errors (exit 2), labels kept as ref_*,
3x3 reference stresses, dumps with -e, files that are missing or folders. Oracles: README rules,
ASE, pandas."""
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read, write

from aceuq.cli.main import main
from structures import rattled_bulk


def test_plain_pkl_pickle_is_read(tmp_path):
    """README: pacemaker datasets '.pckl.gzip, also .pkl.gzip, .pkl.gz, .pkl' -- an uncompressed
    .pkl (pandas' default) reads as the DataFrame holds it."""
    import pandas as pd

    from aceuq.data import read_structures

    frames = [rattled_bulk(["Cu", "Al"], seed=s) for s in range(2)]
    pkl = tmp_path / "plain.pkl"
    pd.DataFrame({"ase_atoms": frames, "energy_corrected": [-1.0, -2.0]}).to_pickle(pkl, compression=None)
    got = read_structures(str(pkl))
    assert [a.get_potential_energy() for a in got] == [-1.0, -2.0]


def test_stdout_output_appended_by_the_shell_keeps_what_was_there(make_pot, tmp_path):
    """README: -o /dev/stdout is written 'through the shell's redirection'; with `>>` that appends:
    the earlier content of the file stays."""
    path = make_pot("CuAl_sbessel")
    write(tmp_path / "s.extxyz", rattled_bulk(["Cu", "Al"], seed=1))
    log = tmp_path / "log.extxyz"
    write(log, rattled_bulk(["Cu", "Al"], seed=2))  # an earlier frame in the file
    with open(log, "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "aceuq", "evaluate", path, str(tmp_path / "s.extxyz"),
                               "-o", "/dev/stdout", "--no-progress"], stdout=fh, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(read(log, ":")) == 2


def test_uncalibrated_without_ensemble_is_a_usage_error(make_pot, tmp_path, capsys):
    """README: --uncalibrated belongs to `evaluate --ensemble`; given alone it is refused (exit 2),
    not silently ignored."""
    path = make_pot("CuAl_sbessel")
    write(tmp_path / "s.extxyz", rattled_bulk(["Cu", "Al"], seed=1))
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "--uncalibrated", "-o", str(tmp_path / "o.extxyz"),
                 "--no-progress"]) == 2
    assert "--uncalibrated" in capsys.readouterr().err
    assert not (tmp_path / "o.extxyz").exists()


def test_evaluate_without_structure_files_is_a_usage_error(make_pot, tmp_path, capsys):
    """README usage: `aceuq evaluate POT.yaml STRUCTURES... -o OUT`: a potential alone is refused
    (exit 2), not an empty output with exit 0."""
    path = make_pot("CuAl_sbessel")
    assert main(["evaluate", path, "-o", str(tmp_path / "o.extxyz"), "--no-progress"]) == 2
    assert not (tmp_path / "o.extxyz").exists()


def test_reference_stress_given_as_3x3_is_written_in_voigt_order(make_pot, tmp_path):
    """README: the input's labels are kept as ref_stress; pacemaker pickles may hold 'stress' as
    3 x 3 (read_structures accepts it): ref_stress is ASE's Voigt 6 of it (ASE's
    full_3x3_to_voigt_6_stress)."""
    import pandas as pd
    from ase.stress import full_3x3_to_voigt_6_stress

    path = make_pot("CuAl_sbessel")
    atoms = rattled_bulk(["Cu", "Al"], seed=3)
    s33 = np.array([[0.01, 0.006, -0.005], [0.006, -0.02, 0.004], [-0.005, 0.004, 0.03]])
    pkl = tmp_path / "d.pkl.gzip"
    pd.DataFrame({"ase_atoms": [atoms], "energy": [-1.0], "stress": [s33]}).to_pickle(pkl, compression="gzip")
    out = tmp_path / "o.extxyz"
    assert main(["evaluate", path, str(pkl), "-o", str(out), "--no-progress"]) == 0
    got = read(out)
    np.testing.assert_allclose(np.ravel(got.info["ref_stress"]), full_3x3_to_voigt_6_stress(s33), rtol=1e-12)


def _dump(path, rows):
    lines = ["ITEM: TIMESTEP", "0", "ITEM: NUMBER OF ATOMS", str(len(rows)), "ITEM: BOX BOUNDS pp pp pp",
             "0 6", "0 6", "0 6", "ITEM: ATOMS id type x y z"] + [" ".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_evaluate_reads_a_dump_with_elements(make_pot, tmp_path):
    """README: evaluate takes -e/--elements for LAMMPS dumps (types 1, 2 -> Cu, Al), as gamma and
    select do. Oracle: ASE's reader of the dump for the types and positions."""
    path = make_pot("CuAl_sbessel")
    dump = tmp_path / "d.dump"
    _dump(dump, [(1, 1, 0, 0, 0), (2, 2, 1.8, 1.8, 0), (3, 1, 0, 1.8, 1.8), (4, 2, 1.8, 0, 1.8)])
    out = tmp_path / "o.extxyz"
    assert main(["evaluate", path, str(dump), "-e", "Cu Al", "-o", str(out), "--no-progress"]) == 0
    ref = read(dump, format="lammps-dump-text")
    got = read(out)
    assert got.get_chemical_symbols() == [("Cu", "Al")[t - 1] for t in ref.arrays["type"]]
    np.testing.assert_allclose(got.positions, ref.positions)


@pytest.mark.parametrize("kind", ["missing extxyz", "missing pickle", "folder"])
def test_missing_file_or_folder_is_named_as_such(tmp_path, kind):
    """read_structures' guards: a missing file is 'no such file' (not 'cannot be read by ASE
    (FileNotFoundError...)' nor 'not a readable pacemaker DataFrame pickle'), a folder 'is a
    directory'."""
    import aceuq
    from aceuq.data import read_structures

    path = {"missing extxyz": tmp_path / "none.extxyz", "missing pickle": tmp_path / "none.pkl.gzip",
            "folder": tmp_path}[kind]
    with pytest.raises(aceuq.InputError) as err:
        read_structures(str(path))
    assert str(err.value) == f"structure file '{path}': " + ("is a directory" if kind == "folder" else "no such file")


def test_negative_atom_count_in_xyz_is_named(tmp_path):
    """_check_xyz_counts: a negative count names frame and line (ASE's reader says only that it
    expected a header)."""
    import aceuq
    from aceuq.data import read_structures

    p = tmp_path / "neg.extxyz"
    p.write_text("1\nProperties=species:S:1:pos:R:3\nCu 0 0 0\n-1\nProperties=species:S:1:pos:R:3\nCu 0 0 0\n")
    with pytest.raises(aceuq.InputError, match=r"frame 1 \(line 4\) announces -1 atoms"):
        read_structures(str(p))


def test_output_replaced_by_rename_so_open_readers_keep_the_earlier_file(tmp_path):
    """README: 'Outputs are written whole (a temporary file, then a rename)': a reader that opened
    the earlier output before the write still reads it whole afterwards (a rename gives the path a
    new file; writing into the old one would change what the reader sees)."""
    from ase.build import bulk

    from aceuq.data import write_extxyz_atomic

    out = tmp_path / "o.extxyz"
    out.write_text("earlier\n")
    with open(out) as reader:
        before = os.stat(out).st_ino
        write_extxyz_atomic(out, [bulk("Cu", "fcc", a=3.6)])
        assert reader.read() == "earlier\n"
    assert os.stat(out).st_ino != before and len(read(out, ":")) == 1


def test_descriptor_of_another_process_is_not_this_ones(tmp_path):
    """_descriptor: /proc/<other pid>/fd/1 is another process's stdout, not this one's: the output
    goes to the file that descriptor names (here a regular file), not to this process's stdout."""
    from ase.build import bulk

    from aceuq.data import names_stdout, write_extxyz_atomic

    target = tmp_path / "other_stdout.extxyz"
    with open(target, "w") as fh:
        other = subprocess.Popen(["sleep", "30"], stdout=fh)
    try:
        path = f"/proc/{other.pid}/fd/1"
        assert not names_stdout(path)
        write_extxyz_atomic(path, [bulk("Cu", "fcc", a=3.6)])
        assert len(read(target, ":")) == 1
    finally:
        other.kill()
        other.wait()


def test_clusters_with_an_asi_output_is_refused_before_the_work(make_pot, tmp_path, monkeypatch, capsys):
    """cli/activeset.py: '--clusters K' with an .asi output is refused 'known before the work':
    no active set is built."""
    import aceuq.cli.activeset as cli

    def no_build(*a, **k):
        raise AssertionError("built before refusing")

    monkeypatch.setattr(cli, "build_active_set", no_build)
    path = make_pot("CuAl_sbessel")
    write(tmp_path / "t.extxyz", [rattled_bulk(["Cu", "Al"], seed=s) for s in range(3)])
    assert cli.main([path, str(tmp_path / "t.extxyz"), "--clusters", "3", "-o", str(tmp_path / "a.asi"),
                     "--no-progress"]) == 1
    assert "--clusters 3" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["ensemble", "d.extxyz", "-n", "2", "-o", "OUT", "--subsample", "0"],
                                  ["ensemble", "d.extxyz", "-n", "2", "-o", "OUT", "--cutoff", "0"],
                                  ["demo", "--lower", "0"]])
def test_exclusive_lower_bounds_refuse_the_bound(argv, tmp_path, capsys, monkeypatch):
    """cli.number(above=0): the bound itself is refused (README: --subsample is a fraction of
    structures, a cutoff a length), as a usage error, exit 2."""
    import importlib

    import aceuq.demo

    monkeypatch.setattr(aceuq.demo, "run", lambda *a, **k: pytest.fail("the demo ran"))
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    mod = importlib.import_module(f"aceuq.cli.{argv[0]}")
    parser = mod.build_parser() if hasattr(mod, "build_parser") else None
    with pytest.raises(SystemExit) as exc:
        if parser is not None:
            parser.parse_args(argv[1:])
        else:
            mod.main(argv[1:] + ["-o", str(tmp_path / "demo")])
    assert exc.value.code == 2 and "must be above 0" in capsys.readouterr().err


def test_gamma_output_keeps_the_inputs_labels(make_pot, tmp_path):
    """cli/gamma.py copies the input's calculator results (DFT energy, forces) into the graded
    frames, so `gamma` output stays a labelled dataset. Oracle: ASE's reading of the input."""
    from ase.calculators.singlepoint import SinglePointCalculator

    path = make_pot("CuAl_sbessel")
    train = tmp_path / "t.extxyz"
    write(train, [rattled_bulk(["Cu", "Al"], seed=s) for s in range(10)])
    asi = tmp_path / "a.asi"
    assert main(["activeset", path, str(train), "-o", str(asi), "--no-progress"]) == 0
    a = rattled_bulk(["Cu", "Al"], seed=77)
    a.calc = SinglePointCalculator(a, energy=-3.25, forces=np.full((len(a), 3), 0.125))
    write(tmp_path / "c.extxyz", a)
    out = tmp_path / "g.extxyz"
    assert main(["gamma", path, str(asi), str(tmp_path / "c.extxyz"), "-o", str(out), "--no-progress"]) == 0
    ref, got = read(tmp_path / "c.extxyz"), read(out)
    assert got.get_potential_energy() == ref.get_potential_energy()
    np.testing.assert_array_equal(got.get_forces(), ref.get_forces())


def test_projection_errors_count_from_first_index(make_pot):
    """Potential.projections(first_index=): 'the number errors give the first structure when it
    has no file and frame' -- structure i of the slice is named first_index + i."""
    import aceuq
    from ase.build import bulk

    pot = aceuq.Potential(make_pot("CuAl_sbessel"))
    frames = [rattled_bulk(["Cu", "Al"], seed=1), bulk("Ni", "fcc", a=3.52)]
    with pytest.raises(aceuq.InputError, match=r"^structure 11: element\(s\) Ni"):
        pot.projections(frames, first_index=10)


def test_evaluate_ensemble_keeps_the_inputs_labels(tmp_path):
    """README: evaluate keeps the input's own labels as ref_energy / ref_forces -- with --ensemble
    too (the same code path in cli/evaluate.py). Oracle: the labels written into the input."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from potentials import emt_training_set

    from aceuq.ensemble import fit_ensemble

    frames = emt_training_set(["Cu"], n=8, seed=5)
    ens = str(tmp_path / "ens")
    fit_ensemble(frames[:6], 2, ens, basis="small", seed=2, calibration_frames=frames[6:], workers=1)
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    a.rattle(0.1, seed=3)
    a.calc = SinglePointCalculator(a, energy=-9.5, forces=np.full((len(a), 3), 0.25))
    write(tmp_path / "in.extxyz", a)
    out = tmp_path / "o.extxyz"
    assert main(["evaluate", "--ensemble", ens, str(tmp_path / "in.extxyz"), "-o", str(out), "--no-progress"]) == 0
    got = read(out)
    assert got.info["ref_energy"] == -9.5
    np.testing.assert_array_equal(got.arrays["ref_forces"], np.full((len(a), 3), 0.25))


def test_bad_memory_limit_is_a_usage_error(tmp_path, capsys):
    """tests/test_cli_main.py's convention: usage errors exit with status 2 (argparse's), a message
    on stderr; --memory-limit is parsed after argparse, by hand."""
    assert main(["activeset", "p.yaml", "t.extxyz", "-o", str(tmp_path / "a.asi"), "--memory-limit", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aceuq activeset: error:") and "Traceback" not in err
    assert not (tmp_path / "a.asi").exists()
